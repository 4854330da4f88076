"""Training-step throughput of the glmlab models on the CPU, beside transformers' ``GlmForCausalLM``.

One step = forward with labels, backward, AdamW step. Every model gets the same width,
depth, heads, key/value groups, feed-forward width, vocabulary and batch shape, so the
numbers compare implementations, not sizes. ChatGLM2 and ChatGLM3 share one architecture
and are measured once (``glm2/3``). Timed steps are interleaved across the models, so a
change in machine load hits all of them alike; the table shows the median step.

    OMP_NUM_THREADS=1 python benchmarks/bench_model.py --threads 1 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Run from a checkout without installing: make the repository's ``glmlab`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _random_batch(args: argparse.Namespace, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, args.vocab - 10, (args.batch, args.seq), generator=generator)
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100  # a prompt part that is not supervised, as in fine-tuning
    return ids, labels


def build_glm(args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    """ChatGLM-6B (GLM v1) at the benchmark size; its inputs need one [gMASK] + <sop>."""
    from glmlab.models.chatglm import ChatGLMForConditionalGeneration
    from glmlab.models.configuration import ChatGLMConfig

    v = args.vocab
    config = ChatGLMConfig(
        vocab_size=v,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_attention_heads=args.heads,
        inner_hidden_size=args.ffn,
        max_sequence_length=2 * args.seq,
        position_encoding_2d=True,
        mask_token_id=v - 4,
        gmask_token_id=v - 3,
        bos_token_id=v - 2,
        eos_token_id=v - 1,
        pad_token_id=0,
    )
    model = ChatGLMForConditionalGeneration(config)

    def make_inputs(ids: torch.Tensor, labels: torch.Tensor) -> dict:
        ids, labels = ids.clone(), labels.clone()
        cut = args.seq // 4
        ids[:, cut - 2], ids[:, cut - 1] = config.gmask_token_id, config.bos_token_id
        labels[:, : cut - 1] = -100
        return {"input_ids": ids, "labels": labels}

    return model, make_inputs


def build_glm2(args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    """ChatGLM2-6B / ChatGLM3-6B at the benchmark size."""
    from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration
    from glmlab.models.configuration import ChatGLMConfig

    config = ChatGLMConfig(
        padded_vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_attention_heads=args.heads,
        kv_channels=args.hidden // args.heads,
        multi_query_attention=True,
        multi_query_group_num=args.kv_groups,
        ffn_hidden_size=args.ffn,
        seq_length=args.seq,
        add_qkv_bias=True,
    )
    return ChatGLM2ForConditionalGeneration(config), lambda ids, labels: {"input_ids": ids, "labels": labels}


def build_hf_glm(args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    """transformers' ``GlmForCausalLM`` (the GLM-4 layout: GQA, half rotary, SwiGLU, qkv bias)."""
    from transformers import GlmConfig, GlmForCausalLM

    config = GlmConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_groups,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=2 * args.seq,
        attention_bias=True,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=2,
    )
    config._attn_implementation = "sdpa"
    return GlmForCausalLM(config), lambda ids, labels: {"input_ids": ids, "labels": labels}


BUILDERS = {"glm": build_glm, "glm2/3": build_glm2, "hf GlmForCausalLM": build_hf_glm}


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict) -> float:
    """One forward/backward/AdamW step; returns its wall time in seconds."""
    start = time.perf_counter()
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size")
    parser.add_argument("--layers", type=int, default=4, help="number of layers")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--kv_groups", type=int, default=2, help="key/value groups (glm2/3 and hf Glm; glm has none)")
    parser.add_argument("--ffn", type=int, default=704, help="feed-forward width (SwiGLU halves; glm v1: GELU width)")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    parser.add_argument("--seq", type=int, default=256, help="sequence length")
    parser.add_argument("--batch", type=int, default=4, help="batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--models", default=",".join(BUILDERS), help="comma-separated subset of: " + ", ".join(BUILDERS)
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ids, labels = _random_batch(args, torch.Generator().manual_seed(0))

    runs = {}
    for name in args.models.split(","):
        try:
            model, make_inputs = BUILDERS[name](args)
        except ImportError as error:
            print(f"skipping {name}: {error}")
            continue
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        inputs = make_inputs(ids, labels)
        for _ in range(args.warmup):
            train_step(model, optimizer, inputs)
        runs[name] = (model, optimizer, inputs, [])

    # Interleave the timed steps so load changes on a shared machine hit every model alike.
    for _ in range(args.steps):
        for model, optimizer, inputs, times in runs.values():
            times.append(train_step(model, optimizer, inputs))

    tokens = args.batch * args.seq
    print(
        f"\nCPU training step (forward+backward+AdamW), threads={args.threads}, hidden={args.hidden}, "
        f"layers={args.layers}, heads={args.heads}, kv_groups={args.kv_groups}, ffn={args.ffn}, "
        f"vocab={args.vocab}, batch={args.batch}x{args.seq}, {args.steps} timed steps (median)\n"
    )
    print(f"{'model':<20} {'params (M)':>10} {'step (ms)':>10} {'tokens/s':>10}")
    for name, (model, _, _, times) in runs.items():
        step = statistics.median(times)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<20} {params:>10.2f} {step * 1e3:>10.1f} {tokens / step:>10.0f}")


if __name__ == "__main__":
    main()

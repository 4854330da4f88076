"""What only a GPU can tell: the models on CUDA, and the official 6B shapes' memory and speed.

    python benchmarks/bench_gpu.py --out results.json              # on a machine with a GPU
    python benchmarks/bench_gpu.py --device cpu --shape tiny       # the same code, small, on a CPU

Two parts, each printed as it finishes and written to ``--out`` (JSON):

1. **fixtures** -- every reference fixture of ``tests/fixtures`` loaded through
   ``glmlab.load_model`` onto the device: the largest logit difference from the official
   code's in fp32 and in bf16, whether the loss matches, and whether greedy generation gives
   the official ids (fp32).
2. **shapes** -- a random-weight model of each official 6B config (``glmlab.memory.PRESETS``;
   ``--shape tiny`` shrinks it) in bf16 on the device, one training step (forward, backward,
   AdamW on the trained tensors) per method at ``--batch_size`` x ``--seq_len`` tokens, with
   and without gradient checkpointing: the measured peak memory beside
   :func:`glmlab.memory.estimate_memory`'s estimate for one GPU, ZeRO-0 (the same tensors:
   weights, gradients, AdamW states, activations), and tokens/s. As DeepSpeed's bf16 optimizer
   does, AdamW steps fp32 master copies of the trained tensors. ``all`` is left out on
   purpose: one GPU cannot hold it without ZeRO-3 offload (see notebook 05).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))



def method_args(method: str, config) -> dict:
    """The method's flags: the last two layers (freeze), a 16-token prefix (ptuning), rank 8 on the QKV (lora)."""
    last = config.num_layers - 1
    return {
        "freeze": {"freeze_module_name": f"layers.{last}.,layers.{last - 1}."},
        "ptuning": {"pre_seq_len": 16, "prefix_projection": False},
        "lora": {"lora_dim": 8, "lora_module_name": "query_key_value"},
    }[method]


def check_fixtures(device: str) -> list[dict]:
    import glmlab
    from tests.fixture_models import load_fixture, write_fixture_folder

    rows = []
    for path in sorted((REPO / "tests" / "fixtures").glob("*_a*.pt")):
        name = path.stem
        fx = load_fixture(name)
        row = {"fixture": name}
        with tempfile.TemporaryDirectory() as folder:
            write_fixture_folder(name, folder)
            for dtype in (torch.float32, torch.bfloat16):
                model = glmlab.load_model(folder, mode=fx["mode"], dtype=dtype, device=device).eval()
                with torch.no_grad():
                    out = model(input_ids=fx["input_ids"].to(device), labels=fx["labels"].to(device))
                key = "fp32" if dtype == torch.float32 else "bf16"
                row[f"{key}_max_logit_diff"] = (out.logits.float().cpu() - fx["logits"]).abs().max().item()
                row[f"{key}_loss_diff"] = abs(out.loss.float().item() - fx["loss"].item())
                if dtype == torch.float32:
                    gen = fx["generate"]
                    kwargs = {"min_new_tokens": 8} if fx["mode"] == "glm" else {"pad_token_id": 0}
                    eos = model.config.eos_token_id if fx["mode"] == "glm" else None
                    ids = model.generate(gen["prompt_ids"].to(device), max_new_tokens=8, do_sample=False,
                                         eos_token_id=eos, **kwargs)
                    row["greedy_equal"] = ids.cpu().tolist() == gen["output_ids"].tolist()
                del model
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def shape_config(mode: str, shape: str):
    from glmlab.memory import preset_config

    config = preset_config(mode)
    if shape == "tiny":
        config.hidden_size, config.num_layers, config.num_attention_heads = 256, 4, 4
        if mode == "glm":
            config.inner_hidden_size, config.vocab_size = 1024, 1000
            config.mask_token_id, config.gmask_token_id, config.bos_token_id, config.eos_token_id = 996, 997, 998, 999
        else:
            config.ffn_hidden_size, config.kv_channels, config.padded_vocab_size = 1024, 64, 1000
    return config


def build_model(config, method: str, device: str):
    """A random bf16 model of ``config`` on ``device``, prepared for ``method`` as the training strategies do."""
    from types import SimpleNamespace

    from glmlab.methods import get_strategy
    from glmlab.models.chatglm import ChatGLMForConditionalGeneration
    from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration

    args = SimpleNamespace(train_type=method, freeze_module_name=None, pre_seq_len=None, prefix_projection=False,
                           lora_dim=8, lora_alpha=32, lora_dropout=0.0, lora_module_name="query_key_value")
    for key, value in method_args(method, config).items():
        setattr(args, key, value)
    strategy = get_strategy(method)
    for key, value in strategy.config_overrides(args).items():
        setattr(config, key, value)
    cls = ChatGLMForConditionalGeneration if config.architecture == "glm" else ChatGLM2ForConditionalGeneration
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(default)
    # DeepSpeed's bf16 engine casts the prepared model, LoRA adapters included, to bf16
    return strategy.prepare(model, args).to(torch.bfloat16), args


def batch(config, mode: str, batch_size: int, seq_len: int, device: str) -> dict[str, torch.Tensor]:
    """Random tokens laid out like a training sample: ``[gMASK] <sop>`` (glm) or a plain causal row."""
    vocab = getattr(config, "padded_vocab_size", None) or config.vocab_size
    ids = torch.randint(100, min(vocab - 10, 60000), (batch_size, seq_len), device=device)
    if mode == "glm":
        ids[:, seq_len // 2 - 2] = config.gmask_token_id
        ids[:, seq_len // 2 - 1] = config.bos_token_id
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100
    return {"input_ids": ids, "labels": labels}


def step_memory(mode: str, method: str, shape: str, device: str, batch_size: int, seq_len: int,
                checkpointing: bool, steps: int) -> dict:
    from glmlab.memory import estimate_memory

    config = shape_config(mode, shape)
    estimate = estimate_memory(shape_config(mode, shape), method, precision="bf16", zero_stage=0, batch_size=batch_size,
                               seq_len=seq_len, gradient_checkpointing=checkpointing, **method_args(method, config))
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, _ = build_model(config, method, device)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    # As DeepSpeed's bf16 optimizer: AdamW steps fp32 master copies of the trained tensors.
    trained = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().requires_grad_() for p in trained]
    optimizer = torch.optim.AdamW(master, lr=1e-5)
    data = batch(config, mode, batch_size, seq_len, device)
    times = []
    for _ in range(steps):
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**data).loss
        loss.backward()
        for p, m in zip(trained, master):
            m.grad, p.grad = p.grad.float(), None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, m in zip(trained, master):
                p.copy_(m)
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")
    step_s = min(times[1:]) if len(times) > 1 else times[0]
    del model, optimizer, master, trained
    return {
        "mode": mode, "method": method, "checkpointing": checkpointing, "batch": batch_size, "seq_len": seq_len,
        "trainable": estimate.trainable_params, "loss": round(loss.item(), 3),
        "measured_gib": round(peak, 2), "estimated_gib": round(estimate.gpu_gib, 2),
        "estimate_parts_gib": {k: round(getattr(estimate, k), 2)
                               for k in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib")},
        "step_s": round(step_s, 3), "tokens_per_s": round(batch_size * seq_len / step_s),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", choices=["6b", "tiny"], default="6b")
    parser.add_argument("--modes", nargs="+", default=["glm2", "glm"])
    parser.add_argument("--methods", nargs="+", default=["lora", "ptuning", "freeze"])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--seq_len", type=int, default=768)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip_fixtures", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                     "torch": torch.__version__, "fixtures": [], "shapes": []}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    if not args.skip_fixtures:
        results["fixtures"] = check_fixtures(args.device)
        save()
    for mode in args.modes:
        for method in args.methods:
            for checkpointing in (False, True):
                try:
                    row = step_memory(mode, method, args.shape, args.device, args.batch_size, args.seq_len,
                                      checkpointing, args.steps)
                except torch.OutOfMemoryError as err:  # a figure too: this setup does not fit
                    row = {"mode": mode, "method": method, "checkpointing": checkpointing, "oom": str(err)[:200]}
                print(json.dumps(row), flush=True)
                results["shapes"].append(row)
                save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""glmlab.memory's estimates beside GPU memory that others measured and published for ChatGLM-6B/2-6B.

    python benchmarks/memory_vs_published.py            # a markdown table
    python benchmarks/memory_vs_published.py --json     # the rows as JSON

Until a GPU measures glmlab itself (``benchmarks/gpu_check.sh``), these are the only real 6B
figures to hold the estimator against. Two sources, each row with the settings it was run with:

* **THUDM** -- the official ChatGLM-6B README's minimum GPU memory for P-tuning v2 (FP16 14 GB,
  INT8 9 GB, INT4 7 GB) and its ``ptuning/README.md`` ("6.7G" for the default INT4 run). Settings
  from ``ptuning/train.sh`` and ``main.py``: 128 prefix tokens without projection, 64 source + 64
  target tokens, batch 1, gradient checkpointing on, the model in fp16 with the prefix encoder in
  fp32, the Hugging Face Trainer (no DeepSpeed: ZeRO-0 here), eager attention (ChatGLM-6B's own).
* **The original fine-tuning project** (liucongg/ChatGLM-Finetuning, the project glmlab re-does)
  -- its README's tables, one A40 or four, batch 1, length 1560 (or the longest that fitted),
  DeepSpeed ZeRO-2/3 in fp16 with DeepSpeed's default buckets, torch 1.13 (no SDPA: every layer's
  ``s x s`` scores are materialised). Freeze: the last 4 layers; P-tuning: 16 prefix tokens with
  the projection (its ``--prefix_projection`` is ``type=bool``, always true); LoRA: rank 16 on
  ``query_key_value``.

What the comparison can and cannot say: the published figures are what ``nvidia-smi`` showed, so
they include the CUDA context (0.5-1 GiB) and the blocks PyTorch's caching allocator holds
beyond the peak of live tensors; the estimate is the peak of live tensors
(``torch.cuda.max_memory_allocated``). An estimate somewhat *below* a published figure is the
expected outcome; one above it, or far below it, points at a term the estimator gets wrong. The
ratio column is estimate / published. "G" in the sources is read as GiB (nvidia-smi's MiB / 1024).

What it showed (2026-11-29): THUDM's rows 0.86-0.96; the original's ZeRO-2 rows 0.64-0.86; its
ZeRO-3 row 0.72; its ZeRO-3 + offload rows 0.22-0.26, not explained. One thing the original did there, and glmlab did too until then:
hand DeepSpeed the unpartitioned model, which DeepSpeed moves whole onto every GPU before
partitioning (12.8 GiB for ChatGLM-6B in 16 bits); glmlab now partitions it first
(``glmlab.train.partition_for_zero3``), so the estimate leaves that out. ``gpu_check.sh`` measures
glmlab's own ZeRO-3 runs. After the activation formula was held to the storages autograd saves on the
small bases (2026-12-02, ``glmlab.memory.anatomy``: the whole QKV output that ``v`` keeps, SDPA's float
mask, checkpointing's inputs of every layer), every ratio rose by at most 0.02: THUDM's rows 0.87-0.97,
the original's ZeRO-2 rows 0.64-0.87, the rest unchanged to two decimals.
"""

from __future__ import annotations

import argparse
import json

from glmlab import memory

THUDM = "THUDM/ChatGLM-6B README"
ORIGINAL = "liucongg/ChatGLM-Finetuning README (A40)"

# DeepSpeed configs as the original project wrote them, without its "auto" offload placeholders
# (its tables say "Offload: No" for these); every other ZeRO setting is DeepSpeed's default.
ZERO2 = {"zero_optimization": {"stage": 2}}
ZERO3 = {"zero_optimization": {"stage": 3}}
ZERO3_OFFLOAD = {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"},
                                       "offload_optimizer": {"device": "cpu"}}}
FREEZE4 = {"freeze_module_name": "layers.27.,layers.26.,layers.25.,layers.24."}
PTUNING16 = {"pre_seq_len": 16, "prefix_projection": True}
LORA16 = {"lora_dim": 16, "lora_module_name": "query_key_value"}
THUDM_PTUNING = {"pre_seq_len": 128, "prefix_projection": False}

# (source, what, mode, method, method_args, ds_config, gpus, seq_len, checkpointing, bits, published GiB)
PUBLISHED = [
    (THUDM, "P-tuning v2, FP16", "glm", "ptuning", THUDM_PTUNING, {}, 1, 128, True, 0, 14.0),
    (THUDM, "P-tuning v2, INT8", "glm", "ptuning", THUDM_PTUNING, {}, 1, 128, True, 8, 9.0),
    (THUDM, "P-tuning v2, INT4", "glm", "ptuning", THUDM_PTUNING, {}, 1, 128, True, 4, 6.7),
    (ORIGINAL, "Freeze 4 layers", "glm", "freeze", FREEZE4, ZERO2, 1, 1560, True, 0, 36.0),
    (ORIGINAL, "Freeze 4 layers", "glm", "freeze", FREEZE4, ZERO2, 1, 1560, False, 0, 38.0),
    (ORIGINAL, "Freeze 4 layers", "glm", "freeze", FREEZE4, ZERO2, 4, 1560, True, 0, 24.0),
    (ORIGINAL, "Freeze 4 layers", "glm", "freeze", FREEZE4, ZERO2, 4, 1560, False, 0, 29.0),
    (ORIGINAL, "Freeze 4 layers", "glm2", "freeze", FREEZE4, ZERO2, 1, 1560, True, 0, 35.0),
    (ORIGINAL, "Freeze 4 layers", "glm2", "freeze", FREEZE4, ZERO2, 1, 1560, False, 0, 36.0),
    (ORIGINAL, "Freeze 4 layers", "glm2", "freeze", FREEZE4, ZERO2, 4, 1560, True, 0, 22.0),
    (ORIGINAL, "Freeze 4 layers", "glm2", "freeze", FREEZE4, ZERO2, 4, 1560, False, 0, 27.0),
    (ORIGINAL, "P-tuning 16, projection", "glm", "ptuning", PTUNING16, ZERO2, 1, 768, True, 0, 43.0),
    (ORIGINAL, "P-tuning 16, projection", "glm", "ptuning", PTUNING16, ZERO2, 1, 300, False, 0, 44.0),
    (ORIGINAL, "P-tuning 16, projection", "glm", "ptuning", PTUNING16, ZERO2, 4, 1560, True, 0, 37.0),
    (ORIGINAL, "P-tuning 16, projection", "glm", "ptuning", PTUNING16, ZERO2, 4, 1360, False, 0, 44.0),
    (ORIGINAL, "P-tuning 16, projection", "glm2", "ptuning", PTUNING16, ZERO2, 1, 1560, True, 0, 20.0),
    (ORIGINAL, "P-tuning 16, projection", "glm2", "ptuning", PTUNING16, ZERO2, 1, 1560, False, 0, 40.0),
    (ORIGINAL, "P-tuning 16, projection", "glm2", "ptuning", PTUNING16, ZERO2, 4, 1560, True, 0, 19.0),
    (ORIGINAL, "P-tuning 16, projection", "glm2", "ptuning", PTUNING16, ZERO2, 4, 1560, False, 0, 39.0),
    (ORIGINAL, "LoRA r16 qkv", "glm", "lora", LORA16, ZERO2, 1, 1560, True, 0, 20.0),
    (ORIGINAL, "LoRA r16 qkv", "glm", "lora", LORA16, ZERO2, 1, 1560, False, 0, 45.0),
    (ORIGINAL, "LoRA r16 qkv", "glm", "lora", LORA16, ZERO2, 4, 1560, True, 0, 20.0),
    (ORIGINAL, "LoRA r16 qkv", "glm", "lora", LORA16, ZERO2, 4, 1560, False, 0, 45.0),
    (ORIGINAL, "LoRA r16 qkv", "glm2", "lora", LORA16, ZERO2, 1, 1560, True, 0, 20.0),
    (ORIGINAL, "LoRA r16 qkv", "glm2", "lora", LORA16, ZERO2, 1, 1560, False, 0, 43.0),
    (ORIGINAL, "LoRA r16 qkv", "glm2", "lora", LORA16, ZERO2, 4, 1560, True, 0, 19.0),
    (ORIGINAL, "LoRA r16 qkv", "glm2", "lora", LORA16, ZERO2, 4, 1560, False, 0, 42.0),
    (ORIGINAL, "full, ZeRO-3 + offload", "glm", "all", {}, ZERO3_OFFLOAD, 4, 1560, True, 0, 33.0),
    (ORIGINAL, "full, ZeRO-3", "glm2", "all", {}, ZERO3, 4, 1560, True, 0, 44.0),
    (ORIGINAL, "full, ZeRO-3 + offload", "glm2", "all", {}, ZERO3_OFFLOAD, 4, 1560, True, 0, 26.0),
]


def rows() -> list[dict]:
    out = []
    for source, what, mode, method, args, ds, gpus, seq_len, checkpointing, bits, published in PUBLISHED:
        estimate = memory.estimate_memory(
            memory.preset_config(mode), method, precision="fp16", num_gpus=gpus, batch_size=1, seq_len=seq_len,
            gradient_checkpointing=checkpointing, attention_scores=True, quantization_bit=bits,
            ds_config=ds or {"zero_optimization": {"stage": 0}}, **args)
        out.append({"source": source, "what": what, "mode": mode, "gpus": gpus, "seq_len": seq_len,
                    "checkpointing": checkpointing, "published_gib": published,
                    "estimate_gib": round(estimate.gpu_gib, 2), "ratio": round(estimate.gpu_gib / published, 2),
                    "activations_gib": round(estimate.activations_gib, 2), "peak_phase": estimate.peak_phase})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    table = rows()
    if parser.parse_args().json:
        print(json.dumps(table, indent=1))
        return
    print("| source | run | model | GPUs | length | checkpointing | published GiB | estimate GiB | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['source']} | {r['what']} | {r['mode']} | {r['gpus']} | {r['seq_len']} | "
              f"{'on' if r['checkpointing'] else 'off'} | {r['published_gib']:.1f} | {r['estimate_gib']:.1f} | "
              f"{r['ratio']:.2f} |")


if __name__ == "__main__":
    main()

"""Training throughput on the CPU: tokens/s, peak memory and loop overhead per method and model size.

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py                 # tiny and medium, every method
    python benchmarks/bench_train.py --sizes medium --methods lora all --steps 30

Each (size, method) pair is one real ``python -m glmlab.train`` run (one process, DeepSpeed
ZeRO-2, fp32) on a random-weight checkpoint written by :func:`glmlab.tiny.make_tiny`, on
``data/spo_train.jsonl``. The figures come from the run's own ``metrics.jsonl`` (logged every
``--log_every`` optimizer steps); the first window (start-up, first allocations) is left out
and the others are averaged:

* ``tokens/s``: real (unpadded) tokens through forward + backward + step per second;
* ``peak MB``: the process's peak resident memory (on a GPU it would be peak allocated memory);
* ``overhead``: share of the wall time spent outside forward, backward and the optimizer
  step -- fetching and collating batches, the per-step all-reduce of the logged loss,
  logging. The loop's budget for it is 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = {
    # make_tiny sizes, training batch
    "tiny": ({"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4}, {"max_len": 64, "max_src_len": 32, "batch": 4}),
    "medium": ({"hidden_size": 512, "num_layers": 6, "num_attention_heads": 8},
               {"max_len": 128, "max_src_len": 64, "batch": 4}),
}
METHOD_FLAGS = {
    "freeze": ["--freeze_module_name", "layers.1."],
    "ptuning": ["--pre_seq_len", "8", "--prefix_projection", "true"],
    "lora": ["--lora_dim", "8", "--lora_alpha", "16"],
    "all": [],
}


def run_one(model: Path, mode: str, method: str, train: dict, steps: int, log_every: int, out: Path) -> dict:
    argv = [sys.executable, "-m", "glmlab.train", "--model_name_or_path", str(model), "--mode", mode,
            "--train_path", str(REPO / "data" / "spo_train.jsonl"), "--train_type", method,
            "--max_len", str(train["max_len"]), "--max_src_len", str(train["max_src_len"]),
            "--per_device_train_batch_size", str(train["batch"]), "--num_train_epochs", "100",
            "--max_steps", str(steps), "--show_loss_step", str(log_every), "--precision", "fp32",
            "--learning_rate", "1e-4", "--output_dir", str(out), *METHOD_FLAGS[method]]
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r][1:]  # drop the first window (start-up)
    return {
        "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in rows),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in rows),
        "overhead_share": statistics.mean(r["overhead_share"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHOD_FLAGS), choices=list(METHOD_FLAGS))
    parser.add_argument("--mode", default="glm2", choices=["glm", "glm2", "glm3"])
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps per run")
    parser.add_argument("--log_every", type=int, default=5, help="steps per metrics window")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from glmlab.tiny import make_tiny

    results = []
    print(f"{'size':8} {'method':8} {'tokens/s':>10} {'peak MB':>9} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            model_sizes, train = SIZES[size]
            model = make_tiny(args.mode, Path(tmp) / f"model-{size}", **model_sizes)
            for method in args.methods:
                r = run_one(model, args.mode, method, train, args.steps, args.log_every, Path(tmp) / f"{size}-{method}")
                results.append({"size": size, "method": method, **r})
                print(f"{size:8} {method:8} {r['tokens_per_s']:10.0f} {r['peak_mem_mb']:9.0f} "
                      f"{100 * r['overhead_share']:8.1f}%", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    worst = max(r["overhead_share"] for r in results)
    print(f"largest overhead share: {100 * worst:.1f}% (budget 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

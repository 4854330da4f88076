"""The 06 study (every method, every table) with several seeds: mean ± std per method and metric.

    python benchmarks/bench_methods.py                          # seeds 1 2 3, the notebooks' defaults
    python benchmarks/bench_methods.py --seeds 1 2 --mode glm3 --output_dir runs/bench_methods

Each seed is one papermill run of ``notebooks/06_eval.ipynb`` (which runs 02-05 first, then its own
doc-to-question runs and the forgetting probes) with ``-p seed S``: the seed changes data order,
adapter and prefix initialisation and dropout, never the data or the base. The results of every seed
are read back from its ``comparison.json`` and summarised in ``summary.json`` and a Markdown table
(``summary.md``) that the note of a change can quote. A benchmark, not a test: it takes about the
notebooks' time per seed. Resumable: a finished seed is read back while nothing it depends on changed
(:func:`seed_key`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY_FILE = "bench_key.json"


def seed_key(seed: int, args: argparse.Namespace) -> dict:
    """Everything a seed's figures depend on: the settings, the base's weights, glmlab's code and the notebooks'
    code cells (not their outputs), and the machine. A finished seed whose key is this one is read back."""
    import hashlib

    sys.path.insert(0, str(REPO))
    from glmlab.notebooks import experiment

    code = hashlib.sha256()
    for path in sorted((REPO / "glmlab").rglob("*.py")) + sorted((REPO / "notebooks").glob("0*.ipynb")):
        code.update(path.relative_to(REPO).as_posix().encode())
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            code.update(json.dumps(["".join(c["source"]) for c in cells if c["cell_type"] == "code"]).encode())
        else:
            code.update(path.read_bytes())
    here = machine()
    return {"seed": seed, "mode": args.mode, "nproc": args.nproc, "max_steps": args.max_steps,
            "replay_shares": args.replay_shares, "threads": args.threads,
            "base_weights": experiment.weights_digest(experiment.resolve_base(None, args.mode)),
            "code": code.hexdigest()[:16], "machine": {k: here[k] for k in SAME_MACHINE}}


def run_seed(seed: int, args: argparse.Namespace) -> tuple[dict, float]:
    """One seed's 06 run and its wall time; a seed already run with the same :func:`seed_key` is read back
    (so an interrupted benchmark resumes at the seed it was on)."""
    import papermill as pm

    out = Path(args.output_dir) / f"seed-{seed}"
    key, stored = seed_key(seed, args), out / KEY_FILE
    if stored.is_file() and (out / "comparison.json").is_file():
        record = json.loads(stored.read_text(encoding="utf-8"))
        if record["key"] == key:
            print(f"seed {seed}: reused {out} (same settings, base, code and machine)", flush=True)
            return json.loads((out / "comparison.json").read_text(encoding="utf-8")), record["wall_s"]
    stored.unlink(missing_ok=True)  # a run that stops half-way leaves no key behind
    out.mkdir(parents=True, exist_ok=True)  # papermill writes the executed copy there, and creates no folder
    start = time.perf_counter()
    pm.execute_notebook(str(REPO / "notebooks" / "06_eval.ipynb"), str(out / "06_eval.ipynb"), cwd=str(REPO),
                        parameters={"seed": seed, "mode": args.mode, "output_dir": str(out), "nproc": args.nproc,
                                    "max_steps": args.max_steps,
                                    **({"replay_shares": args.replay_shares} if args.replay_shares else {})},
                        progress_bar=False)
    wall = time.perf_counter() - start
    stored.write_text(json.dumps({"key": key, "wall_s": wall}, indent=2) + "\n", encoding="utf-8")
    return json.loads((out / "comparison.json").read_text(encoding="utf-8")), wall


def metrics_of(comparison: dict) -> dict[str, dict[str, float]]:
    """run -> metric -> value, for one seed: triple F1, d2q scores, general skills after, cost."""
    table: dict[str, dict[str, float]] = {"base": {"triple_f1": comparison["base_f1"],
                                                   "skills_overall": comparison["base_skills"]["overall"]}}
    table["base"].update(by_novelty(comparison.get("base_f1_by_novelty")))
    for row in comparison["d2q"]:
        if row["run"] == "base":
            table["base"].update({f"d2q_{k}": v for k, v in row.items() if k != "run"})
    for run in comparison["runs"]:
        entry = table.setdefault(run["variant"], {})
        entry.update(triple_f1=run["f1"], skills_overall=run["forgetting"]["after"]["overall"],
                     forgetting_drop=run["forgetting"]["drop"]["overall"], wall_s=run["wall_s"],
                     peak_mem_mb=run["peak_mem_mb"], trainable_params=run["trainable_params"],
                     **by_novelty(run.get("f1_by_novelty")))
    for row in comparison["d2q"]:
        if row["run"] != "base":
            table.setdefault(row["run"], {}).update({f"d2q_{k}": v for k, v in row.items() if k != "run"})
    return table


def by_novelty(f1_by_novelty: dict | None) -> dict[str, float]:
    """``triple_f1_form`` (records said in a test-only form), ``_pair``, ``_word``, ``_opening``, ``_familiar_wording``."""
    return {f"triple_f1_{kind}": value["f1"] for kind, value in (f1_by_novelty or {}).items()}


def stat(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count: every benchmark's summary of a figure over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    runs = list(per_seed[0])
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for run in runs:
        for metric in per_seed[0][run]:
            values = [seed[run][metric] for seed in per_seed if seed.get(run, {}).get(metric) is not None]
            if values:
                summary.setdefault(run, {})[metric] = stat(values)
    return summary


def markdown(summary: dict, columns: list[str]) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for run, metrics in summary.items():
        cells = []
        for column in columns:
            m = metrics.get(column)
            if m is None:
                cells.append("")
            elif column in ("wall_s", "peak_mem_mb", "trainable_params"):
                cells.append(f"{m['mean']:,.0f} ± {m['std']:,.0f}")
            else:
                cells.append(f"{m['mean']:.3f} ± {m['std']:.3f}")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SAME_MACHINE = ("cpu_model", "cpu_capability", "torch")  # what must agree for two machine() records' figures to compare


def same_machine(a: dict | None, b: dict | None) -> bool:
    """Whether two :func:`machine` records are one machine's for the figures (an unknown one is no machine's)."""
    return bool(a and b) and all(a.get(k) == b.get(k) for k in SAME_MACHINE)


def earlier_runs(output: Path, measured_on: dict, script: str) -> dict:
    """What a resumable benchmark wrote to ``output`` before (``{"runs": [], ...}`` when nothing), refused in one
    line when another machine measured it: its rows would pass for this machine's."""
    earlier = json.loads(output.read_text(encoding="utf-8")) if output.is_file() else {"runs": [], "machine": measured_on}
    if not same_machine(earlier.get("machine"), measured_on):
        raise SystemExit(f"{script}: --output {output}: its runs were measured on another machine (or one it does "
                         f"not record; {', '.join(SAME_MACHINE)}), and LoRA's figures differ between CPUs: give this "
                         "machine's runs their own --output")
    return earlier


def machine() -> dict:
    """Where the numbers were measured: the bases' numerics depend on the CPU and the thread count."""
    import os
    import platform

    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "cpu_model": model,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch picks: AVX2, AVX512, ...
            "torch": torch.__version__, "torch_threads_in_notebooks": torch.get_num_threads(),
            "omp_num_threads_per_rank": os.environ.get("OMP_NUM_THREADS", "cores / processes")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--mode", default="glm", choices=["glm", "glm2", "glm3"], help="the notebooks' default: glm")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--max_steps", type=int, default=None,
                        help="the step budget of every run (default: the notebooks' own, 3 epochs = 375 steps)")
    parser.add_argument("--output_dir", default="runs/bench_methods")
    parser.add_argument("--replay_shares", type=float, nargs="+", default=None,
                        help="06's replay shares (default its own, 10%% and 25%%); bench_forgetting.py --reuse takes these runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the notebook's kernel, which predicts and scores (default: the cores); "
                             "each rank of a training job gets cores / processes either way")
    parser.add_argument("--json", default=None,
                        help="also write the summary here (benchmarks/results/methods.json: the tests' floors come from it)")
    args = parser.parse_args(argv)

    if args.threads:
        import os

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the kernel papermill starts inherits it
    per_seed, walls, weights = [], [], []
    for seed in args.seeds:
        comparison, wall = run_seed(seed, args)
        per_seed.append(metrics_of(comparison))
        stored = json.loads((Path(args.output_dir) / f"seed-{seed}" / KEY_FILE).read_text(encoding="utf-8"))
        weights.append(stored["key"]["base_weights"])  # run_seed's key, not hashed a second time
        walls.append(wall)
        print(f"seed {seed}: {wall:.0f} s", flush=True)
    summary = summarise(per_seed)
    columns = ["triple_f1", "triple_f1_form", "triple_f1_pair", "triple_f1_word", "triple_f1_opening", "d2q_rouge-1", "d2q_rouge-2", "d2q_rouge-l", "d2q_bleu-4", "skills_overall",
               "forgetting_drop", "trainable_params", "wall_s", "peak_mem_mb"]
    table = markdown(summary, columns)
    out = Path(args.output_dir)
    record = {"command": " ".join(["python benchmarks/bench_methods.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "seeds": args.seeds, "mode": args.mode, "max_steps": args.max_steps,
              "base_weights": weights[0] if len(set(weights)) == 1 else weights,  # the base every seed ran
              "replay_shares": args.replay_shares,
              "wall_s_per_seed": walls, "summary": summary, "per_seed": per_seed}
    for target in filter(None, [out / "summary.json", args.json]):
        Path(target).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"wall time per seed (the six notebooks' work): {', '.join(f'{w:.0f} s' for w in walls)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

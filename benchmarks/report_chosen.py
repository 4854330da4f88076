"""Score on the test split what a validation sweep chose, beside the notebooks' settings: reporting only.

    python benchmarks/report_chosen.py --sweep benchmarks/results/sweep_budget.json --methods lora   # seeds 1 2 3
    python benchmarks/report_chosen.py --sweep SWEEP.json --seeds 1 2 3 --output OUT.json

``benchmarks/sweep_valid.py`` chooses each method's rate and the step budget on ``spo_valid.jsonl`` and never
reads the test split. This script is the other half: for every method of a sweep's output it trains the
sweep's choice (its rate at its budget; where the sweep holds several budgets, each method's own best
budget and rate) and the notebooks' own settings (:func:`experiment.default_learning_rate`,
:data:`glmlab.notebooks.quickstart.EPOCHS`) with the report seeds, scores ``spo_test.jsonl`` (F1 overall and per
kind of novelty, :func:`glmlab.synth.f1_by_novelty`) and prints mean ± std. Nothing here feeds back into a
choice: the sweep's file is read, never written. The sweep must have been measured on this machine (LoRA's and
P-tuning's figures differ between CPUs), and so must ``--output``'s earlier rows, which are reused (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_methods import earlier_runs, machine, same_machine, stat  # noqa: E402
from glmlab.notebooks import experiment  # noqa: E402


def run_folder(runs_dir: str | Path, method: str, rate: float, epochs: int, seed: int) -> Path:
    """Where one report run trains (``experiment.run_method`` makes ``METHOD/`` inside, with its predictions)."""
    return Path(runs_dir) / f"{method}-lr{rate:g}-e{epochs}-s{seed}"


def settings(sweep: dict, methods: dict, epochs: int, only: list[str] | None = None) -> list[dict]:
    """``[{"method", "setting", "learning_rate", "epochs"}]``: each swept method's choice (its own best budget and rate
    where the sweep holds several budgets, ``chosen["by_method"]``), then the notebooks' (once when they are the same)."""
    chosen = sweep["chosen"]
    picks = chosen.get("by_method") or {label: {**pick, "epochs": chosen["epochs"]} for label, pick in chosen["rates"].items()}
    out = []
    for label, pick in picks.items():
        if only and label not in only:
            continue
        ours = {"method": label, "setting": "notebooks", "learning_rate": experiment.default_learning_rate(methods[label]),
                "epochs": epochs}
        theirs = {"method": label, "setting": "chosen", "learning_rate": pick["learning_rate"], "epochs": pick["epochs"]}
        if (theirs["learning_rate"], theirs["epochs"]) == (ours["learning_rate"], ours["epochs"]):
            out.append({**ours, "setting": "notebooks = chosen"})
        else:
            out += [theirs, ours]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="a benchmarks/sweep_valid.py output measured on this machine")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="report seeds (bench_methods.py's)")
    parser.add_argument("--methods", nargs="+", default=None, help="only these of the sweep's methods (default: all)")
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "report_chosen"))
    parser.add_argument("--output", default=None, help="default: the sweep's file name with _test")
    args = parser.parse_args(argv)
    known = tuple(experiment.study_methods(2))  # the labels (sweep_valid.parse_grid's check), before anything loads
    unknown = [m for m in args.methods or [] if m not in known]
    if unknown:
        raise SystemExit(f"report_chosen.py: --methods {unknown[0]!r}: one of {', '.join(known)}")
    from glmlab.notebooks.quickstart import EPOCHS

    from sweep_valid import read_sweep

    sweep_path = Path(args.sweep)
    sweep = read_sweep(sweep_path, "report_chosen.py", needs=("chosen",))
    measured_on = machine()
    if not same_machine(sweep.get("machine"), measured_on):
        raise SystemExit(f"report_chosen.py: --sweep {sweep_path}: measured on another machine (or one it does not "
                         "record); its choice is reported on the machine that made it")
    base = experiment.resolve_base(None, sweep["mode"])
    weights = experiment.weights_digest(base)
    if sweep.get("base_weights") != weights:
        raise SystemExit(f"report_chosen.py: --sweep {sweep_path}: swept on other weights of the {base.name} base "
                         f"({sweep.get('base_weights')}; now {weights})")
    output = Path(args.output or sweep_path.with_name(sweep_path.stem + "_test.json"))
    rows = list(earlier_runs(output, measured_on, "report_chosen.py")["runs"])
    from glmlab.loading import build_config

    config, _ = build_config(base, sweep["mode"])
    methods = experiment.study_methods(config.num_layers)
    test_path = experiment.data_path("spo_test")

    def save() -> dict:
        summary = {}
        for row in rows:
            key = f"{row['method']} {row['learning_rate']:g} x{row['epochs']}"
            summary.setdefault(key, {"method": row["method"], "learning_rate": row["learning_rate"], "epochs": row["epochs"],
                                     "setting": row["setting"], "runs": []})["runs"].append(row)
        for item in summary.values():
            runs = item.pop("runs")
            item.update(seeds=sorted(r["seed"] for r in runs), f1=stat([r["f1"] for r in runs]),
                        f1_by_novelty={k: stat([r["f1_by_novelty"][k] for r in runs]) for k in runs[0]["f1_by_novelty"]})
        record = {"command": " ".join(["python benchmarks/report_chosen.py", *(argv if argv is not None else sys.argv[1:])]),
                  "sweep": sweep_path.name, "sweep_scored_on": sweep["scored_on"], "scored_on": test_path.name,
                  "mode": sweep["mode"], "base_weights": weights, "machine": measured_on, "summary": summary, "runs": rows}
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return summary

    for item in settings(sweep, methods, EPOCHS, args.methods):
        for seed in args.seeds:
            key = (item["method"], item["learning_rate"], item["epochs"], seed, weights)
            if any((r["method"], r["learning_rate"], r["epochs"], r["seed"], r["base_weights"]) == key for r in rows):
                continue
            setup = experiment.Setup(model_dir=str(base), mode=sweep["mode"], train_path=str(experiment.data_path("spo_train")),
                                     test_path=str(test_path), nproc=2, seed=seed, num_train_epochs=item["epochs"],
                                     output_dir=str(run_folder(args.runs_dir, item["method"], item["learning_rate"], item["epochs"], seed)))
            start = time.perf_counter()
            result = experiment.run_method(item["method"], {**methods[item["method"]], "learning_rate": item["learning_rate"]}, setup)
            rows.append({**item, "seed": seed, "base_weights": weights, "f1": result["f1"],
                         "f1_by_novelty": {k: v["f1"] for k, v in result["f1_by_novelty"].items()},
                         "final_loss": result["final_loss"], "wall_s": round(time.perf_counter() - start, 1)})
            save()
    summary = save()
    kinds = list(next(iter(summary.values()))["f1_by_novelty"]) if summary else []
    print(f"\ntest split ({test_path.name}; reported only), seeds {args.seeds}; chosen on {sweep['scored_on']} by {sweep_path.name}:")
    print(f"{'method':<10} {'rate':>7} {'epochs':>6} {'setting':<18} {'test F1':>14}  " + "  ".join(f"{k:>14}" for k in kinds))
    for item in summary.values():
        cells = [f"{item['f1_by_novelty'][k]['mean']:.3f} ± {item['f1_by_novelty'][k]['std']:.3f}" for k in kinds]
        print(f"{item['method']:<10} {item['learning_rate']:>7g} {item['epochs']:>6} {item['setting']:<18} "
              f"{item['f1']['mean']:.3f} ± {item['f1']['std']:.3f}  " + "  ".join(f"{c:>14}" for c in cells))
    print("wrote", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

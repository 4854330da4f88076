"""Grounded triples: what dropping the predicted triples that name a word the record does not hold does to F1.

    python benchmarks/grounded.py --sweep benchmarks/results/sweep_budget.json --runs_dir runs/sweep_budget \
        --report benchmarks/results/sweep_budget_test.json --report_runs_dir runs/report_chosen \
        --json benchmarks/results/grounded.json

Extraction names what a record says: every reference triple's head and tail are spans of its record (all 6,701 of
the original project's data; every record of :mod:`glmlab.synth`, ``tests/test_metrics.py``). A small model also
writes triples with a word that is not there ("发电机_部件故障_鼓包" for "发现发电机异响"), and those cannot be
right. :func:`glmlab.metrics.grounded_triples` drops them (``python -m glmlab.predict --grounded``), so recall
stays and precision rises. Whether that is worth a setting is decided on validation: this script rescores the
saved predictions of every run of a validation sweep (``--sweep``, its runs under ``--runs_dir``) with and without
grounding, and says whether grounding raises the mean validation F1 of every method at every setting swept. It
then rescores the runs of a test report (``--report``, ``benchmarks/report_chosen.py``'s, under
``--report_runs_dir``) for reporting only: F1 overall and per kind of novelty, raw and grounded. It trains and
generates nothing; each run's raw F1 must be the figure its file recorded, or the run is refused in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_methods import stat  # noqa: E402
from glmlab import synth  # noqa: E402
from glmlab.metrics import grounded_triples, triple_f1  # noqa: E402

KINDS = ("form", "opening", "pair", "word")


def rescore(predictions: Path, split: str, recorded: float) -> dict:
    """Raw and grounded F1 (overall, precision, recall, per kind of novelty) of one run's saved predictions."""
    if not predictions.is_file():
        raise SystemExit(f"grounded.py: {predictions}: no predictions there; give the runs folder its file names")
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    raw = [r["prediction"] for r in rows]
    kept = [grounded_triples(p, r["input"]) for p, r in zip(raw, rows)]
    refs = [r["output"] for r in rows]
    out = {}
    for name, preds in (("raw", raw), ("grounded", kept)):
        scores = triple_f1(preds, refs)
        by_kind = synth.f1_by_novelty(rows, preds, split)
        out[name] = {"f1": scores.f1, "precision": scores.precision, "recall": scores.recall,
                     **{k: by_kind[k]["f1"] for k in KINDS if k in by_kind}}
    if abs(out["raw"]["f1"] - recorded) > 1e-9:
        raise SystemExit(f"grounded.py: {predictions}: its raw F1 {out['raw']['f1']:.6f} is not the {recorded:.6f} its "
                         "file recorded: predictions of another run")
    return out


def summarise(runs: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Mean ± std over seeds per setting (``keys``) of every raw and grounded figure."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    out = []
    for setting, items in groups.items():
        figures = {name: {k: stat([r[name][k] for r in items]) for k in items[0][name]} for name in ("raw", "grounded")}
        out.append({**dict(zip(keys, setting)), "seeds": sorted(r["seed"] for r in items), **figures})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="a benchmarks/sweep_valid.py output (validation)")
    parser.add_argument("--runs_dir", required=True, help="the --runs_dir that sweep trained in")
    parser.add_argument("--report", help="a benchmarks/report_chosen.py output (the test split, reported only)")
    parser.add_argument("--report_runs_dir", help="the --runs_dir that report trained in")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if (args.report is None) != (args.report_runs_dir is None):
        raise SystemExit("grounded.py: --report and --report_runs_dir go together")
    from report_chosen import run_folder as report_folder
    from sweep_valid import read_sweep
    from sweep_valid import run_folder as sweep_folder

    sweep = read_sweep(args.sweep, "grounded.py")
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8")) if args.report else None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"grounded.py: --report {args.report}: cannot read it as JSON ({exc})") from None
    if report is not None and (report.get("scored_on") != "spo_test.jsonl" or "runs" not in report):
        raise SystemExit(f"grounded.py: --report {args.report}: not a benchmarks/report_chosen.py output on spo_test.jsonl")

    valid_runs = []
    for row in sweep["runs"]:
        if row.get("max_steps") is not None:
            continue
        folder = sweep_folder(args.runs_dir, row["mode"], row["epochs"], row["seed"], row["variant"], row["learning_rate"])
        valid_runs.append({"method": row["variant"], "epochs": row["epochs"], "learning_rate": row["learning_rate"],
                           "seed": row["seed"], **rescore(folder / "predictions.jsonl", "valid", row["f1"])})
    valid = summarise(valid_runs, ("method", "epochs", "learning_rate"))
    gains = {(s["method"], s["epochs"], s["learning_rate"]): s["grounded"]["f1"]["mean"] - s["raw"]["f1"]["mean"] for s in valid}
    chosen = all(g > 0 for g in gains.values())
    print(f"validation ({sweep['scored_on']}, {len(valid_runs)} runs of {Path(args.sweep).name}): mean F1 raw -> grounded")
    for s in valid:
        print(f"  {s['method']:<11} {s['epochs']} epochs lr {s['learning_rate']:<6g} {s['raw']['f1']['mean']:.3f} -> "
              f"{s['grounded']['f1']['mean']:.3f} (precision {s['raw']['precision']['mean']:.3f} -> "
              f"{s['grounded']['precision']['mean']:.3f}, recall {s['raw']['recall']['mean']:.3f} -> {s['grounded']['recall']['mean']:.3f})")
    print(f"grounding {'raises' if chosen else 'does not raise'} the mean validation F1 of every method at every setting "
          f"(smallest gain {min(gains.values()):+.3f})")

    test, test_runs = [], []
    if report is not None:
        for row in report["runs"]:
            folder = report_folder(args.report_runs_dir, row["method"], row["learning_rate"], row["epochs"], row["seed"])
            test_runs.append({"method": row["method"], "setting": row["setting"], "epochs": row["epochs"],
                              "learning_rate": row["learning_rate"], "seed": row["seed"],
                              **rescore(folder / row["method"] / "predictions.jsonl", "test", row["f1"])})
        test = summarise(test_runs, ("method", "setting", "epochs", "learning_rate"))
        print(f"\ntest ({report['scored_on']}, reported only; {len(test_runs)} runs of {Path(args.report).name}): raw -> grounded")
        for s in test:
            print(f"  {s['method']:<11} {s['setting']:<18} {s['epochs']} epochs: F1 {s['raw']['f1']['mean']:.3f} -> "
                  f"{s['grounded']['f1']['mean']:.3f}; unseen form {s['raw']['form']['mean']:.3f} -> {s['grounded']['form']['mean']:.3f}")
    if args.json:
        record = {"command": " ".join(["python benchmarks/grounded.py", *(argv if argv is not None else sys.argv[1:])]),
                  "sweep": Path(args.sweep).name, "report": Path(args.report).name if args.report else None,
                  "machine": sweep.get("machine"), "chosen_on_validation": chosen,
                  "rule": "grounding is chosen when it raises the mean validation F1 of every method at every setting swept",
                  "valid": valid, "test": test, "valid_runs": valid_runs, "test_runs": test_runs}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

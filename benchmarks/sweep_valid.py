"""Choose the notebooks' settings on the validation split: a learning rate per method and the step budget.

    python benchmarks/sweep_valid.py                    # LoRA 3e-3 5e-3 1e-2, full 1e-3 2e-3; 3 epochs; seed 1234
    python benchmarks/sweep_valid.py --grid lora=3e-3,5e-3,1e-2 freeze=2e-3,5e-3 --epochs 2 3 --seeds 1234 1

Each run is one :func:`glmlab.notebooks.experiment.run_method` (the notebooks' own step: train through
``glmlab launch``, predict, score) with the notebooks' settings (:class:`~glmlab.notebooks.experiment.Setup`'s
defaults, the method flags of :func:`~glmlab.notebooks.experiment.study_methods`), scored on
``spo_valid.jsonl`` (:mod:`glmlab.synth`: pairs and sentence forms of its own). The test split is never
read: it is for reporting what was chosen here. The sweep prints every run, what it chose, and the
current defaults (``experiment.LEARNING_RATES``, the notebooks' 3 epochs) beside them, and writes it all
to ``--output`` (committed: ``benchmarks/results/sweep_valid.json``).

The choice: per method and budget, the rate with the best validation F1 (mean over seeds; a tie goes
to the current default, then to the lower rate); the budget, when several are swept, is the one whose
chosen rates give the best mean F1 over the methods (a tie goes to the smaller budget).

Resumable: a row already in ``--output`` with the same method flags, rate, budget, seed, base (its weights'
digest: a rebuilt base is another base) and data is reused, not trained again, so a sweep can be extended
(another rate, seed or method) or restarted. The file holds one base's sweep: rows of other base weights (a
base since rebuilt) are dropped from it, said in one line (git keeps them), so that no reader averages two bases.
Only on the machine that measured it (``bench_methods.machine()``, recorded in the file): another
machine's file is refused in one line, since LoRA's and P-tuning's figures differ between CPUs.
A benchmark, not a test: each run takes about what a notebook run takes (1-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_methods.machine, however this file is loaded

from glmlab.notebooks import experiment  # noqa: E402

DEFAULT_GRID = {"lora": (3e-3, 5e-3, 1e-2), "zero3": (1e-3, 2e-3)}
NOTEBOOK_EPOCHS = 3  # the notebooks' step budget: 3 epochs of 125 optimizer steps


def parse_grid(items: list[str]) -> dict[str, tuple[float, ...]]:
    """``["lora=3e-3,5e-3", "zero3=1e-3"]`` -> ``{"lora": (0.003, 0.005), "zero3": (0.001,)}``; labels are
    :func:`~glmlab.notebooks.experiment.study_methods`' (embedding, projection, freeze, lora, zero3)."""
    known = tuple(experiment.study_methods(2))
    grid = {}
    for item in items:
        label, _, rates = item.partition("=")
        if label not in known or not rates:
            raise SystemExit(f"sweep_valid.py: --grid {item!r}: expected LABEL=RATE,RATE,... with LABEL one of {', '.join(known)}")
        try:
            grid[label] = tuple(float(r) for r in rates.split(","))
        except ValueError:
            raise SystemExit(f"sweep_valid.py: --grid {item!r}: rates must be numbers") from None
    return grid


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_key(row: dict[str, Any]) -> tuple:
    """What must agree for a finished row to stand in for a run the sweep would make."""
    return (row["mode"], row["base"], row.get("base_weights"), json.dumps(row["data"], sort_keys=True),
            json.dumps(row["flags"], sort_keys=True), row["learning_rate"], row["epochs"], row.get("max_steps"), row["seed"])


def run_folder(runs_dir: str | Path, mode: str, epochs: int, seed: int, label: str | None = None,
               rate: float | None = None) -> Path:
    """Where the sweep trains one run (``MODE-eEPOCHS-sSEED/LABEL-lrRATE``), or, without ``label``, the folder
    of every run of that budget and seed (the ``output_dir`` that ``experiment.run_method`` makes them in)."""
    folder = Path(runs_dir) / f"{mode}-e{epochs}-s{seed}"
    return folder if label is None else folder / f"{label}-lr{rate:g}"


def read_sweep(path: str | Path, script: str, flag: str | None = "--sweep", needs: tuple[str, ...] = ()) -> dict[str, Any]:
    """A sweep's output file, read by another benchmark (``script``, which takes it as ``flag``, or as an argument
    when ``flag`` is None); one line naming it when it cannot be read, is not this script's output on the validation
    split, or lacks one of the keys ``needs`` (besides runs, mode and scored_on)."""
    path = Path(path)
    where = f"{script}: {flag + ' ' if flag else ''}{path}"
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{where}: cannot read it as JSON ({exc})") from None
    missing = sorted({"runs", "mode", "scored_on", *needs} - (sweep.keys() if isinstance(sweep, dict) else set()))
    if missing or sweep["scored_on"] != "spo_valid.jsonl":
        raise SystemExit(f"{where}: not a benchmarks/sweep_valid.py output on spo_valid.jsonl"
                         + (f" (no {', '.join(missing)})" if missing else f" (scored on {sweep['scored_on']})"))
    return sweep


def novelty_scores(predictions: str | Path) -> dict[str, dict[str, float]]:
    """Triple F1 on the validation records of each kind of novelty (a record may be of several kinds;
    :func:`glmlab.synth.f1_by_novelty`): ``pair`` holds a validation-only pair, ``form`` a validation-only
    part-fault form, ``opening`` opens with a validation-only opening; ``familiar_wording`` neither of the last two."""
    from glmlab import synth

    rows = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines()]
    return synth.f1_by_novelty(rows, [r["prediction"] for r in rows], "valid")


def choose(rows: list[dict], defaults: dict[str, float]) -> dict[str, Any]:
    """Per method and budget the best rate on validation; the best budget; see the module docstring."""
    f1: dict[tuple[str, int, float], list[float]] = {}
    for row in rows:
        f1.setdefault((row["variant"], row["epochs"], row["learning_rate"]), []).append(row["f1"])
    by_budget: dict[int, dict[str, dict[str, Any]]] = {}
    for (variant, epochs, rate), values in sorted(f1.items()):
        best = by_budget.setdefault(epochs, {}).get(variant)
        mean = statistics.fmean(values)
        better = best is None or mean > best["f1"] or (
            mean == best["f1"] and best["learning_rate"] != defaults[variant] and
            (rate == defaults[variant] or rate < best["learning_rate"]))
        if better:
            by_budget[epochs][variant] = {"learning_rate": rate, "f1": mean, "seeds": len(values)}
    variants = set.intersection(*(set(v) for v in by_budget.values())) if by_budget else set()
    score = {e: statistics.fmean(v[m]["f1"] for m in variants) for e, v in by_budget.items() if variants}
    epochs = max(sorted(score), key=lambda e: score[e]) if score else None
    # each method's own best budget and rate (a tie goes to the smaller budget): what a per-method budget would be
    by_method: dict[str, dict[str, Any]] = {}
    for budget in sorted(by_budget):
        for variant, pick in by_budget[budget].items():
            if variant not in by_method or pick["f1"] > by_method[variant]["f1"]:
                by_method[variant] = {"epochs": budget, **pick}
    return {"epochs": epochs, "mean_f1_by_epochs": score, "rates_by_epochs": by_budget,
            "rates": by_budget.get(epochs, {}) if epochs is not None else {}, "by_method": by_method}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", nargs="+", default=[f"{k}={','.join(map(str, v))}" for k, v in DEFAULT_GRID.items()],
                        help="LABEL=RATE,RATE,... per method (default: %(default)s)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[NOTEBOOK_EPOCHS], help="step budgets, in epochs of 125 steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234], help="the notebooks' seed by default")
    parser.add_argument("--max_steps", type=int, default=None, help="stop each run after this many steps (a smoke run)")
    parser.add_argument("--mode", default="glm", choices=["glm", "glm2", "glm3"], help="the notebooks' default: glm")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "sweep_valid"), help="where the runs train")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "sweep_valid.json"))
    args = parser.parse_args(argv)
    grid = parse_grid(args.grid)

    base = experiment.resolve_base(None, args.mode)
    train_path, valid_path = experiment.data_path("spo_train"), experiment.data_path("spo_valid")
    assert "test" not in valid_path.name  # settings are chosen on validation; the test split is never read
    from glmlab.loading import build_config

    config, _ = build_config(base, args.mode)
    methods = experiment.study_methods(config.num_layers)
    defaults = {label: experiment.default_learning_rate(methods[label]) for label in methods}
    data = {"train": file_digest(train_path), "valid": file_digest(valid_path)}
    weights = experiment.weights_digest(base)  # a rebuilt base is another base

    from bench_methods import earlier_runs, machine  # noqa: E402

    measured_on = machine()
    output = Path(args.output)
    earlier = earlier_runs(output, measured_on, "sweep_valid.py")
    stale = [r for r in earlier["runs"] if r.get("base_weights") != weights]
    if stale:
        print(f"{output}: dropping {len(stale)} row(s) measured on other weights of the {base.name} base "
              f"({', '.join(sorted({str(r.get('base_weights')) for r in stale}))}; now {weights})")
    done = {run_key(r): r for r in earlier["runs"] if r.get("base_weights") == weights}
    rows: list[dict] = []

    def save() -> None:
        chosen = choose(rows, defaults)
        record = {"command": " ".join(["python benchmarks/sweep_valid.py", *(argv if argv is not None else sys.argv[1:])]),
                  "mode": args.mode, "base": base.name, "base_weights": weights, "train": train_path.name, "scored_on": valid_path.name,
                  "data": data, "grid": grid, "epochs": args.epochs, "max_steps": args.max_steps, "seeds": args.seeds,
                  "machine": measured_on,  # LoRA's and P-tuning's figures differ between CPUs: compare sweeps of one machine
                  "chosen": chosen,
                  "current_defaults": {"learning_rates": {k: defaults[k] for k in grid}, "epochs": NOTEBOOK_EPOCHS},
                  # rows of earlier, wider sweeps are kept (and reused when asked for again)
                  "runs": rows + [r for k, r in done.items() if k not in {run_key(x) for x in rows}]}
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    for epochs in args.epochs:
        for seed in args.seeds:
            setup = experiment.Setup(model_dir=str(base), mode=args.mode, train_path=str(train_path),
                                     test_path=str(valid_path), output_dir=str(run_folder(args.runs_dir, args.mode, epochs, seed)),
                                     nproc=args.nproc, num_train_epochs=epochs, max_steps=args.max_steps, seed=seed)
            for label, rates in grid.items():
                for rate in rates:
                    flags = {**methods[label], "learning_rate": rate}
                    row = {"mode": args.mode, "base": base.name, "base_weights": weights, "data": data, "flags": methods[label],
                           "variant": label, "learning_rate": rate, "epochs": epochs, "max_steps": args.max_steps, "seed": seed}
                    run_dir = run_folder(args.runs_dir, args.mode, epochs, seed, label, rate)
                    if run_key(row) in done:
                        rows.append(done[run_key(row)])
                        if "f1_by_novelty" not in rows[-1] and (run_dir / "predictions.jsonl").is_file():
                            rows[-1]["f1_by_novelty"] = novelty_scores(run_dir / "predictions.jsonl")
                        print(f"{label} lr {rate:g}, {epochs} epochs, seed {seed}: reused, validation F1 {rows[-1]['f1']:.3f}")
                        continue
                    start = time.perf_counter()
                    result = experiment.run_method(run_dir.name, flags, setup)  # trains in run_dir
                    row.update(f1=result["f1"], sample_f1=result["sample_f1"], steps=result["steps"],
                               first_loss=result["first_loss"], final_loss=result["final_loss"],
                               wall_s=round(time.perf_counter() - start, 1),
                               f1_by_novelty=novelty_scores(result["predictions"]))
                    rows.append(row)
                    save()  # a finished run is kept even if a later one fails

    save()
    chosen = choose(rows, defaults)
    print(f"\nvalidation sweep ({valid_path.name}, {len(valid_path.read_text().splitlines())} records; "
          f"base {base.name}, seeds {args.seeds}):")
    kinds = ("pair", "form", "opening", "familiar_wording")
    print(f"{'method':<10} {'epochs':>6} {'rate':>8} {'valid F1':>9} {'final loss':>10}  "
          + "  ".join(f"{k} (n)" for k in kinds))
    for row in sorted(rows, key=lambda r: (r["variant"], r["epochs"], r["learning_rate"], r["seed"])):
        loss = "" if row["final_loss"] is None else f"{row['final_loss']:.3f}"
        by = row.get("f1_by_novelty", {})
        print(f"{row['variant']:<10} {row['epochs']:>6} {row['learning_rate']:>8g} {row['f1']:>9.3f} {loss:>10}  "
              + "  ".join(f"{by[k]['f1']:.3f} ({by[k]['n']})" if k in by else "-" for k in kinds))
    print(f"chosen budget: {chosen['epochs']} epochs (notebooks: {NOTEBOOK_EPOCHS})"
          + (f"; mean F1 by budget {chosen['mean_f1_by_epochs']}" if len(chosen["mean_f1_by_epochs"]) > 1 else ""))
    if len(chosen["mean_f1_by_epochs"]) > 1:
        for label, pick in chosen["by_method"].items():
            print(f"{label}'s own best budget: {pick['epochs']} epochs at {pick['learning_rate']:g} (validation F1 {pick['f1']:.3f})")
    for label, pick in chosen["rates"].items():
        same = "same as" if pick["learning_rate"] == defaults[label] else "DIFFERS from"
        print(f"chosen rate for {label}: {pick['learning_rate']:g} (validation F1 {pick['f1']:.3f}), "
              f"{same} the current default {defaults[label]:g}")
    print("wrote", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

``--decode`` also measures grounded *decoding* (``python -m glmlab.predict --grounded decode``,
:class:`glmlab.generation.GroundedDecoding`): where the model would write a word its record does not hold, it
writes its best choice among what the record says, rather than losing the triple. That generates: each run's last
checkpoint predicts its split again, greedy, one torch thread, the notebooks' prompt and answer lengths, into
``predictions_decode.jsonl`` beside the run's predictions (kept, and reused by a later call). As a check of the
decoding, an answer whose every token the model chose freely (its own text already grounded, :func:`glmlab.metrics.
grounded_end`) must come out unchanged, and the count is printed. The rule, fixed before any figure was seen:
decoding replaces the filter when its mean validation F1 over the sweep's settings (every method and setting, each
the mean of its seeds) is higher than the filter's; the test split is again scored for reporting only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_methods import stat  # noqa: E402
from glmlab import synth  # noqa: E402
from glmlab.metrics import grounded_end, grounded_triples, triple_f1  # noqa: E402

KINDS = ("form", "opening", "pair", "word")


def read_predictions(predictions: Path) -> list[dict]:
    if not predictions.is_file():
        raise SystemExit(f"grounded.py: {predictions}: no predictions there; give the runs folder its file names")
    return [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]


def decode(predictions: Path, rows: list[dict]) -> list[str]:
    """The answers of grounded decoding for the samples of a run's ``predictions`` file (its ``rows``), from the run's
    last checkpoint (its folder): read from ``predictions_decode.jsonl`` there when an earlier call wrote it for the
    same samples, else generated and written there."""
    from glmlab.checkpoint import latest_checkpoint
    from glmlab.json_files import write_jsonl
    from glmlab.notebooks import experiment

    samples = [{k: v for k, v in r.items() if k != "prediction"} for r in rows]
    out = predictions.with_name("predictions_decode.jsonl")
    if out.is_file():
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        if [{k: v for k, v in r.items() if k != "prediction"} for r in rows] == samples:
            return [r["prediction"] for r in rows]
    checkpoint = latest_checkpoint(predictions.parent)
    model, tokenizer, mode = experiment.load(checkpoint)
    setup = experiment.Setup.__dataclass_fields__
    answers, _ = experiment.evaluate(model, tokenizer, mode, samples, setup["max_src_len"].default,
                                     setup["max_new_tokens"].default, grounded_decoding=True)
    write_jsonl(out, [{**s, "prediction": a} for s, a in zip(samples, answers)])
    print(f"  decoded {len(samples)} samples with {checkpoint}", flush=True)
    return answers


def rescore(predictions: Path, split: str, recorded: float,
            decoder: Callable[[Path, list[dict]], list[str]] | None = None) -> dict:
    """Raw and grounded F1 (overall, precision, recall, per kind of novelty) of one run's saved predictions, and with
    ``decoder`` (:func:`decode`, called once the saved predictions are known to be the run's) those of grounded
    decoding, plus ``checks``: how many of the answers the model wrote grounded (``freely``) decoding left as they
    were (``unchanged``)."""
    rows = read_predictions(predictions)
    raw = [r["prediction"] for r in rows]
    refs = [r["output"] for r in rows]
    raw_f1 = triple_f1(raw, refs).f1
    if abs(raw_f1 - recorded) > 1e-9:
        raise SystemExit(f"grounded.py: {predictions}: its raw F1 {raw_f1:.6f} is not the {recorded:.6f} its file "
                         "recorded: predictions of another run")
    kept = [grounded_triples(p, r["input"]) for p, r in zip(raw, rows)]
    out = {}
    scored = [("raw", raw), ("grounded", kept)]
    if decoder is not None:
        decoded = decoder(predictions, rows)
        scored.append(("decode", [grounded_triples(p, r["input"]) for p, r in zip(decoded, rows)]))
        free = [i for i, (p, r) in enumerate(zip(raw, rows)) if grounded_end(p, r["input"])]
        out["checks"] = {"freely": len(free), "unchanged": sum(decoded[i] == raw[i] for i in free)}
    for name, preds in scored:
        scores = triple_f1(preds, refs)
        by_kind = synth.f1_by_novelty(rows, preds, split)
        out[name] = {"f1": scores.f1, "precision": scores.precision, "recall": scores.recall,
                     **{k: by_kind[k]["f1"] for k in KINDS if k in by_kind}}
    return out


def summarise(runs: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Mean ± std over seeds per setting (``keys``) of every raw and grounded figure."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    out = []
    for setting, items in groups.items():
        figures = {name: {k: stat([r[name][k] for r in items]) for k in items[0][name]}
                   for name in ("raw", "grounded", "decode") if name in items[0]}
        out.append({**dict(zip(keys, setting)), "seeds": sorted(r["seed"] for r in items), **figures})
    return out


DECODE_RULE = ("decoding replaces the filter when its mean validation F1 over the sweep's settings (each the mean of "
               "its seeds) is higher than the filter's")


def check_counts(runs: list[dict]) -> dict:
    """Over ``runs``: the answers the model wrote grounded, and how many of those decoding left unchanged."""
    return {k: sum(r["checks"][k] for r in runs) for k in ("freely", "unchanged")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="a benchmarks/sweep_valid.py output (validation)")
    parser.add_argument("--runs_dir", required=True, help="the --runs_dir that sweep trained in")
    parser.add_argument("--report", help="a benchmarks/report_chosen.py output (the test split, reported only)")
    parser.add_argument("--report_runs_dir", help="the --runs_dir that report trained in")
    parser.add_argument("--decode", action="store_true",
                        help="also generate every run's predictions with grounded decoding (minutes) and score them")
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

    if args.decode:
        import torch

        torch.set_num_threads(1)  # as the notebooks predict

    def scores(predictions: Path, split: str, recorded: float) -> dict:
        return rescore(predictions, split, recorded, decode if args.decode else None)

    valid_runs = []
    for row in sweep["runs"]:
        if row.get("max_steps") is not None:
            continue
        folder = sweep_folder(args.runs_dir, row["mode"], row["epochs"], row["seed"], row["variant"], row["learning_rate"])
        valid_runs.append({"method": row["variant"], "epochs": row["epochs"], "learning_rate": row["learning_rate"],
                           "seed": row["seed"], **scores(folder / "predictions.jsonl", "valid", row["f1"])})
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
    decoding = None
    if args.decode:
        means = {name: sum(s[name]["f1"]["mean"] for s in valid) / len(valid) for name in ("grounded", "decode")}
        decoding = {"chosen_on_validation": means["decode"] > means["grounded"], "rule": DECODE_RULE,
                    "valid_mean_f1": means, "checks": check_counts(valid_runs)}
        print("validation, grounded by the filter -> by decoding:")
        for s in valid:
            print(f"  {s['method']:<11} {s['epochs']} epochs lr {s['learning_rate']:<6g} {s['grounded']['f1']['mean']:.3f} -> "
                  f"{s['decode']['f1']['mean']:.3f} (precision {s['grounded']['precision']['mean']:.3f} -> "
                  f"{s['decode']['precision']['mean']:.3f}, recall {s['grounded']['recall']['mean']:.3f} -> "
                  f"{s['decode']['recall']['mean']:.3f})")
        print(f"mean over the {len(valid)} settings: filter {means['grounded']:.4f}, decoding {means['decode']:.4f}: "
              f"{'decoding' if decoding['chosen_on_validation'] else 'the filter'} is chosen; decoding left "
              f"{decoding['checks']['unchanged']} of the {decoding['checks']['freely']} answers the model wrote "
              "grounded as they were")

    test, test_runs = [], []
    if report is not None:
        for row in report["runs"]:
            folder = report_folder(args.report_runs_dir, row["method"], row["learning_rate"], row["epochs"], row["seed"])
            test_runs.append({"method": row["method"], "setting": row["setting"], "epochs": row["epochs"],
                              "learning_rate": row["learning_rate"], "seed": row["seed"],
                              **scores(folder / row["method"] / "predictions.jsonl", "test", row["f1"])})
        test = summarise(test_runs, ("method", "setting", "epochs", "learning_rate"))
        names = ("raw", "grounded", "decode") if args.decode else ("raw", "grounded")
        print(f"\ntest ({report['scored_on']}, reported only; {len(test_runs)} runs of {Path(args.report).name}): "
              + " -> ".join(names))
        for s in test:
            print(f"  {s['method']:<11} {s['setting']:<18} {s['epochs']} epochs: F1 "
                  + " -> ".join(f"{s[n]['f1']['mean']:.3f}" for n in names) + "; unseen form "
                  + " -> ".join(f"{s[n]['form']['mean']:.3f}" for n in names))
        if decoding is not None:
            decoding["test_checks"] = check_counts(test_runs)
    if args.json:
        record = {"command": " ".join(["python benchmarks/grounded.py", *(argv if argv is not None else sys.argv[1:])]),
                  "sweep": Path(args.sweep).name, "report": Path(args.report).name if args.report else None,
                  "machine": sweep.get("machine"), "chosen_on_validation": chosen,
                  "rule": "grounding is chosen when it raises the mean validation F1 of every method at every setting swept",
                  **({"decoding": decoding} if decoding is not None else {}), "valid": valid, "test": test, "valid_runs": valid_runs, "test_runs": test_runs}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

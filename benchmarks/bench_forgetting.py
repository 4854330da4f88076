"""Forgetting, prevented: replay shares of the general corpus for Freeze, LoRA and full fine-tuning, several seeds.

    python benchmarks/bench_forgetting.py                     # shares 0 5 10 25 %, freeze lora full, seeds 1 2 3
    python benchmarks/bench_forgetting.py --methods lora --shares 0 0.1 --seeds 1   # a subset

Each run fine-tunes the small pretrained base (``--mode``, default the ChatGLM-6B one) on the
synthetic triple-extraction set plus a share of the general corpus it was pretrained on
(``--train_path spo_train.jsonl,general_train.jsonl#N``, :mod:`glmlab.notebooks.replay`: the share of each
epoch's samples that are general), with the notebooks' flags and step budget (3 epochs of the
task), then scores held-out triple F1 and the general skills on the held-out probes (exact match,
the probes held out of the corpus: checked before anything trains). ``full`` is 06's ``zero3`` run
(every parameter, ZeRO-3). A finished run's row is kept in ``OUTPUT/seed-S/LABEL/row.json`` and
reused, so an interrupted benchmark continues where it stopped: only for the same base weights (their
digest is in the row, and in bench_methods' ``bench_key.json`` beside the 06 runs ``--reuse`` takes), so that a rebuilt base trains again.

Writes ``OUTPUT/summary.json`` (every row, mean ± std per method and share) and ``summary.md``, and
prints the table plus, per method, the best share against the issue's target (means over seeds,
:func:`glmlab.notebooks.replay.replay_verdict`): general skills kept >= 0.8 overall with held-out F1 within
0.05 of the same method without replay.
A benchmark, not a test: each run takes the notebooks' time per run (minutes on a CPU).

Measured: ``python benchmarks/bench_forgetting.py --reuse runs/bench_methods --json benchmarks/results/forgetting.json``
after ``python benchmarks/bench_methods.py --replay_shares 0.05 0.1 0.25`` (seeds 1-3, the first machine); its table
is notebooks/README.md's "Replay, over three seeds", checked cell by cell against the file by
``tests/test_published_tables.py``. Every method meets the target at 25%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_methods' key file, however this file is loaded

from bench_methods import KEY_FILE, machine, same_machine  # noqa: E402

from glmlab.notebooks.replay import REPLAYED as METHODS  # noqa: E402  (label -> 06's run of it without replay)
from glmlab.notebooks.replay import replay_label as label  # noqa: E402  (06's name of a run: freeze-replay25)


def run_one(method: str, share: float, seed: int, args: argparse.Namespace, paths: dict, probes: list[dict]) -> dict:
    """One replay run (or its stored row); the row of :func:`glmlab.notebooks.experiment.run_method` plus the share."""
    from glmlab.notebooks import experiment
    from glmlab.loading import build_config
    from glmlab.notebooks.replay import replay_spec

    out = Path(args.output_dir) / f"seed-{seed}"
    stored = out / label(method, share) / "row.json"
    if stored.is_file():
        row = json.loads(stored.read_text(encoding="utf-8"))
        if row.get("base_weights") == args.base_weights:
            return row
        print(f"{stored}: measured on other base weights ({row.get('base_weights')}; now {args.base_weights}): trained again")
    reused = reused_row(method, share, seed, args)
    if reused is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(reused, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        return reused
    model_dir = experiment.resolve_base(None, args.mode)
    config, mode = build_config(model_dir, args.mode)
    setup = experiment.Setup(model_dir=str(model_dir), mode=mode, train_path=replay_spec(paths["spo_train"], share),
                             test_path=str(paths["spo_test"]), output_dir=str(out), nproc=args.nproc, seed=seed,
                             num_train_epochs=args.num_train_epochs, max_steps=args.max_steps)
    flags = experiment.study_methods(config.num_layers)[METHODS[method]]
    row = experiment.run_method(label(method, share), flags, setup, probes)
    row.update(share=share, seed=seed, train_path=setup.train_path, bench_method=method, base_weights=args.base_weights)
    stored.write_text(json.dumps(row, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return row


def reused_row(method: str, share: float, seed: int, args: argparse.Namespace) -> dict | None:
    """The same run made by ``benchmarks/bench_methods.py`` (``--reuse`` its output folder), or None.

    bench_methods runs 06 for each seed, and 06 trains Freeze, LoRA and full fine-tuning without replay (its
    ``freeze``, ``lora`` and ``zero3`` runs, with the general probes scored after) and with each of its
    ``replay_shares`` (:data:`METHODS`, 06's ``replay_methods`` by default): the runs of this
    benchmark, with the same flags, data and seed. A run is taken only when the seed and the generation match and
    this benchmark runs 06's defaults (3 epochs, no --max_steps, 2 processes), on the same base weights and machine."""
    if not args.reuse or (args.num_train_epochs, args.max_steps, args.nproc) != (3, None, 2):
        return None
    path = Path(args.reuse) / f"seed-{seed}" / "comparison.json"
    if not path.is_file():
        return None
    comparison = json.loads(path.read_text(encoding="utf-8"))
    key = path.with_name(KEY_FILE)  # bench_methods' record of what the seed ran on: the base's weights, the machine
    stored = json.loads(key.read_text(encoding="utf-8"))["key"] if key.is_file() else {}
    if (comparison.get("seed"), comparison.get("mode"), stored.get("base_weights")) != (seed, args.mode, args.base_weights):
        return None
    if not same_machine(stored.get("machine"), args.machine):  # figures differ by CPU: this file records one machine
        return None
    if share == 0:
        found = next((r for r in comparison["runs"] if r["variant"] == METHODS[method]), None)
        skills = found["forgetting"]["after"] if found else None
    else:
        found = next((r for r in comparison.get("replay", []) if r.get("replay_of") == method
                      and abs(r.get("share", -1) - share) < 1e-9), None)
        skills = found["skills"] if found else None
    if found is None:
        return None
    return {**found, "skills": skills, "share": share, "seed": seed, "bench_method": method, "base_weights": args.base_weights,
            "train_path": found.get("train_path"), "reused_from": str(path)}


def summarise(rows: list[dict]) -> dict[str, dict]:
    """``label -> {method, share, f1, form, skills}`` over seeds, each ``{mean, std, n}``: triple F1, the F1 on the
    test records said in forms training never used, and the general skills kept overall."""
    out: dict[str, dict] = {}
    for row in rows:
        key = label(row["bench_method"], row["share"])
        entry = out.setdefault(key, {"method": row["bench_method"], "share": row["share"], "f1": [], "form": [], "skills": []})
        entry["f1"].append(row["f1"])
        entry["form"].append(row["f1_by_novelty"]["form"]["f1"])
        entry["skills"].append(row["skills"]["overall"])
    for entry in out.values():
        for metric in ("f1", "form", "skills"):
            values = entry[metric]
            entry[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                             "n": len(values)}
    return out


def verdicts(summary: dict[str, dict]) -> list[str]:
    """Per method: what replay bought, on the means over seeds (:func:`glmlab.notebooks.replay.replay_verdict`)."""
    from glmlab.notebooks.replay import replay_verdict

    methods = sorted({e["method"] for e in summary.values()})
    return [replay_verdict(method, [{"share": e["share"], "f1": e["f1"]["mean"], "skills": e["skills"]["mean"]}
                                    for e in summary.values() if e["method"] == method]) for method in methods]


def markdown(summary: dict[str, dict], base: dict) -> str:
    lines = ["| run | replay share | triple F1 | unseen form | general skills kept |", "|---|---|---|---|---|",
             f"| base | - | {base['f1']:.3f} | {base['f1_by_novelty']['form']['f1']:.3f} | {base['skills']['overall']:.3f} |"]
    for key, e in summary.items():
        lines.append(f"| {key} | {100 * e['share']:.0f}% | " + " | ".join(
            f"{e[m]['mean']:.3f} ± {e[m]['std']:.3f}" for m in ("f1", "form", "skills")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--mode", default="glm", choices=["glm", "glm2", "glm3"], help="the notebooks' default: glm")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--num_train_epochs", type=int, default=3, help="passes over the task file (the notebooks': 3)")
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "bench_forgetting"))
    parser.add_argument("--reuse", default=None, metavar="DIR",
                        help="bench_methods.py's output folder: take the runs it made (06's lora, zero3 and replay runs)")
    parser.add_argument("--json", default=None, help="also write the summary here (e.g. benchmarks/results/forgetting.json)")
    args = parser.parse_args(argv)

    from glmlab.notebooks import experiment
    from glmlab.notebooks.replay import check_held_out

    paths = {name: experiment.data_path(name) for name in ("spo_train", "spo_test", "general_train")}
    probes = experiment.general_probes()
    compared = check_held_out(paths["general_train"], probes)  # before anything trains
    print(f"{len(probes)} probes, none of them among the {compared} general samples replayed", flush=True)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    base_model = experiment.resolve_base(None, args.mode)
    args.base_weights = experiment.weights_digest(base_model)
    args.machine = machine()  # where the figures are measured (a reused run must have been measured there too)
    base = experiment.base_row(experiment.Setup(model_dir=str(base_model), mode=args.mode,
                                                train_path=str(paths["spo_train"]), test_path=str(paths["spo_test"]),
                                                output_dir=args.output_dir), probes)
    rows, start = [], time.perf_counter()
    for seed in args.seeds:
        for method in args.methods:
            for share in args.shares:
                rows.append(run_one(method, share, seed, args, paths, probes))
    summary = summarise(rows)
    table = markdown(summary, base)
    lines = verdicts(summary)
    record = {"command": " ".join(["python benchmarks/bench_forgetting.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": args.machine, "methods": args.methods, "shares": args.shares, "seeds": args.seeds, "mode": args.mode,
              "base_weights": args.base_weights,
              "base": {"f1": base["f1"], "f1_by_novelty": base["f1_by_novelty"], "skills": base["skills"]},
              "summary": summary, "verdicts": lines,
              "rows": [{k: r.get(k) for k in ("bench_method", "share", "seed", "variant", "train_path", "steps", "f1",
                                              "f1_by_novelty", "skills", "trainable_params", "wall_s", "first_loss",
                                              "final_loss", "reused_from")} for r in rows],
              "wall_s": time.perf_counter() - start}
    out = Path(args.output_dir)
    for target in filter(None, [out / "summary.json", args.json]):
        Path(target).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(table + "\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print(table)
    print(*lines, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

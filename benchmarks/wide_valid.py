"""Does a wider validation split rank a sweep's settings as ``spo_valid.jsonl`` does? A diagnostic, on validation only.

    python benchmarks/wide_valid.py --runs_dir runs/sweep_budget --methods lora --json benchmarks/results/wide_valid.json

``spo_valid.jsonl`` is 60 records with two validation-only part-fault forms and three openings (16-18 records per
form, 7-9 per opening), where the test split has 250 records, five forms and four openings of its own. Whether a
setting generalises to unseen wording can depend on which few forms were held out. This builds a split the way
:func:`glmlab.synth.spo_data` builds the test split (250 records, 40% of part-fault clauses in a held-out form, a
third opening with a held-out opening, validation's own pairs) but with five forms and four openings that no file
of :mod:`glmlab.synth` uses -- not training, validation, test or the general corpus (checked before anything is
scored) -- and scores on it every finished run that ``benchmarks/sweep_valid.py`` left under ``--runs_dir``
(``MODE-eE-sSEED/LABEL-lrRATE``, its last checkpoint): it trains nothing. Printed per (method, budget, rate): mean ±
std over seeds of F1 overall, on the held-out forms and on the held-out openings. The test split is never read
except to check that its text holds none of the new forms and openings.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_methods import machine, stat  # noqa: E402
from glmlab import synth  # noqa: E402

FORMS = ("{part}测出{fault}", "{part}判定为{fault}", "{part}依然{fault}", "{part}有了{fault}的状况", "{part}再次{fault}")
OPENINGS = ("检测结果：", "技师检查：", "交车前", "用户描述：")


def check_new(texts: list[str]) -> None:
    """Every form marker and opening here occurs in none of ``texts`` (the synth files); one line if one does."""
    for word in [synth._form_marker(f) for f in FORMS] + list(OPENINGS):
        holder = next((i for i, text in enumerate(texts) if word in text), None)
        if holder is not None:
            raise SystemExit(f"wide_valid.py: {word!r} already occurs in a glmlab.synth file ({holder}): not held out")


def records(seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """The wide split: test-split recipe, validation's pairs, this file's forms and openings; ``kinds`` per record."""
    train_pairs, _, train_perf, _ = synth.spo_split(seed)
    extra_pairs, extra_perf = synth.valid_pairs()
    new_pairs = synth._new_pairs("valid", seed)
    rng = random.Random(seed + 11)
    out, seen = [], set(exclude)
    while len(out) < synth.Sizes().n_spo_test:  # the test split's size
        openings = OPENINGS if rng.random() < synth.TEST_OPENING_SHARE else synth.OPENINGS
        record = synth._spo_record(rng, train_pairs + extra_pairs, train_perf + extra_perf, held_template=synth.TEST_FORM_SHARE,
                                   held_form=rng.choice(FORMS), openings=openings)
        kinds = [kind for kind, holds in (
            ("pair", any(t in new_pairs for t in record["output"].split("\n") if t)),
            ("form", any(synth._form_marker(f) in record["input"] for f in FORMS)),
            ("opening", record["input"].startswith(OPENINGS))) if holds]
        if kinds and record["input"] not in seen:
            seen.add(record["input"])
            out.append({**record, "kinds": kinds})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs_dir", required=True, help="a benchmarks/sweep_valid.py --runs_dir")
    parser.add_argument("--methods", nargs="+", default=None, help="only these labels' runs (default: every run)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    runs = sorted(p for p in Path(args.runs_dir).glob("*-e*-s*/*-lr*")
                  if p.is_dir() and (args.methods is None or p.name.rsplit("-lr", 1)[0] in args.methods))
    if not runs:
        raise SystemExit(f"wide_valid.py: --runs_dir {args.runs_dir}: no sweep_valid.py runs (MODE-eE-sSEED/LABEL-lrRATE) there")

    import torch

    from glmlab.checkpoint import latest_checkpoint
    from glmlab.metrics import triple_f1
    from glmlab.notebooks import experiment

    torch.set_num_threads(1)
    files = {name: experiment.data_path(name).read_text(encoding="utf-8")
             for name in ("spo_train", "spo_valid", "spo_test", "general_train", "general_probe")}
    check_new(list(files.values()))
    inputs = {json.loads(line)["input"] for name in ("spo_train", "spo_valid", "spo_test") for line in files[name].splitlines()}
    split = records(exclude=inputs)
    counts = {kind: sum(kind in r["kinds"] for r in split) for kind in ("pair", "form", "opening")}
    print(f"wide validation split: {len(split)} records; held-out pair {counts['pair']}, form {counts['form']}, "
          f"opening {counts['opening']}", flush=True)
    scores: dict[tuple, list[dict]] = {}
    for run in runs:
        match = re.fullmatch(r"(glm\d?)-e(\d+)-s(\d+)", run.parent.name)
        label, rate = run.name.rsplit("-lr", 1)
        model, tokenizer, mode = experiment.load(latest_checkpoint(run))
        predictions, overall = experiment.evaluate(model, tokenizer, mode, split, experiment.Setup.max_src_len,
                                                   experiment.Setup.max_new_tokens)  # as the sweep scored validation

        def f1(kind: str) -> float:
            index = [i for i, r in enumerate(split) if kind in r["kinds"]]
            return triple_f1([predictions[i] for i in index], [split[i]["output"] for i in index]).f1

        row = {"f1": overall["f1"], "form": f1("form"), "opening": f1("opening"), "seed": int(match.group(3))}
        scores.setdefault((match.group(1), label, int(match.group(2)), float(rate)), []).append(row)
        print(f"{label} {match.group(2)} epochs lr {rate} seed {match.group(3)}: F1 {row['f1']:.3f}, form {row['form']:.3f}, "
              f"opening {row['opening']:.3f}", flush=True)
    summary = [{"mode": mode, "method": label, "epochs": epochs, "learning_rate": rate,
                "seeds": sorted(r["seed"] for r in rows), **{k: stat([r[k] for r in rows]) for k in ("f1", "form", "opening")}}
               for (mode, label, epochs, rate), rows in sorted(scores.items())]
    print(f"\n{'method':<11} {'epochs':>6} {'rate':>7} {'seeds':>5} {'F1':>14} {'held-out form':>14} {'held-out opening':>17}")
    for s in summary:
        print(f"{s['method']:<11} {s['epochs']:>6} {s['learning_rate']:>7g} {len(s['seeds']):>5} "
              + " ".join(f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}".rjust(w) for k, w in (("f1", 14), ("form", 14), ("opening", 17))))
    if args.json:
        record = {"command": " ".join(["python benchmarks/wide_valid.py", *(argv if argv is not None else sys.argv[1:])]),
                  "forms": FORMS, "openings": OPENINGS, "records": len(split), "held_out": counts, "machine": machine(),
                  "base_weights": experiment.weights_digest(experiment.resolve_base(None, summary[0]["mode"])),
                  "summary": summary}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

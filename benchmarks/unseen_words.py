"""Where the test split's misses are: triples whose fault or problem word no training record ever outputs.

    python benchmarks/unseen_words.py                          # the runs of python benchmarks/bench_methods.py
    python benchmarks/unseen_words.py --runs_dir runs/bench_methods --json benchmarks/results/unseen_words.json

The test split's own (part, fault) and (item, problem) pairs (:func:`glmlab.synth.spo_split`) are a fifth of the
world's pairs, drawn at random; for ten of them the fault or problem word belongs to no training pair (a word only
one part or item can have, such as 离合器's 分离不彻底 or 制动's 发软). A model extracting such a triple must copy a span it
has never produced, not recall one: a different skill from reading an unseen sentence form. For every predictions
file under ``--runs_dir`` (``seed-S/NOTEBOOK/VARIANT/predictions.jsonl`` and the replay runs) this prints the
recall of test triples whose tail is a training output against those whose tail never is, and triple F1 on the
records in test-only forms with and without such a word. The recall of the untrained words' triples is also split
by whether the base has read the word (``read``: it occurs in the general corpus the bases were pretrained on; four
of the ten, the performance problems, occur in no corpus file). ``--pattern`` reads another layout, such as the
test report's runs (``--runs_dir runs/report_chosen --pattern '*-e3-s*/*/predictions.jsonl'``: the notebooks'
3-epoch settings, each folder one seed; ``predictions*.jsonl`` adds the answers ``benchmarks/grounded.py --decode``
kept beside them, as ``lora (predictions_decode)`` and so on). A benchmark of finished runs: it trains nothing and
takes seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder


def tails(samples: list[dict]) -> Counter:
    """How often each tail (the triple's last field) is a training output."""
    return Counter(t.split("_")[2] for s in samples for t in s["output"].split("\n") if t)


def analyse(rows: list[dict], trained: Counter, read: frozenset[str] | set[str] = frozenset()) -> dict[str, float | int]:
    """Recall by whether a triple's tail was ever trained on (and, for the untrained, whether it is in ``read``, the
    words the base's corpus holds); form-record F1 with and without such a triple."""
    from glmlab import synth
    from glmlab.metrics import parse_triples, triple_f1

    hit = {True: [0, 0], False: [0, 0]}
    untrained = {True: [0, 0], False: [0, 0]}  # read by the base or not
    for row in rows:
        predicted = set(parse_triples(row["prediction"]))
        for triple in filter(None, row["output"].split("\n")):
            tail = triple.split("_")[2]
            counts = hit[trained[tail] > 0]
            counts[0] += triple in predicted
            counts[1] += 1
            if not trained[tail]:
                untrained[tail in read][0] += triple in predicted
                untrained[tail in read][1] += 1

    def new_word(row: dict) -> bool:  # a test-only pair whose word no training pair has (tests/test_synth.py: the same)
        return "word" in synth.novelty(row)

    def f1(subset: list[dict]) -> float | None:
        return triple_f1([r["prediction"] for r in subset], [r["output"] for r in subset]).f1 if subset else None

    forms = [r for r in rows if "form" in synth.novelty(r)]
    known = [r for r in rows if not new_word(r)]
    return {"recall_trained_tail": hit[True][0] / hit[True][1], "n_trained_tail": hit[True][1],
            "recall_untrained_tail": hit[False][0] / hit[False][1] if hit[False][1] else None,
            "n_untrained_tail": hit[False][1],
            **{f"recall_untrained_{name}": counts[0] / counts[1] if counts[1] else None
               for name, counts in (("read", untrained[True]), ("unread", untrained[False]))},
            "n_untrained_read": untrained[True][1], "n_untrained_unread": untrained[False][1],
            "f1": f1(rows), "f1_form": f1(forms), "f1_form_without_untrained_tail": f1([r for r in forms if not new_word(r)]),
            "n_form_without_untrained_tail": len([r for r in forms if not new_word(r)]),
            "f1_without_untrained_tail": f1(known), "n_without_untrained_tail": len(known)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "bench_methods"))
    parser.add_argument("--pattern", default="seed-*/**/predictions.jsonl",
                        help="the predictions files under --runs_dir (the first folder names the seed)")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args(argv)

    from glmlab import synth
    from glmlab.data import read_samples
    from glmlab.notebooks import experiment

    trained = tails(read_samples(experiment.data_path("spo_train"), references=True))
    test_words = sorted({w for p, f in synth.spo_split()[1] for w in [f] if not trained[w]}
                        | {b for _, b in synth.spo_split()[3] if not trained[b]})
    corpus = experiment.data_path("general_train").read_text(encoding="utf-8")
    read = {w for w in test_words if w in corpus}
    print(f"test-only words no training record outputs ({len(test_words)}): {' '.join(test_words)}; "
          f"in no corpus file: {' '.join(w for w in test_words if w not in read)}")
    per_run: dict[str, list[dict]] = {}
    for path in sorted(Path(args.runs_dir).glob(args.pattern)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if not rows or not isinstance(rows[0]["output"], str):
            continue  # doc-to-question: a list of reference questions
        seed = path.relative_to(args.runs_dir).parts[0]
        label = path.parent.name + ("" if path.stem == "predictions" else f" ({path.stem})")  # grounded.py's decoding
        per_run.setdefault(label, []).append({"seed": seed, **analyse(rows, trained, read)})
    if not per_run:
        raise SystemExit(f"unseen_words.py: --runs_dir {args.runs_dir} --pattern {args.pattern!r}: no triple-extraction "
                         "predictions file matches")
    summary = {}
    keys = ("f1", "f1_form", "f1_form_without_untrained_tail", "recall_trained_tail", "recall_untrained_tail",
            "recall_untrained_read", "recall_untrained_unread")
    print(f"{'run':<32} {'seeds':>5}  " + "  ".join(f"{k:>30}" for k in keys))
    for run, results in per_run.items():
        summary[run] = {k: statistics.fmean(r[k] for r in results if r[k] is not None) for k in keys}
        summary[run]["seeds"] = len(results)
        print(f"{run:<32} {len(results):>5}  " + "  ".join(f"{summary[run][k]:>30.3f}" for k in keys))
    if args.json:
        record = {"command": " ".join(["python benchmarks/unseen_words.py", *(argv if argv is not None else sys.argv[1:])]),
                  "untrained_test_words": test_words, "unread_test_words": sorted(set(test_words) - read),
                  "summary": summary, "per_run": per_run}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

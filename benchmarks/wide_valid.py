"""Does a wider validation split rank a sweep's settings as ``spo_valid.jsonl`` does? A diagnostic, on validation only.

    python benchmarks/wide_valid.py --sweep benchmarks/results/sweep_budget.json --runs_dir runs/sweep_budget --json benchmarks/results/wide_valid.json

``spo_valid.jsonl`` is 60 records with two validation-only part-fault forms and three openings (16-18 records per
form, 7-9 per opening), where the test split has 250 records, five forms and four openings of its own. Whether a
setting generalises to unseen wording can depend on which few forms were held out. This builds a split the way
:func:`glmlab.synth.spo_data` builds the test split (250 records, 40% of part-fault clauses in a held-out form, a
third opening with a held-out opening, validation's own pairs) but with five forms and four openings that no file
of :mod:`glmlab.synth` uses -- not training, validation, test or the general corpus (checked before anything is
scored) -- and scores on it every run of a ``benchmarks/sweep_valid.py`` output (``--sweep``; each run's last
checkpoint, in the folder ``sweep_valid.run_folder`` names under the sweep's ``--runs_dir``): it trains nothing.
Printed per (method, budget, rate): mean ± std over seeds of F1 overall, on the held-out forms and on the held-out
openings, beside the same runs' figure on the 60 records; then what the sweep's own rule (``sweep_valid.choose``)
chooses on this split, beside what it chose on the 60 records. Resumable: runs already in ``--json`` (the same
split, machine and base weights) are kept. The test split is never read except to check that its text holds none
of the new forms and openings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_methods import machine, same_machine, stat  # noqa: E402
from glmlab import synth  # noqa: E402

FORMS = ("{part}测出{fault}", "{part}判定为{fault}", "{part}依然{fault}", "{part}有了{fault}的状况", "{part}再次{fault}")
OPENINGS = ("检测结果：", "技师检查：", "交车前", "用户描述：")


def check_new(texts: list[str]) -> None:
    """Every form marker and opening here occurs in none of ``texts`` (the synth files); one line if one does."""
    for word in [synth._form_marker(f) for f in FORMS] + list(OPENINGS):
        holder = next((i for i, text in enumerate(texts) if word in text), None)
        if holder is not None:
            raise SystemExit(f"wide_valid.py: {word!r} already occurs in a glmlab.synth file ({holder}): not held out")


def synth_inputs() -> set[str]:
    """The inputs of glmlab.synth's triple-extraction files, after checking that no synth file holds this file's forms
    and openings (:func:`check_new`): what the wide split leaves out."""
    from glmlab.notebooks import experiment

    files = {name: experiment.data_path(name).read_text(encoding="utf-8")
             for name in ("spo_train", "spo_valid", "spo_test", "general_train", "general_probe")}
    check_new(list(files.values()))
    return {json.loads(line)["input"] for name in ("spo_train", "spo_valid", "spo_test") for line in files[name].splitlines()}


def records(seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """The wide split: test-split recipe, validation's pairs, this file's forms and openings; ``kinds`` per record."""
    train_pairs, _, train_perf, _ = synth.spo_split(seed)
    extra_pairs, extra_perf = synth.valid_pairs()
    rng = random.Random(seed + 11)
    out, seen = [], set(exclude)
    while len(out) < synth.Sizes().n_spo_test:  # the test split's size
        openings = OPENINGS if rng.random() < synth.TEST_OPENING_SHARE else synth.OPENINGS
        record = synth._spo_record(rng, train_pairs + extra_pairs, train_perf + extra_perf, held_template=synth.TEST_FORM_SHARE,
                                   held_form=rng.choice(FORMS), openings=openings)
        held = synth.novelty(record, "valid", seed, forms=FORMS, openings=OPENINGS)
        kinds = [kind for kind in ("pair", "form", "opening") if kind in held]
        if kinds and record["input"] not in seen:
            seen.add(record["input"])
            out.append({**record, "kinds": kinds})
    return out


def sweep_runs(sweep_path: str | Path, runs_dir: str | Path, methods: list[str] | None) -> tuple[dict, list[tuple[dict, Path]]]:
    """The sweep's record and each of its full-budget rows (of ``methods``) with the folder it trained in; one line,
    naming the file, flag or folder, when the file is not a sweep, a method is not in it or a run folder is missing."""
    from sweep_valid import read_sweep, run_folder

    path = Path(sweep_path)
    sweep = read_sweep(path, "wide_valid.py")
    labels = sorted({row["variant"] for row in sweep["runs"]})
    unknown = sorted(set(methods or ()) - set(labels))
    if unknown:
        raise SystemExit(f"wide_valid.py: --methods {' '.join(unknown)}: not in {path} (it has {', '.join(labels)})")
    rows = [row for row in sweep["runs"] if row.get("max_steps") is None and (methods is None or row["variant"] in methods)]
    runs = [(row, run_folder(runs_dir, row["mode"], row["epochs"], row["seed"], row["variant"], row["learning_rate"]))
            for row in rows]
    missing = [folder for _, folder in runs if not folder.is_dir()]
    if missing:
        raise SystemExit(f"wide_valid.py: --runs_dir {runs_dir}: {len(missing)} of {path}'s {len(runs)} runs are not there "
                         f"(first: {missing[0]}); give the --runs_dir that sweep trained in")
    return sweep, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="a benchmarks/sweep_valid.py output: the runs to score")
    parser.add_argument("--runs_dir", required=True, help="the --runs_dir that sweep trained in")
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods' runs (default: every run)")
    parser.add_argument("--json", default=None, help="write the figures here (resumable: runs already in it are kept)")
    args = parser.parse_args(argv)
    sweep, runs = sweep_runs(args.sweep, args.runs_dir, args.methods)

    import torch

    from glmlab.checkpoint import latest_checkpoint
    from glmlab.metrics import triple_f1
    from glmlab.notebooks import experiment
    from sweep_valid import choose

    weights = experiment.weights_digest(experiment.resolve_base(None, sweep["mode"]))
    if sweep.get("base_weights") != weights:
        raise SystemExit(f"wide_valid.py: --sweep {args.sweep}: its runs were trained on other weights of the "
                         f"{sweep['mode']} base ({sweep.get('base_weights')}; installed now: {weights})")
    measured_on = machine()
    torch.set_num_threads(1)
    split = records(exclude=synth_inputs())
    counts = {kind: sum(kind in r["kinds"] for r in split) for kind in ("pair", "form", "opening")}
    print(f"wide validation split: {len(split)} records; held-out pair {counts['pair']}, form {counts['form']}, "
          f"opening {counts['opening']}; {len(runs)} runs of {args.sweep}", flush=True)
    identity = {"forms": list(FORMS), "openings": list(OPENINGS), "records": len(split), "held_out": counts,
                "machine": measured_on, "base_weights": weights}

    def key(row: dict) -> tuple:
        return row["method"], row["epochs"], row["learning_rate"], row["seed"]

    output = Path(args.json) if args.json else None
    earlier = json.loads(output.read_text(encoding="utf-8")) if output and output.is_file() else {}
    same = same_machine(earlier.get("machine"), measured_on) and all(
        earlier.get(k) == v for k, v in identity.items() if k != "machine")  # the same split, machine and base only
    done = {key(r): r for r in earlier.get("runs", [])} if same else {}
    scored: list[dict] = []

    def save() -> tuple[list[dict], dict]:
        summary = summarise(scored)
        # the sweep's rule on the rows its own choice was made from (its last command's budgets and methods)
        chosen = choose([{"variant": r["method"], "epochs": r["epochs"], "learning_rate": r["learning_rate"], "f1": r["f1"]}
                         for r in scored if r["epochs"] in sweep["epochs"] and r["method"] in sweep["grid"]],
                        sweep["current_defaults"]["learning_rates"])
        if output:
            record = {"command": " ".join(["python benchmarks/wide_valid.py", *(argv if argv is not None else sys.argv[1:])]),
                      **identity, "sweep": Path(args.sweep).name, "sweep_chosen": sweep["chosen"], "chosen": chosen,
                      "summary": summary, "runs": scored}
            output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return summary, chosen

    for sweep_row, folder in runs:
        item = {"method": sweep_row["variant"], "epochs": sweep_row["epochs"], "learning_rate": sweep_row["learning_rate"],
                "seed": sweep_row["seed"]}
        if key(item) in done:
            scored.append(done[key(item)])
            continue
        model, tokenizer, mode = experiment.load(latest_checkpoint(folder))
        predictions, overall = experiment.evaluate(model, tokenizer, mode, split, experiment.Setup.max_src_len,
                                                   experiment.Setup.max_new_tokens)  # as the sweep scored validation

        def f1(kind: str) -> float:
            index = [i for i, r in enumerate(split) if kind in r["kinds"]]
            return triple_f1([predictions[i] for i in index], [split[i]["output"] for i in index]).f1

        item.update(f1=overall["f1"], form=f1("form"), opening=f1("opening"), valid_f1=sweep_row["f1"])
        scored.append(item)
        save()  # a scored run is kept if a later one fails
        print(f"{item['method']} {item['epochs']} epochs lr {item['learning_rate']:g} seed {item['seed']}: F1 {item['f1']:.3f}, "
              f"form {item['form']:.3f}, opening {item['opening']:.3f} (60-record validation {item['valid_f1']:.3f})", flush=True)
    summary, chosen = save()
    print(f"\n{'method':<11} {'epochs':>6} {'rate':>7} {'seeds':>5} {'F1':>14} {'held-out form':>14} {'held-out opening':>17}"
          f" {'60-record valid':>16}")
    for s in summary:
        print(f"{s['method']:<11} {s['epochs']:>6} {s['learning_rate']:>7g} {len(s['seeds']):>5} "
              + " ".join(f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}".rjust(w)
                         for k, w in (("f1", 14), ("form", 14), ("opening", 17), ("valid_f1", 16))))
    print(f"the sweep's rule on this split: {chosen['epochs']} epochs (mean over methods by budget "
          f"{ {e: round(v, 3) for e, v in chosen['mean_f1_by_epochs'].items()} }); on {Path(args.sweep).name}: "
          f"{sweep['chosen']['epochs']} epochs")
    for label, pick in chosen["by_method"].items():
        theirs = sweep["chosen"]["by_method"].get(label, {})
        print(f"{label}: best here {pick['epochs']} epochs at {pick['learning_rate']:g} (F1 {pick['f1']:.3f}); "
              f"on the 60 records {theirs.get('epochs')} epochs at {theirs.get('learning_rate', float('nan')):g}")
    if output:
        print("wrote", output)
    return 0


def summarise(scored: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (method, budget, rate): F1 overall, on held-out forms and openings, and on the
    60-record validation split (the sweep's figure of the same runs)."""
    groups: dict[tuple, list[dict]] = {}
    for row in scored:
        groups.setdefault((row["method"], row["epochs"], row["learning_rate"]), []).append(row)
    return [{"method": method, "epochs": epochs, "learning_rate": rate, "seeds": sorted(r["seed"] for r in rows),
             **{k: stat([r[k] for r in rows]) for k in ("f1", "form", "opening", "valid_f1")}}
            for (method, epochs, rate), rows in sorted(groups.items())]


if __name__ == "__main__":
    sys.exit(main())

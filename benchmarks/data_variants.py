"""Would richer training data close the gap on unseen wording? Measured on validation only.

    python benchmarks/data_variants.py                                  # LoRA, seeds 1234 2 3 (~15 min, 2 cores)
    python benchmarks/data_variants.py --methods lora zero3 --seeds 1234
    python benchmarks/data_variants.py --variants replay replay_words --methods lora zero3 \
        --output benchmarks/results/data_variants_replay.json          # 12 runs, ~16 min

The held-out test split (``glmlab.synth``) asks for two things training never shows: sentence forms and
openings it never uses, and fault words no training answer writes (``novelty`` kinds ``form``,
``opening``, ``word``). Issue 15 suggests making the data better before calling the small base the
limit. This benchmark trains on each variant of ``spo_train.jsonl`` -- the same 2000-record stream of
:func:`glmlab.synth.spo_train_records`, one change each -- and scores every run on data the choice may
look at: the validation split (its own pairs, forms and openings) and a diagnostic set built here,
``valid_words``: 60 records in training's forms, each stating a fault word that no other file holds
(:data:`VALID_WORDS`), scored by F1 and by the recall of those words' triples.

=======================  ================================================================================
variant                  training records
=======================  ================================================================================
shipped                  what ``glmlab.synth`` writes: the world's 4 part-fault forms
                         (:data:`glmlab.synth.PART_TEMPLATES`) and its 37 trained fault words
twelve_forms_verb_first  12 forms: :data:`VERB_FIRST_FORMS` besides the 4, two of them with a verb before
                         the part ("检查到{part}{fault}", "看到{part}有{fault}")
twelve_forms             12 forms: :data:`PART_FIRST_FORMS` besides the 4, the verb-first two replaced,
                         since the glm2/glm3 vocabularies merge "到" with the first character of "大灯"
                         and a triple's part must be its own piece (``tests/test_synth.py``)
open_faults              the 4 forms and 48 more (part, fault) pairs whose faults are :data:`TRAIN_WORDS`,
                         words outside the world's fault list, each said of random parts: a span to copy
replay                   the shipped records, plus 25% of each epoch replayed from the general corpus the
                         base read (06's remedy for forgetting; the share ``benchmarks/held_words.py`` chose)
replay_words             the same, replayed from a corpus whose copy and reverse skills also draw from
                         :data:`VALID_WORDS` (``glmlab.synth.general_corpus(extra_words=...)``)
=======================  ================================================================================

The last two ask whether a word fine-tuning writes only in the replayed corpus (as copied words, never in a triple)
becomes one it can write in a triple. ``valid_words`` stands in for the test split's four words that neither the
base's corpus nor any training answer holds (发软, 距离过长, 缓慢, 无反应; ``benchmarks/unseen_words.py``): if its
recall rises from 0 with ``replay_words``, replaying a corpus with every word of the world would reach them without
a new base. The analogue is imperfect: :data:`VALID_WORDS` are several pieces each, the test's four are single
pieces whose embeddings the base never trained.

The test split is never read. A variant would replace the shipped data only with a better validation F1
(mean over the seeds; the sweeps' rule). The result (``benchmarks/results/data_variants.json``, LoRA at its
rate, seeds 1234, 2, 3): shipped 0.929 ± 0.009, twelve_forms_verb_first 0.941 ± 0.014 (it cannot ship: the
merge above), twelve_forms 0.921 ± 0.023, open_faults 0.887 ± 0.026 -- within a seed's spread of each
other but the last, so the data stay as they are; and no variant writes a fault word it never wrote
(recall 0 on ``valid_words``, multi-piece words: the 37 trained words are single pieces). The replay variants
(``benchmarks/results/data_variants_replay.json``, LoRA and full fine-tuning): recall 0 on ``valid_words`` with
either corpus replayed, although ``replay_words`` had every run copy each of the eight words many times.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab, from any folder
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_methods.stat, however this file is loaded

from bench_methods import machine, stat  # noqa: E402
from glmlab import synth  # noqa: E402
from glmlab.json_files import write_jsonl  # noqa: E402
from glmlab.notebooks import experiment  # noqa: E402

# Eight more part-fault forms (no test or validation form's marker), in two versions.
VERB_FIRST_FORMS = ("{part}明显{fault}", "{part}有些{fault}", "{part}严重{fault}", "检查到{part}{fault}",
                    "{part}目前{fault}", "看到{part}有{fault}", "{part}{fault}严重", "{part}反复{fault}")
PART_FIRST_FORMS = ("{part}明显{fault}", "{part}有些{fault}", "{part}严重{fault}", "{part}有点{fault}",
                    "{part}目前{fault}", "{part}还是{fault}", "{part}{fault}严重", "{part}反复{fault}")
# Faults outside the world's list (written with characters the tiny vocabularies hold, none a world word):
# training-only ones, and the diagnostic set's own.
TRAIN_WORDS = ("松动", "发热", "进水", "偏磨", "温度高", "电压低", "无电", "不回位", "发黑", "不密封", "供电不足", "声音大",
               "过冷", "失压", "变色", "过松", "过紧", "不到位", "压力高", "温度低", "不准", "漏光", "不稳定", "电流大")
VALID_WORDS = ("失调", "漏风", "不通", "无信号", "油压低", "不吸合", "间隙大", "反应慢")
N_OPEN_PAIRS = 48  # two random parts per training-only word
VARIANTS = ("shipped", "twelve_forms_verb_first", "twelve_forms", "open_faults", "replay", "replay_words")
REPLAY_SHARE = 0.25  # the replay variants' share of each epoch


def check_words() -> None:
    """Every added word and form is new: no world word, no test or validation form marker, no overlap."""
    world = set(synth.world_words())
    markers = {synth._form_marker(f) for f in synth.TEST_TEMPLATES + synth.VALID_TEMPLATES}
    assert not (set(TRAIN_WORDS) | set(VALID_WORDS)) & world and not set(TRAIN_WORDS) & set(VALID_WORDS)
    for forms in (VERB_FIRST_FORMS, PART_FIRST_FORMS):
        assert not {synth._form_marker(f) for f in forms} & markers and not set(forms) & set(synth.PART_TEMPLATES)


def train_records(variant: str, seed: int = 0) -> list[dict]:
    if variant in ("shipped", "replay", "replay_words"):
        return synth.spo_data(seed=seed)[0]
    if variant in ("twelve_forms_verb_first", "twelve_forms"):
        extra = VERB_FIRST_FORMS if variant == "twelve_forms_verb_first" else PART_FIRST_FORMS
        return synth.spo_train_records(seed=seed, part_templates=synth.PART_TEMPLATES + extra)
    if variant == "open_faults":
        pairs = random.Random(99).sample(sorted(itertools.product(sorted(synth.PARTS), TRAIN_WORDS)), N_OPEN_PAIRS)
        return synth.spo_train_records(seed=seed, extra_pairs=pairs)
    raise SystemExit(f"data_variants.py: unknown variant {variant!r} (one of {', '.join(VARIANTS)})")


def valid_words_records(n: int = 60, seed: int = 0) -> list[dict]:
    """Records in training's own forms, each stating at least one of :data:`VALID_WORDS` of a random part."""
    rng = random.Random(seed + 7)
    pairs = [(rng.choice(sorted(synth.PARTS)), word) for word in VALID_WORDS for _ in range(2)]
    train_pairs, _, train_perf, _ = synth.spo_split(seed)
    records: list[dict] = []
    while len(records) < n:
        record = synth._spo_record(rng, pairs + train_pairs, train_perf)
        if any(t.rsplit("_", 1)[-1] in VALID_WORDS for t in record["output"].split("\n")):
            records.append(record)
    return records


def word_recall(samples: list[dict], predictions: list[str]) -> float:
    """The share of the diagnostic words' triples that the predictions hold."""
    gold = [(i, t) for i, s in enumerate(samples) for t in s["output"].split("\n") if t.rsplit("_", 1)[-1] in VALID_WORDS]
    return sum(t in predictions[i].split("\n") for i, t in gold) / len(gold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=["lora"], help="study_methods labels (lora, zero3, freeze, ...)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 2, 3])
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "data_variants"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "data_variants.json"))
    args = parser.parse_args(argv)
    check_words()

    from glmlab.data import read_samples
    from glmlab.loading import build_config
    from glmlab.notebooks.replay import replay_spec

    base = experiment.resolve_base(None, "glm")
    config, _ = build_config(base, "glm")
    methods = experiment.study_methods(config.num_layers)
    unknown = [m for m in args.methods if m not in methods]
    if unknown:
        raise SystemExit(f"data_variants.py: --methods {unknown[0]!r}: one of {', '.join(methods)}")
    runs_dir = Path(args.runs_dir)
    valid_path = experiment.data_path("spo_valid")
    words_path = runs_dir / "valid_words.jsonl"
    write_jsonl(words_path, valid_words_records())
    words = read_samples(words_path, references=True)

    import hashlib

    output = Path(args.output)
    kept = json.loads(output.read_text(encoding="utf-8"))["runs"] if output.is_file() else []
    weights = experiment.weights_digest(base)  # a rebuilt base is another base: its rows are measured again
    if any(r.get("base_weights") != weights for r in kept):
        print(f"{output}: dropping {sum(r.get('base_weights') != weights for r in kept)} row(s) of other base weights (now {weights})")
        kept = [r for r in kept if r.get("base_weights") == weights]
    rows: list[dict] = []
    for variant in args.variants:
        train_path = runs_dir / variant / "spo_train.jsonl"
        write_jsonl(train_path, train_records(variant))
        data, train_spec = train_path.read_bytes(), str(train_path)
        if variant.startswith("replay"):
            general_path = experiment.data_path("general_train")
            if variant == "replay_words":
                general_path = runs_dir / variant / "general_train.jsonl"
                sizes = synth.Sizes()
                write_jsonl(general_path, synth.general_corpus(sizes.n_general, sizes.n_probe, extra_words=VALID_WORDS)[0])
            train_spec = replay_spec(train_path, REPLAY_SHARE, general_path)
            data += Path(general_path).read_bytes()  # the replayed corpus is part of the training data
        digest = hashlib.sha256(data).hexdigest()[:16]
        kept = [r for r in kept if r["variant"] != variant or r.get("train_digest") == digest]  # stale data: gone
        for seed in args.seeds:
            setup = experiment.Setup(model_dir=str(base), mode="glm", train_path=train_spec, test_path=str(valid_path),
                                     output_dir=str(runs_dir / variant / f"seed{seed}"), nproc=2, seed=seed,
                                     num_train_epochs=3)  # the notebooks' step budget
            for label in args.methods:
                if any((r["variant"], r["method"], r["seed"]) == (variant, label, seed) for r in kept):
                    continue  # measured on these very records already (resume, or another variant's rerun)
                flags = methods[label]
                start = time.perf_counter()
                result = experiment.run_method(label, {**flags, "learning_rate": experiment.default_learning_rate(flags)}, setup)
                model, tokenizer, mode = experiment.load(result["checkpoint"])
                predictions, scores = experiment.evaluate(model, tokenizer, mode, words, setup.max_src_len, setup.max_new_tokens)
                rows.append({"variant": variant, "train_digest": digest, "base_weights": weights, "method": label, "seed": seed,
                             "valid_f1": result["f1"],
                             "valid_f1_by_novelty": {k: v["f1"] for k, v in result["f1_by_novelty"].items()},
                             "valid_words_f1": scores["f1"], "valid_words_recall": word_recall(words, predictions),
                             "wall_s": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)

    rows = kept + rows
    summary = {}
    for variant, label in dict.fromkeys((r["variant"], r["method"]) for r in rows):
        mine = [r for r in rows if r["variant"] == variant and r["method"] == label]
        summary[f"{variant}/{label}"] = {
            "valid_f1": stat([r["valid_f1"] for r in mine]),
            "valid_form_f1": stat([r["valid_f1_by_novelty"]["form"] for r in mine]),
            "valid_words_f1": stat([r["valid_words_f1"] for r in mine]),
            "valid_words_recall": stat([r["valid_words_recall"] for r in mine])}
    record = {"command": " ".join(["python benchmarks/data_variants.py", *(argv if argv is not None else sys.argv[1:])]),
              "base": base.name, "base_weights": weights, "machine": machine(), "scored_on": [valid_path.name, "valid_words (built here)"], "seeds": sorted({r["seed"] for r in rows}),
              "summary": summary, "runs": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{'variant/method':<20} {'valid F1':>14} {'valid form F1':>14} {'valid_words F1':>15} {'word recall':>14}")
    for key, s in summary.items():
        print(f"{key:<20} " + " ".join(f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}".rjust(w) for k, w in
                                        (("valid_f1", 14), ("valid_form_f1", 14), ("valid_words_f1", 15), ("valid_words_recall", 14))))
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``benchmarks/held_words.py``: words held out of training by a fixed rule, a training stream whose answers never write
them, the wide split's records that state them, and the figures and choice made from canned runs (nothing trains here)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from glmlab import synth

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other from there

import held_words as held  # noqa: E402


def test_the_rule_holds_out_as_many_words_as_the_test_split_has_each_of_one_training_pair():
    words = held.held_words()
    train_pairs, _, train_perf, _ = synth.spo_split(0)
    parts = [w for w in words if any(f == w for _, f in train_pairs)]
    perf = [w for w in words if any(b == w for _, b in train_perf)]
    assert (len(parts), len(perf)) == held.HELD_COUNTS and len(set(words)) == len(words) == sum(held.HELD_COUNTS)
    untrained = synth._untrained_words(0)
    test_parts = {f for _, f in synth.spo_split(0)[1]} & untrained
    assert (len(test_parts), len(untrained - test_parts)) == held.HELD_COUNTS  # the test split's six and four
    uses = Counter(w for _, w in train_pairs + train_perf)
    assert all(uses[w] == 1 for w in words)
    valid_parts, valid_perf = synth.valid_pairs()
    assert not set(words) & {w for _, w in valid_parts + valid_perf}
    for pairs in (train_pairs, train_perf):  # every part and item still has a word training writes
        heads = {h for h, _ in pairs}
        assert heads == {h for h, w in pairs if w not in words}
    assert set(words) <= set(synth.word_pool("parts")) | {b for _, b in train_perf}  # words the base has read
    assert held.held_words() == words  # a function of the rule only


def test_training_without_the_held_pairs_never_writes_their_words_and_leaves_the_shipped_stream_alone():
    words = frozenset(held.held_words())
    assert synth.spo_train_records() == synth.spo_data()[0]
    train = synth.spo_train_records(held_words=words)
    assert len(train) == synth.Sizes().n_spo_train
    said = {t.rsplit("_", 1)[-1] for r in train for t in r["output"].split("\n") if t}
    assert not said & words
    assert said | words >= {f for _, f in synth.spo_split(0)[0]}  # every other trained word is still written


def test_the_wide_split_marks_the_records_that_state_a_held_word():
    records = held.split({"x"})
    assert len(records) == synth.Sizes().n_spo_test
    words = set(held.held_words())
    for record in records:
        tails = {t.rsplit("_", 1)[-1] for t in record["output"].split("\n")}
        assert ("word" in record["kinds"]) == bool(tails & words)
    share = sum("word" in r["kinds"] for r in records) / len(records)
    assert 0.1 < share < 0.3, share  # the test split: 58 of 250


def test_recall_of_the_held_words_and_of_the_others():
    a, b = held.held_words()[:2]
    samples = [{"output": f"水泵_部件故障_{a}\n水泵_部件故障_漏水"}, {"output": f"喷油嘴_部件故障_{b}"}]
    predictions = [f"水泵_部件故障_{a}\n水泵_部件故障_异响", "喷油嘴_部件故障_堵塞"]
    assert held.held_recall(samples, predictions, True) == 0.5
    assert held.held_recall(samples, predictions, False) == 0.0


def canned(method: str, share: float, seed: int, f1: float) -> dict:
    return {"method": method, "share": share, "seed": seed, **{k: f1 for k in held.FIGURES}}


def test_summary_and_the_sweeps_rule_for_the_share():
    rows = [canned("lora", 0.0, s, f) for s, f in ((1, 0.80), (2, 0.82))]
    rows += [canned("lora", 0.25, s, f) for s, f in ((1, 0.84), (2, 0.86))]
    rows += [canned("zero3", 0.0, s, 0.8) for s in (1, 2)] + [canned("zero3", 0.1, s, 0.8) for s in (1, 2)]
    rows += [canned("freeze", 0.1, 1, 0.9)]  # never measured without replay: no choice
    rows += [canned("embedding", 0.0, 1, 0.5)]  # nor only without it
    summary = held.summarise(rows)
    assert [(s["method"], s["share"], s["seeds"]) for s in summary] == [
        ("lora", 0.0, 2), ("lora", 0.25, 2), ("zero3", 0.0, 2), ("zero3", 0.1, 2), ("freeze", 0.1, 1), ("embedding", 0.0, 1)]
    assert summary[1]["f1"]["mean"] == pytest.approx(0.85) and summary[1]["f1"]["std"] == pytest.approx(0.01414, abs=1e-4)
    chosen = held.choose(summary)
    assert chosen == {"lora": {"label": "lora", "share": 0.25, "f1": pytest.approx(0.85), "f1_none": pytest.approx(0.81)},
                      "zero3": {"label": "zero3", "share": 0.0, "f1": pytest.approx(0.8), "f1_none": pytest.approx(0.8)}}  # a tie keeps 0


def canned_shape(label: str, share: float, seed: int, f1: float) -> dict:
    return {**canned(label, share, seed, f1), "of": held.SHAPES[label][0]}


def test_a_shape_competes_with_its_methods_settings_and_a_tie_keeps_the_notebooks():
    rows = [canned("lora", 0.0, s, 0.80) for s in (1, 2)] + [canned("lora", 0.25, s, 0.84) for s in (1, 2)]
    rows += [canned_shape("lora-drop", 0.0, s, f) for s, f in ((1, 0.85), (2, 0.87))]
    rows += [canned("freeze", 0.0, s, 0.7) for s in (1, 2)] + [canned_shape("freeze-2", 0.0, s, 0.7) for s in (1, 2)]
    rows += [canned_shape("embedding-32", 0.0, 1, 0.9)]  # its method never measured as the notebooks run it: no choice
    summary = held.summarise(rows)
    assert [(s["method"], s["of"]) for s in summary] == [("lora", "lora"), ("lora", "lora"), ("lora-drop", "lora"),
                                                        ("freeze", "freeze"), ("freeze-2", "freeze"), ("embedding-32", "embedding")]
    assert held.choose(summary) == {
        "lora": {"label": "lora-drop", "share": 0.0, "f1": pytest.approx(0.86), "f1_none": pytest.approx(0.80)},
        "freeze": {"label": "freeze", "share": 0.0, "f1": pytest.approx(0.7), "f1_none": pytest.approx(0.7)}}


def test_a_shape_changes_only_its_own_flags():
    methods = {"lora": {"train_type": "lora", "lora_dim": 8, "lora_alpha": 32, "lora_dropout": 0.0, "lora_module_name": "x"},
               "freeze": {"train_type": "freeze", "freeze_module_name": "layers.3."}}
    assert held.method_flags("lora", methods, 4) == ("lora", methods["lora"])
    of, flags = held.method_flags("lora-r16-drop", methods, 4)
    assert of == "lora" and flags == {**methods["lora"], "lora_dim": 16, "lora_alpha": 64, "lora_dropout": 0.1}
    assert held.method_flags("freeze-2", methods, 4) == ("freeze", {"train_type": "freeze", "freeze_module_name": "layers.2.,layers.3."})
    assert held.method_flags("freeze-2", methods, 28)[1]["freeze_module_name"] == "layers.26.,layers.27."
    assert methods["lora"]["lora_dim"] == 8  # the study's flags are not changed in place


def test_a_bad_flag_is_one_line_before_anything_loads(capsys):
    with pytest.raises(SystemExit, match=r"--shares 1: a replay share is in \[0, 1\)"):
        held.main(["--shares", "0", "1"])
    with pytest.raises(SystemExit, match="--methods 'bogus': one of"):
        held.main(["--methods", "bogus", "--json", "/nonexistent/x.json"])
    with pytest.raises(SystemExit, match="--report_methods 'bogus': one of embedding, projection, freeze, lora, zero3"):
        held.main(["--report", "--report_methods", "bogus"])
    with pytest.raises(SystemExit, match="--json /nonexistent/x.json: no such file"):
        held.main(["--report", "--json", "/nonexistent/x.json"])


# The first rule's study labels whose runs trained the notebooks' shape before it changed: Freeze its top layer (the
# notebooks took freeze-2's top two), the prefixes 16 tokens (they took the 32 of projection-32 and embedding-32).
BEFORE = ("freeze", "projection", "embedding", "lora", "lora-drop")
# LoRA's shape before the notebooks took rank 16 (experiment.LORA_DIM): rank 8, alpha 32
RANK8 = {"lora_dim": 8, "lora_alpha": 32}


def committed(name: str, rule: str) -> tuple[dict, dict, int]:
    """A committed held_words.py file, checked to be ``rule``'s words and split, its summary and choice recomputed
    from its runs, on the shipped base: ``(record, the notebooks' methods, the base's layer count)``."""
    from glmlab.loading import build_config
    from glmlab.notebooks import experiment

    record = json.loads((REPO / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
    assert record["held_words"] == list(held.held_words(rule=rule))
    records = held.split(rule=rule)
    assert record["records"] == len(records) == synth.Sizes().n_spo_test
    assert record["kinds"] == {kind: sum(kind in r["kinds"] for r in records) for kind in held.KINDS[rule]}
    assert record["summary"] == held.summarise(record["runs"])
    base = experiment.resolve_base(None, "glm")
    assert record["base_weights"] == experiment.weights_digest(base)
    layers = build_config(base, "glm")[0].num_layers
    methods = experiment.study_methods(layers)
    assert record["notebooks"] == methods  # the file knows what the notebooks run now
    assert record["chosen"] == held.choose(record["summary"], methods)
    return record, methods, layers


def test_the_committed_run_is_this_rule_and_split():
    record, methods, layers = committed("held_words.json", "one-pair")
    assert "rule" not in record  # the first rule's file, from before there were two
    assert all(r["flags"] == held.method_flags(r["method"], methods, layers)[1]
               for r in record["runs"] if r["method"] not in BEFORE)
    # the study labels whose notebooks' shape changed since ran the shape before: Freeze its top layer, the prefixes 16
    assert {r["flags"]["freeze_module_name"] for r in record["runs"] if r["method"] == "freeze"} == {f"layers.{layers - 1}."}
    for label in ("projection", "embedding"):
        assert all(r["flags"] == {**methods[label], "pre_seq_len": 16} for r in record["runs"] if r["method"] == label)
    assert all(r["flags"] == {**held.method_flags(r["method"], methods, layers)[1], **RANK8}
               for r in record["runs"] if r["method"] in ("lora", "lora-drop"))


def test_the_notebooks_setting_is_found_by_its_flags_whatever_its_label():
    """Once the notebooks take a shape (Freeze's top two), its entry is their setting and the study label's old
    entry one more candidate; a label's runs with other flags are another entry, not mixed in."""
    top1, top2 = {"train_type": "freeze", "freeze_module_name": "layers.3."}, {"train_type": "freeze", "freeze_module_name": "layers.2.,layers.3."}
    rows = [{**canned("freeze", 0.0, s, 0.76), "flags": top1} for s in (1, 2)]
    rows += [{**canned_shape("freeze-2", 0.0, s, 0.91), "flags": top2} for s in (1, 2)]
    rows += [{**canned("freeze", 0.0, 1, 0.90), "flags": top2}]  # the label rerun after the change: its own entry
    summary = held.summarise(rows)
    assert [(s["method"], s["flags"]["freeze_module_name"], s["seeds"]) for s in summary] == [
        ("freeze", "layers.3.", 2), ("freeze-2", "layers.2.,layers.3.", 2), ("freeze", "layers.2.,layers.3.", 1)]
    chosen = held.choose(summary, {"freeze": top2})
    assert chosen == {"freeze": {"label": "freeze-2", "share": 0.0, "f1": pytest.approx(0.91), "f1_none": pytest.approx(0.91)}}
    assert held.choose(summary[:2], {"freeze": top1})["freeze"]["f1_none"] == pytest.approx(0.76)  # before the change


# ---------------------------------------------------------------------------------------------- the unread-pair rule
def test_the_unread_pair_rule_holds_out_read_words_of_validations_own_pairs():
    """unread-pair: the words of validation's own pairs (which no corpus sentence states) that at most
    UNREAD_MAX_PAIRS training pairs write, no word of both a part fault and a problem, every part and item keeping a
    trained word; a function of the rule only, and not the one-pair rule's words."""
    words = held.held_words(rule="unread-pair")
    train_pairs, _, train_perf, _ = synth.spo_split(0)
    valid_parts, valid_perf = synth.valid_pairs()
    assert set(words) <= {w for _, w in valid_parts + valid_perf}
    uses = Counter(w for _, w in train_pairs + train_perf)
    assert all(1 <= uses[w] <= held.UNREAD_MAX_PAIRS for w in words)
    both = {f for _, f in train_pairs} & {b for _, b in train_perf}
    assert not set(words) & both
    for pairs in (train_pairs, train_perf):
        assert {h for h, _ in pairs} == {h for h, w in pairs if w not in words}
    # every candidate the rule passed over is written by too many training pairs or is a word of both kinds
    for word in {w for _, w in valid_parts + valid_perf} - set(words):
        assert word in both or uses[word] > held.UNREAD_MAX_PAIRS
    assert len(words) == len(set(words)) >= 8 and not set(words) & set(held.held_words())
    assert held.held_words(rule="unread-pair") == words
    with pytest.raises(ValueError, match="rule 'bogus': one of one-pair, unread-pair"):
        held.held_words(rule="bogus")
    train = synth.spo_train_records(held_words=frozenset(words))
    said = {t.rsplit("_", 1)[-1] for r in train for t in r["output"].split("\n") if t}
    assert not said & set(words) and len(train) == synth.Sizes().n_spo_train


def test_unread_triples_are_the_held_words_in_validations_own_pairs():
    words = set(held.held_words(rule="unread-pair"))
    (part, word), = [(p, w) for p, w in synth.valid_pairs()[0] if w in words][:1]
    trained_head = next(h for h, w in synth.spo_split(0)[0] if w == word)
    record = {"output": f"{part}_部件故障_{word}\n{trained_head}_部件故障_{word}\n水泵_部件故障_漏水"}
    assert held.unread_triples(record, words) == [f"{part}_部件故障_{word}"]
    assert held.unread_triples(record, set()) == []
    predictions = [f"{part}_部件故障_{word}\n水泵_部件故障_异响"]
    assert held.held_recall([record], predictions, True, "unread-pair", "unread") == 1.0
    assert held.held_recall([record], predictions, True, "unread-pair", "read") == 0.0
    assert held.held_recall([record], predictions, True, "unread-pair") == 0.5
    assert held.held_recall([record], predictions, False, "unread-pair") == 0.0


def test_the_wide_split_marks_the_records_that_state_a_held_word_in_an_unread_pair():
    words = set(held.held_words(rule="unread-pair"))
    records = held.split(rule="unread-pair")
    assert [r["input"] for r in records] == [r["input"] for r in held.split()]  # the same 250 records
    for record in records:
        tails = {t.rsplit("_", 1)[-1] for t in record["output"].split("\n")}
        assert ("word" in record["kinds"]) == bool(tails & words)
        assert ("unread" in record["kinds"]) == bool(held.unread_triples(record, words))
    assert not any("unread" in r["kinds"] for r in held.split())  # the one-pair rule's words are in no validation pair
    unread = sum(len(held.unread_triples(r, words)) for r in records)
    assert unread >= 59, unread  # at least as many triples as the test split's untrained words (59)


def test_the_corpus_states_the_one_pair_words_pairs_and_neither_validations_nor_the_tests(tmp_path):
    """--corpus: the words are read about as often under every rule and on the test split; the pairs are not, nor
    are the test's words said of any part. The committed file is what the command writes."""
    path = tmp_path / "corpus.json"
    assert held.main(["--corpus", "--corpus_json", str(path)]) == 0
    record = json.loads(path.read_text(encoding="utf-8"))
    committed = REPO / "benchmarks" / "results" / "held_words_corpus.json"
    assert json.loads(committed.read_text(encoding="utf-8")) == record
    one = [r for r in record["rules"]["one-pair"]["triples"]]
    assert {r["group"] for r in one} == {"training pair"} and min(r["pair_in_corpus"] for r in one) >= 30
    unread = [r for r in record["rules"]["unread-pair"]["triples"] if r["group"] == "validation pair"]
    assert unread and all(r["pair_in_corpus"] == 0 for r in unread)
    test = record["test"]["triples"]
    assert sum(r["triples"] for r in test) == 59
    assert all(r["pair_in_corpus"] <= 4 and r["word_said_of_a_part"] <= 4 for r in test if r["group"] == "read word")
    # every rule's held words are said of some part in the corpus (the test's read words are not): the difference
    # that neither rule removes
    assert all(r["word_said_of_a_part"] >= 30 for rule in held.RULES for r in record["rules"][rule]["triples"])
    assert all(r["word_in_corpus"] == 0 for r in test if r["group"] == "unread word")
    words = {g: s["word_in_corpus"] for g, s in record["summary"]["test split"].items()}
    assert 100 < words["read word"] < 300
    for name in ("wide split, one-pair", "wide split, unread-pair"):
        for group in record["summary"][name].values():
            assert 0.5 < group["word_in_corpus"] / words["read word"] < 2  # within a factor of two of the test's


def test_the_committed_unread_pair_run_is_its_rule_and_split():
    record, methods, layers = committed("held_pairs.json", "unread-pair")
    assert record["rule"] == "unread-pair"
    assert all(r["flags"] == held.method_flags(r["method"], methods, layers)[1]
               for r in record["runs"] if r["method"] not in ("projection", "embedding", "lora"))
    for label in ("projection", "embedding"):  # run before the notebooks' prefixes took 32 tokens
        assert all(r["flags"] == {**methods[label], "pre_seq_len": 16} for r in record["runs"] if r["method"] == label)
    # and before their LoRA took rank 16: the label's runs are rank 8, lora-r16's the notebooks' LoRA
    assert all(r["flags"] == {**methods["lora"], **RANK8} for r in record["runs"] if r["method"] == "lora")
    assert all(r["flags"] == methods["lora"] for r in record["runs"] if r["method"] == "lora-r16")
    assert all(set(held.PAIR_FIGURES) <= set(r) for r in record["runs"])

"""``glmlab.synth``: deterministic data sets whose held-out parts are really held out, and that every
tiny tokenizer writes back character for character (newlines and spaces included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmlab import synth
from glmlab.data import encode_prompt, read_samples
from glmlab.notebooks.experiment import Setup
from glmlab.tiny import make_tiny

REPO = Path(__file__).resolve().parents[1]
MODES = ["glm", "glm2", "glm3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[dict]]:
    paths = synth.write_all(tmp_path_factory.mktemp("synth"))
    return {name: read_samples(path, references=name.endswith(("test", "valid"))) for name, path in paths.items()}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    import glmlab

    root = tmp_path_factory.mktemp("tiny")
    return {mode: glmlab.load_tokenizer(make_tiny(mode, root / mode), mode) for mode in MODES}


def test_deterministic_for_a_seed(tmp_path):
    a = synth.write_all(tmp_path / "a", synth.Sizes(n_general=50, n_spo_train=50, n_d2q_docs=20), seed=3)
    b = synth.write_all(tmp_path / "b", synth.Sizes(n_general=50, n_spo_train=50, n_d2q_docs=20), seed=3)
    c = synth.write_all(tmp_path / "c", synth.Sizes(n_general=50, n_spo_train=50, n_d2q_docs=20), seed=4)
    assert all(a[n].read_bytes() == b[n].read_bytes() for n in a)
    assert a["spo_train"].read_bytes() != c["spo_train"].read_bytes()


def test_sizes(data):
    sizes = synth.Sizes()
    assert len(data["general_train"]) == sizes.n_general * (len(synth.SKILLS) + 1)  # knowledge twice
    assert len(data["general_probe"]) == sizes.n_probe * len(synth.SKILLS)
    assert len(data["spo_train"]) == sizes.n_spo_train and len(data["spo_test"]) == sizes.n_spo_test
    assert len(data["d2q_test"]) == sizes.n_d2q_test


def test_probes_are_not_in_the_general_corpus(data):
    seen = {(s["instruction"], s["input"]) for s in data["general_train"]}
    assert not [p for p in data["general_probe"] if (p["instruction"], p["input"]) in seen]
    assert {p["skill"] for p in data["general_probe"]} == set(synth.SKILLS)


def test_fact_probes_ask_known_facts_in_held_out_forms(data):
    """Each fact the probes ask is in the corpus, in other question forms, with the same answer."""
    for skill, items in (("knowledge", synth.knowledge_items()), ("arithmetic", synth.arithmetic_items()),
                         ("translate", synth.translate_items())):
        corpus = {s["input"] for s in data["general_train"] if s["skill"] == skill}
        by_question = {q: (held, a) for held, q, a in items}
        for probe in (p for p in data["general_probe"] if p["skill"] == skill):
            held, answer = by_question[probe["input"]]
            assert held and answer == probe["output"]
        assert all(q in corpus for held, q, _ in items if not held)


def test_the_general_corpus_holds_neither_fine_tuning_task(data):
    for sample in data["general_train"]:
        assert sample["instruction"] not in (synth.SPO_INSTRUCTION, synth.D2Q_INSTRUCTION)
        assert "_部件故障_" not in sample["output"] and "？" not in sample["output"]


def test_word_pools_and_the_words_the_shipped_corpus_never_writes(data):
    """The shipped corpus (``parts``) writes every part, fault and tool, but not the four performance problems
    only the test split states (benchmarks/base_variants.py); ``lexicon`` writes every word a triple holds."""
    words = set(synth.word_pool("lexicon")) | {
        field for name in ("spo_train", "spo_valid", "spo_test") for s in data[name]
        for triple in filter(None, s["output"].split("\n")) for field in triple.split("_")[::2]}

    def unwritten(train: list[dict]) -> list[str]:
        answers = "\n".join(s["output"] for s in train)
        return sorted(w for w in words if w not in answers)

    assert unwritten(data["general_train"]) == ["发软", "无反应", "缓慢", "距离过长"]
    lexicon, probes = synth.general_corpus(words="lexicon")
    assert unwritten(lexicon) == [] and len(lexicon) == len(data["general_train"])
    assert synth.word_pool("lexicon")[:len(synth.word_pool())] == synth.word_pool()
    with pytest.raises(ValueError, match="words must be one of parts, lexicon"):
        synth.general_corpus(words="all")


def test_spo_format_matches_the_original(data):
    relations = {"部件故障", "性能故障", "组成", "检测工具"}
    for sample in data["spo_train"] + data["spo_test"]:
        assert sample["instruction"] == synth.SPO_INSTRUCTION
        for line in filter(None, sample["output"].split("\n")):
            head, relation, _ = line.split("_")
            assert relation in relations and head in sample["input"]
    assert any(s["output"] == "" for s in data["spo_train"])  # quiet records, as real data has


def test_spo_test_needs_generalisation(data):
    train_pairs, test_pairs, train_perf, test_perf = synth.spo_split()
    assert not set(train_pairs) & set(test_pairs) and not set(train_perf) & set(test_perf)
    train_inputs = {s["input"] for s in data["spo_train"]}
    train_triples = {t for s in data["spo_train"] for t in s["output"].split("\n")}
    novel = {f"{p}_部件故障_{f}" for p, f in test_pairs} | {f"{i}_性能故障_{b}" for i, b in test_perf}
    assert not train_triples & novel  # no training record states a test-only pair
    for sample in data["spo_test"]:
        assert sample["input"] not in train_inputs
        assert synth.novelty(sample), sample  # a test-only pair, form or opening
    kinds = [synth.novelty(s) for s in data["spo_test"]]
    # the first three, read by hand: 根据维修单，大灯产生了发暗。 / 据用户说，发电机有异响的问题，拆检发现...
    # / 接车后发现压缩机漏油，经检查起动机产生了异响。 (起动机 异响: a test-only pair)
    assert [s["input"][:6] for s in data["spo_test"][:3]] == ["根据维修单，", "据用户说，发", "接车后发现压"]
    assert ("起动机", "异响") in test_pairs and ("大灯", "发暗") not in test_pairs
    assert kinds[:3] == [{"form", "opening"}, {"opening"}, {"form", "pair"}]
    counts = {k: sum(k in found for found in kinds) for k in synth.NOVELTY_KINDS}
    assert min(counts["pair"], counts["form"], counts["opening"]) >= 100 and counts["word"] >= 50, counts
    # an unseen word: a fault or problem no training record ever outputs, in an unseen pair
    outputs = {t.split("_")[2] for s in data["spo_train"] for t in s["output"].split("\n") if t}
    for sample, found in zip(data["spo_test"], kinds):
        tails = {t.split("_")[2] for t in set(sample["output"].split("\n")) & novel}
        assert ("word" in found) == bool(tails - outputs), sample


def test_spo_test_forms_and_openings_are_its_own(data):
    """Five part-fault forms and four openings that no training, validation, general or doc-to-question
    text holds, each used by several test records; enough records that one moves F1 by under 1%."""
    forms = [synth._form_marker(f) for f in synth.TEST_TEMPLATES]
    assert forms == ["存在", "表现为", "被查出", "产生了", "经常"]
    others = [json.dumps(s, ensure_ascii=False) for name in data if name != "spo_test" for s in data[name]]
    assert not [m for m in forms + list(synth.TEST_OPENINGS) if any(m in text for text in others)]
    test = [s["input"] for s in data["spo_test"]]
    assert all(sum(m in t for t in test) >= 10 for m in forms)
    assert all(sum(t.startswith(o) for t in test) >= 10 for o in synth.TEST_OPENINGS)
    triples = [len(s["output"].split("\n")) for s in data["spo_test"]]
    assert len(test) >= 150 and max(triples) / sum(triples) < 0.01


def test_f1_by_novelty_groups_records_by_kind():
    samples = [{"input": "据用户说，大灯被查出发暗。", "output": "大灯_部件故障_发暗"},
               {"input": "客户反映水泵漏水。", "output": "水泵_部件故障_漏水"}]
    found = synth.f1_by_novelty(samples, ["大灯_部件故障_发暗", ""])
    assert found["form"] == found["opening"] == {"f1": 1.0, "n": 1}
    assert found["familiar_wording"] == {"f1": 0.0, "n": 1}
    with pytest.raises(ValueError, match="split must be"):
        synth.novelty(samples[0], "train")


def test_d2q_test_lists_every_reference_question(data):
    train_docs = {s["input"] for s in data["d2q_train"]}
    for sample in data["d2q_test"]:
        assert isinstance(sample["output"], list) and 2 <= len(sample["output"]) <= 4
        assert sample["input"] not in train_docs
        assert all(q.endswith("？") for q in sample["output"])


@pytest.mark.parametrize("mode", MODES)
def test_tiny_tokenizers_round_trip_every_line_of_the_data(tokenizers, data, mode):
    """Newlines, runs of spaces, `_`, digits and Latin letters all come back as they went in."""
    tokenizer = tokenizers[mode]
    lines = ["a\nb", "a  b   c", "发动机_部件故障_漏水\n水泵_组成_冷却系统", "a = 3\nb = 7\nprint(b)"]
    for path in sorted((REPO / "data").glob("*.jsonl")):
        lines += [line for line in path.read_text(encoding="utf-8").splitlines()]
    for name in ("general_train", "general_probe", "spo_train", "spo_test", "d2q_train", "d2q_test", "spo_valid",
                 "d2q_valid"):
        for sample in data[name][:400]:
            output = sample["output"] if isinstance(sample["output"], str) else "\n".join(sample["output"])
            lines += [sample["instruction"] + sample["input"], output]
    bad = [line for line in lines if tokenizer.decode(tokenizer.encode(line, add_special_tokens=False)) != line]
    assert not bad, f"{len(bad)} lines do not round-trip, e.g. {bad[0]!r}"
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(tokenizer.encode("\n".join(lines[:200]), add_special_tokens=False))


@pytest.mark.parametrize("mode", MODES)
def test_shipped_bases_read_every_held_out_record(data, mode):
    """The small pretrained bases' vocabularies were trained once; the test and validation splits' own
    forms and openings use only characters they hold (no <unk> in what the model is asked)."""
    import glmlab

    tokenizer = glmlab.load_tokenizer(REPO / "glmlab" / "assets" / "base" / mode, mode)
    texts = [s["input"] for name in ("spo_test", "spo_valid") for s in data[name]]
    bad = [t for t in texts if tokenizer.decode(tokenizer.encode(t, add_special_tokens=False)) != t]
    assert not bad, f"{len(bad)} records do not round-trip, e.g. {bad[0]!r}"


@pytest.mark.parametrize("mode", MODES)
def test_default_lengths_keep_every_record(tokenizers, data, mode):
    """At the notebooks' defaults (glmlab.notebooks.experiment.Setup) no held-out record is cut out of its prompt."""
    tokenizer, defaults = tokenizers[mode], Setup("", mode, "", "", "")
    for sample in data["spo_test"] + data["spo_valid"] + data["spo_train"][:300]:
        prompt = tokenizer.decode(encode_prompt(sample, tokenizer, mode, defaults.max_src_len))
        assert sample["input"] in prompt, prompt


def test_cli_writes_every_file(tmp_path, capsys):
    assert synth.main(["--output_dir", str(tmp_path), "--n_general", "5", "--n_spo_train", "7"]) == 0
    assert sum(1 for _ in (tmp_path / "spo_train.jsonl").open()) == 7
    assert json.loads((tmp_path / "general_train.jsonl").open().readline())["skill"] in synth.SKILLS


def test_cli_rejects_a_bad_size_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synth.main(["--output_dir", str(tmp_path), "--n_spo_test", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["python -m glmlab.synth: error: --n_spo_test must be at least 1"]


@pytest.mark.parametrize("mode", MODES)
def test_every_entity_of_a_record_is_its_own_piece(tokenizers, data, mode):
    """No piece crosses the edge of a world word, so every head and tail of a triple is a span of pieces
    of its record that a model can copy ("节气门积碳" -> 节气门 + 积碳)."""
    tokenizer = tokenizers[mode]
    missing = []
    for sample in data["spo_train"][:300] + data["spo_test"] + data["spo_valid"]:
        pieces = [p.lstrip("▁") for p in tokenizer.tokenize(sample["input"])]
        for line in filter(None, sample["output"].split("\n")):
            head, _, tail = line.split("_")
            missing += [(word, sample["input"]) for word in (head, tail) if word not in pieces]
    assert not missing, missing[:3]

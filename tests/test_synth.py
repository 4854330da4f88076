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
        assert set(sample["output"].split("\n")) & novel or "存在" in sample["input"]
    assert "存在" in synth.HELD_OUT_TEMPLATE  # the held-out sentence form's verb, in no other template
    assert not [s for s in data["spo_train"] if "存在" in s["input"]]
    assert len([s for s in data["spo_test"] if "存在" in s["input"]]) >= 5


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

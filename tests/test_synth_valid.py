"""``glmlab.synth``'s validation split: novelty of its own, disjoint from training and test, and the
training and test files every published figure was measured on left byte for byte as they were."""

from __future__ import annotations

import hashlib

import pytest

from glmlab import synth
from glmlab.data import read_samples

# sha256 of the default files (seed 0) before the validation split existed: the README's, the
# notebooks' and the benchmarks' figures were all measured on these bytes (the test split since it
# became 200 records with five test-only forms and four test-only openings).
MEASURED_ON = {
    "spo_train": "830623de3e28b225a520304dd35041ad1a7b378b104d35bed7b1466012295806",
    "spo_test": "de1093f0a8c816af75e9f21a7ac21bd388e19251a72faa6ea84b20306acffed7",
    "d2q_train": "65a15cb47041cc35000976fb289b41f2b76bebfc5ab02d57e8b46783bb9f854a",
    "d2q_test": "672337a5dd8e40d455d7aa942b513252d852dbc3b853c443241ff65e5b1dde8a",
    "general_train": "f2a54e133505107fe0dcc18942bd1d659d7c80cf22b0f33f72fa0eb077a1e251",
    "general_probe": "eed09d5a51ef0c97c5dcb383fe5eb4cbddd62a58276dce751ac1cddd735cff32",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return synth.write_all(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def data(written) -> dict[str, list[dict]]:
    return {name: read_samples(path, references=True) for name, path in written.items()}


def _text(sample: dict) -> str:
    output = sample["output"] if isinstance(sample["output"], str) else "".join(sample["output"])
    return sample["input"] + output


def test_the_measured_files_are_unchanged(written):
    assert {name: hashlib.sha256(written[name].read_bytes()).hexdigest() for name in MEASURED_ON} == MEASURED_ON


def test_sizes_and_determinism(data, tmp_path):
    sizes = synth.Sizes()
    assert len(data["spo_valid"]) == sizes.n_spo_valid and len(data["d2q_valid"]) == sizes.n_d2q_valid
    small = synth.Sizes(n_general=5, n_spo_train=50, n_d2q_docs=20, n_spo_valid=7, n_d2q_valid=4)
    a, b = synth.write_all(tmp_path / "a", small, seed=3), synth.write_all(tmp_path / "b", small, seed=3)
    c = synth.write_all(tmp_path / "c", small, seed=4)
    for name in ("spo_valid", "d2q_valid"):
        assert a[name].read_bytes() == b[name].read_bytes() != c[name].read_bytes()
    assert [len(read_samples(a[n], references=True)) for n in ("spo_valid", "d2q_valid")] == [7, 4]


def test_spo_valid_pairs_are_its_own(data):
    """Validation-only pairs occur in no other file; test-only pairs occur in no validation record."""
    train_pairs, test_pairs, train_perf, test_perf = synth.spo_split()
    valid_parts, valid_perf = synth.valid_pairs()
    assert len(valid_parts) >= 10 and len(valid_perf) >= 5
    assert not set(valid_parts) & set(train_pairs + test_pairs) and not set(valid_perf) & set(train_perf + test_perf)
    only_valid = {f"{p}_部件故障_{f}" for p, f in valid_parts} | {f"{i}_性能故障_{b}" for i, b in valid_perf}
    only_test = {f"{p}_部件故障_{f}" for p, f in test_pairs} | {f"{i}_性能故障_{b}" for i, b in test_perf}
    triples = {name: {t for s in data[name] for t in s["output"].split("\n")} for name in ("spo_train", "spo_test", "spo_valid")}
    assert not only_valid & (triples["spo_train"] | triples["spo_test"])
    assert not only_test & triples["spo_valid"]
    assert len(only_valid & triples["spo_valid"]) >= len(only_valid) // 2  # most of them are really asked
    # nor does the general corpus (what the base read) or a doc-to-question file say one
    said = [_text(s) for name in ("general_train", "general_probe", "d2q_train", "d2q_test") for s in data[name]]
    assert not [pair for pair in valid_parts + valid_perf if any("".join(pair) in text for text in said)]


def test_spo_valid_forms_are_its_own(data):
    """Its part-fault forms and openings occur in no other file; the test's own forms and openings not in it."""
    markers = [synth._form_marker(f) for f in synth.VALID_TEMPLATES] + list(synth.VALID_OPENINGS)
    assert markers[:2] == ["发生", "出了"]
    others = [_text(s) for name in ("spo_train", "spo_test", "general_train", "general_probe", "d2q_train", "d2q_test")
              for s in data[name]]
    assert not [m for m in markers if any(m in text for text in others)]
    valid = [s["input"] for s in data["spo_valid"]]
    assert all(sum(m in text for text in valid) >= 3 for m in markers), {m: sum(m in t for t in valid) for m in markers}
    test_markers = [synth._form_marker(f) for f in synth.TEST_TEMPLATES] + list(synth.TEST_OPENINGS)
    assert not [text for text in valid if any(m in text for m in test_markers)]


def test_every_spo_valid_record_needs_generalisation(data):
    valid_parts, valid_perf = synth.valid_pairs()
    only_valid = {f"{p}_部件故障_{f}" for p, f in valid_parts} | {f"{i}_性能故障_{b}" for i, b in valid_perf}
    markers = [synth._form_marker(f) for f in synth.VALID_TEMPLATES]
    other_inputs = {s["input"] for name in ("spo_train", "spo_test") for s in data[name]}
    for sample in data["spo_valid"]:
        assert sample["input"] not in other_inputs
        assert (set(sample["output"].split("\n")) & only_valid or any(m in sample["input"] for m in markers)
                or sample["input"].startswith(synth.VALID_OPENINGS)), sample
        for line in sample["output"].split("\n"):
            head, relation, tail = line.split("_")
            assert relation in synth.RELATIONS and head in sample["input"] and tail in sample["input"]


def test_d2q_valid_documents_are_its_own(data):
    others = [s["input"] for name in ("d2q_train", "d2q_test", "general_train", "general_probe") for s in data[name]]
    assert not [m for m in synth.VALID_DOC_MARKERS if any(m in text for text in others)]
    assert all(m in synth.VALID_DOC_SENTENCES[t] for m, t in zip(synth.VALID_DOC_MARKERS, synth.VALID_DOC_SENTENCES))
    new_pairs = ["".join(pair) for pair in synth.valid_pairs()[0]] + [f"{p}的常见故障是{f}" for p, f in synth.valid_pairs()[0]]
    for sample in data["d2q_valid"]:
        assert sample["input"] not in set(others)
        assert isinstance(sample["output"], list) and 2 <= len(sample["output"]) <= 4
        text = sample["input"]
        assert any(m in text for m in synth.VALID_DOC_MARKERS) or any(
            f in text for part, faults in synth.VALID_FAULTS.items() for f in faults if part in text), text
    assert any(any(p in s["input"] for p in new_pairs) for s in data["d2q_valid"])


def test_the_shipped_base_reads_every_validation_record(data):
    """The notebooks' base (ChatGLM-6B) has a piece for every character, and every entity is its own piece."""
    import glmlab
    from glmlab.notebooks.pretrained import base_model_dir

    tokenizer = glmlab.load_tokenizer(base_model_dir("glm"), "glm")
    for sample in data["spo_valid"] + data["d2q_valid"]:
        ids = tokenizer.encode(_text(sample), add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids, sample["input"]
    for sample in data["spo_valid"]:
        pieces = [p.lstrip("▁") for p in tokenizer.tokenize(sample["input"])]
        for line in sample["output"].split("\n"):
            head, _, tail = line.split("_")
            assert head in pieces and tail in pieces, (line, pieces)


def test_no_validation_record_asks_for_a_word_training_never_writes_but_the_test_split_does(data):
    """A kind of novelty only the test split holds (notebooks/README.md, "Why validation and test differ in level"):
    a fault or problem word no training answer writes. Counted from the answers themselves, and by ``novelty``."""
    written = {line.rsplit("_", 1)[-1] for s in data["spo_train"] for line in s["output"].split("\n") if line}

    def new_words(sample: dict) -> set[str]:
        return {line.rsplit("_", 1)[-1] for line in sample["output"].split("\n")
                if line and line.split("_")[1] in ("部件故障", "性能故障")} - written

    assert not any(new_words(s) for s in data["spo_valid"])
    assert not any("word" in synth.novelty(s, "valid") for s in data["spo_valid"])
    test = [s for s in data["spo_test"] if new_words(s)]
    assert len(test) == sum("word" in synth.novelty(s, "test") for s in data["spo_test"]) == 58
    assert set().union(*map(new_words, test)) == synth._untrained_words(0)

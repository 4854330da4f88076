"""``benchmarks/data_variants.py``: its words and forms are new, each variant's training records, and the replay
variants' corpora (nothing trains here)."""

from __future__ import annotations

import sys
from pathlib import Path

from glmlab import synth

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other from there

import data_variants as variants  # noqa: E402


def test_words_and_forms_are_new_and_the_replay_variants_train_on_the_shipped_records():
    variants.check_words()
    shipped = synth.spo_data()[0]
    assert variants.train_records("replay") == variants.train_records("replay_words") == shipped
    assert variants.train_records("open_faults") != shipped


def test_extra_words_join_the_copy_and_reverse_skills_and_only_those():
    shipped, probes = synth.general_corpus()
    extended, extended_probes = synth.general_corpus(extra_words=variants.VALID_WORDS)
    assert len(extended) == len(shipped) and len(extended_probes) == len(probes)
    for corpus, words_expected in ((shipped, set()), (extended, set(variants.VALID_WORDS))):
        written = {w for s in corpus for w in variants.VALID_WORDS if w in s["output"]}
        assert written == words_expected
        skills = {s["skill"] for s in corpus if any(w in s["output"] for w in variants.VALID_WORDS)}
        assert skills <= {"copy", "reverse"}
    # the fact skills are the same facts (the shipped corpus's knowledge, arithmetic and translation items)
    facts = ("arithmetic", "knowledge", "translate")
    assert sorted((s["input"], s["output"]) for s in shipped if s["skill"] in facts) == sorted(
        (s["input"], s["output"]) for s in extended if s["skill"] in facts)

"""glmlab.notebooks.replay: the replay share as a mixture spec, the probes held out of the replayed corpus, and the
sentence 06 and the benchmark print from their numbers."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, SPO_TRAIN

from glmlab.data import read_samples
from glmlab.mixture import parse_spec
from glmlab.notebooks.replay import check_held_out, replay_count, replay_spec, replay_verdict

SYNTH = REPO / "data" / "synth"


def test_share_is_the_general_part_of_each_epoch():
    assert replay_count(2000, 0.0) == 0
    assert replay_count(2000, 0.25) == 667  # 667 of 2667: 25%
    assert replay_count(300, 0.5) == 300
    with pytest.raises(ValueError, match="replay share"):
        replay_count(10, 1.0)


def test_replay_spec_parses_back(tmp_path):
    general = SYNTH / "general_train.jsonl"
    assert replay_spec(SPO_TRAIN, 0.0, general) == str(SPO_TRAIN)
    (task, replayed) = parse_spec(replay_spec(SPO_TRAIN, 0.2, general))
    assert (task.path, task.count) == (str(SPO_TRAIN), None)
    assert (replayed.path, replayed.count) == (str(general), round(0.25 * len(read_samples(SPO_TRAIN))))


def test_probes_are_held_out_of_the_replayed_corpus(tmp_path):
    general, probes = SYNTH / "general_train.jsonl", read_samples(SYNTH / "general_probe.jsonl")
    assert check_held_out(general, probes) == len(read_samples(general))
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text(general.read_text(encoding="utf-8") + json.dumps(probes[3], ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="leaky.jsonl: 1 of"):
        check_held_out(leaky, probes)


def test_verdict_names_the_share_or_the_trade_off():
    none = {"share": 0.0, "f1": 0.90, "skills": 0.10}
    met = replay_verdict("lora", [none, {"share": 0.1, "f1": 0.88, "skills": 0.85}, {"share": 0.25, "f1": 0.80, "skills": 0.95}])
    assert met.startswith("lora: 10% replay keeps general skills at 0.85") and "it meets the target" in met
    missed = replay_verdict("full", [none, {"share": 0.25, "f1": 0.87, "skills": 0.5}])
    assert "25% replay" in missed and "it misses the target" in missed
    trade = replay_verdict("full", [none, {"share": 0.25, "f1": 0.70, "skills": 0.9}])
    assert "every share costs more than 0.05 F1" in trade and "0.200" in trade

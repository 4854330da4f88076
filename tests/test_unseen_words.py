"""``benchmarks/unseen_words.py``: recall split by trained, read and unread words on canned predictions, and the
one-line refusal when no predictions file matches (nothing is written)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other from there

import unseen_words  # noqa: E402


def test_recall_of_trained_read_and_unread_words():
    trained = Counter({"漏水": 3})
    rows = [{"input": "水泵漏水，离合器分离不彻底，制动发软。",
             "output": "水泵_部件故障_漏水\n离合器_部件故障_分离不彻底\n制动_性能故障_发软",
             "prediction": "水泵_部件故障_漏水\n离合器_部件故障_分离不彻底\n制动_性能故障_跑偏"}]
    result = unseen_words.analyse(rows, trained, read={"分离不彻底"})
    assert (result["recall_trained_tail"], result["recall_untrained_tail"]) == (1.0, 0.5)
    assert (result["recall_untrained_read"], result["recall_untrained_unread"]) == (1.0, 0.0)
    assert (result["n_untrained_read"], result["n_untrained_unread"]) == (1, 1)


def test_no_matching_predictions_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit, match=r"--pattern 'none/\*\.jsonl': no triple-extraction predictions file matches"):
        unseen_words.main(["--runs_dir", str(tmp_path), "--pattern", "none/*.jsonl", "--json", str(out)])
    assert not out.exists()

"""``benchmarks/wide_valid.py``: a validation-like split built with the test split's recipe from forms and openings no
synth file uses (checked), and the one-line refusals (no model is scored here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from glmlab import synth

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("wide_valid", REPO / "benchmarks" / "wide_valid.py")
wide = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wide)


def test_the_wide_split_holds_its_own_forms_and_openings_in_the_test_splits_proportions():
    from glmlab.notebooks import experiment

    texts = [experiment.data_path(n).read_text(encoding="utf-8")
             for n in ("spo_train", "spo_valid", "spo_test", "general_train", "general_probe")]
    wide.check_new(texts)  # no synth file holds them
    with pytest.raises(SystemExit, match="'交车前' already occurs"):
        wide.check_new(texts + ["交车前检查"])
    records = wide.records(exclude={"x"})
    assert len(records) == synth.Sizes().n_spo_test
    markers = [synth._form_marker(f) for f in wide.FORMS]
    for record in records:
        assert record["kinds"]
        assert ("form" in record["kinds"]) == any(m in record["input"] for m in markers)
        assert ("opening" in record["kinds"]) == record["input"].startswith(wide.OPENINGS)
        assert not any(synth._form_marker(f) in record["input"] for f in synth.TEST_TEMPLATES + synth.VALID_TEMPLATES)
    test = texts[2].splitlines()
    test_share = sum(any(f'"input": "{o}' in line for o in synth.TEST_OPENINGS) for line in test) / len(test)
    share = sum("opening" in r["kinds"] for r in records) / len(records)
    assert abs(share - test_share) < 0.06, (share, test_share)  # the test split's recipe: as many held-out openings
    assert len({r["input"] for r in records}) == len(records)


def test_a_runs_dir_without_sweep_runs_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=f"--runs_dir {tmp_path}: no sweep_valid.py runs"):
        wide.main(["--runs_dir", str(tmp_path)])

"""``benchmarks/wide_valid.py``: a validation-like split built with the test split's recipe from forms and openings no
synth file uses (checked), and the one-line refusals (no model is scored here)."""

from __future__ import annotations

import importlib.util
import json
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
    # like validation, and unlike the test split, it asks for no word that training never writes (its pairs are validation's)
    assert not any(synth._untrained_words(0) & {t.rsplit("_", 1)[-1] for t in r["output"].split("\n")} for r in records)


SWEEP = REPO / "benchmarks" / "results" / "sweep_budget.json"


def test_bad_input_is_one_line_naming_the_flag_before_anything_loads(tmp_path):
    not_json = tmp_path / "notes.txt"
    not_json.write_text("a sweep?", encoding="utf-8")
    with pytest.raises(SystemExit, match=f"--sweep {not_json}: cannot read it as JSON"):
        wide.main(["--sweep", str(not_json), "--runs_dir", str(tmp_path)])
    other = tmp_path / "methods.json"
    other.write_text('{"summary": {}}', encoding="utf-8")
    with pytest.raises(SystemExit, match=f"--sweep {other}: not a benchmarks/sweep_valid.py output"):
        wide.main(["--sweep", str(other), "--runs_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--methods adapter: not in .*sweep_budget.json \(it has embedding, freeze, lora"):
        wide.main(["--sweep", str(SWEEP), "--runs_dir", str(tmp_path), "--methods", "lora", "adapter"])
    with pytest.raises(SystemExit, match=f"--runs_dir {tmp_path}: 24 of .*sweep_budget.json's 24 runs are not there "
                                         f"\\(first: {tmp_path}/glm-e3-s1234/lora-lr0.005\\)"):
        wide.main(["--sweep", str(SWEEP), "--runs_dir", str(tmp_path), "--methods", "lora"])


def test_a_sweeps_runs_are_found_where_sweep_valid_trains_them(tmp_path):
    """The folders are sweep_valid.run_folder's, one per full-budget row of the methods asked for."""
    import sweep_valid  # benchmarks/ is on the path once wide_valid.py is loaded

    rows = json.loads(SWEEP.read_text(encoding="utf-8"))["runs"]
    for row in rows:
        if row["variant"] == "freeze":
            sweep_valid.run_folder(tmp_path, row["mode"], row["epochs"], row["seed"], "freeze", row["learning_rate"]).mkdir(parents=True)
    sweep, runs = wide.sweep_runs(SWEEP, tmp_path, ["freeze"])
    assert sweep["mode"] == "glm" and len(runs) == sum(r["variant"] == "freeze" for r in rows) == 6
    assert {folder.relative_to(tmp_path).as_posix() for _, folder in runs} == {
        f"glm-e{e}-s{s}/freeze-lr0.005" for e in (3, 6) for s in (1234, 2, 3)}


def test_scores_each_run_once_applies_the_sweeps_rule_and_resumes(tmp_path, monkeypatch, capsys):
    """With a fake model (right at 6 epochs, silent at 3) the wide figures, the rule's choice and the resume are wide_valid's own."""
    import sweep_valid

    import glmlab.checkpoint
    from glmlab.notebooks import experiment

    rows = [r for r in json.loads(SWEEP.read_text(encoding="utf-8"))["runs"] if r["variant"] == "freeze"]
    for row in rows:
        sweep_valid.run_folder(tmp_path, row["mode"], row["epochs"], row["seed"], "freeze", row["learning_rate"]).mkdir(parents=True)
    scored = []

    def evaluate(model, tokenizer, mode, samples, max_src_len, max_new_tokens):
        scored.append(model)
        right = model.endswith("e6")
        return [s["output"] if right else "" for s in samples], {"f1": 1.0 if right else 0.0}

    monkeypatch.setattr(glmlab.checkpoint, "latest_checkpoint", lambda folder: str(folder))
    monkeypatch.setattr(experiment, "load", lambda path: (Path(path).parent.name.split("-s")[0], None, "glm"))
    monkeypatch.setattr(experiment, "evaluate", evaluate)
    out = tmp_path / "wide.json"
    argv = ["--sweep", str(SWEEP), "--runs_dir", str(tmp_path), "--methods", "freeze", "--json", str(out)]
    assert wide.main(argv) == 0
    assert len(scored) == 6
    record = json.loads(out.read_text(encoding="utf-8"))
    assert [(s["epochs"], s["f1"]["mean"], s["form"]["mean"]) for s in record["summary"]] == [(3, 0.0, 0.0), (6, 1.0, 1.0)]
    assert record["chosen"]["epochs"] == 6 and record["chosen"]["by_method"]["freeze"]["epochs"] == 6
    valid = {(r["epochs"], r["seed"]): r["f1"] for r in rows}
    assert all(r["valid_f1"] == valid[(r["epochs"], r["seed"])] for r in record["runs"])  # the sweep's own figure beside
    assert "the sweep's rule on this split: 6 epochs" in capsys.readouterr().out
    assert wide.main(argv) == 0 and len(scored) == 6  # resumed: nothing scored again
    assert json.loads(out.read_text(encoding="utf-8"))["runs"] == record["runs"]

"""``benchmarks/report_chosen.py``: a validation sweep's choice and the notebooks' settings scored on the test split
(runs replaced by a fake ``run_method``: no training here), and the sweeps it refuses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from glmlab.notebooks import experiment

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("report_chosen", REPO / "benchmarks" / "report_chosen.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def _sweep(path: Path, rate: float, epochs: int) -> dict:
    base = experiment.resolve_base(None, "glm")
    record = {"mode": "glm", "scored_on": "spo_valid.jsonl", "base_weights": experiment.weights_digest(base), "runs": [],
              "machine": report.machine(), "chosen": {"epochs": epochs, "rates": {"lora": {"learning_rate": rate, "f1": 0.9}}}}
    path.write_text(json.dumps(record))
    return record


def test_the_choice_and_the_notebooks_settings_are_scored_on_test_and_resume(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run_method(label, flags, setup, probes=None):
        calls.append((label, flags["learning_rate"], setup.num_train_epochs, setup.seed, Path(setup.test_path).name))
        f1 = 0.5 + setup.num_train_epochs / 10 + setup.seed / 100
        return {"f1": f1, "final_loss": 0.1, "f1_by_novelty": {"form": {"f1": f1 - 0.1, "n": 90}, "pair": {"f1": f1, "n": 80}}}

    monkeypatch.setattr(experiment, "run_method", fake_run_method)
    sweep_file = tmp_path / "sweep.json"
    _sweep(sweep_file, 5e-3, 5)
    notebooks = experiment.default_learning_rate(experiment.study_methods(4)["lora"])
    argv = ["--sweep", str(sweep_file), "--seeds", "1", "2", "--runs_dir", str(tmp_path / "runs")]
    assert report.main(argv) == 0
    assert calls == [("lora", 5e-3, 5, 1, "spo_test.jsonl"), ("lora", 5e-3, 5, 2, "spo_test.jsonl"),
                     ("lora", notebooks, 3, 1, "spo_test.jsonl"), ("lora", notebooks, 3, 2, "spo_test.jsonl")]
    out = tmp_path / "sweep_test.json"
    record = json.loads(out.read_text())
    chosen, ours = record["summary"]["lora 0.005 x5"], record["summary"][f"lora {notebooks:g} x3"]
    assert chosen["setting"] == "chosen" and ours["setting"] == "notebooks"
    assert chosen["f1"]["mean"] == pytest.approx(1.015) and chosen["f1_by_novelty"]["form"]["mean"] == pytest.approx(0.915)
    assert ours["f1"]["std"] == pytest.approx(0.00707, abs=1e-5) and record["scored_on"] == "spo_test.jsonl"
    assert "1.015 ± 0.007" in capsys.readouterr().out
    # resumable: a third seed trains only itself, twice (the choice and the notebooks')
    assert report.main([*argv[:2], "--seeds", "1", "2", "3", *argv[5:]]) == 0
    assert [c[2:4] for c in calls[4:]] == [(5, 3), (3, 3)]
    # a choice equal to the notebooks' settings is run once
    _sweep(sweep_file, notebooks, 3)
    methods = experiment.study_methods(4)
    assert report.settings(json.loads(sweep_file.read_text()), methods, 3) == [
        {"method": "lora", "setting": "notebooks = chosen", "learning_rate": notebooks, "epochs": 3}]
    # a sweep of several budgets: each method's own best budget and rate; --methods keeps some
    record = json.loads(sweep_file.read_text())
    record["chosen"]["by_method"] = {"lora": {"epochs": 6, "learning_rate": 5e-3, "f1": 0.94},
                                     "freeze": {"epochs": 3, "learning_rate": 5e-3, "f1": 0.8}}
    assert [(s["method"], s["setting"], s["epochs"]) for s in report.settings(record, methods, 3)] == [
        ("lora", "chosen", 6), ("lora", "notebooks", 3), ("freeze", "notebooks = chosen", 3)]
    assert [s["method"] for s in report.settings(record, methods, 3, ["freeze"])] == ["freeze"]
    with pytest.raises(SystemExit, match="--methods 'adapter'"):
        report.main(["--sweep", str(sweep_file), "--methods", "adapter"])


def test_a_sweep_of_another_machine_or_base_or_no_sweep_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "run_method", lambda *a, **k: pytest.fail("nothing may train"))
    sweep_file = tmp_path / "sweep.json"
    record = _sweep(sweep_file, 5e-3, 5)
    record["machine"]["cpu_capability"] = "another kernel set"
    sweep_file.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"sweep\.json: measured on another machine"):
        report.main(["--sweep", str(sweep_file)])
    record = _sweep(sweep_file, 5e-3, 5)
    record["base_weights"] = "0" * 16
    sweep_file.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"sweep\.json: swept on other weights"):
        report.main(["--sweep", str(sweep_file)])
    sweep_file.write_text("{}")
    with pytest.raises(SystemExit, match=r"^report_chosen.py: --sweep \S*sweep\.json: not a benchmarks/sweep_valid.py "
                                         r"output on spo_valid.jsonl \(no chosen, mode, runs, scored_on\)"):
        report.main(["--sweep", str(sweep_file)])

"""``benchmarks/sweep_valid.py``: settings chosen on the validation split only, the choice rule, and a
sweep that resumes from its own output (runs replaced by a fake ``run_method``: no training here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from glmlab.notebooks import experiment

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sweep_valid", REPO / "benchmarks" / "sweep_valid.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def _row(variant: str, rate: float, f1: float, epochs: int = 3, seed: int = 1) -> dict:
    return {"variant": variant, "learning_rate": rate, "f1": f1, "epochs": epochs, "seed": seed}


def test_choose_picks_the_best_rate_per_method_and_the_best_budget():
    defaults = {"lora": 5e-3, "zero3": 2e-3}
    rows = [_row("lora", 3e-3, 0.80), _row("lora", 5e-3, 0.85), _row("lora", 1e-2, 0.90),
            _row("zero3", 1e-3, 0.70), _row("zero3", 2e-3, 0.70),  # a tie goes to the current default
            _row("lora", 5e-3, 0.95, epochs=2), _row("zero3", 1e-3, 0.60, epochs=2)]
    chosen = sweep.choose(rows, defaults)
    assert chosen["rates_by_epochs"][3]["lora"]["learning_rate"] == 1e-2
    assert chosen["rates_by_epochs"][3]["zero3"]["learning_rate"] == 2e-3
    assert chosen["mean_f1_by_epochs"] == {3: pytest.approx(0.80), 2: pytest.approx(0.775)} and chosen["epochs"] == 3
    # per method, its own best budget: LoRA's is 2 epochs, full fine-tuning's the common one
    assert chosen["by_method"] == {"lora": {"epochs": 2, "learning_rate": 5e-3, "f1": pytest.approx(0.95), "seeds": 1},
                                   "zero3": {"epochs": 3, "learning_rate": 2e-3, "f1": pytest.approx(0.70), "seeds": 1}}
    tie = [_row("lora", 1e-2, 0.9, epochs=3), _row("lora", 1e-2, 0.9, epochs=6)]
    assert sweep.choose(tie, defaults)["by_method"]["lora"]["epochs"] == 3  # a tie goes to the smaller budget
    # mean over seeds decides
    seeds = [_row("lora", 3e-3, 0.9, seed=1), _row("lora", 3e-3, 0.7, seed=2), _row("lora", 5e-3, 0.81, seed=1),
             _row("lora", 5e-3, 0.81, seed=2)]
    assert sweep.choose(seeds, defaults)["rates"]["lora"] == {"learning_rate": 5e-3, "f1": pytest.approx(0.81), "seeds": 2}


def test_a_bad_grid_is_one_line():
    with pytest.raises(SystemExit, match="LABEL=RATE"):
        sweep.parse_grid(["adapter=1e-3"])
    assert sweep.parse_grid(["lora=3e-3,5e-3"]) == {"lora": (3e-3, 5e-3)}


def test_the_sweep_scores_validation_only_and_resumes(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run_method(label, flags, setup, probes=None):
        calls.append((label, flags["learning_rate"], setup.test_path))
        run_dir = Path(setup.output_dir) / label
        run_dir.mkdir(parents=True, exist_ok=True)  # a run again replaces its own folder, as run_method does
        samples = [json.loads(line) for line in Path(setup.test_path).read_text(encoding="utf-8").splitlines()]
        with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:  # perfect at 1e-2, empty otherwise
            for s in samples:
                f.write(json.dumps({**s, "prediction": s["output"] if flags["learning_rate"] == 1e-2 else ""},
                                   ensure_ascii=False) + "\n")
        f1 = 1.0 if flags["learning_rate"] == 5e-3 else 0.0
        return {"f1": f1, "sample_f1": f1, "steps": 375, "first_loss": 9.0, "final_loss": 0.1,
                "predictions": str(run_dir / "predictions.jsonl")}

    monkeypatch.setattr(experiment, "run_method", fake_run_method)
    out = tmp_path / "sweep.json"
    argv = ["--grid", "lora=5e-3,1e-2", "--runs_dir", str(tmp_path / "runs"), "--output", str(out)]
    assert sweep.main(argv) == 0
    assert [c[:2] for c in calls] == [("lora-lr0.005", 5e-3), ("lora-lr0.01", 1e-2)]
    for rate in (5e-3, 1e-2):  # where wide_valid.py looks for them: sweep_valid.run_folder
        assert (sweep.run_folder(tmp_path / "runs", "glm", 3, 1234, "lora", rate) / "predictions.jsonl").is_file()
    assert {Path(c[2]).name for c in calls} == {"spo_valid.jsonl"}  # never the test split
    record = json.loads(out.read_text())
    assert record["scored_on"] == "spo_valid.jsonl" and record["chosen"]["rates"]["lora"]["learning_rate"] == 5e-3
    assert record["machine"]["cpu_capability"] and record["machine"]["torch"]  # choose_base.py compares one machine's
    by_novelty = record["runs"][1]["f1_by_novelty"]
    assert by_novelty["pair"]["f1"] == 1.0 and sum(by_novelty[k]["n"] for k in ("form", "opening", "pair")) >= 60
    assert "DIFFERS from the current default 0.01" in capsys.readouterr().out
    # run again, wider: the finished rows are reused, only the new rate trains
    assert sweep.main(["--grid", "lora=3e-3,5e-3,1e-2", *argv[2:]]) == 0
    assert [c[:2] for c in calls[2:]] == [("lora-lr0.003", 3e-3)]
    assert len(json.loads(out.read_text())["runs"]) == 3
    # a rebuilt base is another base: rows of other weights are neither reused nor kept (one base per file)
    record = json.loads(out.read_text())
    weights = record["base_weights"]
    for row in record["runs"]:
        row["base_weights"] = "0" * 16
    out.write_text(json.dumps(record))
    assert sweep.main(["--grid", "lora=1e-2", *argv[2:]]) == 0
    assert [c[:2] for c in calls[3:]] == [("lora-lr0.01", 1e-2)]
    assert "dropping 3 row(s) measured on other weights" in capsys.readouterr().out
    assert [r["base_weights"] for r in json.loads(out.read_text())["runs"]] == [weights]
    calls[3:] = []
    # another machine's sweep is not extended here (its rows would pass for this machine's): one line, nothing run
    other = json.loads(out.read_text())
    other["machine"]["cpu_capability"] = "another kernel set"
    out.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="measured on another machine"):
        sweep.main(["--grid", "lora=2e-2", *argv[2:]])
    assert len(calls) == 3 and json.loads(out.read_text()) == other


def test_read_sweep_refuses_what_is_not_a_validation_sweep_in_one_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"runs": [], "mode": "glm", "scored_on": "spo_test.jsonl"}), encoding="utf-8")
    with pytest.raises(SystemExit, match=f"x.py: --sweep {path}: not a benchmarks/sweep_valid.py output on spo_valid.jsonl "
                                         r"\(scored on spo_test.jsonl\)"):
        sweep.read_sweep(path, "x.py")
    path.write_text("[1]", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"\(no mode, runs, scored_on\)"):
        sweep.read_sweep(path, "x.py")
    path.write_text(json.dumps({"runs": [], "mode": "glm", "scored_on": "spo_valid.jsonl"}), encoding="utf-8")
    assert sweep.read_sweep(path, "x.py")["mode"] == "glm"

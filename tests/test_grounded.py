"""``benchmarks/grounded.py``: rescoring saved predictions with and without grounding, on files written here (no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("grounded", REPO / "benchmarks" / "grounded.py")
grounded = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grounded)

RECORD = {"instruction": "抽取：", "input": "检修时发现压缩机异响。", "output": "压缩机_部件故障_异响"}


def _sweep(tmp_path: Path, predictions: list[str]) -> Path:
    """A sweep file of one method, one run per prediction (seeds 1, 2, ...), each run's predictions saved where
    sweep_valid.run_folder puts them; the recorded F1 is each run's raw F1."""
    import sweep_valid

    from glmlab.metrics import triple_f1

    runs = []
    for seed, prediction in enumerate(predictions, start=1):
        folder = sweep_valid.run_folder(tmp_path / "runs", "glm", 3, seed, "lora", 0.01)
        folder.mkdir(parents=True)
        (folder / "predictions.jsonl").write_text(json.dumps({**RECORD, "prediction": prediction}, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        runs.append({"mode": "glm", "variant": "lora", "epochs": 3, "learning_rate": 0.01, "seed": seed, "max_steps": None,
                     "f1": triple_f1([prediction], [RECORD["output"]]).f1})
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"scored_on": "spo_valid.jsonl", "mode": "glm", "runs": runs, "machine": {"cpu_model": "x"}}),
                    encoding="utf-8")
    return path


def test_rescores_saved_predictions_raw_and_grounded(tmp_path, capsys):
    sweep = _sweep(tmp_path, ["压缩机_部件故障_鼓包\n压缩机_部件故障_异响", "压缩机_部件故障_异响"])
    out = tmp_path / "grounded.json"
    assert grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    (row,) = record["valid"]
    assert row["seeds"] == [1, 2] and row["raw"]["f1"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert row["grounded"]["f1"]["mean"] == 1.0 and row["grounded"]["recall"] == row["raw"]["recall"]
    assert record["chosen_on_validation"] is True and record["test"] == []
    assert "grounding raises the mean validation F1 of every method at every setting (smallest gain +0.167)" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path):
    sweep = _sweep(tmp_path, ["压缩机_部件故障_异响"])
    with pytest.raises(SystemExit, match="--report and --report_runs_dir go together"):
        grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--report", str(sweep)])
    with pytest.raises(SystemExit, match=f"--report {sweep}: not a benchmarks/report_chosen.py output on spo_test.jsonl"):
        grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--report", str(sweep),
                       "--report_runs_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"--sweep {tmp_path / 'none.json'}: cannot read it as JSON"):
        grounded.main(["--sweep", str(tmp_path / "none.json"), "--runs_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="predictions.jsonl: no predictions there"):
        grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "elsewhere")])
    record = json.loads(sweep.read_text(encoding="utf-8"))
    record["runs"][0]["f1"] = 0.5  # the saved predictions are another run's
    sweep.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"its raw F1 1.000000 is not the 0.500000 its file recorded"):
        grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs")])


def test_decode_scores_grounded_decoding_and_applies_the_rule(tmp_path, monkeypatch, capsys):
    """--decode: each run's answers from grounded decoding (here given, not generated) scored beside the filter's; the
    rule fixed beforehand (the better mean over settings) chooses; answers the model wrote grounded must come out
    unchanged, and are counted."""
    sweep = _sweep(tmp_path, ["压缩机_部件故障_鼓包", "压缩机_部件故障_异响"])
    decoded = {1: "压缩机_部件故障_异响", 2: "压缩机_部件故障_异响"}  # seed 1's 鼓包 replaced by the record's word
    monkeypatch.setattr(grounded, "decode", lambda predictions, rows: [decoded[int(predictions.parent.parent.name[-1])]])
    out = tmp_path / "grounded.json"
    assert grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--decode", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    (row,) = record["valid"]
    assert row["grounded"]["f1"]["mean"] == 0.5 and row["decode"]["f1"]["mean"] == 1.0  # the filter loses seed 1's triple
    assert row["decode"]["recall"]["mean"] == 1.0 > row["grounded"]["recall"]["mean"]
    assert record["decoding"]["chosen_on_validation"] is True
    assert record["decoding"]["checks"] == {"freely": 1, "unchanged": 1}  # seed 2 wrote a grounded answer itself
    assert "mean over the 1 settings: filter 0.5000, decoding 1.0000: decoding is chosen" in capsys.readouterr().out
    decoded[2] = "压缩机_部件故障_压缩机"  # a decoder that changed an answer the model wrote grounded: counted, and worse
    assert grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--decode", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["decoding"]["checks"] == {"freely": 1, "unchanged": 0}
    assert record["decoding"]["chosen_on_validation"] is False  # 0.5 against 0.5: not better
    # a run whose saved predictions are another run's is refused before anything is generated for it
    record = json.loads(sweep.read_text(encoding="utf-8"))
    record["runs"][0]["f1"] = 0.5
    sweep.write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.setattr(grounded, "decode", lambda *a: pytest.fail("generated for a refused run"))
    with pytest.raises(SystemExit, match=r"its raw F1 0.000000 is not the 0.500000 its file recorded"):
        grounded.main(["--sweep", str(sweep), "--runs_dir", str(tmp_path / "runs"), "--decode"])


def test_decode_reuses_the_answers_it_wrote_for_the_same_samples(tmp_path, monkeypatch):
    from glmlab.notebooks import experiment

    predictions = tmp_path / "run" / "predictions.jsonl"
    predictions.parent.mkdir()
    predictions.write_text(json.dumps({**RECORD, "prediction": "压缩机_部件故障_鼓包"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (predictions.parent / "predictions_decode.jsonl").write_text(
        json.dumps({**RECORD, "prediction": "压缩机_部件故障_异响"}, ensure_ascii=False) + "\n", encoding="utf-8")
    monkeypatch.setattr(experiment, "load", lambda *a: pytest.fail("loaded a model"))
    rows = [json.loads(predictions.read_text(encoding="utf-8"))]
    assert grounded.decode(predictions, rows) == ["压缩机_部件故障_异响"]
    # answers written for other samples are not reused: the run's checkpoint is asked for (and here there is none)
    (predictions.parent / "predictions_decode.jsonl").write_text(
        json.dumps({**RECORD, "input": "别的记录", "prediction": "x"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match="checkpoint"):
        grounded.decode(predictions, rows)

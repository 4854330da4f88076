"""``benchmarks/choose_base.py``: the base generation chosen from validation sweeps, on what every base ran."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("choose_base", REPO / "benchmarks" / "choose_base.py")
choose_base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose_base)


MACHINE = {"cpu_model": "AMD EPYC", "cpu_capability": "AVX512", "torch": "2.13.0+cpu", "cpus": 2}


def _sweep(tmp_path: Path, mode: str, f1: dict[tuple[str, float, int], float], scored_on: str = "spo_valid.jsonl",
           machine: dict | None = MACHINE) -> Path:
    runs = [{"variant": v, "learning_rate": r, "epochs": 3, "seed": s, "max_steps": None, "f1": value}
            for (v, r, s), value in f1.items()]
    path = tmp_path / f"{mode}.json"
    record = {"mode": mode, "scored_on": scored_on, "runs": runs, **({"machine": machine} if machine else {})}
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_the_base_with_the_best_mean_over_methods_wins_on_common_settings_only(tmp_path, capsys):
    glm = _sweep(tmp_path, "glm", {("lora", 1e-2, 1): 0.90, ("lora", 1e-2, 2): 0.80, ("lora", 3e-3, 1): 0.99,
                                   ("zero3", 1e-3, 1): 0.70, ("zero3", 1e-3, 2): 0.70})
    glm2 = _sweep(tmp_path, "glm2", {("lora", 1e-2, 1): 0.95, ("lora", 1e-2, 2): 0.85, ("lora", 5e-3, 1): 0.1,
                                     ("zero3", 1e-3, 1): 0.60, ("zero3", 1e-3, 2): 0.62})
    out = tmp_path / "choice.json"
    assert choose_base.main([str(glm), str(glm2), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # glm's 3e-3 and glm2's 5e-3 were not run on the other base: only lora 1e-2 and zero3 1e-3 are compared
    assert result["by_base"]["glm"]["methods"]["lora"]["f1"] == pytest.approx(0.85)
    assert result["by_base"]["glm"]["mean_f1"] == pytest.approx(0.775)
    assert result["by_base"]["glm2"]["mean_f1"] == pytest.approx((0.90 + 0.61) / 2)
    assert result["chosen"] == "glm" and "chosen base: glm" in capsys.readouterr().out


def test_sweeps_that_cannot_be_compared_are_one_line(tmp_path):
    glm = _sweep(tmp_path, "glm", {("lora", 1e-2, 1): 0.9})
    with pytest.raises(SystemExit, match="share no"):
        choose_base.compare([json.loads(glm.read_text()), {"mode": "glm2", "machine": MACHINE, "runs": [
            {"variant": "lora", "learning_rate": 5e-3, "epochs": 3, "seed": 1, "f1": 0.5}]}])
    # LoRA's figures differ between CPUs: sweeps of two machines (or of an unknown one) are not compared
    other = _sweep(tmp_path, "glm2", {("lora", 1e-2, 1): 0.9}, machine={**MACHINE, "cpu_capability": "AVX2"})
    with pytest.raises(SystemExit, match="not all run on one machine"):
        choose_base.compare([json.loads(glm.read_text()), json.loads(other.read_text())])
    unknown = _sweep(tmp_path, "glm2", {("lora", 1e-2, 1): 0.9}, machine=None)
    with pytest.raises(SystemExit, match="not all run on one machine"):
        choose_base.compare([json.loads(glm.read_text()), json.loads(unknown.read_text())])
    # a file that is not a validation sweep: one line naming it, before any comparison (sweep_valid.read_sweep)
    test_sweep = _sweep(tmp_path, "glm3", {("lora", 1e-2, 1): 0.9}, scored_on="spo_test.jsonl")
    with pytest.raises(SystemExit, match=rf"^choose_base.py: {test_sweep}: not a .* on spo_valid.jsonl \(scored on spo_test"):
        choose_base.main([str(glm), str(test_sweep)])
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"^choose_base.py: \S*bad.json: not a benchmarks/sweep_valid.py output .*\(no mode"):
        choose_base.main([str(tmp_path / "bad.json")])

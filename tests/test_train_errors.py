"""Bad input fails before DeepSpeed starts: non-zero exit, one clear line, nothing written.

And a loss that turns non-finite stops training with a message naming the step, keeping the
checkpoints saved before it.
"""

from __future__ import annotations

import json

import pytest
from conftest import SPO_TRAIN, run_train, train_argv


def _bad_line_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = SPO_TRAIN.read_text(encoding="utf-8").splitlines()[:3]
    path.write_text("\n".join([lines[0], lines[1][:-5], lines[2]]) + "\n", encoding="utf-8")
    return path, "bad.jsonl:2"


def _missing_field_file(tmp_path):
    path = tmp_path / "missing.jsonl"
    path.write_text(json.dumps({"instruction": "抽取三元组", "input": "节气门卡滞"}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path, "output"


CASES = {
    "malformed_jsonl_line": lambda tmp, model: ({"train_path": _bad_line_file(tmp)[0]}, "bad.jsonl:2"),
    "missing_field": lambda tmp, model: ({"train_path": _missing_field_file(tmp)[0]}, "output"),
    "model_path_missing": lambda tmp, model: ({"model_name_or_path": tmp / "no-model"}, "no-model"),
    "unknown_mode": lambda tmp, model: ({"mode": "glm4"}, "--mode"),
    "unknown_train_type": lambda tmp, model: ({"train_type": "qlora"}, "--train_type"),
    "freeze_pattern_matches_nothing": lambda tmp, model: (
        {"train_type": "freeze", "freeze_module_name": "layers.27."}, "layers.27."),
    "lora_module_matches_nothing": lambda tmp, model: (
        {"train_type": "lora", "lora_module_name": "q_proj"}, "q_proj"),
    "ds_file_missing": lambda tmp, model: ({"ds_file": tmp / "ds_zero9.json"}, "ds_zero9.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_through_the_launcher(case, tiny_model, tmp_path):
    flags, message = CASES[case](tmp_path, tiny_model("glm2"))
    out = tmp_path / "out"
    result = run_train(train_argv(tiny_model("glm2"), out, **{"mode": "glm2", **flags}), out, processes=2)
    lines = result.proc.stderr.strip().splitlines()
    assert result.proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("glmlab.train: error:") and message in lines[0], result.explain()
    assert "deepspeed" not in result.proc.stdout.lower()  # the launcher never started
    assert not out.exists()
    print(lines[0])


def test_bad_input_without_the_launcher(tiny_model, tmp_path):
    out = tmp_path / "out"
    argv = train_argv(tiny_model("glm"), out, mode="glm", train_type="freeze", freeze_module_name="layers.1.,9")
    result = run_train(argv, out, processes=0)
    assert result.proc.returncode == 2
    assert result.proc.stderr.strip().splitlines() == [
        "glmlab.train: error: --freeze_module_name: 'layers.9.' matches no parameter (this model has layers.0. .. layers.1.)"]
    assert not out.exists()


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "out"
    # An absurd learning rate: the weights overflow once it is past DeepSpeed's two warmup steps at rate 0.
    argv = train_argv(tiny_model("glm2"), out, train_type="all", learning_rate="1e30", max_grad_norm="0",
                      save_model_step=1, max_steps=10)
    result = run_train(argv, out, processes=2)
    assert result.proc.returncode == 1, result.explain()
    error = [line for line in result.proc.stderr.splitlines() if line.startswith("glmlab.train: error:")]
    assert len(error) == 1 and "at optimizer step" in error[0], result.explain()
    bad_step = int(error[0].split("at optimizer step ")[1].split()[0])
    saved = [int(c.name.rsplit("-", 1)[1]) for c in result.checkpoints()]
    assert saved == list(range(1, bad_step)), (saved, error[0])
    assert f"last good checkpoint: {out / f'epoch-1-step-{bad_step - 1}'}" in error[0]
    assert not list(out.glob(".*.tmp"))
    print(error[0])

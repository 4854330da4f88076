"""Reference losses, process-count invariance and exact resumption of the real training loop.

* A fixed run (tiny glm2 checkpoint, ``all``, fp32, two CPU processes, micro-batch 1, 16
  samples, 8 optimizer steps) logs the first losses stored in
  ``tests/fixtures/train_losses.json``.
* The same run on one process with ``--gradient_accumulation_steps 2`` (the same global
  batch: the same samples in each optimizer step) logs the same losses.
* A LoRA run with dropout, stopped by ``--max_steps`` and continued with ``--resume_from``,
  logs exactly the losses of the uninterrupted run and ends with the same adapter
  (same data order, step counter, scheduler, optimizer state and random state).

To regenerate the stored losses after an intended change (a new model initialisation in
``glmlab.tiny``, a new data format...), run::

    GLMLAB_UPDATE_TRAIN_LOSSES=1 python -m pytest tests/test_train_losses.py -k fixed_run

which rewrites ``tests/fixtures/train_losses.json`` from the two-process run and fails the
test once to say so; check the diff before committing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import SMALL, SPO_TRAIN, run_train, train_argv
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "train_losses.json"


@pytest.fixture(scope="module")
def train16(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train16.jsonl"
    path.write_text("".join(SPO_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:16]), encoding="utf-8")
    return path


FIXED = {"train_type": "all", "mode": "glm2", "per_device_train_batch_size": 1, "learning_rate": "3e-3"}


@pytest.fixture(scope="module")
def two_process_run(tiny_model, train16, tmp_path_factory):
    out = tmp_path_factory.mktemp("fixed") / "out"
    result = run_train(train_argv(tiny_model("glm2"), out, train_path=train16, **FIXED), out, processes=2)
    assert result.proc.returncode == 0, result.explain()
    return result


@pytest.mark.slow
def test_fixed_run_reproduces_stored_losses(two_process_run):
    losses = two_process_run.losses
    assert len(losses) == 8
    if os.environ.get("GLMLAB_UPDATE_TRAIN_LOSSES"):
        FIXTURE.write_text(json.dumps({
            "how": "GLMLAB_UPDATE_TRAIN_LOSSES=1 python -m pytest tests/test_train_losses.py -k fixed_run",
            "run": {"processes": 2, "model": "glmlab.tiny glm2 (seed 0)", "train_path": "first 16 lines of data/spo_train.jsonl",
                    "flags": {**{k.lstrip("-"): v for k, v in SMALL.items()}, **FIXED}},
            "torch": torch.__version__,
            "losses": losses,
        }, indent=2, ensure_ascii=False) + "\n")
        pytest.fail(f"rewrote {FIXTURE}; rerun without GLMLAB_UPDATE_TRAIN_LOSSES")
    stored = json.loads(FIXTURE.read_text())["losses"]
    assert losses == pytest.approx(stored, abs=2e-5)
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_one_process_with_accumulation_matches_two_processes(two_process_run, tiny_model, train16, tmp_path):
    out = tmp_path / "out"
    argv = train_argv(tiny_model("glm2"), out, train_path=train16, gradient_accumulation_steps=2, **FIXED)
    result = run_train(argv, out, processes=1)
    assert result.proc.returncode == 0, result.explain()
    assert result.losses == pytest.approx(two_process_run.losses, abs=1e-5)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tiny_model, train16, tmp_path):
    flags = dict(train_path=train16, mode="glm3", train_type="lora", lora_dropout="0.1", learning_rate="2e-2",
                 num_train_epochs=2, per_device_train_batch_size=2)  # 4 steps per epoch, 8 in all
    full = run_train(train_argv(tiny_model("glm3"), tmp_path / "full", **flags), tmp_path / "full")
    assert full.proc.returncode == 0, full.explain()

    first = run_train(train_argv(tiny_model("glm3"), tmp_path / "first", max_steps=3, **flags), tmp_path / "first")
    assert first.proc.returncode == 0, first.explain()
    assert [c.name for c in first.checkpoints()] == ["epoch-1-step-3"]
    resumed_dir = tmp_path / "resumed"
    resumed = run_train(train_argv(tiny_model("glm3"), resumed_dir, resume_from=first.checkpoints()[0], **flags),
                        resumed_dir)
    assert resumed.proc.returncode == 0, resumed.explain()

    assert len(full.losses) == 8
    assert first.losses == full.losses[:3]
    assert [m["step"] for m in resumed.metrics if "loss" in m] == [4, 5, 6, 7, 8]
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-6, abs=1e-7)
    assert [m["lr"] for m in resumed.metrics if "lr" in m] == pytest.approx([m["lr"] for m in full.metrics][3:])
    assert [c.name for c in resumed.checkpoints()] == ["epoch-1-step-4", "epoch-2-step-8"]
    a = load_file(str(full.output_dir / "epoch-2-step-8" / "adapter_model.safetensors"))
    b = load_file(str(resumed_dir / "epoch-2-step-8" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)

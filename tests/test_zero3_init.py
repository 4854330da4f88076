"""ZeRO-3 never puts the whole model on a process's device: glmlab partitions it before DeepSpeed sees it.

Given a model whose parameters are not partitioned yet, ``deepspeed.initialize`` moves the whole
module to the device (``engine.module.to(device)``) and partitions it afterwards -- 12.8 GiB on
every GPU for ChatGLM-6B in 16 bits, whatever ZeRO-3 and offload would save later. On the CPU
that move is a no-op and costs nothing, so the test watches for it instead: during
``deepspeed.initialize`` the model must already be ZeRO-3's (every parameter has a ``ds_id``,
its buffers on the device) and must never be moved whole. And partitioning first changes
nothing in training: on two processes in fp32, ZeRO-3 (with and without offload) logs the very
losses ZeRO-2 logs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO, TrainResult, run_train, train_argv

SPY = r"""
import json, sys
import deepspeed, torch
from glmlab import train

seen = {}
real_initialize, real_to = deepspeed.initialize, torch.nn.Module.to


def initialize(*args, model=None, **kwargs):
    seen["partitioned"] = all(hasattr(p, "ds_id") for p in model.parameters())
    seen["buffers_on_device"] = all(b.device.type == "cpu" for b in model.buffers())
    moved = []

    def to(self, *a, **k):
        if self is model:
            moved.append(str(a or k))
        return real_to(self, *a, **k)

    torch.nn.Module.to = to
    try:
        return real_initialize(*args, model=model, **kwargs)
    finally:
        torch.nn.Module.to = real_to
        seen["moved_whole"] = moved


deepspeed.initialize = initialize
code = train.main(sys.argv[1:])
print("SPY " + json.dumps(seen), flush=True)
sys.exit(code)
"""


@pytest.mark.parametrize("ds_file,method", [("ds_zero3_offload.json", "all"), ("ds_zero3_no_offload.json", "lora")])
def test_zero3_partitions_before_deepspeed_and_never_moves_the_whole_model(tiny_model, tmp_path, ds_file, method):
    output = tmp_path / "out"
    argv = train_argv(tiny_model("glm"), output, mode="glm", train_type=method, ds_file=ds_file, max_steps=2,
                      learning_rate="1e-3", lora_dim=4)
    done = subprocess.run([sys.executable, "-c", SPY, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SPY "))[4:])
    assert seen == {"partitioned": True, "buffers_on_device": True, "moved_whole": []}
    losses = TrainResult(done, output).losses
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
def test_zero3_trains_exactly_as_zero2(tiny_model, tmp_path):
    mode, method = "glm2", "all"  # every parameter partitioned, trained and (with offload) on the CPU
    losses = {}
    for ds_file in ("ds_zero2_no_offload.json", "ds_zero3_no_offload.json", "ds_zero3_offload.json"):
        output = tmp_path / ds_file
        argv = train_argv(tiny_model(mode), output, mode=mode, train_type=method, ds_file=ds_file, max_steps=4,
                          learning_rate="1e-3", lora_dim=4)
        result = run_train(argv, output)
        assert result.proc.returncode == 0, result.explain()
        losses[ds_file] = result.losses
    zero2 = losses.pop("ds_zero2_no_offload.json")
    assert len(zero2) == 4 and zero2[-1] < zero2[0]
    for ds_file, zero3 in losses.items():
        assert zero3 == pytest.approx(zero2, rel=1e-6), ds_file

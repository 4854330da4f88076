"""The loop notebook 02 writes by hand is glmlab.train's: same losses and rates, step for step.

The test runs 02's own cells (those tagged ``by-hand``: the setup, the model, the loop) with small
parameters in this process, then launches ``python -m glmlab.train`` (one process) with the very
``args`` those cells built, and compares the losses and learning rates the job logs at every step
(fp32, same data, seed and sampler order) with what the cells printed. It also checks that
``by_hand.run_steps``, the one-line call of 03-05, is the same loop, and that bad notebook
parameters stop the setup in one line naming the parameter (item 9 of issue 16).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, SPO_TEST, SPO_TRAIN, run_job

STEPS = 6  # DeepSpeed's warm-up runs the first two at rate 0; four steps change the weights
SMALL = {"max_len": 64, "max_src_len": 48, "per_device_train_batch_size": 4, "num_train_epochs": 1,
         "train_path": str(SPO_TRAIN), "test_path": str(SPO_TEST), "by_hand_steps": STEPS, "precision": "fp32"}
# What joining a process group writes into os.environ (glmlab.train._init_processes); by_hand restores it.
PROCESS_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def notebook_cells(name: str, tag: str | None = None) -> list:
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and (tag is None or tag in c.metadata.get("tags", []))]


def run_parameters(name: str, output_dir: Path, **overrides) -> dict:
    """A namespace holding ``name``'s parameter cell, then ``overrides`` (as papermill injects them)."""
    namespace: dict = {}
    first = notebook_cells(name)[0]
    assert "parameters" in first.metadata.get("tags", [])
    exec(first.source, namespace)
    namespace.update(output_dir=str(output_dir), **overrides)
    return namespace


@pytest.fixture(scope="module")
def by_hand_run(tmp_path_factory):
    """02's by-hand cells run here (namespace), ``run_steps`` on the same args, and the launched job's metrics."""
    import torch.distributed as dist

    from glmlab.args import to_argv
    from glmlab.notebooks import by_hand

    root = tmp_path_factory.mktemp("by_hand")
    before = {name: os.environ.get(name) for name in PROCESS_GROUP_ENV}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DS_ACCELERATOR", "cpu")
        mp.setenv("MPLBACKEND", "agg")
        namespace = run_parameters("02_freeze", root / "nb", **SMALL)
        cells = notebook_cells("02_freeze", "by-hand")
        assert any("engine.backward(loss)" in c.source and "engine.step()" in c.source for c in cells)
        for cell in cells:
            exec(cell.source, namespace)
        args = namespace["args"]
        model, _ = by_hand.build_model(args)
        engine, loader = by_hand.build_engine(model, args)
        library = by_hand.run_steps(engine, loader, STEPS, show=False)
        by_hand.close(engine)
        dist.destroy_process_group()
    # The kernel keeps its environment: a WORLD_SIZE=1 left behind broke 05's later pipeline launch.
    assert {name: os.environ.get(name) for name in PROCESS_GROUP_ENV} == before

    out = root / "launched"
    launched = dataclasses.replace(args, output_dir=str(out), show_loss_step=1, max_steps=STEPS,
                                   overwrite_output_dir=True)
    proc = run_job([sys.executable, "-m", "glmlab.train", *to_argv(launched)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return namespace, library, metrics


def test_the_loop_in_02_gives_the_launched_jobs_losses(by_hand_run):
    namespace, library, metrics = by_hand_run
    logged = [m["loss"] for m in metrics if "loss" in m]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert namespace["by_hand_losses"] == pytest.approx(logged, rel=1e-5, abs=0)
    assert logged[-1] < logged[0]  # the steps after the warm-up's zero rate did train


def test_run_steps_is_the_same_loop(by_hand_run):
    namespace, library, metrics = by_hand_run
    assert [s["loss"] for s in library] == pytest.approx(namespace["by_hand_losses"], rel=1e-5, abs=0)
    assert [s["lr"] for s in library] == pytest.approx([m["lr"] for m in metrics], rel=1e-9, abs=0)


def test_what_trains_is_read_off_the_model(by_hand_run):
    namespace, _, _ = by_hand_run
    from glmlab.notebooks import by_hand

    rows = by_hand.trainable_rows(namespace["model"])
    trained = {r["parameters"] for r in rows if r["trains"]}
    assert trained and all(".N." in p for p in trained)
    assert {r["layers"] for r in rows if r["trains"]} == {"2-3"}  # the default: the top two of the base's 4 layers
    assert sum(r["count"] for r in rows) == sum(p.numel() for p in namespace["model"].parameters())


@pytest.mark.parametrize("overrides, message", [
    ({"lora_dim": 0}, "ParameterError: lora_dim must be at least 1 (got 0)"),
    ({"lora_module_name": "qkv"}, "ParameterError: lora_module_name: 'qkv' matches no module"),
    ({"train_path": "EMPTY"}, "ParameterError: parameter train_path: {EMPTY}:1: empty file, no samples"),
    ({"nproc": 0}, "ParameterError: parameter nproc: must be a positive integer, got 0"),
])
def test_bad_parameters_stop_the_setup_in_one_line(tmp_path, overrides, message):
    """04's setup cell, as papermill would run it with ``-p``: one line naming the parameter, nothing written."""
    from glmlab.notebooks.params import ParameterError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    overrides = {k: str(empty) if v == "EMPTY" else v for k, v in overrides.items()}
    namespace = run_parameters("04_lora", tmp_path / "out", **{**SMALL, **overrides})
    setup_cell = next(c for c in notebook_cells("04_lora") if "params.start(globals())" in c.source)
    with pytest.raises(ParameterError) as err:
        exec(setup_cell.source, namespace)
    (line,) = err.value._render_traceback_()
    assert line.startswith(message.format(EMPTY=empty)), line
    assert not (tmp_path / "out").exists()


def probe_args(tmp_path):
    from glmlab.args import TrainArgs
    from glmlab.notebooks.pretrained import base_model_dir

    return TrainArgs(train_path=str(SPO_TRAIN), model_name_or_path=str(base_model_dir("glm")), mode="glm",
                     train_type="all", output_dir=str(tmp_path / "out"), max_len=64, max_src_len=48,
                     per_device_train_batch_size=4, precision="fp32", learning_rate=1e-3)


def test_zero3_probe_names_the_rank_that_failed_and_why(tmp_path):
    """A rank that fails is named with its exit status and its last line (the ranks are watched together, so a
    rank left waiting in a collective cannot hide another's error); a probe that outlives its timeout is ended and
    says so (it raised subprocess.TimeoutExpired before)."""
    from glmlab.notebooks import zero3_probe

    with pytest.raises(RuntimeError, match=r"zero3 probe failed: rank [01] exited 1: .*--ds_file no_such\.json: no such file"):
        zero3_probe.probe(probe_args(tmp_path), ["no_such.json"], nproc=2)
    with pytest.raises(RuntimeError, match=r"zero3 probe failed: rank 0 still running after 1 s"):
        zero3_probe.probe(probe_args(tmp_path), ["ds_zero3_no_offload.json"], nproc=2, timeout=1)


def test_zero3_probe_sees_each_rank_hold_half(tmp_path):
    """05's probe: two ranks split a partitioned tensor in halves that add up to it, each stepping its half of
    the fp32 master weights; offload swaps torch's AdamW for DeepSpeed's CPU Adam."""
    from glmlab.notebooks import zero3_probe

    args = probe_args(tmp_path)
    configs = ["ds_zero3_no_offload.json", "ds_zero3_offload.json"]
    reports = zero3_probe.probe(args, configs, nproc=2)
    rows = zero3_probe.partition_rows(reports)
    split = [r for r in rows if not r["whole_on_every_rank"]]
    assert split, rows  # the small base's word embedding (163,840) is above the persistence threshold (100,000)
    for config in configs:
        for name in {r["parameter"] for r in split}:
            halves = [r for r in split if r["ds_file"] == config and r["parameter"] == name]
            assert [r["rank"] for r in halves] == [0, 1]
            assert sum(r["this_rank_holds"] for r in halves) == halves[0]["full"]
            assert all(r["materialised_between_steps"] == 0 for r in halves)
    optimizers = {(r["ds_file"], r["rank"]): r for r in zero3_probe.optimizer_rows(reports)}
    total = sum(p["full"] for p in reports[configs[0]][0]["params"])
    for config, optimizer in zip(configs, ("AdamW", "DeepSpeedCPUAdam")):
        assert {optimizers[config, rank]["optimizer"] for rank in (0, 1)} == {optimizer}
        assert sum(optimizers[config, rank]["fp32_master"] for rank in (0, 1)) >= total
        assert all(optimizers[config, rank]["exp_avg"] == optimizers[config, rank]["fp32_master"] for rank in (0, 1))

"""Checkpoints that do not fill the disk: ``--save_total_limit`` and ``--save_only_model``.

Three real runs of ``python -m glmlab.train`` (one process, as fast as a run gets; the
two-process path, every rank writing its ZeRO partition before rank 0 prunes, is run by
``tests/test_tools_data.py`` under the launcher) on a tiny ChatGLM3, LoRA with dropout, the
shipped tool conversations ``data/tools3_train.jsonl``, 4 optimizer steps per epoch:

* ``full``: 3 epochs with ``--save_total_limit 1``;
* ``first``: the same, stopped by ``--max_steps 8`` (the end of epoch 2);
* ``resumed``: ``--resume_from`` the newest checkpoint of ``first``, with ``--save_only_model``.

``full`` must keep exactly one DeepSpeed state (the newest), every checkpoint must still load for
inference with unchanged weights, and ``resumed`` must equal ``full`` (losses and final adapter).
Plus crash safety of the pruning itself, on folders made by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_train, train_argv
from safetensors.torch import load_file

from glmlab.args import ArgsError, build_parser, parse_args
from glmlab.checkpoint import (
    DS_STATE_TAG,
    CHECKPOINT_INFO_NAME as INFO_NAME,
    disk_usage,
    format_size,
    has_deepspeed_state,
    prune_deepspeed_states,
    resume_problem,
)
from glmlab.data import encode_prompt, read_samples

TOOLS_FILE = REPO / "data" / "tools3_train.jsonl"
FLAGS = {"mode": "glm3", "train_type": "lora", "train_path": TOOLS_FILE, "max_len": 1024, "lora_dim": 4,
         "lora_alpha": 8, "lora_dropout": "0.1", "learning_rate": "2e-2", "num_train_epochs": 3}  # fmt: skip
NAMES = ["epoch-1-step-4", "epoch-2-step-8", "epoch-3-step-12"]
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("limit")
    model = tiny_model("glm3")
    full = run_train(
        train_argv(model, root / "full", save_total_limit=1, **FLAGS),
        root / "full",
        processes=0,
    )
    assert full.proc.returncode == 0, full.explain()
    first = run_train(
        train_argv(model, root / "first", save_total_limit=1, max_steps=8, **FLAGS),
        root / "first",
        processes=0,
    )
    assert first.proc.returncode == 0, first.explain()
    newest = root / "first" / NAMES[1]
    resumed = run_train(train_argv(model, root / "resumed", resume_from=newest, save_only_model="true", **FLAGS),
                        root / "resumed", processes=0)  # fmt: skip
    assert resumed.proc.returncode == 0, resumed.explain()
    return {"full": full, "first": first, "resumed": resumed, "model": model}


def saved_sizes(stdout: str) -> dict[str, str]:
    """checkpoint name -> the DeepSpeed state size printed when it was saved."""
    return {
        Path(m[0]).name: m[1]
        for m in re.findall(
            r"saved (\S+) \(\S+ \w+; DeepSpeed state ([\d.]+ \w+)\)", stdout
        )
    }


@pytest.mark.slow
def test_limit_keeps_one_deepspeed_state(runs):
    full = runs["full"]
    assert [c.name for c in full.checkpoints()] == NAMES
    assert [c.name for c in full.checkpoints() if (c / DS_STATE_TAG).exists()] == [
        NAMES[-1]
    ]
    # the newest holds its ZeRO partition, untouched
    newest = full.checkpoints()[-1]
    assert (
        len(list((newest / DS_STATE_TAG).glob("*zero_pp_rank_*_optim_states.pt"))) == 1
    )
    assert has_deepspeed_state(newest) and resume_problem(newest) is None
    for old in full.checkpoints()[:-1]:
        assert json.loads((old / INFO_NAME).read_text())["deepspeed_state"] == "pruned"
        assert not [
            p.name for p in old.iterdir() if "deepspeed" in p.name
        ]  # nothing left behind
    assert not list(full.output_dir.glob(".*"))  # no temporary folder either
    # every save printed its size, every prune what it freed: the state printed at its save
    sizes = saved_sizes(full.proc.stdout)
    assert list(sizes) == NAMES
    freed = dict(re.findall(r"pruned the DeepSpeed state of \S+/(\S+) \(--save_total_limit 1\): freed ([\d.]+ \w+)",
                            full.proc.stdout))  # fmt: skip
    assert freed == {name: sizes[name] for name in NAMES[:-1]}
    assert sizes[NAMES[-1]] == format_size(disk_usage(newest / DS_STATE_TAG))


@pytest.mark.slow
def test_every_checkpoint_still_loads_for_inference(runs):
    from glmlab.inference import load_for_inference

    full, first = runs["full"], runs["first"]
    # pruning left the weights alone: the pruned epoch-2 adapter equals the one of the run that kept its state
    a, b = (
        load_file(str(full.output_dir / NAMES[1] / ADAPTER)),
        load_file(str(first.output_dir / NAMES[1] / ADAPTER)),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sample = read_samples(TOOLS_FILE)[0]
    outputs = []
    for folder in full.checkpoints():
        model, tokenizer, mode = load_for_inference(folder)
        assert mode == "glm3"
        ids = torch.tensor([encode_prompt(sample, tokenizer, "glm3", 32)])
        saved = load_file(str(folder / ADAPTER))
        loaded = {
            n.replace(".default", ""): p
            for n, p in model.named_parameters()
            if "lora_" in n
        }
        assert saved.keys() == loaded.keys() and all(
            torch.equal(saved[k], loaded[k]) for k in saved
        )
        with torch.no_grad():
            outputs.append(model(input_ids=ids).logits)
        assert torch.isfinite(outputs[-1]).all()
    assert not torch.equal(outputs[0], outputs[-1])  # three different trained states


@pytest.mark.slow
def test_resume_from_the_newest_equals_the_uninterrupted_run(runs):
    full, first, resumed = runs["full"], runs["first"], runs["resumed"]
    assert (
        "the number of skipping data is 0" in full.proc.stdout
        and "8 samples, 1 process(es)" in full.proc.stdout
    )
    assert len(full.losses) == 12 and first.losses == full.losses[:8]
    assert [c.name for c in first.checkpoints() if has_deepspeed_state(c)] == [NAMES[1]]
    assert [m["step"] for m in resumed.metrics if "loss" in m] == [9, 10, 11, 12]
    assert resumed.losses == pytest.approx(full.losses[8:], rel=1e-6, abs=1e-7)
    a = load_file(str(full.output_dir / NAMES[2] / ADAPTER))
    b = load_file(str(resumed.output_dir / NAMES[2] / ADAPTER))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_resume_from_a_pruned_checkpoint_names_the_newest(runs, tmp_path):
    full = runs["full"]
    pruned, newest = full.output_dir / NAMES[0], full.output_dir / NAMES[2]
    argv = train_argv(runs["model"], tmp_path / "out", resume_from=pruned, **FLAGS)
    with pytest.raises(ArgsError) as info:
        parse_args(argv, check=False)
    assert str(info.value) == (f"--resume_from {pruned}: has no DeepSpeed state (pruned by --save_total_limit; "
                               f"resume from {newest})")  # fmt: skip


@pytest.mark.slow
def test_save_only_model_writes_no_state_and_cannot_be_resumed(runs, tmp_path):
    resumed = runs["resumed"]
    assert [c.name for c in resumed.checkpoints()] == [NAMES[2]]
    folder = resumed.checkpoints()[0]
    assert (
        sorted(
            p.name
            for p in folder.iterdir()
            if "deepspeed" in p.name or p.name.startswith("zero_")
        )
        == []
    )
    assert (
        json.loads((folder / INFO_NAME).read_text())["deepspeed_state"] == "not_saved"
    )
    assert re.search(rf"saved {re.escape(str(folder))} \([\d.]+ \w+; no DeepSpeed state: --save_only_model\)",
                     resumed.proc.stdout)  # fmt: skip
    argv = train_argv(runs["model"], tmp_path / "out", resume_from=folder, **FLAGS)
    with pytest.raises(ArgsError, match=r"^--resume_from .*epoch-3-step-12: has no DeepSpeed state \(saved with "
                                        r"--save_only_model: its weights are for inference"):  # fmt: skip
        parse_args(argv, check=False)


# --------------------------------------------------------------------------- pruning, without training


def fake_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder with weights, an info file and a DeepSpeed state of 3 files."""
    path = folder / f"epoch-1-step-{step}"
    (path / DS_STATE_TAG / "sub").mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (path / INFO_NAME).write_text(
        json.dumps({"step": step, "deepspeed_state": "saved"})
    )
    for name in ("a.pt", "b.pt", "sub/c.pt"):
        (path / DS_STATE_TAG / name).write_bytes(b"s" * 5000)
    return path


def test_prune_keeps_the_newest_k_and_never_the_just_written(tmp_path):
    folders = [fake_checkpoint(tmp_path, step) for step in (2, 4, 6, 8)]
    state_size = disk_usage(folders[0] / DS_STATE_TAG)
    freed = prune_deepspeed_states(tmp_path, keep=2, newest=folders[-1])
    assert freed == [(folders[0], state_size), (folders[1], state_size)]
    assert [has_deepspeed_state(f) for f in folders] == [False, False, True, True]
    assert all(
        (f / "adapter_model.safetensors").read_bytes() == b"w" * 100 for f in folders
    )
    # the folder just written is kept even when an older run left checkpoints with higher steps
    fresh = fake_checkpoint(tmp_path, 3)
    prune_deepspeed_states(tmp_path, keep=1, newest=fresh)
    assert [f.name for f in (*folders, fresh) if has_deepspeed_state(f)] == [fresh.name]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        prune_deepspeed_states(tmp_path, keep=0, newest=fresh)


def test_a_crash_while_pruning_leaves_a_marked_folder_and_the_newest_whole(
    tmp_path, monkeypatch
):
    import glmlab.checkpoint as ck

    old, new = fake_checkpoint(tmp_path, 2), fake_checkpoint(tmp_path, 4)
    real_rmtree = ck.shutil.rmtree

    def crash(path, *args, **kwargs):
        if not kwargs.get("ignore_errors"):
            raise KeyboardInterrupt("killed while deleting")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ck.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        prune_deepspeed_states(tmp_path, keep=1, newest=new)
    monkeypatch.undo()
    # marked before anything was deleted: --resume_from refuses it, naming the newest; the newest is whole
    assert not has_deepspeed_state(old)
    assert resume_problem(old) == (f"{old}: has no DeepSpeed state (pruned by --save_total_limit; "
                                   f"resume from {new})")  # fmt: skip
    assert (
        has_deepspeed_state(new) and len(list((new / DS_STATE_TAG).rglob("*.pt"))) == 3
    )
    assert (
        json.loads((old / INFO_NAME).read_text())["step"] == 2
    )  # the info file was rewritten whole
    # the next prune deletes what the crash left
    leftover = disk_usage(old / ".deepspeed.pruned")
    assert leftover > 0 and prune_deepspeed_states(tmp_path, keep=1, newest=new) == [
        (old, leftover)
    ]
    assert sorted(p.name for p in old.iterdir()) == sorted(
        [INFO_NAME, "adapter_model.safetensors"]
    )


def test_checkpoint_flags_are_validated(tiny_model, tmp_path):
    argv = train_argv(tiny_model("glm3"), tmp_path / "out", mode="glm3")
    with pytest.raises(
        ArgsError, match=r"^--save_total_limit must be at least 1 \(got 0\)$"
    ):
        parse_args(argv + ["--save_total_limit", "0"], check=False)
    args = parse_args(
        argv + ["--save_total_limit", "2", "--save_only_model"], check=False
    )
    assert (args.save_total_limit, args.save_only_model) == (2, True)
    helps = {a.dest: a.help for a in build_parser()._actions}
    assert (
        "newest K checkpoints" in helps["save_total_limit"]
        and "no DeepSpeed state" in helps["save_only_model"]
    )
    assert (
        format_size(1536) == "1.5 KiB" and format_size(12 * 2**20 + 2**19) == "12.5 MiB"
    )

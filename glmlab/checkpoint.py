"""Saving and resuming training checkpoints, atomically, under any ZeRO stage.

A checkpoint is one folder, ``output_dir/epoch-E-step-S/`` (``E`` counts from 1, ``S`` is
the optimizer step), holding:

* what the method saves (see :mod:`glmlab.methods`): the full model, a peft adapter or
  the prefix encoder, plus the tokenizer files -- what inference reloads;
* ``glmlab_checkpoint.json``: ``train_type``, ``mode``, ``base_model``, ``epoch``, ``step``,
  precision, ZeRO stage, world size and the training arguments;
* ``deepspeed/``: DeepSpeed's own state (``engine.save_checkpoint``: optimizer and, for
  ZeRO, its partitions, the scheduler, the step counters; frozen weights are left out,
  they come from the base model) and one ``rng-rank{R}.pt`` per process; ``--resume_from``
  continues from it exactly.

Every process takes part in a save (ZeRO-3 weights are gathered, DeepSpeed's partitions
are written by their owners). The folder is first written as ``.epoch-E-step-S.tmp`` and
renamed by rank 0 once complete, so a crash never leaves a half-written checkpoint
under the final name. ``output_dir`` must be one shared folder for all processes
(as DeepSpeed checkpoints need).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

DS_STATE_TAG = "deepspeed"
INFO_NAME = "glmlab_checkpoint.json"


def checkpoint_name(epoch: int, step: int) -> str:
    """``epoch-E-step-S`` (``epoch`` counts from 1)."""
    return f"epoch-{epoch}-step-{step}"


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint of ``output_dir`` with the highest optimizer step (``epoch-E-step-S``)."""
    folders = [p for p in Path(output_dir).glob("epoch-*-step-*") if p.is_dir()]
    if not folders:
        raise FileNotFoundError(f"{output_dir}: no epoch-E-step-S checkpoint folder")
    return max(folders, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# --------------------------------------------------------------------------- random state
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states of this process."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- gathering weights
def gather_state_dict(engine, trainable_only: bool) -> dict[str, torch.Tensor] | None:
    """The weights to save, complete, on rank 0 (``None`` elsewhere). Every rank must call it.

    ZeRO-3 partitions every parameter, so they are gathered layer by layer with
    ``engine._zero3_consolidated_16bit_state_dict`` (which keeps the training dtype,
    fp32 included). Under ZeRO-0/1/2 every process holds the full module weights.
    ``trainable_only`` keeps only the parameters that are trained (LoRA, P-tuning).
    """
    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=trainable_only)
    if _rank() != 0:
        return None
    module = engine.module
    if trainable_only:
        return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    return None  # the module's own state dict (save_pretrained reads it)


# --------------------------------------------------------------------------- save
def save_checkpoint(engine, strategy, tokenizer, args, *, epoch: int, step: int, position: dict[str, int]) -> Path:
    """Write ``output_dir/epoch-E-step-S`` atomically; every process must call it. Returns the folder.

    ``position`` says where training stands (``epoch`` index from 0, ``micro_step`` within
    that epoch, optimizer ``step``); it is stored with DeepSpeed's state for ``--resume_from``.
    """
    output_dir = Path(args.output_dir)
    name = checkpoint_name(epoch, step)
    final, tmp = output_dir / name, output_dir / f".{name}.tmp"
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a crashed save
        (tmp / DS_STATE_TAG).mkdir(parents=True)
    _barrier()

    # DeepSpeed state: every rank writes its optimizer partition; rank 0 also the module and client state.
    engine.save_checkpoint(str(tmp), tag=DS_STATE_TAG, client_state={"glmlab_position": position},
                           save_latest=False, exclude_frozen_parameters=True)
    torch.save(rng_state(), tmp / DS_STATE_TAG / f"rng-rank{rank}.pt")

    state_dict = gather_state_dict(engine, trainable_only=strategy.saves == "trainable")
    if rank == 0:
        for script in tmp.glob("zero_to_*.py"):  # DeepSpeed's conversion scripts belong with its state
            script.replace(tmp / DS_STATE_TAG / script.name)
        strategy.save(engine.module, tokenizer, tmp, state_dict=state_dict)
        info = {
            "train_type": args.train_type,
            "mode": args.mode,
            "base_model": str(Path(args.model_name_or_path).resolve()),
            "epoch": epoch,
            "step": step,
            "precision": _precision(engine),
            "zero_stage": engine.zero_optimization_stage(),
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "saves": strategy.saves_what,
            "args": asdict(args),
        }
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _replace(tmp, final)
    _barrier()
    return final


def _precision(engine) -> str:
    if engine.bfloat16_enabled():
        return "bf16"
    return "fp16" if engine.fp16_enabled() else "fp32"


def _replace(tmp: Path, final: Path) -> None:
    """Move the complete ``tmp`` folder to ``final`` (an existing ``final`` is replaced)."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- resume
def load_checkpoint(engine, checkpoint_dir: str | Path) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Restore DeepSpeed's state from a checkpoint folder; every process must call it.

    Returns ``(position, rng)``: where training stopped (``epoch`` index, ``micro_step``
    within it, optimizer ``step``) and this rank's random state, which the caller
    restores once the data loader is back at that position.
    """
    folder = Path(checkpoint_dir)
    load_path, client_state = engine.load_checkpoint(str(folder), tag=DS_STATE_TAG, load_module_strict=False)
    if load_path is None or not client_state or "glmlab_position" not in client_state:
        raise RuntimeError(f"--resume_from {folder}: DeepSpeed state could not be loaded")
    rng_file = folder / DS_STATE_TAG / f"rng-rank{_rank()}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return dict(client_state["glmlab_position"]), rng

"""Saving and resuming training checkpoints, atomically, under any ZeRO stage.

A checkpoint is one folder, ``output_dir/epoch-E-step-S/`` (``E`` counts from 1, ``S`` is
the optimizer step), holding:

* what the method saves (see :mod:`glmlab.methods`): the full model, a peft adapter or
  the prefix encoder, plus the tokenizer files -- what inference reloads;
* ``glmlab_checkpoint.json``: ``run_id`` (:mod:`glmlab.run_folder`), ``train_type``, ``mode``,
  ``base_model``, ``epoch``, ``step``,
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

Disk use
--------
DeepSpeed's state is the big part: for full fine-tuning it holds fp32 master weights and
two Adam moments (about 72 GB for ChatGLM2-6B), several times the weights themselves. So:

* ``--save_only_model`` writes no ``deepspeed/`` folder at all;
* ``--save_total_limit K`` keeps it only in the newest K checkpoints. Once a new checkpoint is
  completely in place, rank 0 prunes the older ones (:func:`prune_deepspeed_states`): it first
  marks the folder's ``glmlab_checkpoint.json`` (rewritten atomically) and only then deletes its
  ``deepspeed/``, so a crash at any moment leaves every checkpoint either resumable or marked,
  and the new one untouched. The weights or adapter of every checkpoint stay, loadable for inference.

``glmlab_checkpoint.json`` says which, in ``"deepspeed_state"``: ``"saved"``, ``"pruned"`` or
``"not_saved"``; :func:`resume_problem` turns the last two into one line for ``--resume_from``.
Each save prints the checkpoint's size on disk, and each prune what it freed.

Describing
----------
:func:`describe_checkpoint` reads what a folder holds (:class:`CheckpointInfo`: the method, mode and base
model from ``glmlab_checkpoint.json``, or the files of a folder without one) without loading any weight,
so inference and the command-line tools fail in one line before loading anything; the method's strategy
(:mod:`glmlab.methods`) checks its own files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from glmlab.constants import CHECKPOINT_INFO_NAME, MODES, TRAIN_TYPES
from glmlab.json_files import read_json_object
from glmlab.loading import CheckpointError, infer_mode
from glmlab.methods import Strategy, checkpoint_strategy, detect_kind

DS_STATE_TAG = "deepspeed"
# The field of CHECKPOINT_INFO_NAME saying what became of the DeepSpeed state, and its values.
STATE_FIELD = "deepspeed_state"
SAVED, PRUNED, NOT_SAVED = "saved", "pruned", "not_saved"


def checkpoint_name(epoch: int, step: int) -> str:
    """``epoch-E-step-S`` (``epoch`` counts from 1)."""
    return f"epoch-{epoch}-step-{step}"


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint of ``output_dir`` with the highest optimizer step (``epoch-E-step-S``).

    Raises :class:`glmlab.checkpoint.MixedRunsError` (one line naming them) when the folder holds
    the files of several runs (left by an older glmlab): the newest checkpoint could be another run's.
    """
    one_run(output_dir)
    folders = checkpoint_folders(output_dir)
    if not folders:
        raise FileNotFoundError(f"{output_dir}: no epoch-E-step-S checkpoint folder")
    return folders[-1]


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The ``epoch-E-step-S`` folders of ``output_dir``, oldest (lowest optimizer step) first."""
    folders = [p for p in Path(output_dir).glob("epoch-*-step-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(folders, key=lambda p: int(p.name.rsplit("-", 1)[1]))


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
def save_checkpoint(engine, strategy, tokenizer, args, *, epoch: int, step: int, position: dict[str, int],
                    run_id: str | None = None, log: Callable[[str], Any] = print) -> Path:
    """Write ``output_dir/epoch-E-step-S`` atomically; every process must call it. Returns the folder.

    ``position`` says where training stands (``epoch`` index from 0, ``micro_step`` within
    that epoch, optimizer ``step``); it is stored with DeepSpeed's state for ``--resume_from``.
    With ``args.save_only_model`` no DeepSpeed state is written; with ``args.save_total_limit``
    the older checkpoints' states are pruned once this one is in place. Rank 0 reports the
    checkpoint's size (and what pruning freed) through ``log``. ``run_id`` names the run
    (:mod:`glmlab.run_folder`) in ``glmlab_checkpoint.json``.
    """
    output_dir = Path(args.output_dir)
    name = checkpoint_name(epoch, step)
    final, tmp = output_dir / name, output_dir / f".{name}.tmp"
    rank = _rank()
    with_state = not getattr(args, "save_only_model", False)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a crashed save
        (tmp / DS_STATE_TAG if with_state else tmp).mkdir(parents=True)
    _barrier()

    if with_state:
        # DeepSpeed state: every rank writes its optimizer partition; rank 0 also the module and client state.
        engine.save_checkpoint(str(tmp), tag=DS_STATE_TAG, client_state={"glmlab_position": position},
                               save_latest=False, exclude_frozen_parameters=True)
        torch.save(rng_state(), tmp / DS_STATE_TAG / f"rng-rank{rank}.pt")
    _barrier()  # every rank's files are in tmp before rank 0 renames it (else a slow rank writes into a moved folder)

    gather = getattr(strategy, "gather_state_dict", None)  # a pipeline's stages write their own shards (glmlab.pipeline)
    state_dict = gather(engine, tmp) if gather else gather_state_dict(engine, trainable_only=strategy.saves == "trainable")
    if rank == 0:
        for script in tmp.glob("zero_to_*.py"):  # DeepSpeed's conversion scripts belong with its state
            script.replace(tmp / DS_STATE_TAG / script.name)
        strategy.save(engine.module, tokenizer, tmp, state_dict=state_dict)
        info = {
            "run_id": run_id,
            "train_type": args.train_type,
            "mode": args.mode,
            "base_model": str(Path(args.model_name_or_path).resolve()),
            "epoch": epoch,
            "step": step,
            "precision": _precision(engine),
            "zero_stage": engine.zero_optimization_stage(),
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "saves": strategy.saves_what,
            STATE_FIELD: SAVED if with_state else NOT_SAVED,
            "args": asdict(args),
        }
        (tmp / CHECKPOINT_INFO_NAME).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _replace(tmp, final)
        if with_state:
            log(f"saved {final} ({format_size(disk_usage(final))}; "
                f"DeepSpeed state {format_size(disk_usage(final / DS_STATE_TAG))})")
        else:
            log(f"saved {final} ({format_size(disk_usage(final))}; no DeepSpeed state: --save_only_model)")
        limit = getattr(args, "save_total_limit", None)
        if limit and with_state:  # only now that the new checkpoint is complete and in place
            for folder, freed in prune_deepspeed_states(output_dir, limit, newest=final):
                log(f"pruned the DeepSpeed state of {folder} (--save_total_limit {limit}): freed {format_size(freed)}; "
                    f"its weights stay, for inference")
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


# --------------------------------------------------------------------------- disk use and pruning
def disk_usage(path: str | Path) -> int:
    """Bytes that the files under ``path`` take on disk (allocated blocks, as ``du`` counts them)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def format_size(num_bytes: int) -> str:
    """``12.3 MiB``-style size (binary units, as ``du -h``)."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def read_info(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's ``glmlab_checkpoint.json`` (``{}`` when it has none or it is unreadable)."""
    try:
        info = json.loads((Path(folder) / CHECKPOINT_INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def has_deepspeed_state(folder: str | Path) -> bool:
    """Whether ``folder`` holds DeepSpeed state that ``--resume_from`` can use (neither pruned nor left out)."""
    return read_info(folder).get(STATE_FIELD, SAVED) == SAVED and (Path(folder) / DS_STATE_TAG).is_dir()


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    """Rewrite ``folder``'s ``glmlab_checkpoint.json`` atomically (a reader sees the old or the new file)."""
    tmp = folder / f".{CHECKPOINT_INFO_NAME}.tmp"
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / CHECKPOINT_INFO_NAME)


def prune_deepspeed_states(output_dir: str | Path, keep: int, newest: str | Path) -> list[tuple[Path, int]]:
    """Delete the DeepSpeed state of every checkpoint of ``output_dir`` but the newest ``keep`` (rank 0 only).

    ``newest`` (the checkpoint just written) is always kept, whatever its step; the others are
    ranked by optimizer step. A pruned folder is first marked ``"deepspeed_state": "pruned"`` in
    its ``glmlab_checkpoint.json``, then its ``deepspeed/`` is renamed away and deleted, so a crash
    midway leaves a marked folder (never a half-deleted state that looks resumable). Leftovers of
    such a crash are deleted too. Returns ``(folder, bytes freed)`` per folder that freed space.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    newest = Path(newest)
    with_state = [p for p in reversed(checkpoint_folders(output_dir)) if p != newest and has_deepspeed_state(p)]
    freed: list[tuple[Path, int]] = []
    for folder in with_state[keep - 1:]:
        _write_info(folder, {**read_info(folder), STATE_FIELD: PRUNED})
    for folder in checkpoint_folders(output_dir):
        if folder == newest or read_info(folder).get(STATE_FIELD) != PRUNED:
            continue
        state, doomed = folder / DS_STATE_TAG, folder / f".{DS_STATE_TAG}.pruned"
        if not (state.exists() or doomed.exists()):
            continue
        size = disk_usage(state) + disk_usage(doomed)
        shutil.rmtree(doomed, ignore_errors=True)  # a leftover of a crash while deleting
        if state.exists():
            os.replace(state, doomed)  # a state is never half-deleted under its own name
            shutil.rmtree(doomed)
        freed.append((folder, size))
    return freed


def resume_problem(folder: str | Path) -> str | None:
    """Why ``--resume_from folder`` cannot work, in one line starting with the folder; ``None`` if it can."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder}: no such folder"
    state = read_info(folder).get(STATE_FIELD, SAVED)
    if state == PRUNED:
        resumable = [p for p in checkpoint_folders(folder.parent) if has_deepspeed_state(p)]
        where = f"resume from {resumable[-1]}" if resumable else f"no checkpoint of {folder.parent} keeps it"
        return f"{folder}: has no DeepSpeed state (pruned by --save_total_limit; {where})"
    if state == NOT_SAVED:
        return (f"{folder}: has no DeepSpeed state (saved with --save_only_model: its weights are for inference, "
                f"training cannot resume from it)")
    if not (folder / DS_STATE_TAG).is_dir():
        return f"{folder}: not a glmlab checkpoint with DeepSpeed state (no {DS_STATE_TAG}/ folder)"
    return None


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


# --------------------------------------------------------------------------- describe (for inference)
@dataclass(frozen=True)
class CheckpointInfo:
    """What a folder holds, read from its files without loading any weights.

    ``kind`` is one of ``TRAIN_TYPES`` or ``"model"`` (a plain HF model folder with no
    ``glmlab_checkpoint.json``). ``base`` is the resolved base model folder for
    ``lora`` / ``ptuning`` (``None`` for the others). ``mode`` is the recorded mode,
    or ``None`` when nothing records it (then it is inferred from the files).
    """

    path: Path
    kind: str
    mode: str | None
    base: Path | None
    meta: dict = field(default_factory=dict)

    @property
    def strategy(self) -> Strategy:
        """The strategy that wrote the folder (a plain model folder reads as a full checkpoint)."""
        return checkpoint_strategy(self.kind)

    @property
    def needs_base(self) -> bool:
        """Adapters (LoRA, P-tuning) are useless without their base model."""
        return self.strategy.needs_base


def _detect_kind(path: Path) -> str:
    """The kind of a folder without ``glmlab_checkpoint.json``, from the files it holds."""
    kind = detect_kind(path)  # a method's marker file
    if kind is not None:
        return kind
    if (path / "config.json").is_file():
        return "model"
    raise CheckpointError(
        f"{path}: not a model or checkpoint folder (no {CHECKPOINT_INFO_NAME}, config.json or adapter_config.json)"
    )


def _is_run_dir(path: Path) -> bool:
    """A training run's ``--output_dir`` (``epoch-E-step-S`` folders), not a checkpoint itself."""
    markers = (CHECKPOINT_INFO_NAME, "config.json", "adapter_config.json")
    return not any((path / n).is_file() for n in markers) and any(p.is_dir() for p in path.glob("epoch-*-step-*"))


def describe_checkpoint(checkpoint_dir: str | Path, base: str | Path | None = None) -> CheckpointInfo:
    """Say what ``checkpoint_dir`` holds and check its files, without loading weights.

    A training run's ``--output_dir`` stands for its newest checkpoint (the highest step).

    ``base`` overrides the base model recorded in ``glmlab_checkpoint.json``; it is
    only used for ``lora`` / ``ptuning``. Raises :class:`CheckpointError` for a
    missing folder, missing files, an unknown ``train_type``/``mode``, or an
    adapter whose base model cannot be found.
    """
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if _is_run_dir(path):  # a training run's --output_dir: its newest checkpoint
        try:
            path = latest_checkpoint(path)
        except MixedRunsError as err:  # a folder of two runs (an older glmlab's): its newest may be either's
            raise CheckpointError(str(err)) from None
    meta: dict = {}
    if (path / CHECKPOINT_INFO_NAME).is_file():
        meta = read_json_object(path / CHECKPOINT_INFO_NAME)
        kind = meta.get("train_type")
        if kind not in TRAIN_TYPES:
            raise CheckpointError(
                f"{path / CHECKPOINT_INFO_NAME}: train_type must be one of {', '.join(TRAIN_TYPES)} (got {kind!r})"
            )
    else:
        kind = _detect_kind(path)
    mode = meta.get("mode")
    if mode is not None and mode not in MODES:
        raise CheckpointError(f"{path / CHECKPOINT_INFO_NAME}: mode must be one of {', '.join(MODES)} (got {mode!r})")

    strategy = checkpoint_strategy(kind)
    strategy.check_saved(path, kind)  # the files the method saves (glmlab.methods)
    if not strategy.needs_base:
        return CheckpointInfo(path, kind, mode, None, meta)

    recorded = meta.get("base_model")
    if base is None and recorded is None:
        raise CheckpointError(f"{path}: {kind} checkpoint records no base model; pass the base model folder")
    base_path = Path(base if base is not None else recorded)
    if not (base_path / "config.json").is_file():
        origin = "given" if base is not None else f"recorded in {path / CHECKPOINT_INFO_NAME}"
        raise CheckpointError(
            f"base model {str(base_path)!r} ({origin}) is not a model folder (no config.json); pass the base model folder"
        )
    return CheckpointInfo(path, kind, mode, base_path, meta)


def checkpoint_mode(info: CheckpointInfo, mode: str | None = None) -> str:
    """The mode to use: ``mode`` if given (it must agree with the recorded one), else recorded, else inferred."""
    if mode is not None and mode not in MODES:
        raise CheckpointError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if info.mode is not None:
        if mode is not None and mode != info.mode:
            raise CheckpointError(f"{info.path}: checkpoint was trained with mode {info.mode}, not {mode}")
        return info.mode
    if mode is not None:
        return mode
    return infer_mode(str(info.base if info.needs_base else info.path))


# ============================================================================ which runs a folder holds
# One run per folder (glmlab.run_folder writes by these rules): every checkpoint's info and every metrics
# record carries its run's id, and whatever reads a run folder reads one run's files.
METRICS_NAME = "metrics.jsonl"
EVENTS_NAME = "tensorboard"
RUN_ID = "run_id"
# Training arguments that may change between a run and its resumption; the rest tell apart the
# runs of an older glmlab's folder, whose files carry no run id.
_RESUME_ARGS = ("resume_from", "max_steps", "save_only_model", "save_total_limit", "save_model_step",
                "show_loss_step", "local_rank", "output_dir", "overwrite_output_dir")


class MixedRunsError(ValueError):
    """A folder holds the files of more than one run; the message is one line naming them."""


def run_files(folder: str | Path) -> list[Path]:
    """What runs left in ``folder``: checkpoints (and save leftovers), ``metrics.jsonl``, ``tensorboard/``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("epoch-*-step-*") if p.is_dir()]
    found += [p for p in folder.glob(".epoch-*-step-*") if p.name.endswith((".tmp", ".old"))]
    found += [p for p in (folder / METRICS_NAME, folder / EVENTS_NAME) if p.exists()]
    return sorted(found)


# --------------------------------------------------------------------------- which runs a folder holds
@dataclass
class RunGroup:
    """The files of one run in a folder."""

    run_id: str | None  # None: written by an older glmlab
    files: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)  # its training arguments (from a checkpoint)

    def describe(self, differing: list[str]) -> str:
        checkpoints = [f for f in self.files if f != METRICS_NAME]
        if len(checkpoints) > 3:  # the first and the newest say enough
            checkpoints = [f"{checkpoints[0]} .. {checkpoints[-1]} ({len(checkpoints)} checkpoints)"]
        what = ", ".join(checkpoints + [f for f in self.files if f == METRICS_NAME])
        if self.run_id is None and self.files == [METRICS_NAME] and not self.args:
            return f"{METRICS_NAME} records without run id"
        if self.run_id is not None:
            return f"run {self.run_id} ({what})"
        told = ", ".join(f"{k} {self.args.get(k)}" for k in differing[:3])
        return f"a run of an older glmlab without run id{f' ({told})' if told else ''} ({what})"


def _metrics_records(folder: Path) -> list[dict]:
    path = folder / METRICS_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def runs_in(folder: str | Path) -> list[RunGroup]:
    """The runs whose checkpoints or metrics records ``folder`` holds, oldest checkpoint first.

    Files with a run id are grouped by it. Checkpoints without one (an older glmlab) are told
    apart by their training arguments (those a resume may change left out); metrics records
    without one join such a run when there is exactly one, else they count as a run of their own.
    """
    folder = Path(folder)
    groups: dict[Any, RunGroup] = {}
    for checkpoint in checkpoint_folders(folder):
        info = read_info(checkpoint)
        args = info.get("args") if isinstance(info.get("args"), dict) else {}
        run_id = info.get(RUN_ID)
        key = run_id or ("legacy", json.dumps({k: v for k, v in args.items() if k not in _RESUME_ARGS}, sort_keys=True))
        groups.setdefault(key, RunGroup(run_id or None, args=args)).files.append(checkpoint.name)
    for record in _metrics_records(folder):
        run_id = record.get(RUN_ID)
        if run_id:
            key = run_id
        else:
            legacy = [k for k in groups if isinstance(k, tuple)]
            key = legacy[0] if len(legacy) == 1 and len(groups) == 1 else ("legacy", METRICS_NAME)
        group = groups.setdefault(key, RunGroup(run_id or None))
        if METRICS_NAME not in group.files:
            group.files.append(METRICS_NAME)
    return list(groups.values())


def describe_runs(groups: list[RunGroup]) -> str:
    """``run A (epoch-1-step-8, metrics.jsonl) and run B (...)``: the runs, each with its files."""
    legacy = [g for g in groups if g.run_id is None and g.args]
    keys = sorted({k for g in legacy for k in g.args if k not in _RESUME_ARGS})
    differing = [k for k in keys if len({json.dumps(g.args.get(k)) for g in legacy}) > 1]
    differing.sort(key=lambda k: (k not in ("seed", "num_train_epochs", "train_type", "learning_rate"), k))
    parts = [g.describe(differing) for g in groups]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def one_run(folder: str | Path) -> str | None:
    """The id of the one run ``folder`` holds (``None``: empty, or one run of an older glmlab).

    Raises :class:`MixedRunsError` naming the runs when it holds files of several: whatever
    reads the folder would mix them (the newest checkpoint of one, the metrics of another).
    """
    groups = runs_in(folder)
    if len(groups) > 1:
        raise MixedRunsError(f"{folder}: holds files of more than one run: {describe_runs(groups)}; "
                             f"name one checkpoint folder instead, or train again into an empty folder")
    return groups[0].run_id if groups else None

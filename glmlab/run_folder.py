"""A training folder belongs to one run: the rules, the lock and the run ids.

What a run leaves in its ``--output_dir`` (its *run files*): the ``epoch-E-step-S`` checkpoint
folders (and the ``.epoch-E-step-S.tmp`` / ``.old`` leftovers of an interrupted save),
``metrics.jsonl`` and ``tensorboard/``. Every checkpoint's ``glmlab_checkpoint.json`` and every
``metrics.jsonl`` record carry the run's id (``"run_id"``); a run resumed with ``--resume_from``
keeps the id of the run it continues (it is the same run).

Writing (:mod:`glmlab.train`):

* :func:`check_output_dir` (from :func:`glmlab.args.check_inputs`, so also in
  ``scripts/launch_ds.py``, before any model loads) refuses a folder holding another run's
  files, with one line naming the three ways on: ``--resume_from`` one of its checkpoints,
  ``--overwrite_output_dir``, or another folder;
* :func:`claim_output_dir` (rank 0, once the processes have joined) takes an exclusive
  ``fcntl.flock`` on ``output_dir/glmlab.lock`` for the whole run, checks the folder again
  under the lock and broadcasts the verdict, so every process stops together when refused;
* :func:`clear_previous_run` (rank 0, once the model has loaded) removes the previous run's
  files under ``--overwrite_output_dir``, or, on a resume into the run's own folder, the
  metrics records logged after the checkpoint (the abandoned continuation).

The lock is a ``flock`` held through an open file: it dies with the process, so a run killed
with ``kill -9`` never blocks the next one. ``glmlab.lock`` itself is never deleted (removing a
lock file that another process is about to lock would let two runs lock two different
files); it says which process holds, or last held, the folder. A refused run writes nothing:
when the lock is taken, the file is already there.

Reading (:func:`glmlab.checkpoint.one_run`): ``latest_checkpoint``, ``load_for_inference``, ``predict``, ``chat``
and the plots read one run's files; a folder holding two runs (left by an older glmlab, whose
files carry no run id) gets one line naming them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmlab.checkpoint import (
    METRICS_NAME,
    RUN_ID,
    _metrics_records,
    checkpoint_folders,
    describe_runs,
    has_deepspeed_state,
    read_info,
    run_files,
    runs_in,
)
from glmlab.parsers import ArgsError

LOCK_NAME = "glmlab.lock"
class RefusedOnRankZero(ArgsError):
    """Rank 0 refused the folder and says why; the other ranks stop with it, without repeating the line."""


def new_run_id() -> str:
    """A fresh run id: the start time (sortable, readable) and 6 random hex digits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- the training folder check
def check_output_dir(args) -> str | None:
    """Refuse an ``--output_dir`` that holds another run's files (:class:`ArgsError`, one line).

    Allowed: a folder without run files; ``--overwrite_output_dir`` (the files are removed later,
    by :func:`clear_previous_run`); ``--resume_from`` a checkpoint whose run is the only one in
    the folder. Returns the id the run will carry when it continues one (``--resume_from``), else
    ``None`` (a new run). Reads only; writes nothing.
    """
    folder = Path(args.output_dir)
    resumed_id = read_info(args.resume_from).get(RUN_ID) if args.resume_from else None
    if folder.exists() and not folder.is_dir():
        raise ArgsError(f"--output_dir {folder}: exists and is not a folder")
    if args.resume_from and args.overwrite_output_dir and _inside(Path(args.resume_from), folder):
        raise ArgsError(f"--resume_from {args.resume_from} is inside --output_dir {folder}, which "
                        f"--overwrite_output_dir would empty first: use one or the other")
    if args.overwrite_output_dir:
        return resumed_id
    files = run_files(folder)
    if not files:
        return resumed_id
    try:
        groups = runs_in(folder)
    except OSError as err:  # pragma: no cover - unreadable folder
        raise ArgsError(f"--output_dir {folder}: cannot be read ({err})") from None
    if args.resume_from and resumed_id and all(g.run_id == resumed_id for g in groups):
        return resumed_id  # continuing the run the folder holds
    names = [p.name + ("/" if p.is_dir() and not p.name.startswith("epoch-") else "") for p in files]
    if not groups:  # only events, or leftovers of a crashed save
        whose = f"another run's files ({', '.join(names)})"
    elif len(groups) == 1:
        whose = f"another run's checkpoints, metrics or events: {describe_runs(groups)}"
    else:
        whose = f"files of more than one run: {describe_runs(groups)}"
    if args.resume_from and not resumed_id:
        why = (f"--resume_from {args.resume_from} has no run id (an older glmlab's checkpoint), so it cannot "
               f"be told apart from them; resume into another --output_dir")
        raise ArgsError(f"--output_dir {folder}: holds {whose}; {why}, or start afresh with --overwrite_output_dir")
    resumable = [p for p in checkpoint_folders(folder) if has_deepspeed_state(p)]
    if len(groups) == 1 and groups[0].run_id and resumable:
        resume = f"continue it with --resume_from {resumable[-1]}"
    elif resumable:
        resume = "continue a run with --resume_from one of its checkpoints"
    else:
        resume = "no checkpoint of it can be continued with --resume_from"
    raise ArgsError(f"--output_dir {folder}: holds {whose}; {resume}, start afresh with --overwrite_output_dir "
                    f"(deletes them), or choose another --output_dir")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- the lock
class FolderLock:
    """An exclusive ``flock`` on ``folder/glmlab.lock``, held while this object's file stays open."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._file = None

    def acquire(self, run_id: str) -> str | None:
        """Take the lock without waiting. Returns ``None`` when taken, else who holds it (one phrase).

        Raises ``OSError`` when the filesystem refuses locks altogether (``ENOLCK``, ``EOPNOTSUPP``).
        """
        fh = open(self.path, "a+", encoding="utf-8")  # created if missing; nothing truncated before the lock
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # The holder writes its name just after it takes the lock: a run refused in that instant
            # waits (up to a second) to read the name rather than report an anonymous holder.
            for _ in range(20):
                fh.seek(0)
                holder = fh.read().strip()
                if holder:
                    break
                time.sleep(0.05)
            fh.close()
            return holder or "a process that has not written its name yet"
        except OSError:
            fh.close()
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, run {run_id}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._file = fh
        return None

    def release(self) -> None:
        """Let go of the lock (also what the process's end does, however it ends)."""
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


@dataclass
class RunFolder:
    """The claimed ``--output_dir`` of a run: its id, and (rank 0) the lock held for the run's life."""

    path: Path
    run_id: str
    resumed: bool
    lock: FolderLock | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def claim_output_dir(args, rank: int, world_size: int) -> RunFolder:
    """Lock ``--output_dir`` for this run (rank 0) and decide its run id; every process must call it.

    Rank 0 creates the folder, takes the lock and checks the folder again under it (another run
    may have written into it since :func:`check_output_dir` ran); the verdict goes to every
    process, so a refused run stops everywhere at once with the same :class:`ArgsError`.
    """
    folder = Path(args.output_dir)
    verdict: dict[str, Any] = {"error": None, "run_id": None, "resumed": False, "warning": None}
    lock = None
    if rank == 0:
        try:
            resumed_id = check_output_dir(args)
            run_id = resumed_id or new_run_id()
            folder.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(folder)
            try:
                holder = lock.acquire(run_id)
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                lock, holder = None, None
                verdict["warning"] = (f"warning: {folder}: this filesystem refuses locks ({os.strerror(err.errno)}): "
                                      f"nothing keeps a second run out of this folder")
            if holder is not None:
                raise ArgsError(f"--output_dir {folder}: in use by another training run ({holder}); wait for it "
                                f"to end, or choose another --output_dir")
            check_output_dir(args)  # again, under the lock
            verdict.update(run_id=run_id, resumed=resumed_id is not None)
        except Exception as err:  # noqa: BLE001 - every rank must hear of it, or the others wait forever
            if lock is not None:
                lock.release()
            verdict["error"] = str(err) if isinstance(err, ArgsError) else f"--output_dir {folder}: {err}"
    if world_size > 1:
        import torch.distributed as dist

        box = [verdict]
        dist.broadcast_object_list(box, src=0)
        verdict = box[0]
    if verdict["error"]:
        raise ArgsError(verdict["error"]) if rank == 0 else RefusedOnRankZero(verdict["error"])
    if rank == 0 and verdict["warning"]:
        print(verdict["warning"], flush=True)
    return RunFolder(folder, verdict["run_id"], verdict["resumed"], lock)


def clear_previous_run(args, run_id: str, log=print) -> None:
    """Rank 0, once everything has loaded: make the folder hold this run's files only.

    ``--overwrite_output_dir``: remove the previous run's checkpoints, metrics and events. A resume
    into the run's own folder: drop the metrics records logged after the checkpoint's step (the
    interrupted continuation, which this run logs again).
    """
    folder = Path(args.output_dir)
    if args.overwrite_output_dir:
        doomed = run_files(folder)
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if doomed:
            log(f"{folder}: removed the previous run's {', '.join(p.name for p in doomed)} (--overwrite_output_dir)")
        return
    if args.resume_from:
        step = read_info(args.resume_from).get("step")
        records = _metrics_records(folder)
        if step is None or not records:
            return
        kept = [r for r in records if r.get(RUN_ID) == run_id and r.get("step", 0) <= step]
        if len(kept) < len(records):
            path = folder / METRICS_NAME
            tmp = path.with_name(f".{METRICS_NAME}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, path)
            log(f"{path}: dropped {len(records) - len(kept)} record(s) logged after step {step} "
                f"(the interrupted run's, logged again now)")

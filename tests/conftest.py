"""Shared session fixtures: tiny checkpoint folders (one per mode, made once) and a training runner.

``tiny_model(mode)`` returns the folder of a tiny random-weight checkpoint written by
:func:`glmlab.tiny.make_tiny` (about 0.2M parameters); every test of the session shares it,
so tests must not write into it.

``run_train(...)`` runs the real thing in a subprocess -- ``scripts/launch_ds.py --cpu N``
(the ``deepspeed`` launcher) or ``python -m glmlab.train`` for one process -- with the
small settings every training test uses, and returns the finished process plus the
parsed ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glmlab.train import free_port  # tests import it from here

REPO = Path(__file__).resolve().parent.parent
SPO_TRAIN = REPO / "data" / "spo_train.jsonl"
SPO_TEST = REPO / "data" / "spo_test.jsonl"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(mode) -> Path``: the session's tiny checkpoint of ``mode`` (glm, glm2, glm3)."""
    from glmlab.tiny import make_tiny

    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("tiny")

    def get(mode: str) -> Path:
        if mode not in made:
            made[mode] = Path(make_tiny(mode, root / f"tiny-{mode}"))
        return made[mode]

    return get


def subprocess_env() -> dict[str, str]:
    """The environment training subprocesses run in: CPU DeepSpeed, one thread each."""
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# Small, fast settings shared by the training tests (sequences of at most 64 tokens).
SMALL = {
    "--max_len": "64", "--max_src_len": "32", "--per_device_train_batch_size": "2",
    "--num_train_epochs": "1", "--show_loss_step": "1", "--seed": "1234", "--warmup_ratio": "0",
    "--precision": "fp32", "--weight_decay": "0.0",
}


def train_argv(model: Path, output_dir: Path, **flags) -> list[str]:
    """Training flags: ``SMALL`` overridden by ``flags`` (``name=value``; ``None`` drops a flag)."""
    merged = dict(SMALL)
    merged.update({"--train_path": str(SPO_TRAIN), "--model_name_or_path": str(model), "--output_dir": str(output_dir)})
    for name, value in flags.items():
        merged[f"--{name}"] = None if value is None else str(value)
    argv = []
    for name, value in merged.items():
        if value is not None:
            argv += [name, value]
    return argv


@dataclass
class TrainResult:
    proc: subprocess.CompletedProcess
    output_dir: Path

    @property
    def metrics(self) -> list[dict]:
        path = self.output_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m]

    @property
    def eval_losses(self) -> list[float]:
        return [m["eval_loss"] for m in self.metrics if "eval_loss" in m]

    def checkpoints(self) -> list[Path]:
        return sorted(self.output_dir.glob("epoch-*-step-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))

    def explain(self) -> str:
        return f"exit {self.proc.returncode}\n--- stdout\n{self.proc.stdout[-4000:]}\n--- stderr\n{self.proc.stderr[-6000:]}"


def run_train(argv: list[str], output_dir: Path, processes: int = 2, launcher_args: list[str] | None = None,
              timeout: float = 300) -> TrainResult:
    """Run training in a subprocess: ``launch_ds.py --cpu N`` (``processes`` > 0) or plain ``python -m glmlab.train`` (0)."""
    if processes:
        cmd = [sys.executable, str(REPO / "scripts" / "launch_ds.py"), "--cpu", str(processes),
               "--master_port", str(free_port()), *(launcher_args or []), "--", *argv]
    else:
        cmd = [sys.executable, "-m", "glmlab.train", *argv]
    return TrainResult(run_job(cmd, timeout), output_dir)


def run_job(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` for launcher jobs: on timeout the whole process group dies, workers included."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                          cwd=REPO, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


# The longest module first: with ``pytest -n 2`` (scripts/test.sh) the notebooks start at once on one worker
# while the other works through the rest, so the two end near each other (longest job first).
LONGEST_FIRST = ("test_notebooks.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the rest keeps its order

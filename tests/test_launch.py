"""``scripts/launch_ds.py``: the deepspeed command it builds, and two "machines" training as one job."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, free_port, run_job, subprocess_env, train_argv

LAUNCH = REPO / "scripts" / "launch_ds.py"


@pytest.fixture
def launch(monkeypatch, capsys):
    """Run ``launch_ds.main`` in this process (it only prints with --dry_run): ``launch(*args)`` -> returncode/stdout/stderr."""
    spec = importlib.util.spec_from_file_location("launch_ds", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("DS_ACCELERATOR", "LOCAL_SIZE"):
        monkeypatch.delenv(name, raising=False)  # restored after the test

    def run(*args: str):
        capsys.readouterr()
        try:
            code = module.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_launcher_runs_as_a_script(tiny_model, tmp_path):
    flags = train_argv(tiny_model("glm2"), tmp_path / "out", train_type="lora")
    proc = subprocess.run([sys.executable, str(LAUNCH), "--cpu", "2", "--dry_run", "--", *flags], capture_output=True,
                          text=True, env=subprocess_env(), cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "-m glmlab.train" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.fixture
def train_flags(tiny_model, tmp_path):
    return train_argv(tiny_model("glm2"), tmp_path / "out", train_type="lora", max_steps=2)


def test_dry_run_cpu(launch, train_flags):
    """One machine's CPU: a line per rank, with the environment DeepSpeed's launcher would give it."""
    proc = launch("--cpu", "2", "--master_port", "29555", "--dry_run", "--", *train_flags)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert line.startswith("DS_ACCELERATOR=cpu OMP_NUM_THREADS=")
        assert f" RANK={rank} LOCAL_RANK={rank} WORLD_SIZE=2 LOCAL_SIZE=2 " in line
        assert "MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 " in line
        assert "-u -m glmlab.train --max_len 64" in line


def test_dry_run_cpu_with_hostfile_uses_deepspeed(launch, train_flags, tmp_path):
    """Several machines' CPUs go through DeepSpeed's launcher (--num_gpus: N processes on every host)."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("worker-0 slots=1\nworker-1 slots=1\n")
    proc = launch("--cpu", "1", "--hostfile", str(hostfile), "--master_addr", "worker-0", "--master_port", "29555",
                  "--dry_run", "--", *train_flags)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("DS_ACCELERATOR=cpu LOCAL_SIZE=1 ")
    assert "--num_gpus 1" in line and "--master_port 29555" in line and "--include" not in line
    assert "--module glmlab.train --max_len 64" in line


def test_run_ranks_ends_the_others_when_one_fails(tmp_path):
    """A rank that fails ends the job at once with its status; the rank still running (here: waiting, as
    in a collective) is ended, not left behind."""
    from glmlab.launch import run_ranks

    script = ("import os, sys, time\n"
              "if os.environ['RANK'] == '1': sys.exit(3)\n"
              "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)\n")
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    code = run_ranks([sys.executable, "-c", script, str(pid_file)], [{"RANK": "0"}, {"RANK": "1"}], dict(os.environ),
                     grace=5)
    assert code == 3 and time.monotonic() - start < 60
    if pid_file.exists():  # rank 0 got as far as writing its pid: it must be gone
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_dry_run_gpus_and_hosts(launch, train_flags, tmp_path):
    proc = launch("--gpus", "0,1,2,3", "--dry_run", "--", *train_flags)
    assert proc.returncode == 0, proc.stderr
    assert "--include localhost:0,1,2,3" in proc.stdout
    hostfile = tmp_path / "hosts"
    hostfile.write_text("worker-0 slots=4\nworker-1 slots=4\n")
    proc = launch("--gpus", "0,1", "--hostfile", str(hostfile), "--no_ssh", "--node_rank", "1",
                  "--master_addr", "worker-0", "--dry_run", "--", *train_flags)
    assert proc.returncode == 0, proc.stderr
    assert "--include worker-0:0,1@worker-1:0,1" in proc.stdout
    assert "--no_ssh --node_rank 1 --master_addr worker-0" in proc.stdout
    proc = launch("--hostfile", str(hostfile), "--num_nodes", "2", "--master_addr", "worker-0", "--dry_run", "--",
                  *train_flags)
    assert proc.returncode == 0 and f"--hostfile {hostfile} --num_nodes 2" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--cpu", "2", "--gpus", "0"], "exclude each other"),
    (["--cpu", "0"], "--cpu"),
    (["--gpus", "a,b"], "--gpus"),
    (["--no_ssh", "--node_rank", "0"], "--no_ssh needs"),
    (["--node_rank", "1"], "only used with --no_ssh"),
    (["--hostfile", "/no/such/hostfile"], "no such file"),
])
def test_bad_launcher_options(launch, train_flags, args, message):
    proc = launch(*args, "--dry_run", "--", *train_flags)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_training_args_are_checked_before_launch(launch, train_flags, tmp_path):
    proc = launch("--cpu", "2", "--dry_run", "--", *train_flags, "--mode", "glm5")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glmlab.train: error:") and "--mode" in lines[0] and "glm5" in lines[0]


@pytest.mark.slow
def test_two_machines_without_ssh_train_as_one_job(tiny_model, tmp_path):
    """Two launchers on one host, node ranks 0 and 1 of a two-host hostfile, one CPU process each, over loopback.

    (It also covers bf16 on the CPU.)
    """
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")  # two names, one machine
    out = tmp_path / "out"
    flags = train_argv(tiny_model("glm2"), out, train_type="lora", max_steps=3, save_model_step=2, precision="bf16")
    port = str(free_port())
    with ThreadPoolExecutor(2) as pool:  # both "machines" at once: each waits for the other at the rendezvous
        procs = list(pool.map(lambda rank: run_job(
            [sys.executable, str(LAUNCH), "--cpu", "1", "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(rank),
             "--master_addr", "127.0.0.1", "--master_port", port, "--", *flags], timeout=300), (0, 1)))
    results = [(p.stdout, p.stderr) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, f"{stdout[-3000:]}\n{stderr[-5000:]}"
    assert "2 process(es)" in results[0][0]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    info = json.loads((out / "epoch-1-step-3" / "glmlab_checkpoint.json").read_text())
    assert info["world_size"] == 2
    # each process wrote its own ZeRO partition into the one checkpoint
    assert len(list((out / "epoch-1-step-3" / "deepspeed").glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    assert (out / "epoch-1-step-2").is_dir()
    # DeepSpeed's CPU shared-memory all-reduce is kept off: it leaked 69 MB per rank into /dev/shm
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))

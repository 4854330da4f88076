"""Start ``glmlab.train`` on N processes (the ``deepspeed`` launcher on GPUs), after checking the training arguments.

``glmlab launch`` runs this module, and so does ``scripts/launch_ds.py`` (a checkout's entry)::

    # four GPUs of this machine
    glmlab launch --gpus 0,1,2,3 -- --train_path data/spo_train.jsonl --model_name_or_path ChatGLM2-6B ...
    # two CPU processes (no GPU needed): DS_ACCELERATOR=cpu, gloo
    glmlab launch --cpu 2 -- --train_path ... --precision fp32
    # several machines over ssh (pdsh), one line per machine in the hostfile ("host slots=N")
    glmlab launch --hostfile hosts --num_nodes 2 --master_addr host0 -- ...
    # several machines without ssh: run this on every machine, each with its own --node_rank
    glmlab launch --hostfile hosts --no_ssh --node_rank 0 --master_addr host0 -- ...

Everything after ``--`` goes to ``python -m glmlab.train``. Those arguments are parsed and
validated here first (:func:`glmlab.args.parse_args`: flags, paths, sample files, freeze
patterns and LoRA modules), so bad input fails with one line before DeepSpeed starts and
nothing is written. ``--dry_run`` prints the launcher command instead of running it.

On one machine's CPU (``--cpu N``, no hostfile) this module starts the N processes itself
(:func:`run_ranks`), each with the environment DeepSpeed's launcher gives a rank (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), and ends them all
when one fails. DeepSpeed's own launcher does only that on one machine, through two more Python
processes (its runner, then ``deepspeed.launcher.launch``) that import DeepSpeed and poll once a
second: 5-6 s of every job, a seventh of a small model's 375-step run on a laptop (measured in
``benchmarks/bench_launch.py``). GPUs and hostfiles go through the ``deepspeed`` launcher as before:
there a job lasts hours and the launcher's options (``--include``, pdsh, ``.deepspeed_env``) matter.
With several machines on the CPU, DeepSpeed counts one "device" per NUMA node unless ``LOCAL_SIZE``
is set, so ``--include localhost:0,1`` would be refused; ``--num_gpus N`` is not checked against
that count and starts N processes on every host, which is what ``--cpu N`` passes (with
``LOCAL_SIZE=N``). The CPU accelerator talks over gloo (oneCCL when ``oneccl_bindings_for_pytorch``
is installed).

:func:`free_port` finds a TCP port nobody listens on, for a process group's master.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

from glmlab.parsers import OneLineParser

# The folder holding the glmlab package (a checkout, or site-packages): the training processes import
# glmlab from it, as this process did.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
PROG = "launch_ds"


def free_port() -> int:
    """A TCP port on this machine that nobody listens on right now (for a process group's master)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The launcher's own flags (those before ``--``)."""
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_argument_group("where to run")
    where.add_argument("--gpus", help="GPU ids of each machine, e.g. 0,1,2,3 (default: all of them)")
    where.add_argument("--cpu", type=int, metavar="N", help="run N processes on the CPU of each machine (no GPU)")
    where.add_argument("--hostfile", help="MPI-style hostfile, one 'hostname slots=N' line per machine")
    where.add_argument("--num_nodes", type=int, help="use the first N machines of the hostfile")
    where.add_argument("--no_ssh", action="store_true",
                       help="do not ssh to the other machines: start this script on each of them with its --node_rank")
    where.add_argument("--node_rank", type=int, help="with --no_ssh: this machine's line in the hostfile, from 0")
    where.add_argument("--master_addr", help="address of the machine of rank 0 (needed with several machines)")
    where.add_argument("--master_port", type=int, default=29500, help="its TCP port (default 29500)")
    parser.add_argument("--dry_run", action="store_true", help="print the launcher command, do not run it")
    return parser


def deepspeed_command(opts: argparse.Namespace, train_argv: list[str]) -> list[str]:
    """The ``deepspeed`` launcher command line for ``opts``, running ``glmlab.train`` with ``train_argv``."""
    script = Path(sys.executable).with_name("deepspeed")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "deepspeed.launcher.runner"]
    if opts.hostfile:
        cmd += ["--hostfile", opts.hostfile]
    if opts.num_nodes:
        cmd += ["--num_nodes", str(opts.num_nodes)]
    if opts.cpu:
        cmd += ["--num_gpus", str(opts.cpu)]
    elif opts.gpus:
        hosts = _hosts(opts.hostfile) if opts.hostfile else ["localhost"]
        cmd += ["--include", "@".join(f"{host}:{opts.gpus}" for host in hosts)]
    if opts.no_ssh:
        cmd += ["--no_ssh", "--node_rank", str(opts.node_rank)]
    if opts.master_addr:
        cmd += ["--master_addr", opts.master_addr]
    cmd += ["--master_port", str(opts.master_port), "--module", "glmlab.train", *train_argv]
    return cmd


def job_env(cpu: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a job's processes: ``base`` (default this process's), this glmlab first on
    ``PYTHONPATH``; with ``cpu`` processes, DeepSpeed's CPU accelerator, ``LOCAL_SIZE`` and the cores shared out
    (``OMP_NUM_THREADS``, unless set)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    if cpu:
        env["DS_ACCELERATOR"] = "cpu"
        env["LOCAL_SIZE"] = str(cpu)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cpu)))
    return env


def rank_commands(nproc: int, train_argv: list[str], master_port: int) -> tuple[list[str], list[dict[str, str]]]:
    """``nproc`` processes of ``glmlab.train`` on this machine: the command, and each rank's environment
    (what DeepSpeed's launcher sets for a rank of a one-machine job)."""
    cmd = [sys.executable, "-u", "-m", "glmlab.train", *train_argv]
    rank_envs = [{"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_SIZE": str(nproc),
                  "CROSS_RANK": "0", "CROSS_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port)}
                 for rank in range(nproc)]
    return cmd, rank_envs


def watch_ranks(procs: list[subprocess.Popen], timeout: float | None = None) -> list[int | None]:
    """Poll a job's processes, all at once, until every one has ended well, one has failed, or ``timeout``
    seconds have passed; returns their exit statuses then (``None``: still running). All at once, because a
    rank that fails leaves the others waiting in a collective: waiting on each in turn would wait forever,
    or until a timeout that hides the failure."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        if any(codes) or None not in codes or (deadline is not None and time.monotonic() >= deadline):
            return codes
        time.sleep(0.05)


def run_ranks(cmd: list[str], rank_envs: list[dict[str, str]], env: dict[str, str], stdout=None, stderr=None,
              grace: float = 10.0) -> int:
    """Run one process per rank (``cmd`` with ``env`` plus the rank's variables) until all end; returns 0, or
    the exit status of the first rank that failed, after ending the others (a rank left waiting in a
    collective would wait forever). ``stdout``/``stderr`` (files) are shared by the ranks, as a launcher's are.
    SIGTERM or Ctrl-C here ends every rank too."""
    procs = [subprocess.Popen(cmd, env={**env, **rank_env}, stdout=stdout, stderr=stderr, cwd=os.getcwd())
             for rank_env in rank_envs]

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    previous = signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(143))) if _main_thread() else None
    try:
        failed = next((code for code in watch_ranks(procs) if code), 0)
        if failed:
            stop()
        return failed
    except BaseException:  # Ctrl-C, or the caller interrupted: no rank outlives this call
        stop()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _hosts(hostfile: str) -> list[str]:
    lines = Path(hostfile).read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _check(opts: argparse.Namespace) -> str | None:
    """A one-line problem with the launcher options, or None."""
    if opts.cpu is not None and opts.cpu < 1:
        return "--cpu must be at least 1"
    if opts.cpu and opts.gpus:
        return "--cpu and --gpus exclude each other"
    if opts.gpus and not all(part.strip().isdigit() for part in opts.gpus.split(",")):
        return f"--gpus must be comma-separated GPU ids such as 0,1,2,3 (got {opts.gpus!r})"
    if opts.hostfile and not Path(opts.hostfile).is_file():
        return f"--hostfile {opts.hostfile}: no such file"
    if opts.no_ssh:
        if opts.node_rank is None or opts.master_addr is None:
            return "--no_ssh needs --node_rank and --master_addr"
        if not opts.hostfile:
            return "--no_ssh needs --hostfile (every machine must know all of them)"
        if not 0 <= opts.node_rank < len(_hosts(opts.hostfile)):
            return f"--node_rank {opts.node_rank} is not a line of {opts.hostfile}"
    elif opts.node_rank is not None:
        return "--node_rank is only used with --no_ssh"
    if opts.hostfile and len(_hosts(opts.hostfile)) > 1 and not opts.master_addr:
        return "several machines need --master_addr"
    return None


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Check the launcher options and the training arguments, then run (or print) the deepspeed command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:
        split = argv.index("--")
        own, train_argv = argv[:split], argv[split + 1:]
    else:
        own, train_argv = argv, []
    opts = build_parser(prog).parse_args(own)
    problem = _check(opts)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 2
    if opts.cpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before anything asks DeepSpeed for its accelerator

    from glmlab.args import ArgsError, parse_args

    if not opts.hostfile and (opts.cpu or opts.gpus):  # the world size is known: --pipeline_stages is checked against it
        os.environ["GLMLAB_WORLD_SIZE"] = str(opts.cpu or len(opts.gpus.split(",")))
    try:
        parse_args(train_argv)
    except ArgsError as err:
        print(f"glmlab.train: error: {err}", file=sys.stderr)
        return 2

    env = job_env(opts.cpu)
    if opts.cpu and not opts.hostfile:  # one machine's CPU: the ranks are started here
        cmd, rank_envs = rank_commands(opts.cpu, train_argv, opts.master_port)
        if opts.dry_run:
            for rank_env in rank_envs:
                print(" ".join(f"{k}={v}" for k, v in {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": env["OMP_NUM_THREADS"],
                                                      **rank_env}.items()), shlex.join(cmd))
            return 0
        return run_ranks(cmd, rank_envs, env)
    cmd = deepspeed_command(opts, train_argv)
    if opts.dry_run:
        prefix = f"DS_ACCELERATOR=cpu LOCAL_SIZE={opts.cpu} " if opts.cpu else ""
        print(prefix + shlex.join(cmd))
        return 0
    if not Path(cmd[0]).is_file() and not shutil.which(cmd[0]):
        print(f"{prog}: error: {cmd[0]} not found (is deepspeed installed?)", file=sys.stderr)
        return 2
    return subprocess.call(cmd, env=env, cwd=os.getcwd())


if __name__ == "__main__":
    sys.exit(main())

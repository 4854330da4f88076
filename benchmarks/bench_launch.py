"""What a job costs beyond its steps: ``glmlab launch --cpu 2`` against DeepSpeed's own launcher, same job.

    python benchmarks/bench_launch.py                 # 3 repeats of each, a 5-step LoRA job on the small glm base
    python benchmarks/bench_launch.py --repeats 5 --steps 1

Each repeat runs the same 5-step job (``--max_steps``, the notebooks' flags, the shipped small base, the
synthetic training set) two ways, alternating:

* ``glmlab``: ``python -m glmlab.launch --cpu 2 -- ...``, which starts the two ranks itself
  (:func:`glmlab.launch.run_ranks`) and whose ranks end without Python's teardown;
* ``deepspeed``: the command ``glmlab launch`` builds for DeepSpeed's launcher (its runner, then
  ``deepspeed.launcher.launch``, then the ranks), run with a rank entry that takes the ordinary way out, as
  glmlab did before.

A 5-step job is almost all overhead, so the difference is what every job pays, whatever its length.
Prints the wall times and their medians, and writes them to ``--output`` (JSON) when given.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's glmlab

# A rank entry that returns from glmlab.train.main and exits as Python does by default (teardown included).
ORDINARY_EXIT = "import sys; from glmlab.train import main; sys.exit(main())"


def train_flags(output_dir: Path, steps: int) -> list[str]:
    from glmlab.notebooks import experiment

    base = experiment.resolve_base(None, "glm")
    return ["--model_name_or_path", str(base), "--train_path", str(experiment.data_path("spo_train")),
            "--output_dir", str(output_dir), "--mode", "glm", "--train_type", "lora", "--max_len", "128",
            "--max_src_len", "96", "--per_device_train_batch_size", "8", "--max_steps", str(steps),
            "--overwrite_output_dir", "true"]


def deepspeed_way(flags: list[str], port: int) -> tuple[list[str], dict[str, str]]:
    """DeepSpeed's launcher, as ``glmlab launch`` ran it before it started the ranks itself."""
    from glmlab.launch import build_parser, deepspeed_command, job_env

    opts = build_parser().parse_args(["--cpu", "2", "--master_port", str(port)])
    cmd = deepspeed_command(opts, flags)
    split = cmd.index("--module")  # run the ordinary-exit entry instead of glmlab.train's __main__
    wrapper = Path(tempfile.mkdtemp()) / "ordinary_exit.py"
    wrapper.write_text(ORDINARY_EXIT + "\n", encoding="utf-8")
    cmd = cmd[:split] + [str(wrapper)] + cmd[split + 2:]
    return cmd, job_env(2)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"bench_launch.py: {cmd[:4]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    from glmlab.launch import free_port, job_env

    walls: dict[str, list[float]] = {"glmlab": [], "deepspeed": []}
    with tempfile.TemporaryDirectory() as tmp:
        flags = train_flags(Path(tmp) / "run", args.steps)
        for _ in range(args.repeats):
            port = free_port()
            mine = [sys.executable, "-m", "glmlab.launch", "--cpu", "2", "--master_port", str(port), "--", *flags]
            walls["glmlab"].append(timed(mine, job_env()))
            walls["deepspeed"].append(timed(*deepspeed_way(flags, free_port())))
    medians = {way: statistics.median(values) for way, values in walls.items()}
    for way, values in walls.items():
        print(f"{way:10s} median {medians[way]:5.1f} s  ({', '.join(f'{v:.1f}' for v in values)})")
    print(f"saved per job: {medians['deepspeed'] - medians['glmlab']:.1f} s ({args.steps}-step LoRA job, 2 CPU ranks)")
    if args.output:
        Path(args.output).write_text(json.dumps({"command": " ".join(["python benchmarks/bench_launch.py", *(argv or sys.argv[1:])]),
                                                 "steps": args.steps, "walls_s": walls, "medians_s": medians}, indent=2) + "\n",
                                     encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

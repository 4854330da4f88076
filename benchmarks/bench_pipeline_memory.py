"""Peak resident memory of a pipeline stage beside a one-process ``load_model``, on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_pipeline_memory.py --stages 2 [--num_layers 28] [--keep]

Writes a ChatGLM2-6B-shaped folder (``glmlab.memory.preset_config("glm2")``: every official
tensor, random bf16 weights, the official sharded safetensors layout with its index) into a
temporary folder, then measures in fresh processes:

* one process: ``glmlab.load_model(folder, dtype=bf16)``, its peak RSS (``ru_maxrss``);
* ``--stages`` gloo processes: DeepSpeed's ``PipelineModule`` of :mod:`glmlab.pipeline`'s
  layer specs, each process building and loading only its stage, and each process's peak RSS
  once its stage is loaded (before any optimizer exists).

The folder is deleted afterwards (``--keep`` keeps it). The target of issue 17: every stage's
peak at most 0.6x the one-process load with 2 stages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _touch(module: torch.nn.Module) -> None:
    """Read every parameter once: tensors a loader left mapped from the file become resident, as training makes them."""
    with torch.no_grad():
        for p in module.parameters():
            p.sum()


def _rss_parts() -> dict[str, float]:
    """Anonymous and file-backed resident memory now (MiB), from /proc/self/status."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            parts[key] = int(value.split()[0]) / 1024
    return parts


def write_folder(folder: Path, num_layers: int, layers_per_shard: int = 2) -> int:
    """A ChatGLM2-6B-shaped official folder with random bf16 weights; returns its parameter count."""
    from safetensors.torch import save_file

    from glmlab.loading import MODE_KEY, _model_class
    from glmlab.memory import preset_config

    config = preset_config("glm2")
    config.num_layers = num_layers
    with torch.device("meta"):
        model = _model_class(config.architecture)(config)
    names = list(model.state_dict())
    groups: list[list[str]] = [[]]
    for name in names:  # a new shard every few blocks, as the official folders are split
        if ".layers." in name and name.split(".layers.")[1].split(".")[0] != "0" and \
                int(name.split(".layers.")[1].split(".")[0]) % layers_per_shard == 0 and name.endswith("input_layernorm.weight"):
            groups.append([])
        groups[-1].append(name)
    folder.mkdir(parents=True)
    weight_map, total, count = {}, 0, 0
    generator = torch.Generator().manual_seed(0)
    expected = model.state_dict()
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in group:
            meta = expected[name]
            if name.endswith("inv_freq"):
                tensors[name] = model.get_submodule(name.rsplit(".", 1)[0]).compute_inv_freq()
                continue
            tensor = torch.empty(meta.shape, dtype=torch.bfloat16)
            if "layernorm" in name:
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
            tensors[name] = tensor
            count += tensor.numel()
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = shard
            total += tensor.numel() * tensor.element_size()
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": weight_map}, indent=2))
    config.architectures = [type(model).__name__]
    setattr(config, MODE_KEY, "glm2")
    config.dtype = torch.bfloat16
    config.save_pretrained(folder)
    return count


def measure_load_model(folder: str) -> None:
    from glmlab import load_model

    model = load_model(folder, "glm2", dtype="bf16")
    _touch(model)
    print(json.dumps({"what": "load_model", "peak_mib": _peak_mib(), **_rss_parts()}), flush=True)


def measure_stage(folder: str, stages: int) -> None:
    import deepspeed
    import deepspeed.ops
    from deepspeed.pipe import PipelineModule

    from glmlab.loading import build_config
    from glmlab.pipeline import layer_specs

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    config, _ = build_config(folder, "glm2")
    module = PipelineModule(layers=layer_specs(config, folder, torch.bfloat16), num_stages=stages,
                            partition_method="type:BlockLayer", dynamic_shape=True)
    params = sum(p.numel() for p in module.parameters())
    _touch(module)
    print(json.dumps({"what": "stage", "stage": module.stage_id, "params": params, "peak_mib": _peak_mib(),
                      **_rss_parts()}), flush=True)


def _run(cmd: list[str], env: dict) -> list[dict]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--num_layers", type=int, default=28, help="ChatGLM2-6B has 28")
    parser.add_argument("--keep", action="store_true", help="keep the folder (its path is printed)")
    parser.add_argument("--_load", help=argparse.SUPPRESS)
    parser.add_argument("--_stage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._load:
        measure_load_model(args._load)
        return 0
    if args._stage:
        measure_stage(args._stage, args.stages)
        return 0

    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    root = Path(tempfile.mkdtemp(prefix="glm2-6b-shaped-"))
    folder = root / "model"
    try:
        count = write_folder(folder, args.num_layers)
        print(f"wrote {folder}: {count / 1e9:.2f}B parameters, bf16")
        [single] = _run([sys.executable, __file__, "--_load", str(folder)], env)
        from glmlab.launch import free_port

        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.stages}",
                    f"--master_port={free_port()}", __file__, "--stages", str(args.stages), "--_stage", str(folder)]
        stages = sorted(_run(launcher, env), key=lambda r: r["stage"])
        print(f"one process, load_model: peak RSS {single['peak_mib'] / 1024:.2f} GiB "
              f"(now: anonymous {single['RssAnon'] / 1024:.2f} GiB, file-backed {single['RssFile'] / 1024:.2f} GiB)")
        for r in stages:
            print(f"stage {r['stage']} of {args.stages}: {r['params'] / 1e9:.2f}B parameters, peak RSS "
                  f"{r['peak_mib'] / 1024:.2f} GiB = {r['peak_mib'] / single['peak_mib']:.2f}x the one-process load "
                  f"(now: anonymous {r['RssAnon'] / 1024:.2f} GiB, file-backed {r['RssFile'] / 1024:.2f} GiB)")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

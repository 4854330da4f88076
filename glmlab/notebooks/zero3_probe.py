"""A ZeRO-3 partition seen from inside: ``nproc`` CPU processes build the run's engine and report their shares.

Notebook 05 calls :func:`probe`: it starts ``nproc`` processes of this module (one per rank, a gloo process
group on the CPU); for each DeepSpeed config in turn, each builds the model and DeepSpeed engine exactly as the
in-kernel loop does (:mod:`glmlab.notebooks.by_hand`, hence as ``glmlab.train.setup`` does), takes one
optimizer step, and writes what it holds:

* per parameter: its full size (``ds_numel``), this rank's share (``ds_tensor``) and where the share lives,
  and whether ZeRO-3 keeps it whole on every rank (``ds_persist``: tensors under
  ``stage3_param_persistence_threshold`` elements are not worth partitioning);
* the optimizer: its class, and the fp32 master partition and Adam moments of this rank, with their device.

About 20 CPU seconds in all for two ranks and two configs on the small base (mostly imports and the data).
``python -m glmlab.notebooks.zero3_probe --rank R ...`` is the per-rank entry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from glmlab.args import TrainArgs


def _report(engine) -> dict[str, Any]:
    """What this rank holds of the model and of the optimizer."""
    params = []
    for name, p in engine.module.named_parameters():
        share = p.ds_tensor
        params.append({"name": name, "full": int(p.ds_numel), "share": int(share.numel()), "device": str(share.device),
                       "between_steps": int(p.data.numel()),  # 0 unless kept whole (gathered only to run)
                       "whole_on_every_rank": bool(getattr(p, "ds_persist", False))})
    zero = engine.optimizer  # DeepSpeedZeroOptimizer_Stage3
    inner = zero.optimizer
    flats = list(zero.fp32_partitioned_groups_flat)
    moments = [inner.state.get(f, {}) for f in flats]
    return {
        "params": params,
        "optimizer": type(inner).__name__,
        "master_numel": sum(int(f.numel()) for f in flats),
        "master_device": str(flats[0].device) if flats else None,
        "exp_avg_numel": sum(int(m["exp_avg"].numel()) for m in moments if "exp_avg" in m),
        "exp_avg_device": next((str(m["exp_avg"].device) for m in moments if "exp_avg" in m), None),
    }


def _rank_main(argv: list[str] | None = None) -> int:
    from glmlab.args import parse_args
    from glmlab.notebooks import by_hand

    parser = argparse.ArgumentParser(prog="zero3_probe", allow_abbrev=False)  # --ds_file is a training flag
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ds_files", required=True, help="comma-separated DeepSpeed configs, one engine each")
    opts, train_argv = parser.parse_known_args(argv)
    os.environ.update(RANK=str(opts.rank), LOCAL_RANK=str(opts.rank), WORLD_SIZE=str(opts.world),
                      LOCAL_SIZE=str(opts.world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(opts.port),
                      DS_ACCELERATOR="cpu")
    base = parse_args(train_argv, check=False)
    reports = {}
    for ds_file in opts.ds_files.split(","):
        args = replace(base, ds_file=ds_file)
        model, _ = by_hand.build_model(args)
        engine, loader = by_hand.build_engine(model, args)
        by_hand.run_steps(engine, loader, 1, show=False)  # one optimizer step: the Adam moments exist
        reports[ds_file] = _report(engine)
        by_hand.close(engine)
    Path(opts.out, f"rank{opts.rank}.json").write_text(json.dumps(reports), encoding="utf-8")
    # Leave the process group together, as glmlab.train does: a rank that exits with its gloo group still up can
    # die in the interpreter's teardown ("terminate called without an active exception", once in CI under load).
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    return 0


def probe(args: TrainArgs, ds_files: list[str], nproc: int = 2, timeout: float = 300) -> dict[str, list[dict]]:
    """Run ``nproc`` ranks on the CPU (one process group; each rank builds one engine per config of ``ds_files``,
    ZeRO-3 configs, in turn) with the run's ``args``; returns ds_file -> one report per rank (see the module
    docstring). Raises ``RuntimeError`` naming the first rank that failed (its exit status and last output line),
    or one still running after ``timeout`` seconds, once every rank has ended."""
    import tempfile

    from glmlab.args import to_argv
    from glmlab.launch import PACKAGE_PARENT, free_port, watch_ranks

    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "glmlab.notebooks.zero3_probe", "--world", str(nproc), "--port", str(free_port()),
               "--out", out, "--ds_files", ",".join(ds_files), *to_argv(args)]
        # Each rank's output goes to a file: a rank blocked on a full pipe would hold the others in a collective.
        logs = [Path(out, f"rank{r}.log") for r in range(nproc)]
        procs = []
        for r, log in enumerate(logs):
            with open(log, "w", encoding="utf-8") as fh:
                procs.append(subprocess.Popen([*cmd, "--rank", str(r)], env=env, stdout=fh, stderr=subprocess.STDOUT))
        try:  # the first rank to fail is named, and the others, left waiting in a collective, ended
            codes = watch_ranks(procs, timeout)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        failed = next((r for r, code in enumerate(codes) if code), None)
        hung = next((r for r, code in enumerate(codes) if code is None), None)
        if failed is not None or hung is not None:
            r = failed if failed is not None else hung
            why = f"exited {codes[r]}" if failed is not None else f"still running after {timeout:.0f} s"
            lines = logs[r].read_text(encoding="utf-8", errors="replace").splitlines()
            last = next((line for line in reversed(lines) if line.strip()), "no output")
            raise RuntimeError(f"zero3 probe failed: rank {r} {why}: {last}")
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text(encoding="utf-8")) for r in range(nproc)]
    return {ds_file: [rank[ds_file] for rank in ranks] for ds_file in ds_files}


def partition_rows(reports: dict[str, list[dict]], names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (config, parameter, rank): full size, the rank's share, where it lives. ``names``: the
    parameters to show (default: the largest one and the first one kept whole on every rank)."""
    rows = []
    for ds_file, ranks in reports.items():
        params = ranks[0]["params"]
        if names is None:
            chosen = [max(params, key=lambda p: p["full"])["name"]]
            chosen += [p["name"] for p in params if p["whole_on_every_rank"]][:1]
        else:
            chosen = names
        for name in chosen:
            for rank, report in enumerate(ranks):
                p = next(q for q in report["params"] if q["name"] == name)
                rows.append({"ds_file": ds_file, "parameter": name, "rank": rank, "full": p["full"],
                             "this_rank_holds": p["share"], "share": p["share"] / p["full"],
                             "materialised_between_steps": p["between_steps"],
                             "whole_on_every_rank": p["whole_on_every_rank"], "device": p["device"]})
    return rows


def optimizer_rows(reports: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per (config, rank): the optimizer class and where its fp32 master and Adam moments live."""
    return [{"ds_file": ds_file, "rank": rank, "optimizer": r["optimizer"], "fp32_master": r["master_numel"],
             "master_device": r["master_device"], "exp_avg": r["exp_avg_numel"], "exp_avg_device": r["exp_avg_device"]}
            for ds_file, ranks in reports.items() for rank, r in enumerate(ranks)]


if __name__ == "__main__":
    from glmlab.train import _end_now

    _end_now(_rank_main())  # the report is written and the group is gone: skip the interpreter's slow teardown

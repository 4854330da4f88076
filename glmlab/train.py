"""Fine-tune ChatGLM-6B / ChatGLM2-6B / ChatGLM3-6B with DeepSpeed: ``python -m glmlab.train``.

Read top to bottom: :func:`setup` (arguments, processes, data, model, DeepSpeed),
:func:`train` (the loop, in one function), saving (:mod:`glmlab.checkpoint`) and cleanup
in :func:`main`. The method (freeze, ptuning, lora, all) is a strategy from
:mod:`glmlab.methods`; the loop never asks which one it is.

Who owns what
-------------
DeepSpeed owns gradient accumulation, gradient clipping, precision (bf16/fp16/fp32), the
optimizer step and the learning-rate schedule. :func:`build_ds_config` writes all of them
into the DeepSpeed config in code, from the arguments; the JSON file of ``--ds_file``
only holds the ZeRO stage and offload settings (any batch, optimizer, scheduler,
precision or clipping key in it is overridden, with a warning).

* Optimizer: AdamW, betas (0.9, 0.95), eps 1e-8 (as the original commands), ``--weight_decay``
  on matrices only (biases and norm weights, every 1-D parameter, get none). Without offload
  it is ``torch.optim.AdamW`` (DeepSpeed's ``torch_adam``: nothing to compile, on the CPU or a
  GPU). With ZeRO-Offload it is DeepSpeed's CPU Adam, a C++ op built once with gcc on first
  use; the offload configs set ``"zero_force_ds_cpu_optimizer": true`` deliberately: offloaded
  optimizer states must be stepped by that op, and a hand-edited config that slips in
  another optimizer then fails at start-up instead of training many times slower.
* Schedule, one source of truth: DeepSpeed's ``WarmupDecayLR``; the rate rises linearly
  from 0 over ``ceil(warmup_ratio * total_steps)`` optimizer steps (DeepSpeed makes that
  at least 2, and the first step runs at rate 0) and then decays linearly to 0 at
  ``total_steps = num_train_epochs * (micro-batches per epoch // gradient_accumulation_steps)``.
  Micro-batches left over at the end of an epoch (fewer than one accumulation) are skipped.
  ``--max_steps`` stops early without changing the schedule, so a stopped run resumes exactly.
* Loss: the model's mean over supervised tokens of each micro-batch is what is
  back-propagated (DeepSpeed averages over accumulation and processes); the *logged* loss is
  the exact mean over every supervised token of the accumulated micro-batches of all
  processes (one small all-reduce per optimizer step, which also lets every process stop
  together on a non-finite loss, before the optimizer applies it).

Logging: every ``--show_loss_step`` optimizer steps, rank 0 appends
``{step, epoch, loss, lr, tokens_per_s, peak_mem_mb, overhead_share}`` to
``output_dir/metrics.jsonl`` and writes the same scalars as TensorBoard events in
``output_dir/tensorboard``; ``overhead_share`` is the share of the wall time spent outside
forward, backward and the optimizer step (data, logging). With ``--eval_path`` the eval
loss is computed and logged at every epoch end. Every record carries the run's ``run_id``.

One run per folder (:mod:`glmlab.run_folder`): ``output_dir`` holding another run's files is
refused before any model loads (``--resume_from`` continues that run, ``--overwrite_output_dir``
replaces it); rank 0 holds an exclusive lock on ``output_dir/glmlab.lock`` for the whole run.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmlab.args import ArgsError, TrainArgs, default_precision, parse_args
from glmlab.ds_config import Plan, build_ds_config, param_groups, print_plan
from glmlab.launch import free_port
from glmlab.models.lm_head import supervised_tokens


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training stops before the optimizer applies it."""


# ============================================================================ setup
def partition_for_zero3(model, ds_config: dict[str, Any], device) -> None:
    """Partition ``model``'s parameters for ZeRO-3 now, one tensor at a time, then move its buffers to ``device``.

    Handed a model whose parameters are not partitioned yet, ``deepspeed.initialize`` first moves
    the whole model onto each process's GPU (``engine.module.to(device)``) and only then
    partitions it: 12.8 GiB in 16 bits for ChatGLM-6B, on every card, before training starts --
    more than ZeRO-3 with offload needs for the whole run (``python -m glmlab.memory``), and
    more than a 12 GB card has. ``deepspeed.zero.Init(module=...)`` partitions the CPU-loaded
    model tensor by tensor instead (at most one whole tensor on the GPU at a time, the word
    embedding), straight to the CPU under ``offload_param``; DeepSpeed then leaves the model
    where it is, so the buffers (rotary tables, quantized weights) are moved here. The same
    parameters and values either way: training is unchanged, bit for bit on the CPU.
    ``mem_efficient_linear=False`` keeps ``torch.nn.functional.linear`` as it is. DeepSpeed
    casts only a model it partitions itself to the bf16/fp16 of the config, so the parameters
    that are not in it yet (LoRA adapters, a P-tuning prefix) are cast here first, as it would.
    """
    import deepspeed
    import torch

    dtype = (torch.bfloat16 if ds_config.get("bf16", {}).get("enabled")
             else torch.float16 if ds_config.get("fp16", {}).get("enabled") else None)
    for parameter in model.parameters():
        if dtype is not None and parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    deepspeed.zero.Init(module=model, config_dict_or_path=ds_config, mem_efficient_linear=False)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def _init_processes() -> None:
    """Join the DeepSpeed process group; a plain ``python -m glmlab.train`` is a world of one."""
    if "RANK" not in os.environ:  # not started by a launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    import deepspeed
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        # DeepSpeed's CPU backend would JIT-build (gcc, minutes on a laptop) a shared-memory
        # all-reduce that only its tensor-parallel inference uses, and it leaves 69 MB per rank
        # in /dev/shm that nothing ever frees. Training all-reduces through gloo either way.
        # The table is filled on first use by compiling a test program per op, whose linker errors
        # ("cannot find -laio") land on stderr, in a notebook's output too; its one reader (the
        # shared-memory op's check) asks for that op only, so it is set without the probe.
        ops = vars(deepspeed.ops)
        ops.setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False
    deepspeed.init_distributed()


def seed_everything(seed: int) -> None:
    """The same seed on every process, so every process builds the same initial adapters."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """Everything :func:`train` needs, built by :func:`setup`."""

    args: TrainArgs
    engine: Any
    strategy: Any
    tokenizer: Any
    loader: Any
    sampler: Any
    eval_loader: Any
    plan: Plan
    device: Any
    rank: int
    world_size: int
    position: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "micro_step": 0, "step": 0})
    rng: dict | None = None  # the random state to restore at ``position`` (resume)
    folder: Any = None  # the claimed output_dir (glmlab.run_folder.RunFolder): the run id, rank 0's lock
    pipeline: Any = None  # --pipeline_stages: glmlab.pipeline.Pipeline, the other way to take an optimizer step


def _loader(mixture, args: TrainArgs, pad_id: int, rank: int, world: int, shuffle: bool):
    import torch
    from torch.utils.data import DataLoader

    from glmlab.data import DataCollator
    from glmlab.mixture import MixtureDataset, MixtureSampler

    # The sampler's set_epoch also redraws the mixture's samples for that epoch (glmlab.mixture).
    dataset = MixtureDataset(mixture)
    sampler = MixtureSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=args.seed)
    # Its own generator, so creating an iterator never draws from the global RNG (exact resume).
    loader = DataLoader(dataset, batch_size=args.per_device_train_batch_size, sampler=sampler,
                        collate_fn=DataCollator(pad_id), generator=torch.Generator().manual_seed(args.seed))
    return loader, sampler


def setup(args: TrainArgs) -> Run:
    """Processes, tokenizer, data, model and strategy, DeepSpeed engine; restores ``--resume_from``."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from glmlab import load_model, load_tokenizer
    from glmlab.checkpoint import load_checkpoint
    from glmlab.methods import get_strategy
    from glmlab.mixture import Mixture
    from glmlab.run_folder import claim_output_dir

    _init_processes()
    rank, world = dist.get_rank(), dist.get_world_size()
    accelerator = get_accelerator()
    on_cpu = accelerator.device_name() == "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not on_cpu:
        accelerator.set_device(local_rank)
    device = torch.device(accelerator.device_name(local_rank) if not on_cpu else "cpu")
    precision = args.precision or default_precision()
    if precision == "fp16" and on_cpu:
        raise ArgsError("--precision fp16 needs a GPU (DeepSpeed refuses fp16 on the CPU); use bf16 or fp32")
    args.precision = precision
    # One run per folder: rank 0 locks output_dir for the run's life and checks it again; all stop if refused.
    folder = claim_output_dir(args, rank, world)
    seed_everything(args.seed)

    tokenizer = load_tokenizer(args.model_name_or_path, args.mode)
    train_data = Mixture.encode(args.train_path, tokenizer, args.mode, args.max_len, args.max_src_len,
                                args.is_skip, seed=args.seed, verbose=rank == 0)
    replica, replicas = rank, world  # which data shard this process reads, of how many
    if args.pipeline_stages:  # the stages of one pipeline replica read the same shard
        from glmlab.pipeline import data_parallel_position

        if world % args.pipeline_stages:
            raise ArgsError(f"--pipeline_stages {args.pipeline_stages} does not divide the {world} processes "
                            f"(stages x data-parallel replicas = processes)")
        replica, replicas = data_parallel_position(rank, world, args.pipeline_stages)
    loader, sampler = _loader(train_data, args, tokenizer.pad_token_id, replica, replicas, shuffle=True)
    plan = Plan.build(len(loader), args)
    eval_loader = None
    if args.eval_path:
        eval_data = Mixture.encode(args.eval_path, tokenizer, args.mode, args.max_len, args.max_src_len,
                                   args.is_skip, seed=args.seed, verbose=False)
        eval_loader, _ = _loader(eval_data, args, tokenizer.pad_token_id, replica, replicas, shuffle=False)
    if args.pipeline_stages:  # each process builds and loads only its stage's layers
        from glmlab.pipeline import setup_pipeline

        return _begin_writing(setup_pipeline(Run(args, None, None, tokenizer, loader, sampler, eval_loader, plan, device,
                                                 rank, world, folder=folder), replicas, len(train_data)), train_data)

    strategy = get_strategy(args.train_type)
    # --quantization_bit: quantized layer by layer as it loads, on this process's device, before prepare
    model = load_model(args.model_name_or_path, args.mode, dtype=precision, quantization_bit=args.quantization_bit or None,
                       device=device if args.quantization_bit else "cpu", **strategy.config_overrides(args))
    try:
        model = strategy.prepare(model, args)
    except ValueError as err:  # e.g. peft refusing a module type; the name checks ran before
        raise ArgsError(f"--train_type {args.train_type}: {str(err).splitlines()[0]}") from None
    model.config.use_cache = False
    if args.gradient_checkpointing:
        # Non-reentrant checkpointing passes gradients to frozen-input layers (LoRA, P-tuning) as well.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    ds_config = build_ds_config(args, world, plan, precision)
    overridden = ds_config.pop("_glmlab_overridden")
    if rank == 0:
        print(strategy.describe(model), flush=True)
        print_plan(args, plan, ds_config, overridden, len(train_data), world, per="process")
    groups = param_groups(model, args.weight_decay)
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        partition_for_zero3(model, ds_config, device)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config)
    run = Run(args, engine, strategy, tokenizer, loader, sampler, eval_loader, plan, device, rank, world, folder=folder)
    if args.resume_from:
        run.position, run.rng = load_checkpoint(engine, args.resume_from)
        if rank == 0:
            print(f"resumed from {args.resume_from} at optimizer step {run.position['step']}", flush=True)
    return _begin_writing(run, train_data)


def _begin_writing(run: Run, train_data) -> Run:
    """Only now, when everything has loaded, is anything but the lock written (rank 0)."""
    from glmlab.run_folder import clear_previous_run

    if run.rank == 0:
        clear_previous_run(run.args, run.folder.run_id)
        train_data.write_counts(Path(run.args.output_dir) / "data.json")  # what each file gave, on record
        print(f"run {run.folder.run_id}{' (continued)' if run.folder.resumed else ''} in {run.args.output_dir}", flush=True)
    return run


# ============================================================================ logging
def peak_memory_mb(device) -> float:
    """Peak accelerator memory of this process (GPU), else its peak resident memory (CPU)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class MetricsLog:
    """``metrics.jsonl`` plus TensorBoard events, written by rank 0 only."""

    def __init__(self, output_dir: str, enabled: bool, run_id: str | None = None):
        self.enabled = enabled
        self.run_id = run_id  # in every record: what a folder holds is one run
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.path = Path(output_dir) / "metrics.jsonl"
            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "run_id": self.run_id}) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}" if not key.startswith("eval") else key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _reduce_sum(values: list[float], device) -> list[float]:
    """Sum ``values`` over every process (one all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate(run: Run) -> float:
    """Mean loss over every supervised token of ``--eval_path`` (all processes together)."""
    import torch

    run.engine.eval()
    loss_sum = count = 0.0
    if run.pipeline is not None:  # DeepSpeed's pipeline schedule over every eval micro-batch
        loss_sum, count = run.pipeline.evaluate(run.eval_loader)
    else:
        with torch.no_grad():
            for batch in run.eval_loader:
                batch = {k: v.to(run.device) for k, v in batch.items()}
                n = int(supervised_tokens(batch["labels"]))
                loss_sum += float(run.engine(**batch, use_cache=False).loss) * n
                count += n
    run.engine.train()
    loss_sum, count = _reduce_sum([loss_sum, count], run.device)
    return loss_sum / max(count, 1)


# ============================================================================ train
class Meter:
    """Loss, token and time accounting of the optimizer steps between two log lines.

    ``compute()`` times forward, backward and the optimizer step; everything else in the
    wall time (fetching batches, the all-reduce of the logged numbers, logging) is overhead.
    """

    def __init__(self, device):
        import torch

        self.device = device
        # This step on this process, kept on the device so that no micro-batch waits for the accelerator:
        # loss x supervised tokens, supervised tokens, tokens.
        self.micro = torch.zeros(3, dtype=torch.float64, device=device)
        self.window = [0.0, 0.0, 0.0]  # the same, summed over processes and the steps since the last record
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start, self.compute_s = time.perf_counter(), 0.0

    @contextmanager
    def compute(self):
        t0 = time.perf_counter()
        yield
        self.compute_s += time.perf_counter() - t0

    def add(self, loss, batch: dict) -> None:
        """Count one micro-batch whose mean loss over its supervised tokens is ``loss``."""
        supervised = supervised_tokens(batch["labels"])
        self.micro[0] += loss.detach().double() * supervised
        self.micro[1] += supervised
        self.micro[2] += batch["attention_mask"].sum()

    def end_step(self) -> float:
        """The step's loss: mean over the supervised tokens of every accumulated micro-batch of every process."""
        import torch.distributed as dist

        if dist.get_world_size() > 1:
            dist.all_reduce(self.micro)
        step = self.micro.tolist()  # the one wait for the device per optimizer step
        self.micro.zero_()
        self.window = [w + s for w, s in zip(self.window, step)]
        return step[0] / max(step[1], 1)

    def record(self, step: int, epoch: int, lr: float) -> dict[str, Any]:
        """The metrics of the steps since the last record (then starts a new window)."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        loss_sum, supervised, tokens = self.window
        record = {"step": step, "epoch": epoch, "loss": loss_sum / max(supervised, 1), "lr": lr,
                  "tokens_per_s": tokens / elapsed, "peak_mem_mb": peak_memory_mb(self.device),
                  "overhead_share": max(0.0, 1 - self.compute_s / elapsed)}
        self.window = [0.0, 0.0, 0.0]
        self.restart_clock()
        return record


def train(run: Run) -> int:
    """The loop: epochs of micro-batches, an optimizer step every accumulation. Returns the last step."""
    from tqdm import tqdm

    from glmlab.checkpoint import save_checkpoint, set_rng_state

    args, engine, plan = run.args, run.engine, run.plan
    step = run.position["step"]
    log = MetricsLog(args.output_dir, enabled=run.rank == 0, run_id=run.folder.run_id)
    # Into a log or a notebook (not a terminal) each redraw stays as a frame: every 30 s there, not 10 times a second.
    bar = tqdm(total=plan.total_steps, initial=step, disable=run.rank != 0, unit="step", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    meter = Meter(run.device)
    last_saved: dict[str, Any] = {"step": None, "folder": None}

    def save(epoch: int, micro_step: int) -> None:
        """Checkpoint after ``micro_step`` micro-batches of epoch index ``epoch`` (named epoch-{epoch+1})."""
        if last_saved["step"] == step:
            return
        if micro_step >= plan.micro_batches_per_epoch:  # the epoch is complete: resume at the next one
            position = {"epoch": epoch + 1, "micro_step": 0, "step": step}
        else:
            position = {"epoch": epoch, "micro_step": micro_step, "step": step}
        folder = save_checkpoint(engine, run.strategy, run.tokenizer, args, epoch=epoch + 1, step=step, position=position,
                                 run_id=run.folder.run_id,
                                 log=bar.write)  # rank 0 writes its size, and what --save_total_limit pruned
        last_saved.update(step=step, folder=folder)
        meter.restart_clock()  # saving is not step time

    engine.train()
    try:
        for epoch in range(run.position["epoch"], args.num_train_epochs):
            run.sampler.set_epoch(epoch)  # a new, reproducible shuffle each epoch
            batches = iter(run.loader)
            start = run.position["micro_step"] if epoch == run.position["epoch"] else 0
            for _ in range(start):  # resume: skip what the interrupted run consumed, in the same order
                next(batches)
            if run.rng is not None:  # resume: the random state the interrupted run had here
                set_rng_state(run.rng)
                run.rng = None

            for micro_step in range(start, plan.micro_batches_per_epoch):
                batch = {k: v.to(run.device) for k, v in next(batches).items()}
                if run.pipeline is None:
                    with meter.compute():
                        loss = engine(**batch, use_cache=False).loss  # mean over this micro-batch's supervised tokens
                        engine.backward(loss)  # DeepSpeed scales it for accumulation and averages over processes
                    meter.add(loss, batch)
                    if not engine.is_gradient_accumulation_boundary():
                        with meter.compute():
                            engine.step()  # DeepSpeed only counts the micro-batch here
                        continue
                elif not run.pipeline.hold(batch):  # the pipeline engine takes the whole accumulation at once
                    continue

                # An optimizer step. Every process checks the same all-reduced loss before DeepSpeed applies it
                # (the pipeline engine applies it inside train_batch, before the check can run).
                lr = engine.get_lr()[0]  # the rate this step uses
                if run.pipeline is not None:
                    with meter.compute():
                        run.pipeline.train_batch(meter)  # forward, backward, optimizer step (glmlab.pipeline)
                step_loss = meter.end_step()
                if not math.isfinite(step_loss):
                    kept = f"; last good checkpoint: {last_saved['folder']}" if last_saved["folder"] else ""
                    stopped = ("stopped without saving (the pipeline engine had applied it)" if run.pipeline is not None
                               else "stopped before applying it")
                    raise NonFiniteLoss(f"loss is {step_loss} at optimizer step {step + 1} (epoch {epoch + 1}); "
                                        f"{stopped}{kept}")
                if run.pipeline is None:
                    with meter.compute():
                        engine.step()  # clip, optimizer step, schedule step, zero the gradients
                step += 1
                bar.update(1)

                if step % args.show_loss_step == 0:
                    record = meter.record(step, epoch + 1, lr)
                    log.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                if args.save_model_step and step % args.save_model_step == 0:
                    save(epoch, micro_step + 1)
                if args.max_steps and step >= args.max_steps:
                    save(epoch, micro_step + 1)
                    return step

            if run.eval_loader is not None:
                eval_loss = evaluate(run)
                log.log({"step": step, "epoch": epoch + 1, "eval_loss": eval_loss})
                if run.rank == 0:
                    bar.write(f"epoch {epoch + 1}: eval loss {eval_loss:.4f}")
            save(epoch, plan.micro_batches_per_epoch)
            meter.restart_clock()
        return step
    finally:
        bar.close()
        log.close()


# ============================================================================ main
def _fail(message: str) -> int:
    print(f"glmlab.train: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Parse, set up, train, clean up. Returns the exit status (0 on success)."""
    try:
        args = parse_args(argv)
    except ArgsError as err:
        return _fail(str(err))

    from glmlab.data import DataError
    from glmlab.loading import CheckpointError
    from glmlab.run_folder import RefusedOnRankZero

    run, together = None, False  # together: every process stops here (no one is left in a collective)
    try:
        run = setup(args)
        train(run)
        together = True
        return 0
    except RefusedOnRankZero:  # rank 0 prints the one line
        return 2
    except (ArgsError, DataError, CheckpointError) as err:
        return _fail(str(err))
    except NonFiniteLoss as err:  # every process saw the same all-reduced loss
        together = True
        if run.rank == 0:
            print(f"glmlab.train: error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:  # cleanup
        import torch.distributed as dist

        if run is not None:
            run.engine.destroy()  # releases ZeRO-3's hooks and threads before the process group goes
            run.folder.release()  # the output_dir lock (the process's end would release it too)
        if dist.is_available() and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def _end_now(code: int) -> None:
    """End a finished run's process at once. By now every checkpoint, metrics line and event file is
    written and closed, and the process group is gone; what Python's own teardown still does (freeing
    torch's, DeepSpeed's and transformers' modules one by one) took 1.8 s per process on 2 cores, on
    every job, for nothing a run keeps. The exit handlers still run (temporary folders, loggers)."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    status = main()
    if status == 0:  # a failed run takes the ordinary way out: nothing of its output may be cut
        _end_now(status)
    sys.exit(status)

"""The training loop by hand, in a notebook's own kernel: what ``glmlab.train`` does, in pieces you can read.

Notebook 02 writes the loop in a cell::

    args = by_hand.train_args(setup, {"train_type": "freeze", "freeze_module_name": "layers.3."})
    model, strategy = by_hand.build_model(args)        # glmlab.load_model + the method's strategy
    engine, loader = by_hand.build_engine(model, args)  # one DeepSpeed process, the run's own config
    for batch in by_hand.batches(engine, loader, 5):
        loss = engine(**batch, use_cache=False).loss
        engine.backward(loss)
        engine.step()

Each piece is the one :func:`glmlab.train.setup` uses (the seed, then the model and its strategy; the data, through
the same loader and sampler; ``build_ds_config`` from the same ``--ds_file``, ``param_groups``, ZeRO-3 partitioning,
``deepspeed.initialize``). ``setup`` encodes the data before loading the model, here it comes after: encoding never
draws from the global random state, so the order is free. With one process and fp32 the losses are those of
``python -m glmlab.train`` on the same flags
(``tests/test_by_hand.py`` runs 02's cells and checks it). 03-05 call :func:`run_steps`, the same loop.

It also opens the box: :func:`trainable_rows` lists what trains by name pattern, shape and count.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from glmlab.args import TrainArgs
from glmlab.notebooks.experiment import Setup, default_learning_rate


def train_args(setup: Setup, method_flags: dict[str, Any], **overrides: Any) -> TrainArgs:
    """The :class:`~glmlab.args.TrainArgs` of ``run_method(label, method_flags, setup)``'s run, checked, with
    ``overrides`` (e.g. ``output_dir``); the in-kernel run writes nothing, the folder is only named."""
    flags = {**setup.flags(), "output_dir": os.path.join(setup.output_dir, "by_hand"), **method_flags, **overrides}
    flags.setdefault("learning_rate", default_learning_rate(flags))
    args = TrainArgs(**flags)
    args.precision = args.precision or _precision()
    return args


def _precision() -> str:
    from glmlab.args import default_precision

    _use_cpu_accelerator()
    return default_precision()


def _use_cpu_accelerator() -> None:
    """Without a GPU, DeepSpeed's CPU accelerator (as ``glmlab launch --cpu`` sets it)."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def load_base(args: TrainArgs):
    """``(model, strategy)``: the base loaded as ``glmlab.train.setup`` loads it (on the CPU, in
    ``args.precision``, with the method's config fields such as ``pre_seq_len``), after the same seed;
    not prepared yet (nothing frozen, no adapter)."""
    from glmlab import load_model
    from glmlab.methods import get_strategy
    from glmlab.train import seed_everything

    seed_everything(args.seed)
    strategy = get_strategy(args.train_type)
    model = load_model(args.model_name_or_path, args.mode, dtype=args.precision, **strategy.config_overrides(args))
    return model, strategy


def build_model(args: TrainArgs):
    """``(model, strategy)``: :func:`load_base`, then prepared by the method's strategy (``requires_grad``
    set, adapters added), with ``glmlab.train.setup``'s cache and checkpointing settings."""
    model, strategy = load_base(args)
    model = strategy.prepare(model, args)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model, strategy


def build_engine(model, args: TrainArgs):
    """``(engine, loader)``: a one-process DeepSpeed engine in this kernel, built as ``glmlab.train.setup``
    builds it (``build_ds_config`` from ``args.ds_file``, ``param_groups``, ZeRO-3 partitioning), and the
    training data in the sampler's order of epoch 1, through the same collator."""
    import torch.distributed as dist

    from glmlab.train import _init_processes

    _use_cpu_accelerator()
    before = {name: os.environ.get(name) for name in _GROUP_ENV}
    if not dist.is_initialized():
        _init_processes()  # a world of one: RANK 0, a free MASTER_PORT, gloo on the CPU, shm all-reduce off
    else:  # a kernel's second engine: DeepSpeed reads the group's place from the environment again
        rank, world = str(dist.get_rank()), str(dist.get_world_size())
        os.environ.update(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world, LOCAL_SIZE=world)
    try:
        engine, loader = _engine(model, args, dist.get_rank(), dist.get_world_size())
    except BaseException:
        _restore_env(before)
        raise
    engine.glmlab_env_before = before  # close() gives it back
    engine.train()
    return engine, loader


# What joining a process group writes into os.environ (glmlab.train._init_processes). DeepSpeed reads LOCAL_RANK
# while the engine runs (ZeRO-3's gathers), so it stays until close(); left behind, a WORLD_SIZE=1 would be read by
# every later ``glmlab launch`` check of the notebook (05's ``--pipeline_stages 2`` "does not divide 1").
_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _restore_env(before: dict[str, str | None]) -> None:
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _engine(model, args: TrainArgs, rank: int, world: int):
    """The data and the engine, as `glmlab.train.setup` builds them, for this process of `world`."""
    import deepspeed

    from glmlab import load_tokenizer
    from glmlab.ds_config import Plan, build_ds_config, param_groups
    from glmlab.mixture import Mixture
    from glmlab.train import _loader, partition_for_zero3

    tokenizer = load_tokenizer(args.model_name_or_path, args.mode)
    data = Mixture.encode(args.train_path, tokenizer, args.mode, args.max_len, args.max_src_len, args.is_skip,
                          seed=args.seed, verbose=False)
    loader, sampler = _loader(data, args, tokenizer.pad_token_id, rank, world, shuffle=True)
    sampler.set_epoch(0)
    plan = Plan.build(len(loader), args)
    ds_config = build_ds_config(args, world, plan, args.precision)
    ds_config.pop("_glmlab_overridden")
    groups = param_groups(model, args.weight_decay)
    device = next(model.parameters()).device
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        partition_for_zero3(model, ds_config, device)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config)
    return engine, loader


def first_batch(args: TrainArgs) -> dict:
    """The first micro-batch training would see (same data, sampler order and collator), without a process group."""
    from glmlab import load_tokenizer
    from glmlab.mixture import Mixture
    from glmlab.train import _loader

    tokenizer = load_tokenizer(args.model_name_or_path, args.mode)
    data = Mixture.encode(args.train_path, tokenizer, args.mode, args.max_len, args.max_src_len, args.is_skip,
                          seed=args.seed, verbose=False)
    loader, sampler = _loader(data, args, tokenizer.pad_token_id, 0, 1, shuffle=True)
    sampler.set_epoch(0)
    return next(iter(loader))


def batches(engine, loader, n: int) -> Iterator[dict]:
    """The first ``n`` micro-batches of ``loader``, on the engine's device."""
    for i, batch in enumerate(loader):
        if i >= n:
            return
        yield {k: v.to(engine.device) for k, v in batch.items()}


def run_steps(engine, loader, n: int, show: bool = True) -> list[dict[str, float]]:
    """The loop of notebook 02 for ``n`` micro-batches: forward, backward, step; ``{"loss", "lr"}`` per step.

    With ``gradient_accumulation_steps`` 1 (the notebooks' setting) each micro-batch is an optimizer step,
    so the losses are the first records of ``glmlab.train``'s ``metrics.jsonl`` at ``--show_loss_step 1``.
    """
    out = []
    for i, batch in enumerate(batches(engine, loader, n)):
        lr = engine.get_lr()[0]  # the rate this step uses
        loss = engine(**batch, use_cache=False).loss  # mean over this micro-batch's supervised tokens
        engine.backward(loss)
        engine.step()  # at the accumulation boundary: clip, optimizer step, schedule step, zero the gradients
        out.append({"loss": loss.item(), "lr": lr})
        if show:
            print(f"step {i + 1}: loss {loss.item():.4f}, lr {lr:.2e}")
    return out


def close(engine) -> None:
    """Release the engine (ZeRO-3's hooks) and give the kernel its environment back (the process group stays, for
    the next engine), so that the notebook's launched jobs and checks see the environment they would have seen."""
    engine.destroy()
    _restore_env(getattr(engine, "glmlab_env_before", {}))


# --------------------------------------------------------------------------- what trains, by name
_LAYER = re.compile(r"\.(\d+)\.")


def trainable_rows(model) -> list[dict[str, Any]]:
    """The model's parameters grouped by name pattern (the layer index folded into a range), one row per group
    and trainability: ``{"parameters", "layers", "shape", "tensors", "count", "trains"}``, trained groups first.

    This is what a strategy's ``prepare`` did, read off the model itself (``requires_grad``), not computed from
    the flags."""
    groups: dict[tuple[str, bool, tuple], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        pattern = _LAYER.sub(".N.", name, count=1) if match else name
        shape = tuple(getattr(param, "ds_shape", param.shape))  # a ZeRO-3 parameter's full shape
        key = (pattern, param.requires_grad, shape)
        row = groups.setdefault(key, {"parameters": pattern, "layers": [], "shape": str(tuple(shape)), "tensors": 0,
                                      "count": 0, "trains": param.requires_grad})
        if match:
            row["layers"].append(int(match.group(1)))
        row["tensors"] += 1
        row["count"] += int(getattr(param, "ds_numel", param.numel()))
    rows = sorted(groups.values(), key=lambda r: not r["trains"])
    for row in rows:
        row["layers"] = _span(row["layers"])
    return rows


def _span(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``; ``""`` for none."""
    indices, parts = sorted(set(indices)), []
    for i in indices:
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


def trainable_summary(model) -> str:
    """One line: how many parameters train, of how many, and in how many tensors."""
    rows = trainable_rows(model)
    trained = sum(r["count"] for r in rows if r["trains"])
    total = sum(r["count"] for r in rows)
    tensors = sum(r["tensors"] for r in rows if r["trains"])
    return f"{trained:,} of {total:,} parameters train ({100 * trained / total:.2f}%), in {tensors} tensors"

"""What DeepSpeed is told: the schedule's step counts, the config built from the arguments, the optimizer groups.

:mod:`glmlab.train` (and its pipeline path, :mod:`glmlab.pipeline`) build every engine from these, so the
arguments are the one source of truth: ``--ds_file`` contributes only the ZeRO stage and offload settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from glmlab.args import ArgsError, TrainArgs

ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8
# Keys of the DeepSpeed config that the arguments decide; a --ds_file that sets them is overridden.
_OWNED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
               "gradient_clipping", "optimizer", "scheduler", "bf16", "fp16")


@dataclass
class Plan:
    """How many steps training takes: the one source of the schedule."""

    micro_batches_per_epoch: int  # per process, all of them run
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    warmup_steps: int

    @classmethod
    def build(cls, micro_batches: int, args: TrainArgs) -> Plan:
        steps_per_epoch = micro_batches // args.gradient_accumulation_steps
        if steps_per_epoch == 0:
            raise ArgsError(f"{args.train_path}: {micro_batches} micro-batch(es) per process, fewer than "
                            f"--gradient_accumulation_steps {args.gradient_accumulation_steps}: not one optimizer step")
        total = steps_per_epoch * args.num_train_epochs
        return cls(steps_per_epoch * args.gradient_accumulation_steps, steps_per_epoch, total,
                   max(1, math.ceil(args.warmup_ratio * total)))


def build_ds_config(args: TrainArgs, world_size: int, plan: Plan, precision: str) -> dict[str, Any]:
    """The DeepSpeed config: ZeRO/offload from ``--ds_file``, everything else from the arguments."""
    config = json.loads(args.ds_path.read_text(encoding="utf-8"))
    overridden = [key for key in _OWNED_KEYS if key in config]
    zero = config.get("zero_optimization", {})
    offload = any(str(zero.get(key, {}).get("device", "none")).lower() not in ("none", "")
                  for key in ("offload_optimizer", "offload_param"))
    optimizer_params: dict[str, Any] = {"lr": args.learning_rate, "betas": list(ADAM_BETAS), "eps": ADAM_EPS,
                                        "weight_decay": args.weight_decay}
    if not offload:
        optimizer_params["torch_adam"] = True  # torch.optim.AdamW: nothing to compile, on the CPU or a GPU
    config.update({
        "train_micro_batch_size_per_gpu": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "train_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size,
        "gradient_clipping": args.max_grad_norm,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "total_num_steps": plan.total_steps, "warmup_num_steps": plan.warmup_steps,
            "warmup_min_lr": 0.0, "warmup_max_lr": args.learning_rate, "warmup_type": "linear"}},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "loss_scale_window": 100},
    })
    config.setdefault("steps_per_print", 10**9)  # glmlab logs; keep DeepSpeed's own step log quiet
    config.setdefault("wall_clock_breakdown", False)
    config["_glmlab_overridden"] = overridden
    return config


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: matrices decay, 1-D tensors (biases, norms) do not."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def print_plan(args: TrainArgs, plan: Plan, ds_config: dict[str, Any], overridden: list[str], samples: int,
               processes: int, per: str) -> None:
    """Rank 0's account of what will run: samples, processes, the schedule, precision, ZeRO stage, and the
    ``--ds_file`` keys the arguments overrode. ``per``: what a micro-batch count is per (``process``, or
    ``replica`` on a pipeline)."""
    print(f"{samples} samples, {processes} process(es), {plan.micro_batches_per_epoch} micro-batches of "
          f"{args.per_device_train_batch_size} per {per} and epoch, {plan.total_steps} optimizer steps "
          f"({plan.warmup_steps} warmup), precision {args.precision}, ZeRO stage "
          f"{ds_config.get('zero_optimization', {}).get('stage', 0)}", flush=True)
    if overridden:
        print(f"warning: {args.ds_path}: {', '.join(overridden)} set from the arguments instead", flush=True)

"""How much memory fine-tuning needs, per method, before you rent the GPUs.

The command line of :mod:`glmlab.memory` (``python -m glmlab.memory`` or ``glmlab memory``): one
estimate's breakdown, or ``--grid``, every method and ZeRO setting; the tables are also what the
notebooks print.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from glmlab.constants import MODES, PRECISION_ALIASES, PRECISIONS, TRAIN_TYPES
from glmlab.memory.estimate import (
    PARTS,
    MemoryEstimate,
    _check_quantization,
    estimate_memory,
)
from glmlab.memory.shapes import GIB, QUANTIZATION_BITS, parameter_shapes, preset_config
from glmlab.memory.zero import SHIPPED_CONFIGS
from glmlab.methods import get_strategy
from glmlab.models.configuration import ChatGLMConfig
from glmlab.parsers import OneLineParser

# --------------------------------------------------------------------------- command line
# The training flags the estimate depends on, under their names in glmlab.args.TrainArgs.
CLI_FLAGS = ("model_name_or_path", "mode", "train_type", "freeze_module_name", "pre_seq_len", "prefix_projection",
             "lora_dim", "lora_module_name", "per_device_train_batch_size", "max_len", "gradient_checkpointing",
             "ds_file", "precision", "quantization_bit")
GRID_COLUMNS = ("method", "zero", "offload", "ckpt", "qbit", "trainable", "weights", "grads", "optim", "buckets",
                "zero3", "acts", "logits", "step", "gpu_gib", "cpu_gib")


def _parser(prog: str = "python -m glmlab.memory") -> argparse.ArgumentParser:
    from glmlab.args import TrainArgs, str2bool

    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train_fields = {f.name: f for f in fields(TrainArgs)}
    local = {
        "model_name_or_path": (("A model folder whose config.json gives the shapes (default: the official 6B checkpoint "
                               "of --mode)."), None, str),
        "precision": ("Training precision (the 6B runs use bf16 on a GPU).", "bf16", str),
        "quantization_bit": ("Quantize the frozen base's linear weights to 4 or 8 bits (lora and ptuning); 0: none.",
                             0, int),
    }
    for name in CLI_FLAGS:
        if name in local:
            text, default, kind = local[name]
        else:
            f = train_fields[name]
            text, default = f.metadata["help"], f.default
            kind = str2bool if isinstance(default, bool) else type(default)
        kwargs: dict[str, Any] = {"help": text, "default": default, "dest": name}
        if kind is str2bool:
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["type"] = kind
        choices = {"mode": MODES, "train_type": TRAIN_TYPES, "precision": PRECISIONS + tuple(PRECISION_ALIASES),
                   "quantization_bit": QUANTIZATION_BITS}.get(name)
        if choices:
            kwargs["choices"] = choices
        parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument("--num_gpus", type=int, default=1, help="GPUs the run is spread over (ZeRO shards by it).")
    parser.add_argument("--grid", action="store_true",
                        help="Every method x shipped ZeRO config (stage 2/3, offload or not) x gradient "
                             "checkpointing x quantization for one model, card count and length.")
    parser.add_argument("--gpu_gib", type=float, default=None, help="Mark which estimates fit on a card of this many GiB.")
    # --- pipeline parallelism (glmlab.memory.pipeline) ---
    parser.add_argument("--pipeline_stages", type=int, default=None,
                        help="--train_type all on N pipeline stages (--num_gpus = N x replicas): one row per stage.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1,
                        help="With --pipeline_stages: micro-batches per optimizer step (1F1B's in-flight count and bubble).")
    return parser


def _method_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"freeze_module_name": args.freeze_module_name, "pre_seq_len": args.pre_seq_len,
            "prefix_projection": args.prefix_projection, "lora_dim": args.lora_dim,
            "lora_module_name": args.lora_module_name}


def _check_args(args: argparse.Namespace, config: ChatGLMConfig) -> None:
    """Ranges and the method's targets, as ``glmlab.args`` checks them; raises ``ValueError`` with one line."""
    from types import SimpleNamespace

    for name in ("pre_seq_len", "lora_dim", "per_device_train_batch_size", "max_len", "num_gpus"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if args.gpu_gib is not None and not args.gpu_gib > 0:
        raise ValueError(f"--gpu_gib must be > 0 (got {args.gpu_gib})")
    if not args.grid:
        _check_quantization(args.train_type, args.quantization_bit)
    names = list(parameter_shapes(config))
    for method in TRAIN_TYPES if args.grid else (args.train_type,):
        get_strategy(method).check(SimpleNamespace(**_method_args(args)), names)


def grid(config: ChatGLMConfig, *, num_gpus: int = 1, batch_size: int = 1, seq_len: int = 768,
         precision: str = "bf16", methods: Sequence[str] = TRAIN_TYPES, **method_args: Any) -> list[MemoryEstimate]:
    """Every method x shipped ZeRO config x gradient checkpointing x quantization (lora, ptuning) for one setting."""
    rows = []
    for method in methods:
        for (stage, offload) in SHIPPED_CONFIGS:
            for checkpointing in (False, True):
                for bits in QUANTIZATION_BITS if get_strategy(method).quantizable else (0,):
                    rows.append(estimate_memory(config, method, precision=precision, zero_stage=stage, offload=offload,
                                                num_gpus=num_gpus, batch_size=batch_size, seq_len=seq_len,
                                                gradient_checkpointing=checkpointing, quantization_bit=bits,
                                                **method_args))
    return rows


def grid_rows(estimates: Sequence[MemoryEstimate], gpu_gib: float | None = None) -> list[dict[str, Any]]:
    """Table rows (GiB, 2 decimals) of ``estimates``; with ``gpu_gib`` a ``fits`` column."""
    rows = []
    for e in estimates:
        row = {"method": e.method, "zero": e.zero_stage, "offload": "yes" if e.offload else "no",
               "ckpt": "yes" if e.gradient_checkpointing else "no", "qbit": e.quantization_bit or "-",
               "trainable": f"{e.trainable_params:,}"}
        for column, part in (("weights", "weights"), ("grads", "gradients"), ("optim", "optimizer"),
                             ("buckets", "buckets"), ("zero3", "zero3_working"), ("acts", "activations"),
                             ("logits", "logits"), ("step", "step"), ("gpu_gib", "total"), ("cpu_gib", "cpu")):
            row[column] = f"{getattr(e, part) / GIB:.2f}"
        if gpu_gib is not None:
            row["fits"] = "yes" if e.total / GIB <= gpu_gib else "no"
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain text table, columns aligned (numbers to the right)."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(wd) if v[:1].isdigit() or v[:1] == "-" else v.ljust(wd)
                         for v, wd in zip(values, widths)).rstrip()

    return "\n".join([line(columns), line(["-" * wd for wd in widths]), *(line(row) for row in cells)])


def format_breakdown(e: MemoryEstimate, gpu_gib: float | None = None) -> str:
    """One estimate, part by part, in GiB."""
    notes = {"weights": "parameters (quantized where asked; ZeRO-3: partition + persistent)",
             "gradients": "16-bit gradients kept until the step",
             "optimizer": "fp32 master + AdamW moments",
             "buckets": "reduce bucket (ZeRO-2: + largest whole gradient)",
             "zero3_working": "ZeRO-3: parameters gathered at once + largest module gradient",
             "activations": "kept for backward",
             "logits": "fp32 loss tensors at its backward",
             "step": "optimizer step: fp32 gradients + AdamW temporary"}
    lines = [(f"{e.method}, {e.precision}, ZeRO-{e.zero_stage}{' + offload' if e.offload else ''}, "
              f"{e.num_gpus} GPU(s), checkpointing {'on' if e.gradient_checkpointing else 'off'}, quantization "
              f"{e.quantization_bit or 'none'}: {e.trainable_params:,} of {e.total_params:,} parameters train")]
    lines += [f"  {part:<14}{getattr(e, part) / GIB:8.2f} GiB   {notes[part]}" for part in PARTS]
    lines.append(f"  {'total':<14}{e.total / GIB:8.2f} GiB   per GPU, peak at the {e.peak_phase}")
    lines.append(f"  {'cpu':<14}{e.cpu / GIB:8.2f} GiB   per process, on the host (offload)")
    if gpu_gib is not None:
        lines.append(f"  fits on a {gpu_gib:g} GiB card: {'yes' if e.total / GIB <= gpu_gib else 'no'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "python -m glmlab.memory") -> int:
    """Print the estimate (or ``--grid``) the flags ask for; a bad flag or folder is one line, exit status 2."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    args.precision = PRECISION_ALIASES.get(args.precision, args.precision)  # bfloat16 -> bf16
    try:
        if args.model_name_or_path:
            from glmlab.loading import build_config

            if not Path(args.model_name_or_path, "config.json").is_file():
                raise ValueError(f"--model_name_or_path {args.model_name_or_path}: no config.json (not a model folder)")
            config, _ = build_config(args.model_name_or_path, args.mode)
        else:
            config = preset_config(args.mode)
        _check_args(args, config)
        common = dict(precision=args.precision, num_gpus=args.num_gpus, batch_size=args.per_device_train_batch_size,
                      seq_len=args.max_len, **_method_args(args))
        if args.pipeline_stages is not None:  # per-stage rows (glmlab.memory.pipeline)
            from glmlab.memory.pipeline import pipeline_main

            return pipeline_main(args, config)
        if args.grid:
            print(f"{args.model_name_or_path or args.mode + ' 6B'}: {args.num_gpus} GPU(s), batch "
                  f"{args.per_device_train_batch_size}, length {args.max_len}, {args.precision}; GiB per GPU")
            print(format_table(grid_rows(grid(config, **common), args.gpu_gib)))
        else:
            estimate = estimate_memory(config, args.train_type, ds_config=args.ds_file,
                                       gradient_checkpointing=args.gradient_checkpointing,
                                       quantization_bit=args.quantization_bit, **common)
            print(format_breakdown(estimate, args.gpu_gib))
    except ValueError as err:  # ArgsError and CheckpointError included
        parser.error(str(err).splitlines()[0])
    return 0

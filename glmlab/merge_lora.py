"""Fold a LoRA adapter into its base model and save a plain model folder.

::

    python -m glmlab.merge_lora --base chatglm2-6b --adapter out/epoch-2-step-3900 --output_dir merged

The result is an ordinary HF-format folder (``config.json``, safetensors weights,
tokenizer files) that ``glmlab.load_model`` loads with no peft involved, so it can
be served or fine-tuned again. ``W' = W + (alpha / r) * B @ A`` per adapted layer
(peft's ``merge_and_unload``).

A quantized base (the adapter was trained with ``--quantization_bit 4|8``, or on a THUDM
int4/int8 folder) cannot take ``W + BA`` in its int weights, so the merge goes into a
**dequantized copy**: every quantized layer becomes ``q * scale`` in ``--dtype`` and the update is
added there. The merged folder is then an ordinary 16/32-bit model that computes what the quantized
base plus the adapter computed (re-quantizing it would round most of the update away, which is
why glmlab does not). The command says so, and ``glmlab_merge.json`` records the base's bits.

Unlike the original script, this one never writes into the adapter folder: it
refuses an ``--output_dir`` that is the adapter or base folder, lies inside
either, or contains either; an existing non-empty ``--output_dir`` is replaced
only with ``--overwrite``. The folder is written next to its final place under a
temporary name and renamed when complete, so a crash leaves no half-written model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from glmlab.constants import PRECISION_ALIASES, PRECISIONS
from glmlab.checkpoint import checkpoint_mode, describe_checkpoint
from glmlab.loading import CheckpointError, parse_dtype
from glmlab.parsers import OneLineParser

PROG = "glmlab.merge_lora"
PROVENANCE_FILE = "glmlab_merge.json"


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies somewhere under it (both resolved)."""
    return path == folder or folder in path.parents


def check_output_dir(output_dir: str | Path, adapter: str | Path, base: str | Path, overwrite: bool = False) -> Path:
    """Refuse output folders that would clobber the adapter or the base model; return the resolved path.

    Raises ``ValueError`` (one line) when ``output_dir`` is, is inside, or contains the
    adapter or base folder; when it is a file; or when it is a non-empty folder and
    ``overwrite`` is false.
    """
    out = Path(output_dir).resolve()
    for name, folder in (("adapter", Path(adapter).resolve()), ("base model", Path(base).resolve())):
        if _inside(out, folder):
            raise ValueError(f"--output_dir {output_dir} is inside the {name} folder {folder}; choose another folder")
        if _inside(folder, out):
            raise ValueError(f"--output_dir {output_dir} contains the {name} folder {folder}; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--output_dir {output_dir} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(f"--output_dir {output_dir} exists and is not empty; pass --overwrite to replace it")
    return out


def base_quantization_bit(info) -> int:
    """The bits the adapter's base was quantized to in training (its recorded flag, or a quantized base folder), else 0."""
    trained = (info.meta.get("args") or {}).get("quantization_bit") or 0
    if trained:
        return int(trained)
    config = json.loads((Path(info.base) / "config.json").read_text(encoding="utf-8"))
    return int(config.get("quantization_bit") or 0)



@contextlib.contextmanager
def _progress_bars(on: bool):
    """transformers' progress bars on or off for a block (on at a terminal, off where output is kept: a
    notebook's saved cell, a log), as they were afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if on else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()

def merge_lora(
    adapter: str | Path,
    output_dir: str | Path,
    base: str | Path | None = None,
    dtype: torch.dtype | str = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Merge the LoRA adapter in ``adapter`` into ``base`` and write the full model to ``output_dir``.

    ``base`` defaults to the ``base_model`` recorded in the adapter's
    ``glmlab_checkpoint.json``. The tokenizer is taken from the adapter folder when it
    holds one (every glmlab checkpoint does), else from the base. A small
    ``glmlab_merge.json`` records where the weights came from. Returns the output folder.
    A quantized base is merged into its dequantized copy (see the module docstring).
    """
    from glmlab.loading import load_model, load_tokenizer
    from glmlab.quantization import dequantize
    from glmlab.quantized_lora import load_lora_adapter

    dtype = parse_dtype(dtype)
    info = describe_checkpoint(adapter, base)
    if not info.strategy.mergeable:
        raise CheckpointError(f"{adapter}: not a LoRA adapter folder (it holds a {info.kind} checkpoint)")
    out = check_output_dir(output_dir, info.path, info.base, overwrite)
    mode = checkpoint_mode(info)

    bits = base_quantization_bit(info)
    model = load_model(str(info.base), mode=mode, dtype=dtype, device="cpu", quantization_bit=bits or None)
    model = dequantize(model)  # a quantized base: W = q * scale, which the adapter was trained against
    model = load_lora_adapter(model, info.path).to(dtype=dtype)
    merged = model.merge_and_unload()
    has_vocab = any((info.path / n).is_file() for n in ("ice_text.model", "tokenizer.model"))
    tokenizer = load_tokenizer(str(info.path if has_vocab else info.base), mode=mode)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        with _progress_bars(sys.stderr.isatty()):  # a bar left in a notebook's saved output reads "0%", as if stuck
            merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        provenance = {"base_model": str(info.base), "adapter": str(info.path), "mode": mode, "dtype": str(dtype),
                      "base_quantization_bit": bits}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():  # empty, or --overwrite: swap it out, then delete the old one
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            out.rename(old / "old")
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = OneLineParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="base model folder (default: the base_model in the adapter's glmlab_checkpoint.json)")
    p.add_argument("--adapter", required=True, help="LoRA checkpoint folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--output_dir", required=True, help="new folder for the merged model")
    p.add_argument("--dtype", default="fp32", type=str.lower, choices=PRECISIONS + tuple(PRECISION_ALIASES),
                   help="dtype of the merge and of the saved weights: fp32, bf16 or fp16 (or float32, bfloat16, float16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output_dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m glmlab.merge_lora``; problems are one line on stderr, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.base is not None and not Path(args.base).is_dir():
            raise ValueError(f"--base {args.base}: folder not found")
        info = describe_checkpoint(args.adapter, args.base)  # checks files before any loading
        if not info.strategy.mergeable:
            raise ValueError(f"--adapter {args.adapter}: not a LoRA adapter folder (it holds a {info.kind} checkpoint)")
        check_output_dir(args.output_dir, info.path, info.base, args.overwrite)
    except ValueError as err:  # CheckpointError is a ValueError
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    bits = base_quantization_bit(info)
    if bits:
        print(f"{PROG}: the base is {bits}-bit quantized: merging into its dequantized weights "
              f"({args.dtype}); the merged model is not quantized")
    out = merge_lora(args.adapter, args.output_dir, args.base, args.dtype, args.overwrite)
    print(f"{PROG}: wrote the merged model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

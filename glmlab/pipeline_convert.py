"""Turn a bare DeepSpeed pipeline checkpoint into a model folder in the official layout.

    python -m glmlab.pipeline_convert --checkpoint OUT/epoch-1-step-9/deepspeed \\
        --model_name_or_path BASE --output_dir MERGED

``--checkpoint`` is the folder of DeepSpeed's per-layer files (``layer_00-model_states.pt`` ...,
written by ``engine.save_checkpoint`` of a :mod:`glmlab.pipeline` run), a glmlab checkpoint
folder holding it as ``deepspeed/``, or a DeepSpeed save folder with a ``latest`` tag file.
glmlab's pipeline layers keep the official tensor names, so the layer files already hold
official keys: the converter checks that every tensor of the model is there exactly once
(no stray, missing or duplicated key) and writes ``model.safetensors``, ``config.json``,
``generation_config.json`` and the tokenizer of ``--model_name_or_path`` (the base the run
started from), a folder ``glmlab.load_model``, ``predict`` and ``chat`` load as they are.
Errors are one line; nothing is written unless the check passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from glmlab.parsers import OneLineParser
from glmlab.loading import CheckpointError

LAYER_GLOB = "layer_*-model_states.pt"


def layer_folder(path: str | Path) -> Path:
    """The folder holding the ``layer_XX-model_states.pt`` files of ``path`` (see the module docstring)."""
    path = Path(path)
    candidates = [path, path / "deepspeed"]
    if (path / "latest").is_file():
        candidates.append(path / (path / "latest").read_text().strip())
    for folder in candidates:
        if any(folder.glob(LAYER_GLOB)):
            return folder
    raise CheckpointError(f"{path}: no DeepSpeed pipeline layer files ({LAYER_GLOB}) there or in deepspeed/ or its latest tag")


def pipeline_state_dict(path: str | Path, expected: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the pipeline checkpoint at ``path`` under its official name, each key exactly once.

    With ``expected`` (the model's keys), a missing or unknown key is a :class:`CheckpointError`.
    """
    folder = layer_folder(path)
    state: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    for file in sorted(folder.glob(LAYER_GLOB)):
        for name, tensor in torch.load(file, map_location="cpu", weights_only=True).items():
            if name in state:
                raise CheckpointError(f"{folder}: {name} is in both {owner[name]} and {file.name}")
            state[name], owner[name] = tensor, file.name
    if expected is not None:
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unknown:
            raise CheckpointError(f"{folder}: missing tensor(s) {', '.join(missing[:8]) or '-'}; "
                                  f"unknown tensor(s) {', '.join(unknown[:8]) or '-'}")
    return state


def convert(checkpoint: str | Path, base: str | Path, output_dir: str | Path, mode: str | None = None) -> Path:
    """Write the official folder of a pipeline checkpoint (config and tokenizer from ``base``); returns it."""
    from glmlab.loading import _model_class, build_config, load_tokenizer, write_weights
    from glmlab.pipeline import saved_config

    config, mode = build_config(base, mode)
    with torch.device("meta"):
        expected = set(_model_class(config.architecture)(config).state_dict())
    state = pipeline_state_dict(checkpoint, expected)
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    config, generation = saved_config(str(base), mode, max(set(floating), key=floating.count))
    output_dir = Path(output_dir)
    write_weights(state, output_dir, "safetensors")
    config.save_pretrained(str(output_dir))
    generation.save_pretrained(str(output_dir))
    load_tokenizer(base, mode).save_pretrained(str(output_dir))
    return output_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m glmlab.pipeline_convert``; returns the exit status."""
    parser = OneLineParser(prog="python -m glmlab.pipeline_convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="DeepSpeed pipeline checkpoint (see above)")
    parser.add_argument("--model_name_or_path", required=True, help="the base model folder the run started from")
    parser.add_argument("--output_dir", required=True, help="where the official folder goes (must not exist)")
    parser.add_argument("--mode", choices=("glm", "glm2", "glm3"), help="generation (default: the base's)")
    args = parser.parse_args(argv)
    if Path(args.output_dir).exists():
        print(f"{parser.prog}: error: --output_dir {args.output_dir} exists", file=sys.stderr)
        return 2
    try:
        out = convert(args.checkpoint, args.model_name_or_path, args.output_dir, args.mode)
    except (CheckpointError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load what training wrote.

A training checkpoint folder (see ``docs/CONTRACTS.md``) holds ``glmlab_checkpoint.json``
(``train_type``, ``mode``, ``base_model``), the tokenizer files, and, per method:

* ``all`` / ``freeze``: the whole model in HF format; it loads on its own.
* ``lora``: a peft adapter; it needs the base model it was trained on.
* ``ptuning``: ``prefix_encoder.safetensors`` plus ``config.json`` with
  ``pre_seq_len`` / ``prefix_projection``; it needs the base model too: the base
  is loaded with a prefix encoder of that shape and the trained encoder is put in.

:func:`load_for_inference` turns any of these (or a plain model folder, such as an
official ChatGLM download or the output of ``glmlab.merge_lora``) into
``(model, tokenizer, mode)``; :func:`describe_checkpoint` does the cheap part (what
is this folder, is everything there, which base does it need) so command-line
tools can fail before loading anything.

What a folder holds is read by :func:`glmlab.checkpoint.describe_checkpoint` (beside the code that
writes ``glmlab_checkpoint.json``). Generating from the loaded model is :mod:`glmlab.generation`'s
(batches) and :mod:`glmlab.chat`'s (conversations).
"""

from __future__ import annotations

from pathlib import Path

import torch

from glmlab.checkpoint import checkpoint_mode, describe_checkpoint, read_json_object
from glmlab.constants import PREFIX_ENCODER, PREFIX_FILE
from glmlab.loading import CheckpointError, parse_dtype

# Files that carry a vocabulary: ChatGLM-6B, ChatGLM2/3.
_VOCAB_FILES = ("ice_text.model", "tokenizer.model")


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in _VOCAB_FILES)


def _load_prefix_encoder(model: torch.nn.Module, path: Path) -> None:
    """Put the trained ``transformer.prefix_encoder.*`` tensors of ``path`` into ``model``, checking keys and shapes."""
    from safetensors.torch import load_file

    state = load_file(str(path / PREFIX_FILE))
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(PREFIX_ENCODER)}
    if set(state) != set(expected):
        raise CheckpointError(
            f"{path / PREFIX_FILE}: keys {sorted(state)} do not match the model's prefix encoder {sorted(expected)}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{path / PREFIX_FILE}: {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
        expected[key].copy_(value)  # state_dict tensors share storage with the parameters


def load_for_inference(
    checkpoint_dir: str | Path,
    base: str | Path | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    mode: str | None = None,
    merge_lora: bool = False,
    quantization_bit: int | None = None,
):
    """Load any training output (``all``, ``freeze``, ``lora``, ``ptuning``) or a plain model folder.

    Args:
        checkpoint_dir: the checkpoint (or model) folder.
        base: base model folder for ``lora`` / ``ptuning``; defaults to the
            ``base_model`` recorded in ``glmlab_checkpoint.json``. Ignored for full models.
        dtype: weights dtype (``torch.float32`` or a name such as ``"float16"``).
        device: where to put the model.
        mode: ``glm`` / ``glm2`` / ``glm3``; defaults to the recorded (or inferred) one.
        merge_lora: fold a LoRA adapter into the weights (faster generation; the
            result is a plain model) instead of returning the peft wrapper. On a quantized
            base the adapter is merged into a dequantized copy (see :mod:`glmlab.quantized_lora`).
        quantization_bit: 4 or 8 quantizes the (base) model as it loads, 0 does not; default:
            what the checkpoint was trained with (``--quantization_bit`` in its
            ``glmlab_checkpoint.json``), and a THUDM int4/int8 folder always loads as it is.

    Returns:
        ``(model, tokenizer, mode)`` with the model in eval mode. The tokenizer comes
        from the checkpoint folder (every checkpoint saves it), else from the base.
    """
    from glmlab.loading import load_model, load_tokenizer

    dtype = parse_dtype(dtype)
    info = describe_checkpoint(checkpoint_dir, base)
    mode = checkpoint_mode(info, mode)
    if quantization_bit is None and info.needs_base:  # the base as the adapter was trained on it
        quantization_bit = (info.meta.get("args") or {}).get("quantization_bit") or None

    if info.kind == "ptuning":
        config = read_json_object(info.path / "config.json")
        model = load_model(
            str(info.base),
            mode=mode,
            dtype=dtype,
            device=device,
            quantization_bit=quantization_bit,
            pre_seq_len=int(config["pre_seq_len"]),
            prefix_projection=bool(config.get("prefix_projection", False)),
        )
        with torch.no_grad():
            _load_prefix_encoder(model, info.path)
    elif info.kind == "lora":
        from glmlab.quantization import dequantize
        from glmlab.quantized_lora import load_lora_adapter

        model = load_model(str(info.base), mode=mode, dtype=dtype, device=device, quantization_bit=quantization_bit)
        if merge_lora:  # an int weight cannot hold W + BA: merge into the dequantized weights (no-op unquantized)
            model = dequantize(model)
        model = load_lora_adapter(model, info.path)  # peft, with glmlab's LoRA layer for quantized layers
        model = model.to(device=device, dtype=dtype)  # adapters are stored in fp32
        if merge_lora:
            model = model.merge_and_unload()
    else:
        model = load_model(str(info.path), mode=mode, dtype=dtype, device=device, quantization_bit=quantization_bit)
    model.eval()

    tokenizer_dir = info.path if _has_tokenizer(info.path) or info.base is None else info.base
    tokenizer = load_tokenizer(str(tokenizer_dir), mode=mode)
    return model, tokenizer, mode

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

from glmlab.checkpoint import checkpoint_mode, describe_checkpoint
from glmlab.loading import parse_dtype

# Files that carry a vocabulary: ChatGLM-6B, ChatGLM2/3.
_VOCAB_FILES = ("ice_text.model", "tokenizer.model")


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in _VOCAB_FILES)


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
    from glmlab.loading import load_tokenizer

    dtype = parse_dtype(dtype)
    info = describe_checkpoint(checkpoint_dir, base)
    mode = checkpoint_mode(info, mode)
    if quantization_bit is None and info.needs_base:  # the base as the adapter was trained on it
        quantization_bit = (info.meta.get("args") or {}).get("quantization_bit") or None

    # The method's strategy loads what it saved (glmlab.methods: full model, base + adapter, base + prefix).
    model = info.strategy.load(info, mode=mode, dtype=dtype, device=device, quantization_bit=quantization_bit,
                               merge_lora=merge_lora)
    model.eval()

    tokenizer_dir = info.path if _has_tokenizer(info.path) or info.base is None else info.base
    tokenizer = load_tokenizer(str(tokenizer_dir), mode=mode)
    return model, tokenizer, mode

"""Load what training wrote, and generate from it.

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

:func:`generate_batch` generates for a batch of prompts with left padding. :func:`chat` and
:func:`stream_chat` (from :mod:`glmlab.chat`, importable from here) talk to any of the three
generations the way the official ``model.chat`` / ``model.stream_chat`` do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glmlab.loading import CheckpointError, parse_dtype

CHECKPOINT_FILE = "glmlab_checkpoint.json"
PREFIX_FILE = "prefix_encoder.safetensors"
PREFIX_KEY = "transformer.prefix_encoder."
TRAIN_TYPES = ("all", "freeze", "lora", "ptuning")
MODES = ("glm", "glm2", "glm3")
# Files that carry a vocabulary: ChatGLM-6B, ChatGLM2/3.
_VOCAB_FILES = ("ice_text.model", "tokenizer.model")

# The original prediction scripts' generation settings. ``max_new_tokens`` there was
# ``max_len - max_src_len - 3``; ``min_length=5`` counted the prompt too, so it never bit.
DEFAULT_TOP_P = 0.7
DEFAULT_TEMPERATURE = 0.95
DEFAULT_DO_SAMPLE = False


@dataclass(frozen=True)
class CheckpointInfo:
    """What a folder holds, read from its files without loading any weights.

    ``kind`` is one of ``TRAIN_TYPES`` or ``"model"`` (a plain HF model folder with no
    ``glmlab_checkpoint.json``). ``base`` is the resolved base model folder for
    ``lora`` / ``ptuning`` (``None`` for the others). ``mode`` is the recorded mode,
    or ``None`` when nothing records it (then it is inferred from the files).
    """

    path: Path
    kind: str
    mode: str | None
    base: Path | None
    meta: dict = field(default_factory=dict)

    @property
    def needs_base(self) -> bool:
        """Adapters (LoRA, P-tuning) are useless without their base model."""
        return self.kind in ("lora", "ptuning")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _detect_kind(path: Path) -> str:
    """The kind of a folder without ``glmlab_checkpoint.json``, from the files it holds."""
    if (path / "adapter_config.json").is_file():
        return "lora"
    if (path / PREFIX_FILE).is_file():
        return "ptuning"
    if (path / "config.json").is_file():
        return "model"
    raise CheckpointError(
        f"{path}: not a model or checkpoint folder (no {CHECKPOINT_FILE}, config.json or adapter_config.json)"
    )


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def _require(path: Path, names: Sequence[str], kind: str) -> None:
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: {kind} checkpoint is missing {', '.join(missing)}")


def _is_run_dir(path: Path) -> bool:
    """A training run's ``--output_dir`` (``epoch-E-step-S`` folders), not a checkpoint itself."""
    markers = (CHECKPOINT_FILE, "config.json", "adapter_config.json")
    return not any((path / n).is_file() for n in markers) and any(p.is_dir() for p in path.glob("epoch-*-step-*"))


def describe_checkpoint(checkpoint_dir: str | Path, base: str | Path | None = None) -> CheckpointInfo:
    """Say what ``checkpoint_dir`` holds and check its files, without loading weights.

    A training run's ``--output_dir`` stands for its newest checkpoint (the highest step).

    ``base`` overrides the base model recorded in ``glmlab_checkpoint.json``; it is
    only used for ``lora`` / ``ptuning``. Raises :class:`CheckpointError` for a
    missing folder, missing files, an unknown ``train_type``/``mode``, or an
    adapter whose base model cannot be found.
    """
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if _is_run_dir(path):  # a training run's --output_dir: its newest checkpoint
        from glmlab.checkpoint import latest_checkpoint
        from glmlab.run_folder import MixedRunsError

        try:
            path = latest_checkpoint(path)
        except MixedRunsError as err:  # a folder of two runs (an older glmlab's): its newest may be either's
            raise CheckpointError(str(err)) from None
    meta: dict = {}
    if (path / CHECKPOINT_FILE).is_file():
        meta = _read_json(path / CHECKPOINT_FILE)
        kind = meta.get("train_type")
        if kind not in TRAIN_TYPES:
            raise CheckpointError(
                f"{path / CHECKPOINT_FILE}: train_type must be one of {', '.join(TRAIN_TYPES)} (got {kind!r})"
            )
    else:
        kind = _detect_kind(path)
    mode = meta.get("mode")
    if mode is not None and mode not in MODES:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: mode must be one of {', '.join(MODES)} (got {mode!r})")

    if kind in ("all", "freeze", "model"):
        _require(path, ["config.json"], kind)
        if not _has_weights(path):
            raise CheckpointError(f"{path}: {kind} checkpoint has no weights (*.safetensors or pytorch_model*.bin)")
        return CheckpointInfo(path, kind, mode, None, meta)

    if kind == "lora":
        _require(path, ["adapter_config.json"], kind)
        if not any((path / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
            raise CheckpointError(f"{path}: lora checkpoint is missing adapter_model.safetensors")
    else:
        _require(path, [PREFIX_FILE, "config.json"], kind)
        config = _read_json(path / "config.json")
        if not config.get("pre_seq_len"):
            raise CheckpointError(f"{path / 'config.json'}: a ptuning checkpoint needs pre_seq_len > 0")

    recorded = meta.get("base_model")
    if base is None and recorded is None:
        raise CheckpointError(f"{path}: {kind} checkpoint records no base model; pass the base model folder")
    base_path = Path(base if base is not None else recorded)
    if not (base_path / "config.json").is_file():
        origin = "given" if base is not None else f"recorded in {path / CHECKPOINT_FILE}"
        raise CheckpointError(
            f"base model {str(base_path)!r} ({origin}) is not a model folder (no config.json); pass the base model folder"
        )
    return CheckpointInfo(path, kind, mode, base_path, meta)


def checkpoint_mode(info: CheckpointInfo, mode: str | None = None) -> str:
    """The mode to use: ``mode`` if given (it must agree with the recorded one), else recorded, else inferred."""
    from glmlab.loading import infer_mode

    if mode is not None and mode not in MODES:
        raise CheckpointError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if info.mode is not None:
        if mode is not None and mode != info.mode:
            raise CheckpointError(f"{info.path}: checkpoint was trained with mode {info.mode}, not {mode}")
        return info.mode
    if mode is not None:
        return mode
    return infer_mode(str(info.base if info.needs_base else info.path))


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in _VOCAB_FILES)


def _load_prefix_encoder(model: torch.nn.Module, path: Path) -> None:
    """Put the trained ``transformer.prefix_encoder.*`` tensors of ``path`` into ``model``, checking keys and shapes."""
    from safetensors.torch import load_file

    state = load_file(str(path / PREFIX_FILE))
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(PREFIX_KEY)}
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
        config = _read_json(info.path / "config.json")
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


# --------------------------------------------------------------------------- generation


def stop_token_ids(tokenizer, mode: str, model=None) -> list[int]:
    """Ids that end an answer: ``<eop>``/eos for ChatGLM-6B, ``</s>`` for ChatGLM2, plus ``<|user|>`` and
    ``<|observation|>`` for ChatGLM3 (a chat turn ends where the next speaker would start)."""
    ids: list[int | None] = [tokenizer.eos_token_id]
    if mode == "glm":
        ids.append(getattr(tokenizer, "eop_token_id", None))
        config_eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        ids.extend(config_eos if isinstance(config_eos, list) else [config_eos])
    elif mode == "glm3":
        ids += [tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
    out: list[int] = []
    for i in ids:
        if i is not None and i not in out:
            out.append(int(i))
    return out


def _left_pad(prompts_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts to the longest: ids and the 2D 1/0 attention mask, both (B, T)."""
    width = max(len(p) for p in prompts_ids)
    ids = torch.full((len(prompts_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts_ids), width), dtype=torch.long)
    for row, prompt in enumerate(prompts_ids):
        if len(prompt):
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids, mask


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def generation_kwargs(
    model,
    tokenizer,
    mode: str,
    max_new_tokens: int = 256,
    do_sample: bool = DEFAULT_DO_SAMPLE,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    **gen_kwargs,
) -> dict:
    """The keyword arguments glmlab gives ``model.generate``: the mode's stop ids as ``eos_token_id``,
    the pad id, and ``top_p``/``temperature`` only when sampling (greedy search would warn about
    them). Shared by batch generation and chat, so a streamed answer equals a non-streamed one."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stops = stop_token_ids(tokenizer, mode, model)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "eos_token_id": stops, "pad_token_id": pad_id}
    if do_sample:
        kwargs.update(top_p=top_p, temperature=temperature)
    kwargs.update(gen_kwargs)
    return kwargs


def _cut_at_stop(row: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The generated ids before the first stop id (what follows it is padding)."""
    cut = next((i for i, t in enumerate(row) if t in stops), len(row))
    return list(row[:cut])


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts_ids: Sequence[Sequence[int]],
    mode: str,
    max_new_tokens: int = 256,
    do_sample: bool = DEFAULT_DO_SAMPLE,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    **gen_kwargs,
) -> list[list[int]]:
    """Generate for a batch of prompts (left-padded) and return each row's new ids, cut before the first stop id."""
    if not prompts_ids or any(len(p) == 0 for p in prompts_ids):
        raise ValueError("generate needs at least one prompt and no empty prompt")
    kwargs = generation_kwargs(model, tokenizer, mode, max_new_tokens, do_sample, top_p, temperature, **gen_kwargs)
    ids, mask = _left_pad(prompts_ids, kwargs["pad_token_id"])
    device = _model_device(model)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    stops = stop_token_ids(tokenizer, mode, model)
    return [_cut_at_stop(row, stops) for row in out[:, ids.shape[1] :].tolist()]


def _clean(text: str, mode: str) -> str:
    """ChatGLM3 answers start with their metadata line: when it is empty (a plain answer), drop it and
    strip the content, as the official ``process_response`` does (the content was encoded on its own,
    so it starts with SentencePiece's dummy-prefix space)."""
    if mode == "glm3" and text.startswith("\n"):
        return text[1:].strip()
    return text


def generate_batch(
    model,
    tokenizer,
    prompts_ids: Sequence[Sequence[int]],
    mode: str,
    max_new_tokens: int = 256,
    do_sample: bool = DEFAULT_DO_SAMPLE,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    **gen_kwargs,
) -> list[str]:
    """Generate an answer for each prompt (ids as ``glmlab.data.encode_prompt`` builds them).

    The batch is left-padded with a 2D attention mask, so every prompt ends where
    generation starts; the model derives positions from the mask. Defaults are
    the original prediction scripts' (greedy; ``top_p=0.7``, ``temperature=0.95``
    when ``do_sample``). Only the new tokens are decoded, cut at the first
    eos / ``<eop>`` (ChatGLM3 also ``<|user|>`` / ``<|observation|>``).
    Extra keyword arguments go to ``model.generate``.
    """
    new_ids = generate_ids(
        model, tokenizer, prompts_ids, mode, max_new_tokens, do_sample, top_p, temperature, **gen_kwargs
    )
    return [_clean(tokenizer.decode(ids), mode) for ids in new_ids]


def __getattr__(name: str):
    """``glmlab.inference.chat`` / ``stream_chat`` live in :mod:`glmlab.chat` (imported on first use,
    since that module builds on this one)."""
    if name in ("chat", "stream_chat"):
        from glmlab import chat as chat_module

        return getattr(chat_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Load ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B checkpoint folders, strictly.

A checkpoint folder has the official layout::

    config.json                     "model_type": "chatglm"
    pytorch_model.bin               or pytorch_model-0000i-of-0000n.bin + pytorch_model.bin.index.json
                                    or model.safetensors / model-0000i-of-0000n.safetensors + model.safetensors.index.json
    ice_text.model                  ChatGLM-6B's SentencePiece vocabulary, or
    tokenizer.model                 ChatGLM2/3's
    tokenizer_config.json

Loading is strict: every tensor of the checkpoint must be a tensor of the model, with the same
shape, and every tensor of the model must come from the checkpoint. The one exception is the
P-tuning v2 prefix encoder when ``pre_seq_len`` is passed as a config override: the base
checkpoint cannot hold it, so it is initialised. Any other mismatch is one
:class:`CheckpointError` naming the file and the tensors.

The model is built with its parameters on the meta device (nothing allocated, nothing randomly
initialised), then every checkpoint tensor is put in place one shard at a time, so a 6B checkpoint
needs about one copy of the weights in memory.

Quantized bases (:mod:`glmlab.quantization`): THUDM's int4/int8 folders (``config.json``
``quantization_bit``; per quantized linear layer an int8 ``weight`` and a ``weight_scale``) load as
they are, through the same checks, and the quantized weights must be int8; ``quantization_bit=4|8``
quantizes a 16/32-bit folder while it loads, each weight as it arrives; a quantized model's
``save_pretrained`` writes THUDM's layout back.

Which generation ("mode") a folder holds: ``config.json`` tells ChatGLM-6B ("glm") from the
ChatGLM2/3 architecture; ChatGLM2 and ChatGLM3 share that architecture and differ only in their
tokenizer and prompt format, so :func:`infer_mode` reads the folder's records, first of all the
explicit ``glmlab_mode`` key that glmlab writes (see :func:`infer_mode`).

Importing :mod:`glmlab` registers the classes here with transformers' Auto classes, so
``AutoConfig``, ``AutoModel``, ``AutoModelForCausalLM`` and ``AutoTokenizer`` load these folders
without ``trust_remote_code`` (the official files' ``auto_map`` points to remote code; glmlab's
local classes take precedence when ``trust_remote_code`` is not set).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glmlab.constants import (
    CHECKPOINT_INFO_NAME,
    MODES,
    PRECISION_ALIASES,
    PRECISIONS,
    PREFIX_ENCODER,
    canonical_precision,
)
from glmlab.models.configuration import ChatGLMConfig

CONFIG_NAME = "config.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
VOCAB_FILES = {"glm": "ice_text.model", "glm2": "tokenizer.model", "glm3": "tokenizer.model"}
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"
WEIGHTS_FORMATS = ("safetensors", "sharded_safetensors", "bin", "sharded_bin")

# The key glmlab writes into config.json and tokenizer_config.json to record the mode.
MODE_KEY = "glmlab_mode"

# The precisions by their short names (glmlab.constants.canonical_precision maps the long ones).
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Config fields a caller may override, and the ChatGLM-specific ones among them.
_ALL_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ChatGLMConfig))
_CHATGLM_FIELDS = frozenset(ChatGLMConfig.__annotations__)
# How many tensor names an error message lists before "... and N more".
_MAX_NAMES = 8


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as asked; the message names the file and the tensors."""


# --------------------------------------------------------------------------- small readers
def _folder(path: str | Path, what: str = "checkpoint folder") -> Path:
    folder = Path(path)
    if not folder.is_dir():
        hint = ""
        if not folder.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
            hint = f" (a Hugging Face id? download it first: huggingface-cli download {path} --local-dir DIR)"
        raise CheckpointError(f"{what} not found: {path}{hint}")
    return folder


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a JSON object")
    return data


def _read_optional_json(file: Path) -> dict:
    return _read_json(file) if file.is_file() else {}


def _read_config_dict(folder: Path) -> dict:
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} in {folder}")
    config = _read_json(file)
    if config.get("model_type") != "chatglm":
        raise CheckpointError(f"{file}: model_type is {config.get('model_type')!r}, expected 'chatglm'")
    return config


def _architecture(config_dict: dict) -> str:
    """"glm" (ChatGLM-6B) or "glm2" (ChatGLM2/3), decided the way :class:`ChatGLMConfig` decides it."""
    config = ChatGLMConfig.from_dict({k: v for k, v in config_dict.items() if k != "auto_map"})
    return config.architecture


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``torch.float32``/``bfloat16``/``float16`` or one of their names ("fp32", "bf16", "fp16", "float16", ...)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
    elif isinstance(dtype, str) and dtype.strip().lower().removeprefix("torch.") in (*PRECISIONS, *PRECISION_ALIASES):
        return _DTYPES[canonical_precision(dtype)]
    raise ValueError(f"unsupported dtype {dtype!r}: use fp32, bf16 or fp16")


# --------------------------------------------------------------------------- mode inference
_ARCH_NAMES = {"glm": "ChatGLM-6B", "glm2": "ChatGLM2/3"}


def _mode_architecture(mode: str) -> str:
    """The architecture a mode runs on: ChatGLM2 and ChatGLM3 share one."""
    return "glm" if mode == "glm" else "glm2"


_GLM3_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>", "<|observation|>")


def _name_hints(*records: dict) -> list[str]:
    """Strings in config/tokenizer records that name the official repository or tokenizer class."""
    hints = []
    for record in records:
        for key in ("_name_or_path", "name_or_path", "tokenizer_class"):
            if isinstance(record.get(key), str):
                hints.append(record[key])
        auto_map = record.get("auto_map")
        if isinstance(auto_map, dict):
            for value in auto_map.values():
                hints.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return hints


def _glm2_family_mode(config_dict: dict, tokenizer_config: dict) -> str | None:
    """"glm3", "glm2" or None (unknown) for a ChatGLM2-architecture folder without an explicit record."""
    hints = " ".join(_name_hints(config_dict, tokenizer_config)).lower()
    found = set()
    if "chatglm3" in hints:
        found.add("glm3")
    if "chatglm2" in hints or "codegeex2" in hints:
        found.add("glm2")
    # ChatGLM3's own special tokens (its newer tokenizer_config.json lists them in added_tokens_decoder
    # and in the chat template); ChatGLM2 has none of them.
    if any(token in json.dumps(tokenizer_config, ensure_ascii=False) for token in _GLM3_TOKENS):
        found.add("glm3")
    return found.pop() if len(found) == 1 else None


def infer_mode(path: str | Path) -> str:
    """Which ChatGLM generation the folder holds: ``"glm"``, ``"glm2"`` or ``"glm3"``.

    In order:

    1. An explicit record: ``"glmlab_mode"`` in ``config.json`` or ``tokenizer_config.json``
       (glmlab's tiny folders, models loaded by :func:`load_model` and tokenizers loaded by
       :func:`load_tokenizer` carry it into what they save) or ``"mode"`` in ``glmlab_checkpoint.json``.
    2. ``config.json``'s architecture (or, without one, the vocabulary file: ``ice_text.model`` is
       ChatGLM-6B's): ChatGLM-6B fields -> ``"glm"``.
    3. For the ChatGLM2/3 architecture, what the official files say: a repository name
       (``_name_or_path``/``name_or_path``, e.g. ``THUDM/chatglm3-6b``, or an ``auto_map`` class
       reference) containing ``chatglm3`` or ``chatglm2``, a tokenizer class ``ChatGLM3Tokenizer`` /
       ``ChatGLM2Tokenizer``, or ChatGLM3's role tokens (``<|user|>``, ...) in ``tokenizer_config.json``.

    Raises :class:`CheckpointError` when none of these decides (pass ``mode=`` explicitly then) or
    when records contradict each other or the architecture.
    """
    folder = _folder(path)
    config_file = folder / CONFIG_NAME
    config_dict = _read_config_dict(folder) if config_file.is_file() else {}
    tokenizer_config = _read_optional_json(folder / TOKENIZER_CONFIG_NAME)
    checkpoint_info = _read_optional_json(folder / CHECKPOINT_INFO_NAME)

    records = {
        f"{CONFIG_NAME} {MODE_KEY}": config_dict.get(MODE_KEY),
        f"{TOKENIZER_CONFIG_NAME} {MODE_KEY}": tokenizer_config.get(MODE_KEY),
        f"{CHECKPOINT_INFO_NAME} mode": checkpoint_info.get("mode"),
    }
    records = {where: value for where, value in records.items() if value is not None}
    for where, value in records.items():
        if value not in MODES:
            raise CheckpointError(f"{folder}: {where} is {value!r}, expected one of {', '.join(MODES)}")
    if len(set(records.values())) > 1:
        listed = ", ".join(f"{where}={value!r}" for where, value in records.items())
        raise CheckpointError(f"{folder}: contradictory mode records ({listed})")

    if config_dict:
        architecture = _architecture(config_dict)
    elif (folder / VOCAB_FILES["glm"]).is_file():
        architecture = "glm"
    elif (folder / VOCAB_FILES["glm2"]).is_file():
        architecture = "glm2"
    else:
        architecture = None

    if records:
        mode = next(iter(records.values()))
        if architecture is not None and _mode_architecture(mode) != architecture:
            raise CheckpointError(
                f"{folder}: recorded mode {mode!r} but {CONFIG_NAME} describes a {_ARCH_NAMES[architecture]} model"
            )
        return mode
    if architecture is None:
        raise CheckpointError(f"cannot infer mode for {folder}: no {CONFIG_NAME} and no tokenizer vocabulary file")
    if architecture == "glm":
        return "glm"
    mode = _glm2_family_mode(config_dict, tokenizer_config)
    if mode is None:
        raise CheckpointError(f"cannot infer mode for {folder}: pass mode='glm2' or mode='glm3'")
    return mode


def _check_mode(mode: str | None, folder: Path) -> str:
    if mode is None:
        return infer_mode(folder)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


# --------------------------------------------------------------------------- weight files
def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files in load order (safetensors preferred, as transformers does).

    Raises :class:`CheckpointError` when there are none, or when an index names a shard that is missing.
    """
    for index_name, single_name in ((SAFETENSORS_INDEX_NAME, SAFETENSORS_NAME), (BIN_INDEX_NAME, BIN_NAME)):
        index_file = folder / index_name
        if index_file.is_file():
            weight_map = _read_json(index_file).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index_file}: no weight_map")
            files = [folder / name for name in sorted(set(weight_map.values()))]
            for file in files:
                if not file.is_file():
                    raise CheckpointError(f"{index_file} names {file.name}, which is missing from {folder}")
            return files
        if (folder / single_name).is_file():
            return [folder / single_name]
    raise CheckpointError(
        f"no weights in {folder}: expected {SAFETENSORS_NAME}, {BIN_NAME} or a sharded checkpoint with "
        f"{SAFETENSORS_INDEX_NAME} / {BIN_INDEX_NAME}"
    )


def _iter_tensors(file: Path, names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one weight file, read lazily for safetensors; only ``names`` when given
    (a pipeline stage reads its own tensors: the other tensors of a ``.bin`` shard stay memory-mapped, unread)."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError for a bad file
            raise CheckpointError(f"cannot read {file}: {err}") from None
        with handle:
            for name in handle.keys():
                if names is None or name in names:
                    yield name, handle.get_tensor(name)
        return
    try:  # the whole shard in memory; the model then holds these very tensors (no second copy)
        state_dict = torch.load(file, map_location="cpu", weights_only=True, mmap=names is not None)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise CheckpointError(f"cannot read {file}: {err}") from None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{file} does not hold a state dict")
    for name in list(state_dict):
        tensor = state_dict.pop(name)
        if names is not None and name not in names:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{file}: entry {name!r} is not a tensor")
        yield name, (tensor if names is None else tensor.clone())  # a clone: nothing left on the mapped file


def write_weights(
    state_dict: dict[str, torch.Tensor], folder: str | Path, weights_format: str = "safetensors", num_shards: int = 2
) -> list[Path]:
    """Write a state dict in one of the official layouts; returns the files written.

    ``weights_format``: ``safetensors`` (``model.safetensors``), ``bin`` (``pytorch_model.bin``),
    ``sharded_safetensors`` / ``sharded_bin`` (``num_shards`` files plus the ``*.index.json`` that
    maps every tensor to its file, as ``save_pretrained`` writes them).
    """
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"weights_format must be one of {', '.join(WEIGHTS_FORMATS)}, got {weights_format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    safetensors = weights_format.endswith("safetensors")
    if not weights_format.startswith("sharded"):
        shards = {SAFETENSORS_NAME if safetensors else BIN_NAME: tensors}
    else:
        names = list(tensors)
        num_shards = max(1, min(num_shards, len(names)))
        per_shard = -(-len(names) // num_shards)
        stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
        shards = {
            f"{stem}-{i + 1:05d}-of-{num_shards:05d}.{ext}": {n: tensors[n] for n in names[i * per_shard : (i + 1) * per_shard]}
            for i in range(num_shards)
        }
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": {name: file for file, part in shards.items() for name in part},
        }
        index_name = SAFETENSORS_INDEX_NAME if safetensors else BIN_INDEX_NAME
        (folder / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    written = []
    for file, part in shards.items():
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(folder / file), metadata={"format": "pt"})
        else:
            torch.save(part, folder / file)
        written.append(folder / file)
    return written


# --------------------------------------------------------------------------- model loading
def _model_class(architecture: str) -> type:
    if architecture == "glm":
        from glmlab.models.chatglm import ChatGLMForConditionalGeneration

        return ChatGLMForConditionalGeneration
    from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration

    return ChatGLM2ForConditionalGeneration


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` on the meta device while the model is built.

    Parameters take no memory and their random initialisation costs nothing; buffers (rotary
    ``inv_freq``, masks) are still created for real, so the ones a checkpoint does not hold
    (non-persistent ones) keep the values the model computes.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if attr in module._parameters:
        old = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[attr] = value


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" ... and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def build_config(path: str | Path, mode: str | None = None, **config_overrides: Any) -> tuple[ChatGLMConfig, str]:
    """The folder's :class:`ChatGLMConfig` with ``config_overrides`` applied, and its mode.

    Checks that the config is of the generation ``mode`` names (ChatGLM-6B for ``"glm"``,
    ChatGLM2/3 otherwise). The returned config records the mode (``glmlab_mode``) and drops the
    official ``auto_map`` (it points to remote code that a glmlab-saved folder does not hold).
    """
    folder = _folder(path)
    config_dict = _read_config_dict(folder)
    mode = _check_mode(mode, folder)
    architecture = _architecture(config_dict)
    if _mode_architecture(mode) != architecture:
        raise CheckpointError(
            f"{folder / CONFIG_NAME} describes a {_ARCH_NAMES[architecture]} model, not mode={mode!r} "
            f"({_ARCH_NAMES[_mode_architecture(mode)]})"
        )
    unknown = sorted(set(config_overrides) - _ALL_CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown config override(s) for {folder}: {', '.join(unknown)}")
    config_dict = {k: v for k, v in config_dict.items() if k != "auto_map"}
    config_dict.update(config_overrides)
    config = ChatGLMConfig.from_dict(config_dict)
    if config.architecture != architecture:
        raise CheckpointError(f"config overrides {sorted(config_overrides)} change the architecture of {folder}")
    setattr(config, MODE_KEY, mode)
    return config, mode


def load_model(
    path: str | Path,
    mode: str | None = None,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    quantization_bit: int | None = None,
    **config_overrides: Any,
) -> nn.Module:
    """Load a ChatGLM checkpoint folder into the glmlab model of its generation, strictly.

    Args:
        path: a folder in the official layout (see the module docstring).
        mode: ``"glm"``, ``"glm2"`` or ``"glm3"``; inferred with :func:`infer_mode` when omitted.
        dtype: the parameters' dtype (``torch.float32``/``bfloat16``/``float16`` or "fp32", "bf16",
            "fp16", ...); buffers such as rotary ``inv_freq`` keep the dtype the model creates them in.
        device: where the model's tensors go (each tensor is moved as it is loaded).
        **config_overrides: config fields to change before the model is built, e.g.
            ``pre_seq_len=16, prefix_projection=True`` for P-tuning v2 (the prefix encoder this adds
            is initialised, since the checkpoint cannot hold it).
        quantization_bit: ``4`` or ``8`` quantizes the attention and MLP linear layers of a
            16/32-bit folder while it loads (one weight at a time, on ``device``; see
            :mod:`glmlab.quantization`). A folder whose ``config.json`` has ``quantization_bit``
            (THUDM's int4/int8 checkpoints: packed int8 ``weight`` + ``weight_scale`` per layer)
            loads as it is, through the same key, shape and dtype checks; ``None`` (the default)
            follows the folder, and asking such a folder for other bits is an error.

    Returns the model in eval mode; ``model.config.glmlab_mode`` records the mode, so
    ``model.save_pretrained(dir)`` writes a folder that loads back with the same mode.

    Raises :class:`CheckpointError` for a missing folder, ``config.json`` or weights file, a config of
    another generation than ``mode``, and for missing, unexpected or wrongly shaped tensors.
    """
    dtype = parse_dtype(dtype)
    config, mode = build_config(path, mode, **config_overrides)
    quantize_on_load = _quantization(Path(path), config, quantization_bit)
    return _load_weights(Path(path), config, dtype, torch.device(device), allow_new_prefix="pre_seq_len" in config_overrides,
                         quantize_on_load=quantize_on_load)


def _quantization(folder: Path, config: ChatGLMConfig, requested: int | None) -> bool:
    """Set ``config.quantization_bit`` to the bits the model is built with; True to quantize while loading."""
    stored = config.quantization_bit or 0
    if stored not in (0, 4, 8):
        raise CheckpointError(f"{folder / CONFIG_NAME}: quantization_bit is {stored!r}, expected 0, 4 or 8")
    if getattr(config, "quantization_embeddings", False):
        raise CheckpointError(f"{folder / CONFIG_NAME}: quantized embeddings (quantization_embeddings: true) are not "
                              "supported; use a folder with 16-bit embeddings (e.g. chatglm-6b-int4, not -int4-qe)")
    if requested is None:
        return False
    if requested not in (0, 4, 8) or isinstance(requested, bool):
        raise ValueError(f"quantization_bit must be 0, 4 or 8 (got {requested!r})")
    if stored and requested != stored:
        raise CheckpointError(f"{folder} holds {stored}-bit quantized weights ({CONFIG_NAME} quantization_bit {stored}); "
                              f"they load only as they are: omit quantization_bit or pass {stored}")
    config.quantization_bit = requested
    return bool(requested) and not stored


def _load_weights(
    folder: Path, config: ChatGLMConfig, dtype: torch.dtype, device: torch.device, allow_new_prefix: bool,
    quantize_on_load: bool = False,
) -> nn.Module:
    """Build the model for ``config`` with meta parameters and fill it from the folder's weight files.

    With ``config.quantization_bit`` the model has :class:`~glmlab.quantization.QuantizedLinear`
    layers: their int8 ``weight`` / ``weight_scale`` come from the folder as they are, or, with
    ``quantize_on_load``, each 16/32-bit ``weight`` of the folder is quantized as it arrives.
    """
    from glmlab.quantization import QuantizedLinear

    files = weight_files(folder)
    config.dtype = dtype
    with _parameters_on_meta():
        model = _model_class(config.architecture)(config)
    expected = model.state_dict(keep_vars=True)
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    # Scales take the model's dtype like parameters (THUDM's folders store them in fp16).
    scale_names = {f"{name}.weight_scale" for name in quantized}
    quantize_here = {f"{name}.weight": m for name, m in quantized.items()} if quantize_on_load else {}
    if quantize_on_load:  # the scales are computed here, not read
        expected = {name: t for name, t in expected.items() if name not in scale_names}

    loaded: dict[str, Path] = {}
    unexpected: dict[Path, list[str]] = {}
    mismatched: dict[Path, list[str]] = {}
    for file in files:  # one shard in memory at a time
        for name, tensor in _iter_tensors(file):
            if name in loaded:
                raise CheckpointError(f"tensor {name} is in both {loaded[name]} and {file}")
            target = expected.get(name)
            if target is None:
                unexpected.setdefault(file, []).append(name)
                continue
            layer = quantize_here.get(name)
            shape = (layer.out_features, layer.in_features) if layer is not None else tuple(target.shape)
            if tuple(tensor.shape) != shape:
                mismatched.setdefault(file, []).append(f"{name} (checkpoint {tuple(tensor.shape)}, model {shape})")
                loaded[name] = file  # present, reported as mismatched rather than missing
                continue
            if layer is not None or target.dtype == torch.int8:  # a float weight to quantize / a quantized one
                wanted = "floating-point" if layer is not None else "int8"
                if tensor.is_floating_point() != (layer is not None):
                    mismatched.setdefault(file, []).append(f"{name} (checkpoint {tensor.dtype}, model {wanted})")
                    loaded[name] = file
                    continue
            if layer is not None:
                layer.set_weight(tensor.to(device=device, dtype=dtype))  # the float copy is freed right here
                loaded[name] = file
                continue
            is_param = isinstance(target, nn.Parameter)
            as_param = is_param or name in scale_names
            value_dtype = dtype if as_param and tensor.is_floating_point() else target.dtype
            _set_tensor(model, name, tensor.to(device=device, dtype=value_dtype))
            loaded[name] = file

    problems = []
    for file, names in mismatched.items():
        problems.append(f"{file}: wrong shape: {_names(names)}")
    for file, names in unexpected.items():
        problems.append(f"{file}: unexpected tensor(s) the model does not have: {_names(names)}")
    missing = [name for name in expected if name not in loaded]
    new_prefix = [name for name in missing if allow_new_prefix and name.startswith(PREFIX_ENCODER)]
    missing = [name for name in missing if name not in new_prefix]
    if missing:
        where = files[0] if len(files) == 1 else f"{folder} ({len(files)} weight files)"
        problems.append(f"{where}: missing tensor(s): {_names(missing)}")
    if problems:
        raise CheckpointError("; ".join(problems))

    if new_prefix:
        _init_new_modules(model, PREFIX_ENCODER.rstrip("."), dtype, device)
    still_meta = [name for name, t in model.state_dict(keep_vars=True).items() if t.device.type == "meta"]
    if still_meta:  # a tensor shared under two names, filled under one of them
        raise CheckpointError(f"{folder}: tensor(s) left unloaded: {_names(still_meta)}")
    model.to(device)

    _load_generation_config(model, folder)
    return model.eval()


def _init_new_modules(model: nn.Module, module_name: str, dtype: torch.dtype, device: torch.device) -> None:
    """Initialise a submodule the checkpoint does not hold (PyTorch's default init, as the official code)."""
    module = model.get_submodule(module_name)
    module.to_empty(device=device)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    module.to(dtype=dtype)


def _load_generation_config(model: nn.Module, folder: Path) -> None:
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder)


# --------------------------------------------------------------------------- tokenizer loading
def _tokenizer_class(mode: str) -> type:
    from glmlab import tokenization

    return {"glm": tokenization.ChatGLMTokenizer, "glm2": tokenization.ChatGLM2Tokenizer, "glm3": tokenization.ChatGLM3Tokenizer}[mode]


def load_tokenizer(path: str | Path, mode: str | None = None, **kwargs: Any):
    """Load the folder's tokenizer: ``ice_text.model`` for ``"glm"``, ``tokenizer.model`` for ``"glm2"``/``"glm3"``.

    ``mode`` is inferred with :func:`infer_mode` when omitted. ``kwargs`` go to the tokenizer's
    ``from_pretrained`` (e.g. ``padding_side="right"``). The loaded tokenizer records the mode, so
    its ``save_pretrained`` writes a ``tokenizer_config.json`` that loads back with the same mode.
    """
    folder = _folder(path)
    mode = _check_mode(mode, folder)
    vocab = folder / VOCAB_FILES[mode]
    if not vocab.is_file():
        other = next((name for m, name in VOCAB_FILES.items() if name != vocab.name and (folder / name).is_file()), None)
        found = f" (found {other}, the vocabulary of another generation)" if other else ""
        raise CheckpointError(f"no {vocab.name} in {folder}: mode={mode!r} needs it{found}")
    for key in ("trust_remote_code", "_from_auto", "_commit_hash", "revision", "mode"):
        kwargs.pop(key, None)
    try:
        tokenizer = _tokenizer_class(mode).from_pretrained(str(folder), **kwargs)
    except (OSError, RuntimeError) as err:  # e.g. a corrupt SentencePiece file
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {err}") from None
    tokenizer.init_kwargs[MODE_KEY] = mode
    return tokenizer


# --------------------------------------------------------------------------- transformers Auto classes
class ChatGLMAutoModel:
    """What ``AutoModel`` / ``AutoModelForCausalLM`` find for ``model_type`` ``chatglm``.

    transformers maps one config class to one model class, but ``chatglm`` names two architectures
    (the official configs of all generations even share ``"architectures": ["ChatGLMModel"]``), so
    this stand-in picks the class by ``config.architecture``. ``from_pretrained`` of a local folder
    goes through :func:`load_model` (strict); its ``dtype``/``torch_dtype`` and ``device_map`` (one
    device) are honoured and config fields passed as keyword arguments become config overrides.
    """

    config_class = ChatGLMConfig

    # Keyword arguments of ``from_pretrained`` that have no meaning for a local folder loaded whole.
    _IGNORED_KWARGS = frozenset(
        ["adapter_kwargs", "revision", "trust_remote_code", "cache_dir", "force_download", "proxies", "token",
         "local_files_only", "subfolder", "_commit_hash", "code_revision", "low_cpu_mem_usage", "use_safetensors"]
    )  # fmt: skip

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        if model_args:
            raise TypeError("glmlab's ChatGLM models take no positional model arguments")
        folder = _folder(pretrained_model_name_or_path)
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
        dtype = dtype or torch_dtype or torch.float32
        if dtype == "auto":
            recorded = _read_config_dict(folder)
            dtype = recorded.get("dtype") or recorded.get("torch_dtype") or torch.float32
        device = kwargs.pop("device_map", None) or "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(device, dict):
            raise ValueError("glmlab's ChatGLM models load onto one device: pass device_map='cpu', 'cuda:0', ...")
        mode = kwargs.pop("mode", None)
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in _CHATGLM_FIELDS}
        if config is not None:  # AutoModel* has already applied keyword config fields to it
            file_config = ChatGLMConfig.from_dict({k: v for k, v in _read_config_dict(folder).items() if k != "auto_map"})
            for key in _CHATGLM_FIELDS:
                if getattr(config, key, None) != getattr(file_config, key, None):
                    overrides.setdefault(key, getattr(config, key))
        unsupported = sorted(set(kwargs) - cls._IGNORED_KWARGS)
        if unsupported:
            raise TypeError(f"glmlab's ChatGLM loading does not support: {', '.join(unsupported)}")
        return load_model(folder, mode=mode, dtype=dtype, device=device, **overrides)

    @classmethod
    def from_config(cls, config: ChatGLMConfig, **kwargs):
        """A randomly initialised model of the config's architecture."""
        return _model_class(config.architecture)._from_config(config, **kwargs)

    _from_config = from_config


class ChatGLMAutoTokenizer:
    """What ``AutoTokenizer`` finds under the ``tokenizer_class`` names of ChatGLM folders.

    Every generation's official ``tokenizer_config.json`` says ``"tokenizer_class": "ChatGLMTokenizer"``
    and AutoTokenizer looks tokenizer classes up by that name, so stand-ins named
    ``ChatGLMTokenizer``, ``ChatGLM2Tokenizer`` and ``ChatGLM3Tokenizer`` (see :data:`AUTO_TOKENIZER_NAMES`)
    are registered; each loads the folder with :func:`load_tokenizer`, which picks the class from the
    folder's mode. ``mode=`` may be passed to ``AutoTokenizer.from_pretrained``.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, **kwargs):
        mode = kwargs.pop("mode", None)
        for key in ("cache_dir", "force_download", "local_files_only", "token", "subfolder", "config"):
            kwargs.pop(key, None)
        return load_tokenizer(pretrained_model_name_or_path, mode=mode, **kwargs)


# AutoTokenizer resolves ``tokenizer_class`` by class ``__name__``; the last one is also the default
# for ChatGLMConfig. Stand-ins rather than the tokenizer classes themselves keep ``import glmlab`` light.
AUTO_TOKENIZER_NAMES = ("ChatGLM2Tokenizer", "ChatGLM3Tokenizer", "ChatGLMTokenizer")
_AUTO_TOKENIZERS = [type(name, (ChatGLMAutoTokenizer,), {"__module__": __name__}) for name in AUTO_TOKENIZER_NAMES]

# The model classes' names. transformers' pipelines check ``type(model).__name__`` against the names
# in the Auto mapping (``pipeline("text-generation", model=...)`` logs "The model
# 'ChatGLM2ForConditionalGeneration' is not supported" otherwise). The mapping may hold a tuple per
# config: the dispatcher first (the default), then stand-ins under these names, which dispatch the
# same way; so a config whose ``architectures`` names one of them still loads through load_model.
AUTO_MODEL_NAMES = ("ChatGLMForConditionalGeneration", "ChatGLM2ForConditionalGeneration")
_AUTO_MODELS = (ChatGLMAutoModel,) + tuple(
    type(name, (ChatGLMAutoModel,), {"__module__": __name__}) for name in AUTO_MODEL_NAMES
)


def register_auto_classes() -> None:
    """Register ``chatglm`` with AutoConfig, AutoModel, AutoModelForCausalLM and AutoTokenizer (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    AutoConfig.register("chatglm", ChatGLMConfig, exist_ok=True)
    AutoModel.register(ChatGLMConfig, _AUTO_MODELS, exist_ok=True)
    AutoModelForCausalLM.register(ChatGLMConfig, _AUTO_MODELS, exist_ok=True)
    for stand_in in _AUTO_TOKENIZERS:
        AutoTokenizer.register(ChatGLMConfig, tokenizer_class=stand_in, exist_ok=True)

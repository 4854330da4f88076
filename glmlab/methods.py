"""The four fine-tuning methods as strategies: what each trains and what each saves.

The training loop calls the same five methods whatever ``--train_type`` is and never
branches on the method's name:

* ``config_overrides(args)`` -> config fields the base model is loaded with;
* ``check(args, names)`` -> raise ``ValueError`` before anything is loaded when the
  method's targets match none of the checkpoint's tensor ``names``;
* ``prepare(model, args)`` -> the model ready to train (``requires_grad`` set, adapters added);
* ``describe(model)`` -> one line with the trainable and total parameter counts;
* ``save(model, tokenizer, out_dir, state_dict)`` -> write what the method needs to reload.

Without building a model, each strategy also answers from a config, the model's parameter shapes
(:func:`glmlab.memory.parameter_shapes`, or a checkpoint's tensor names) and the flags, so that
:mod:`glmlab.memory`, :mod:`glmlab.checkpoint`, :mod:`glmlab.inference` and the notebooks ask it
instead of branching on the method's name:

* ``model_config(config, args)`` -> the config the model is built with (``config_overrides`` applied);
* ``trained_parameters(shapes, args)`` -> the names of the model's own parameters that train;
* ``adapters(shapes, args)`` -> the tensors the method adds beside the model (LoRA's A and B), by module;
* ``trainable_shapes(shapes, args)`` -> everything that trains, name -> shape;
* ``activation_layers(config, shapes, args)`` -> which layers keep activations for backward, and
  which of their linear layers keep their inputs (:func:`glmlab.memory.activation_bytes`' arguments);
* ``saves`` / ``needs_base`` / ``check_saved(path)`` -> what a checkpoint of the method holds, whether
  it needs its base model, and the check that a folder holds it; ``load(...)`` reloads it;
* ``quantizable`` -> whether the base may be quantized (the method trains no base weight).

=========  ===============================================  ==========================================
method     trains                                           saves (``output_dir/epoch-E-step-S/``)
=========  ===============================================  ==========================================
freeze     parameters whose name contains a pattern of      the full model in HF format. A documented
           ``--freeze_module_name`` (``layers.27.``; a      choice: the checkpoint then loads on its own
           bare number ``27`` means ``layers.27.``)         with ``glmlab.load_model`` like the base,
                                                            at the cost of disk space.
ptuning    only ``transformer.prefix_encoder`` (the model   ``prefix_encoder.safetensors`` (its keys only)
           is loaded with ``pre_seq_len`` and               and ``config.json`` with ``pre_seq_len`` /
           ``prefix_projection``)                           ``prefix_projection`` to rebuild the model.
lora       peft LoRA adapters on ``--lora_module_name``     a peft adapter folder (``adapter_config.json``,
           (rank ``--lora_dim``, ``--lora_alpha``,          ``adapter_model.safetensors``, fp32).
           ``--lora_dropout``); the base is frozen
all        every parameter                                  the full model in HF format.
=========  ===============================================  ==========================================

Every checkpoint also holds the tokenizer (written here) and ``glmlab_checkpoint.json``
(written by :mod:`glmlab.checkpoint`). :func:`glmlab.inference.load_for_inference` reloads any of them.

A quantized base (``--quantization_bit 4|8``, or a THUDM int4/int8 folder; :mod:`glmlab.quantization`)
suits ``lora`` and ``ptuning``, which train tensors outside the quantized weights; ``freeze`` and
``all`` would train those very weights, so their ``check`` refuses a quantized checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glmlab.constants import PREFIX_ENCODER, PREFIX_FILE

if TYPE_CHECKING:
    import torch

# How many names an error message lists.
_SHOW = 6
# The linear layers of a block: what ``quantization_bit`` stores in 8 or 4 bits and what LoRA usually targets.
LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


# --------------------------------------------------------------------------- names and patterns
def checkpoint_parameter_names(path: str | Path) -> list[str]:
    """The tensor names of a checkpoint folder, read without loading any weight.

    safetensors headers and ``*.index.json`` weight maps are read directly; a single
    ``pytorch_model.bin`` is memory-mapped. These are the model's parameter names,
    since glmlab's models load official checkpoints strictly.
    """
    from glmlab.loading import weight_files

    files = weight_files(Path(path))
    folder = Path(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return sorted(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"])
    names: list[str] = []
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt", device="cpu") as handle:
                names.extend(handle.keys())
        else:
            import torch

            names.extend(torch.load(file, map_location="cpu", weights_only=True, mmap=True).keys())
    return sorted(names)


def split_names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated, blanks dropped)."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def top_layers(num_layers: int, top: int) -> str:
    """``--freeze_module_name`` for the top ``top`` layers of a model of ``num_layers`` (all of them if it has fewer):
    ``"layers.2.,layers.3."`` for the top two of 4, ``"layers.26.,layers.27."`` of 28."""
    return ",".join(f"layers.{i}." for i in range(max(num_layers - top, 0), num_layers))


def freeze_patterns(text: str) -> list[str]:
    """The patterns of ``--freeze_module_name``; a bare layer index ``27`` becomes ``layers.27.``."""
    return [f"layers.{p}." if p.isdigit() else p for p in split_names(text)]


def match_patterns(patterns: Sequence[str], names: Iterable[str]) -> dict[str, list[str]]:
    """For each freeze pattern, the names that contain it (substring match, as the original code)."""
    names = list(names)
    return {p: [n for n in names if p in n] for p in patterns}


def module_names(parameter_names: Iterable[str]) -> list[str]:
    """Module names owning the given parameters (``a.b.weight`` -> ``a.b``), in order, without repeats."""
    return list(dict.fromkeys(n.rpartition(".")[0] for n in parameter_names if "." in n))


def match_modules(targets: Sequence[str], modules: Iterable[str]) -> dict[str, list[str]]:
    """For each LoRA target, the modules peft would adapt: the name equals it or ends with ``.target``."""
    modules = list(modules)
    return {t: [m for m in modules if m == t or m.endswith("." + t)] for t in targets}


def layer_indices(names: Iterable[str]) -> set[int]:
    """The layer indices that ``names`` mention (``transformer.encoder.layers.27.mlp...`` -> 27)."""
    return {int(index) for name in names for index in re.findall(r"layers\.(\d+)\.", name)}


def _unmatched(matches: dict[str, list[str]]) -> list[str]:
    return [key for key, hits in matches.items() if not hits]


def _verb(subjects: Sequence[str]) -> str:
    return "matches" if len(subjects) == 1 else "match"


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


# --------------------------------------------------------------------------- counting
def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (ZeRO-3 partitioned parameters count at full size).

    The weights of quantized layers (int8 buffers, never trained) count in the total, one per weight.
    """
    from glmlab.quantization import quantized_numel

    trainable, total = 0, quantized_numel(model)
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def trainable_names(model) -> list[str]:
    """Names of the parameters that will be trained."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------- strategies
class Strategy:
    """What a fine-tuning method trains and saves. Subclasses override what differs."""

    name = ""
    #: "full": the checkpoint holds every tensor; "trainable": only the trained ones.
    saves = "full"
    #: Whether the method trains the base model's own weights (then they cannot be quantized).
    trains_base_weights = True
    #: A file only this method's checkpoints hold: it names the method of a folder without glmlab_checkpoint.json.
    marker_file: str | None = None
    #: Whether what it saves folds into the base weights (``glmlab merge-lora``).
    mergeable = False
    #: Whether it runs split into pipeline stages (``--pipeline_stages``): every weight trained, none frozen or
    #: adapted, so each stage is a plain slice of the model (:mod:`glmlab.pipeline`).
    pipelines = False

    def variant(self, flags: Mapping[str, Any]) -> str:
        """The name of the variant ``flags`` (``train_type`` and the method's own flags) select: the method's
        name, or a variant that behaves apart (P-tuning without its projection)."""
        return self.name

    @property
    def quantizable(self) -> bool:
        """A quantized base suits the method: it trains tensors outside the quantized weights."""
        return not self.trains_base_weights

    @property
    def needs_base(self) -> bool:
        """A checkpoint that holds only the trained tensors is useless without its base model."""
        return self.saves == "trainable"

    # ----------------------------------------------------------------------- from a config, no model built
    def model_config(self, config, args):
        """The config the method's model is built with: ``config`` with :meth:`config_overrides` applied."""
        overrides = self.config_overrides(args)
        if not overrides:
            return config
        fields = config.to_dict()
        fields.update(overrides)
        return type(config)(**{k: v for k, v in fields.items() if k not in ("transformers_version", "architectures")})

    def trained_parameters(self, shapes: dict[str, tuple[int, ...]], args) -> set[str]:
        """The names among the model's parameters ``shapes`` that train (``all``: every one)."""
        return set(shapes)

    def adapters(self, shapes: dict[str, tuple[int, ...]], args) -> dict[str, dict[str, tuple[int, ...]]]:
        """The tensors the method adds beside the model's own: module -> {tensor name: shape} (none by default)."""
        return {}

    def trainable_shapes(self, shapes: dict[str, tuple[int, ...]], args) -> dict[str, tuple[int, ...]]:
        """Everything that trains, name -> shape: the trained parameters, then the added tensors."""
        trained = self.trained_parameters(shapes, args)
        out = {n: s for n, s in shapes.items() if n in trained}
        for tensors in self.adapters(shapes, args).values():
            out.update(tensors)
        return out

    def activation_layers(self, config, shapes: dict[str, tuple[int, ...]], args) -> dict[str, Any]:
        """Which layers keep activations for backward: :func:`glmlab.memory.activation_bytes`' ``layers``,
        ``trained_layers`` and ``trained_linears`` (every layer trains every linear layer by default)."""
        return {"layers": config.num_layers}

    def config_overrides(self, args) -> dict[str, Any]:
        """Config fields to load the base model with (none by default)."""
        return {}

    def check(self, args, names: Sequence[str]) -> None:
        """Raise ``ValueError`` when ``args`` target nothing among the checkpoint's tensor ``names``."""
        _refuse_quantized(self.name, names)

    def prepare(self, model, args):
        """Return ``model`` ready to train: every parameter trainable (the ``all`` method)."""
        _refuse_quantized(self.name, list(model.state_dict()))
        model.requires_grad_(True)
        return model

    def describe(self, model) -> str:
        """``trainable params: N || all params: M || trainable%: P`` plus what is trained and saved."""
        trainable, total = count_parameters(model)
        return (f"{self.name}: trainable params: {trainable:,} || all params: {total:,} || "
                f"trainable%: {100 * trainable / max(total, 1):.4f} || saves: {self.saves_what}")

    @property
    def saves_what(self) -> str:
        return "the full model (HF format)"

    def save(self, model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
        """Write the weights the method needs (``state_dict``: gathered by the caller) and the tokenizer."""
        model.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))

    # ----------------------------------------------------------------------- its checkpoints, for inference
    def check_saved(self, path: Path, kind: str | None = None) -> None:
        """Raise ``CheckpointError`` when the folder ``path`` lacks what :meth:`save` writes (no weight is read).

        ``kind`` names the folder in the message (default: the method; ``"model"`` for a plain model folder).
        """
        from glmlab.loading import CheckpointError

        kind = kind or self.name
        _require_files(path, ["config.json"], kind)
        if not (any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))):
            raise CheckpointError(f"{path}: {kind} checkpoint has no weights (*.safetensors or pytorch_model*.bin)")

    def load(self, info, *, mode: str, dtype, device, quantization_bit: int | None, merge_lora: bool = False):
        """The model of the checkpoint ``info`` (:class:`glmlab.checkpoint.CheckpointInfo`): a full model loads on its own."""
        from glmlab.loading import load_model

        return load_model(str(info.path), mode=mode, dtype=dtype, device=device, quantization_bit=quantization_bit)


class FullStrategy(Strategy):
    """``all``: every parameter is trained; the full model is saved."""

    name = "all"
    pipelines = True


class FreezeStrategy(Strategy):
    """``freeze``: only parameters matching ``--freeze_module_name`` are trained; the full model is saved."""

    name = "freeze"

    def trained_parameters(self, shapes: dict[str, tuple[int, ...]], args) -> set[str]:
        """The parameters whose name contains a pattern of ``--freeze_module_name``."""
        return set().union(*match_patterns(freeze_patterns(args.freeze_module_name), shapes).values())

    def activation_layers(self, config, shapes: dict[str, tuple[int, ...]], args) -> dict[str, Any]:
        """The gradient flows from the top down to the lowest trained layer (all of them when the embedding trains)."""
        names = self.trained_parameters(shapes, args)
        if any("word_embeddings" in n for n in names):
            return {"layers": config.num_layers}
        indices = layer_indices(names)
        if not indices:
            return {"layers": 0}
        # The gradient flows from the top down to the lowest trained layer.
        return {"layers": config.num_layers - min(indices), "trained_layers": len(indices)}

    def check(self, args, names: Sequence[str]) -> None:
        _refuse_quantized(self.name, names)
        patterns = freeze_patterns(args.freeze_module_name)
        if not patterns:
            raise ValueError("--freeze_module_name is empty: name the parameters to train, e.g. 'layers.27.'")
        missing = _unmatched(match_patterns(patterns, names))
        if missing:
            layers = sorted(layer_indices(names))
            span = f"layers.0. .. layers.{layers[-1]}." if layers else _examples(list(names))
            raise ValueError(f"--freeze_module_name: {', '.join(repr(p) for p in missing)} {_verb(missing)} no parameter "
                             f"(this model has {span})")

    def prepare(self, model, args):
        _refuse_quantized(self.name, list(model.state_dict()))  # quantized weights are buffers
        self.check(args, [n for n, _ in model.named_parameters()])
        patterns = freeze_patterns(args.freeze_module_name)
        for name, param in model.named_parameters():
            param.requires_grad_(any(p in name for p in patterns))
        return model


class PTuningStrategy(Strategy):
    """``ptuning``: P-tuning v2; only the prefix encoder is trained and saved."""

    name = "ptuning"
    saves = "trainable"
    trains_base_weights = False
    marker_file = PREFIX_FILE
    file_name = PREFIX_FILE

    def trained_parameters(self, shapes: dict[str, tuple[int, ...]], args) -> set[str]:
        """The prefix encoder (in ``shapes`` of the :meth:`model_config`)."""
        return {n for n in shapes if n.startswith(PREFIX_ENCODER)}

    def activation_layers(self, config, shapes: dict[str, tuple[int, ...]], args) -> dict[str, Any]:
        """The gradient passes through every layer to the prefix; no layer's weights train."""
        return {"layers": config.num_layers, "trained_layers": 0, "trained_linears": ()}

    def check(self, args, names: Sequence[str]) -> None:
        """The prefix encoder is added at load time: any checkpoint, quantized or not, will do."""

    def variant(self, flags: Mapping[str, Any]) -> str:
        """``ptuning``, or ``ptuning_embedding`` without the projection (``prefix_projection`` false; ``glmlab
        train``'s default is the projection): the prefix's keys and values then train directly."""
        return self.name if flags.get("prefix_projection", True) else f"{self.name}_embedding"

    def config_overrides(self, args) -> dict[str, Any]:
        return {"pre_seq_len": args.pre_seq_len, "prefix_projection": bool(args.prefix_projection)}

    def prepare(self, model, args):
        found = False
        for name, param in model.named_parameters():
            is_prefix = name.startswith(PREFIX_ENCODER)
            param.requires_grad_(is_prefix)
            found |= is_prefix
        if not found:
            raise ValueError(f"ptuning: the model has no {PREFIX_ENCODER.rstrip('.')} (was it loaded with pre_seq_len?)")
        return model

    @property
    def saves_what(self) -> str:
        return f"{self.file_name} + config.json"

    def check_saved(self, path: Path, kind: str | None = None) -> None:
        """The prefix encoder's file, and a ``config.json`` with ``pre_seq_len`` to rebuild the model."""
        from glmlab.json_files import read_json_object
        from glmlab.loading import CheckpointError

        _require_files(path, [PREFIX_FILE, "config.json"], self.name)
        config = read_json_object(path / "config.json")
        if not config.get("pre_seq_len"):
            raise CheckpointError(f"{path / 'config.json'}: a ptuning checkpoint needs pre_seq_len > 0")

    def load(self, info, *, mode: str, dtype, device, quantization_bit: int | None, merge_lora: bool = False):
        """The base, loaded with a prefix encoder of the saved shape, and the trained encoder put in."""
        import torch

        from glmlab.json_files import read_json_object
        from glmlab.loading import load_model

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
        return model

    def save(self, model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        if state_dict is None:
            state_dict = {n: p for n, p in model.named_parameters() if p.requires_grad}
        prefix = {n: t.detach().float().cpu().contiguous() for n, t in state_dict.items() if n.startswith(PREFIX_ENCODER)}
        if not prefix:
            raise ValueError(f"ptuning: nothing to save (no {PREFIX_ENCODER}* tensor in the state dict)")
        save_file(prefix, str(Path(out_dir) / self.file_name), metadata={"format": "pt"})
        model.config.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))


class LoraStrategy(Strategy):
    """``lora``: peft LoRA adapters on ``--lora_module_name``; the adapter folder is saved."""

    name = "lora"
    saves = "trainable"
    trains_base_weights = False
    marker_file = "adapter_config.json"
    mergeable = True

    def trained_parameters(self, shapes: dict[str, tuple[int, ...]], args) -> set[str]:
        """None of the model's own: the base is frozen."""
        return set()

    def adapters(self, shapes: dict[str, tuple[int, ...]], args) -> dict[str, dict[str, tuple[int, ...]]]:
        """peft's ``lora_A`` (r x in) and ``lora_B`` (out x r) for each module ``--lora_module_name`` matches."""
        adapted = set().union(*match_modules(split_names(args.lora_module_name), module_names(shapes)).values())
        out: dict[str, dict[str, tuple[int, ...]]] = {}
        for module in module_names(shapes):
            if module in adapted:
                rows, cols = shapes[module + ".weight"]
                out[module] = {f"{module}.lora_A.default.weight": (args.lora_dim, cols),
                               f"{module}.lora_B.default.weight": (rows, args.lora_dim)}
        return out

    def activation_layers(self, config, shapes: dict[str, tuple[int, ...]], args) -> dict[str, Any]:
        """Every layer; an adapted linear layer keeps its input (the adapter's gradient needs it)."""
        return {"layers": config.num_layers, "trained_linears": [t for t in split_names(args.lora_module_name) if t in LINEARS]}

    def check(self, args, names: Sequence[str]) -> None:
        targets = split_names(args.lora_module_name)
        if not targets:
            raise ValueError("--lora_module_name is empty: name the modules to adapt, e.g. 'query_key_value'")
        missing = _unmatched(match_modules(targets, module_names(names)))
        if missing:
            leaves = sorted({m.rpartition(".")[2] for m in module_names(names) if not m.rpartition(".")[2].isdigit()})
            raise ValueError(f"--lora_module_name: {', '.join(repr(t) for t in missing)} {_verb(missing)} no module "
                             f"(module names in this model: {', '.join(leaves)})")

    def lora_config(self, args):
        """The peft ``LoraConfig`` the flags describe (quantized layers adapted by glmlab's LoRA layer)."""
        from peft import LoraConfig

        from glmlab.quantized_lora import register_quantized_lora

        return register_quantized_lora(LoraConfig(
            r=args.lora_dim, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules=split_names(args.lora_module_name), bias="none", task_type="CAUSAL_LM", inference_mode=False))

    def prepare(self, model, args):
        from peft import get_peft_model

        self.check(args, list(model.state_dict()))  # buffers too: quantized weights are buffers
        return get_peft_model(model, self.lora_config(args))

    @property
    def saves_what(self) -> str:
        return "a peft adapter folder"

    def save(self, model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
        if state_dict is not None:
            state_dict = {n: t.detach().float().cpu() for n, t in state_dict.items()}
        model.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))

    def check_saved(self, path: Path, kind: str | None = None) -> None:
        """peft's adapter folder: ``adapter_config.json`` and the adapter's weights."""
        from glmlab.loading import CheckpointError

        _require_files(path, ["adapter_config.json"], self.name)
        if not any((path / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
            raise CheckpointError(f"{path}: lora checkpoint is missing adapter_model.safetensors")

    def load(self, info, *, mode: str, dtype, device, quantization_bit: int | None, merge_lora: bool = False):
        """The base with the adapter on it (peft; glmlab's LoRA layer on quantized layers), or merged into it."""
        from glmlab.loading import load_model
        from glmlab.quantization import dequantize
        from glmlab.quantized_lora import load_lora_adapter

        model = load_model(str(info.base), mode=mode, dtype=dtype, device=device, quantization_bit=quantization_bit)
        if merge_lora:  # an int weight cannot hold W + BA: merge into the dequantized weights (no-op unquantized)
            model = dequantize(model)
        model = load_lora_adapter(model, info.path)  # peft, with glmlab's LoRA layer for quantized layers
        model = model.to(device=device, dtype=dtype)  # adapters are stored in fp32
        if merge_lora:
            model = model.merge_and_unload()
        return model


def _load_prefix_encoder(model: torch.nn.Module, path: Path) -> None:
    """Put the trained ``transformer.prefix_encoder.*`` tensors of ``path`` into ``model``, checking keys and shapes."""
    from safetensors.torch import load_file

    from glmlab.loading import CheckpointError

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


def _require_files(path: Path, names: Sequence[str], kind: str) -> None:
    from glmlab.loading import CheckpointError

    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: {kind} checkpoint is missing {', '.join(missing)}")


def _refuse_quantized(method: str, names: Sequence[str]) -> None:
    """``freeze`` / ``all`` train the base's weights: refuse a checkpoint whose layers are quantized."""
    scales = [n for n in names if n.endswith(".weight_scale")]
    if scales:
        raise ValueError(f"--train_type {method}: the base checkpoint is quantized ({scales[0]} ...), and {method} would "
                         "train the quantized weights; use a 16/32-bit base, or --train_type lora / ptuning")


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (FreezeStrategy(), PTuningStrategy(), LoraStrategy(), FullStrategy())}


def get_strategy(train_type: str) -> Strategy:
    """The strategy of ``--train_type`` (``freeze``, ``ptuning``, ``lora`` or ``all``)."""
    try:
        return STRATEGIES[train_type]
    except KeyError:
        raise ValueError(f"--train_type must be one of {', '.join(STRATEGIES)} (got {train_type!r})") from None
# A plain model folder (an official download, a merged LoRA): loaded and checked as a full checkpoint.
_PLAIN_MODEL = FullStrategy()


def checkpoint_strategy(kind: str) -> Strategy:
    """The strategy that wrote a checkpoint of ``kind`` (a ``train_type``, or ``"model"``: a plain model folder)."""
    return _PLAIN_MODEL if kind == "model" else get_strategy(kind)


def detect_kind(path: Path) -> str | None:
    """The method whose marker file the folder ``path`` holds (LoRA's ``adapter_config.json``, P-tuning's
    prefix encoder), for a folder without ``glmlab_checkpoint.json``; ``None`` when it holds none."""
    return next((s.name for s in STRATEGIES.values() if s.marker_file and (path / s.marker_file).is_file()), None)

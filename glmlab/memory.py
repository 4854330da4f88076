"""How much memory fine-tuning needs, per method, before you rent the GPUs.

    python -m glmlab.memory --mode glm2 --train_type lora --max_len 1560 --per_device_train_batch_size 1
    python -m glmlab.memory --mode glm --grid --num_gpus 4 --max_len 1560 --gpu_gib 24

Everything here is arithmetic on a :class:`~glmlab.models.configuration.ChatGLMConfig`; no
model is built. :func:`parameter_shapes` lists every tensor of the model under its official
name, so the counts are exact, and the methods' trainable sets are found with the same
matching rules the training strategies use (:mod:`glmlab.methods`). :func:`estimate_memory`
then adds up, per GPU, what DeepSpeed 0.19 allocates for the ZeRO settings of the DeepSpeed
config (:class:`ZeroSettings`, read from the shipped ``glmlab/configs/*.json`` or a
``--ds_file``). ``N`` below is ``num_gpus``, ``T`` the trainable parameters, ``w`` the
bytes of the training precision (2 in bf16/fp16, 4 in fp32). The file and line of
DeepSpeed each rule comes from are cited next to the code.

* **weights** -- every parameter in ``w`` bytes; under ``quantization_bit`` 8 (4) the
  weight matrices of ``query_key_value``, ``dense``, ``dense_h_to_4h`` and ``dense_4h_to_h``
  take 1 (1/2) byte per element plus one fp16 scale per output row, and one 16-bit
  dequantized copy of the largest of them lives while its layer runs. ZeRO-0/1/2 keep
  a full copy on every GPU. ZeRO-3 keeps ``1/N`` of every parameter (its partition), plus
  whole copies of the *persistent* ones (``stage3_param_persistence_threshold``: norms,
  biases); with ``offload_param`` the partitions live on the CPU.
* **gradients** -- the 16-bit gradients DeepSpeed stores: all of them for ZeRO-0/1, the
  partition (``T/N``) for ZeRO-2/3; on the CPU with ``offload_optimizer``.
* **optimizer** -- AdamW's two fp32 moments plus DeepSpeed's fp32 master copy: 12 bytes per
  trainable parameter (ZeRO-1/2/3 clone an fp32 master partition in fp32 training too; only
  ZeRO-0 in fp32 steps the parameters themselves: 8 bytes), ``/N`` from ZeRO-1 on; on the CPU
  with offload.
* **buckets** -- the gradient reduce bucket, ``reduce_bucket_size`` elements in ``w`` bytes
  (two with ``overlap_comm``): ZeRO-3 allocates it once at start-up, ZeRO-1/2 during each
  backward; ZeRO-2 adds the largest trainable tensor's whole gradient, made before it is
  copied into the bucket. ``allgather_bucket_size`` allocates nothing: the updated partitions
  are all-gathered in place into the flat 16-bit buffer.
* **zero3_working** (ZeRO-3 only) -- the parameters gathered whole at once, in 16 bits, found
  by replaying DeepSpeed's fetch/prefetch/release rules over the model's modules (forward,
  then backward, with the recompute of gradient checkpointing): the module running, the next
  ones prefetched up to ``stage3_prefetch_bucket_size`` elements while fewer than
  ``stage3_max_live_parameters`` are gathered, and those kept because they are used again
  within ``stage3_max_reuse_distance`` elements. For the ChatGLM models the peak is at the
  output layer (ChatGLM-6B: 150528 x 4096 = 616M parameters; ChatGLM2/3: 65024 x 4096),
  plus the whole 16-bit gradient of the largest trained module (the word embedding or the
  output layer under ``all``) before it is reduced into the partitions. Loading counts for
  nothing more: ``glmlab.train`` partitions the model tensor by tensor before DeepSpeed sees
  it (:func:`glmlab.train.partition_for_zero3`); handed the whole model, DeepSpeed would first
  put all of it on every GPU, 12.8 GiB for ChatGLM-6B in 16 bits.
* **activations** -- the tensors glmlab's models keep for the backward pass, counted per
  layer for 16-bit activations, ``s`` tokens, batch ``b``, width ``h``, feed-forward width
  ``f``, ``g`` key/value groups of ``d`` channels (ChatGLM2/3)::

      ChatGLM-6B:   layer_bytes = b * s * (18 h + 4 d + 4 f)      (d = h / heads)
                    # norms 2 x (in + out), QKV in, SDPA q k v out, dense in, 2D rotary
                    # tables; GELU in, dense_4h_to_h in
      ChatGLM2/3:   layer_bytes = b * s * (14 h + 4 g d + 8 f)
                    # norms 2 x (in + out), q, k and v (g groups), SDPA out, dense in;
                    # SwiGLU: its 2f-wide input, silu(gate), the product

  That is a layer whose weights train (``all``, the trained layers of ``freeze``). A frozen
  (or quantized) linear layer keeps no input, so a layer the gradient only passes through
  (every layer under ``ptuning``, the frozen layers above the lowest trained one under
  ``freeze``) keeps ``6 h + 2 f`` less, the inputs of its four linear layers; ``lora`` keeps
  the inputs of the layers it adapts (2h for ``query_key_value``). The ChatGLM-6B figure is
  Korthikanti et al. 2022's ("Reducing Activation Recomputation in Large Transformer
  Models") without dropout masks; ``tests/test_memory.py`` checks the formula against the
  tensors autograd really saves. SDPA keeps no ``s x s`` scores; ``attention_scores=True``
  adds ``5 * heads * s^2 * b`` for eager attention. fp32 activations count double. Only the
  layers gradients flow through keep activations (``freeze``: from the lowest trained layer
  up). With gradient checkpointing each layer keeps only its 16-bit input (``2 bsh`` bytes)
  and one layer's activations are rebuilt at a time.
* **logits** -- the loss is computed in fp32 whatever the training precision: at its
  backward the fp32 log-probabilities kept by ``log_softmax``, their gradient and the
  gradient of the logits coexist, ``12 * b * s * vocab`` bytes (measured on the CPU for bf16
  and fp32 logits: 3 x 4 bytes per logit above the 16-bit logits).
* **step** -- the optimizer step runs after the backward, when activations and logits are
  gone: DeepSpeed turns the gradient partition into fp32 (``T/N`` x 4 bytes; ZeRO-3 one
  ``sub_group_size`` sub-group at a time) and ``torch.optim.AdamW`` (foreach) makes one more
  fp32 temporary of the same size (``sqrt`` of the second moment). Not on the GPU with
  offload (DeepSpeed's CPU Adam steps on the CPU).

The peak per GPU is the static part (weights, gradients, optimizer, ZeRO-3's bucket) plus
the larger of the backward's transient part (activations, logits, ZeRO-3 working set,
ZeRO-1/2 bucket) and the step's: ``MemoryEstimate.peak_phase`` says which.
``tests/test_memory.py`` checks the weights, gradients, optimizer and bucket bytes against
the tensors DeepSpeed really allocates, for every method and ZeRO stage, on a tiny model.
Not counted: allocator fragmentation, the CUDA context (~0.5-1 GiB), NCCL buffers.
:func:`measure_peak_memory` measures what a function really used, to compare.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from glmlab.methods import (
    PREFIX_ENCODER,
    freeze_patterns,
    layer_indices,
    match_modules,
    match_patterns,
    module_names,
    split_names,
)
from glmlab.models.configuration import ChatGLMConfig

GIB = 1024**3
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
METHODS = ("freeze", "ptuning", "lora", "all")
DEFAULT_LORA_MODULES = "query_key_value"  # as the original LoRA command
QUANTIZATION_BITS = (0, 4, 8)
QUANTIZABLE_METHODS = ("lora", "ptuning")  # the frozen base is quantized; freeze and all train its weights
# The linear layers of a block (the ones quantization_bit stores in 8 or 4 bits), and the
# width of the input each keeps when its weights (or a LoRA adapter on it) train.
LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")

# The official config.json fields that decide the sizes (THUDM/chatglm-6b, chatglm2-6b, chatglm3-6b).
PRESETS: dict[str, dict[str, Any]] = {
    "glm": {"vocab_size": 150528, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
            "inner_hidden_size": 16384, "max_sequence_length": 2048, "position_encoding_2d": True},
    "glm2": {"padded_vocab_size": 65024, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
             "ffn_hidden_size": 13696, "kv_channels": 128, "multi_query_attention": True, "multi_query_group_num": 2,
             "add_qkv_bias": True, "add_bias_linear": False, "seq_length": 32768},
    "glm3": {"padded_vocab_size": 65024, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
             "ffn_hidden_size": 13696, "kv_channels": 128, "multi_query_attention": True, "multi_query_group_num": 2,
             "add_qkv_bias": True, "add_bias_linear": False, "seq_length": 8192},
}


def preset_config(mode: str) -> ChatGLMConfig:
    """The config of the official 6B checkpoint of ``mode`` (``glm``, ``glm2``, ``glm3``)."""
    if mode not in PRESETS:
        raise ValueError(f"mode must be one of {', '.join(PRESETS)} (got {mode!r})")
    return ChatGLMConfig(**PRESETS[mode])


# --------------------------------------------------------------------------- parameters
def parameter_shapes(config: ChatGLMConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model ``config`` describes, by official name -> shape.

    Includes ``transformer.prefix_encoder.*`` when ``config.pre_seq_len`` is set.
    """
    h, n = config.hidden_size, config.num_layers
    shapes: dict[str, tuple[int, ...]] = {}
    if config.architecture == "glm":
        f, v = config.inner_hidden_size, config.vocab_size
        shapes["transformer.word_embeddings.weight"] = (v, h)
        for i in range(n):
            p = f"transformer.layers.{i}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (h,)
            for name, (out, inp) in (("attention.query_key_value", (3 * h, h)), ("attention.dense", (h, h)),
                                     ("mlp.dense_h_to_4h", (f, h)), ("mlp.dense_4h_to_h", (h, f))):
                shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (out, inp), (out,)
        shapes["transformer.final_layernorm.weight"] = shapes["transformer.final_layernorm.bias"] = (h,)
        shapes["lm_head.weight"] = (v, h)  # untied from the embeddings, as the checkpoint stores it
        kv_size, embed_dim = n * h * 2, h
    else:
        f, v, d = config.ffn_hidden_size, config.padded_vocab_size, config.kv_channels
        heads = config.num_attention_heads
        kv_heads = config.multi_query_group_num if config.multi_query_attention else heads
        qkv = heads * d + 2 * kv_heads * d
        shapes["transformer.embedding.word_embeddings.weight"] = (v, h)
        norm_bias = not config.rmsnorm  # RMSNorm has a weight only
        for i in range(n):
            p = f"transformer.encoder.layers.{i}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                shapes[p + norm + ".weight"] = (h,)
                if norm_bias:
                    shapes[p + norm + ".bias"] = (h,)
            linears = (("self_attention.query_key_value", (qkv, h), config.add_bias_linear or config.add_qkv_bias),
                       ("self_attention.dense", (h, heads * d), config.add_bias_linear),
                       ("mlp.dense_h_to_4h", (2 * f, h), config.add_bias_linear),
                       ("mlp.dense_4h_to_h", (h, f), config.add_bias_linear))
            for name, shape, bias in linears:
                shapes[p + name + ".weight"] = shape
                if bias:
                    shapes[p + name + ".bias"] = (shape[0],)
        if config.post_layer_norm:
            shapes["transformer.encoder.final_layernorm.weight"] = (h,)
            if norm_bias:
                shapes["transformer.encoder.final_layernorm.bias"] = (h,)
        shapes["transformer.output_layer.weight"] = (v, h)
        kv_size = n * d * config.multi_query_group_num * 2
        embed_dim = kv_size
    if config.pre_seq_len:
        shapes.update(prefix_encoder_shapes(config.pre_seq_len, kv_size, bool(config.prefix_projection), embed_dim, h))
    return shapes


def prefix_encoder_shapes(pre_seq_len: int, kv_size: int, projection: bool, embed_dim: int,
                          hidden_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the P-tuning v2 prefix encoder (:class:`glmlab.models.prefix.PrefixEncoder`)."""
    p = PREFIX_ENCODER
    if not projection:
        return {p + "embedding.weight": (pre_seq_len, kv_size)}
    return {p + "embedding.weight": (pre_seq_len, embed_dim),
            p + "trans.0.weight": (hidden_size, embed_dim), p + "trans.0.bias": (hidden_size,),
            p + "trans.2.weight": (kv_size, hidden_size), p + "trans.2.bias": (kv_size,)}


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def count_parameters(config: ChatGLMConfig) -> int:
    """Total parameter count of the model ``config`` describes (ChatGLM2/3-6B: 6,243,584,000)."""
    return sum(_numel(s) for s in parameter_shapes(config).values())


def _with_prefix(config: ChatGLMConfig, pre_seq_len: int, prefix_projection: bool) -> ChatGLMConfig:
    fields = config.to_dict()
    fields.update(pre_seq_len=pre_seq_len, prefix_projection=prefix_projection)
    return ChatGLMConfig(**{k: v for k, v in fields.items() if k not in ("transformers_version", "architectures")})


def _freeze_matches(config: ChatGLMConfig, shapes: dict[str, tuple[int, ...]], freeze_module_name: str | None) -> set[str]:
    """The parameters ``freeze`` trains: names containing a pattern (default: the last layer)."""
    patterns = freeze_patterns(freeze_module_name or f"layers.{config.num_layers - 1}.")
    return set().union(*match_patterns(patterns, shapes).values())


def trainable_parameters(
    config: ChatGLMConfig,
    method: str,
    *,
    freeze_module_name: str | None = None,
    pre_seq_len: int = 16,
    prefix_projection: bool = True,
    lora_dim: int = 8,
    lora_module_name: str = DEFAULT_LORA_MODULES,
) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``method`` on ``config``, as the strategies set them up.

    ``freeze``: parameters whose name contains a pattern of ``freeze_module_name`` (default: the
    last layer). ``ptuning``: the prefix encoder only (the total includes it). ``lora``: ``r * (in + out)``
    per adapted linear layer (peft's A and B; the total includes them). ``all``: everything.
    """
    shapes = parameter_shapes(config)
    total = sum(_numel(s) for s in shapes.values())
    if method == "all":
        return total, total
    if method == "freeze":
        return sum(_numel(shapes[n]) for n in _freeze_matches(config, shapes, freeze_module_name)), total
    if method == "ptuning":
        prefixed = parameter_shapes(_with_prefix(config, pre_seq_len, prefix_projection))
        total = sum(_numel(s) for s in prefixed.values())
        return sum(_numel(s) for n, s in prefixed.items() if n.startswith(PREFIX_ENCODER)), total
    if method == "lora":
        modules = match_modules(split_names(lora_module_name), module_names(shapes))
        adapted = set().union(*modules.values())
        lora = sum(lora_dim * (shapes[m + ".weight"][0] + shapes[m + ".weight"][1]) for m in adapted)
        return lora, total + lora
    raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")


# --------------------------------------------------------------------------- DeepSpeed settings
SHIPPED_CONFIGS = {(2, False): "ds_zero2_no_offload.json", (2, True): "ds_zero2_offload.json",
                   (3, False): "ds_zero3_no_offload.json", (3, True): "ds_zero3_offload.json"}


@dataclass(frozen=True)
class ZeroSettings:
    """The ZeRO settings of a DeepSpeed config that decide memory, with DeepSpeed 0.19's defaults.

    Defaults from ``deepspeed/runtime/zero/config.py`` (``DeepSpeedZeroConfig``): buckets of
    5e8 elements, ``overlap_comm`` on for stage 3 only (``overlap_comm_valid``), prefetch
    5e7, persistence threshold 1e5, live parameters and reuse distance 1e9, sub-groups 1e9.
    """

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    prefetch_bucket_size: int = 50_000_000
    param_persistence_threshold: int = 100_000
    max_live_parameters: int = 1_000_000_000
    max_reuse_distance: int = 1_000_000_000
    sub_group_size: int = 1_000_000_000

    @property
    def offload(self) -> bool:
        return self.offload_optimizer or self.offload_param

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ZeroSettings:
        """Read ``config["zero_optimization"]`` (DeepSpeed's key names, ``stage3_`` prefixes included)."""
        # DeepSpeed's config models drop every "auto" value and use their default instead
        # (runtime/config_utils.py, DeepSpeedConfigModel): an offload "device": "auto" is no offload.
        zero = {k: v for k, v in (config.get("zero_optimization", {}) or {}).items() if v != "auto"}
        stage = int(zero.get("stage", 0))
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_optimization.stage must be 0, 1, 2 or 3 (got {stage})")

        def on_cpu(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")).lower() not in ("none", "auto", "")

        def number(key: str, default: int) -> int:
            value = zero.get(f"stage3_{key}", zero.get(key, default))
            return int(float(value))

        defaults = cls()
        overlap = zero.get("overlap_comm")
        return cls(stage=stage, offload_optimizer=on_cpu("offload_optimizer"), offload_param=on_cpu("offload_param"),
                   reduce_bucket_size=number("reduce_bucket_size", defaults.reduce_bucket_size),
                   allgather_bucket_size=number("allgather_bucket_size", defaults.allgather_bucket_size),
                   overlap_comm=stage == 3 if overlap is None else bool(overlap),
                   contiguous_gradients=bool(zero.get("contiguous_gradients", True)),
                   prefetch_bucket_size=number("prefetch_bucket_size", defaults.prefetch_bucket_size),
                   param_persistence_threshold=number("param_persistence_threshold",
                                                      defaults.param_persistence_threshold),
                   max_live_parameters=number("max_live_parameters", defaults.max_live_parameters),
                   max_reuse_distance=number("max_reuse_distance", defaults.max_reuse_distance),
                   sub_group_size=number("sub_group_size", defaults.sub_group_size))

    @classmethod
    def shipped(cls, stage: int, offload: bool = False) -> ZeroSettings:
        """The settings of glmlab's shipped config for ``stage`` 2/3 (DeepSpeed's defaults for 0/1)."""
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3 (got {stage})")
        return _shipped(stage, bool(offload))


@functools.cache
def _shipped(stage: int, offload: bool) -> ZeroSettings:
    if stage in (2, 3):
        return ZeroSettings.from_config(read_ds_config(SHIPPED_CONFIGS[(stage, offload)]))
    return ZeroSettings(stage=stage, offload_optimizer=offload)


def read_ds_config(ds_file: str | Path | dict) -> dict[str, Any]:
    """A DeepSpeed config: a dict as it is, else ``--ds_file``'s path or shipped name, parsed."""
    if isinstance(ds_file, dict):
        return ds_file
    from glmlab.args import resolve_ds_file

    path = resolve_ds_file(str(ds_file))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--ds_file {path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--ds_file {path}: expected a JSON object")  # noqa: TRY004 (one error type for the CLI)
    return config


# --------------------------------------------------------------------------- tensors as trained
@dataclass(frozen=True)
class Tensor:
    """One parameter as training holds it: stored elements and bytes (quantized or not), trained or not."""

    name: str
    numel: int
    nbytes: int
    trainable: bool

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]


def _is_quantized(name: str) -> bool:
    """The weight matrices ``quantization_bit`` stores in 8/4 bits (biases, norms, embeddings stay 16-bit)."""
    parts = name.split(".")
    return "layers" in parts and parts[-1] == "weight" and parts[-2] in LINEARS


def quantized_weight_bytes(shape: Sequence[int], bits: int) -> tuple[int, int]:
    """``(stored elements, bytes)`` of a quantized ``(out, in)`` weight and its fp16 scales.

    8 bits: one int8 per weight; 4 bits: two weights packed per int8 byte; plus one fp16
    ``weight_scale`` per output row (official ``quantization.py`` layout).
    """
    out, inp = shape
    packed = out * inp * bits // 8
    return packed + out, packed + 2 * out


def method_tensors(config: ChatGLMConfig, method: str, *, width: int = 2, quantization_bit: int = 0,
                   **method_args: Any) -> list[Tensor]:
    """Every parameter of ``method``'s model in forward order, as DeepSpeed sees it.

    The prefix encoder (``ptuning``) runs right after the word embedding; a LoRA adapter's
    ``lora_A``/``lora_B`` follow the layer they adapt (peft names them
    ``<module>.lora_A.default.weight``; the frozen weight becomes ``<module>.base_layer.weight``).
    Quantized weights count their packed elements and their scales as one tensor each.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if method == "ptuning":
        config = _with_prefix(config, method_args.get("pre_seq_len", 16), method_args.get("prefix_projection", True))
    shapes = parameter_shapes(config)
    trained: set[str] = set(shapes) if method == "all" else set()
    adapted: set[str] = set()
    if method == "freeze":
        trained = _freeze_matches(config, shapes, method_args.get("freeze_module_name"))
    elif method == "ptuning":
        trained = {n for n in shapes if n.startswith(PREFIX_ENCODER)}
    elif method == "lora":
        targets = split_names(method_args.get("lora_module_name") or DEFAULT_LORA_MODULES)
        adapted = set().union(*match_modules(targets, module_names(shapes)).values())
    rank = method_args.get("lora_dim", 8)
    prefix = [n for n in shapes if n.startswith(PREFIX_ENCODER)]
    order = [n for n in shapes if not n.startswith(PREFIX_ENCODER)]
    order[1:1] = prefix  # after the word embedding
    tensors: list[Tensor] = []
    for name in order:
        shape = shapes[name]
        module, _, leaf = name.rpartition(".")
        stored = f"{module}.base_layer.{leaf}" if module in adapted else name
        if quantization_bit and _is_quantized(name):
            numel, nbytes = quantized_weight_bytes(shape, quantization_bit)
            tensors.append(Tensor(stored, numel - shape[0], nbytes - 2 * shape[0], False))
            tensors.append(Tensor(stored + "_scale", shape[0], 2 * shape[0], False))
        else:
            tensors.append(Tensor(stored, _numel(shape), _numel(shape) * width, name in trained))
        if module in adapted and leaf == "weight":
            out, inp = shape
            tensors.append(Tensor(f"{module}.lora_A.default.weight", rank * inp, rank * inp * width, True))
            tensors.append(Tensor(f"{module}.lora_B.default.weight", out * rank, out * rank * width, True))
    return tensors


def _module_units(tensors: Sequence[Tensor], persistent: int) -> list[tuple[str, int, int, int]]:
    """Modules in forward order as ``(name, numel, bytes, trained numel)`` of their non-persistent parameters.

    DeepSpeed gathers and releases the parameters a module owns directly (``iter_params(module,
    recurse=False)`` in ``partitioned_param_coordinator.py``); parameters of at most ``persistent``
    elements stay gathered for good (``mark_persistent_parameters`` in ``parameter_offload.py``).
    """
    units: dict[str, list[int]] = {}
    for t in tensors:
        unit = units.setdefault(t.module, [0, 0, 0])
        if t.numel > persistent:
            unit[0] += t.numel
            unit[1] += t.nbytes
        unit[2] += t.numel if t.trainable else 0
    return [(name, *values) for name, values in units.items()]


def _layer_of(module: str) -> int | None:
    found = layer_indices([module + "."])
    return next(iter(found)) if found else None


def zero3_trace(tensors: Sequence[Tensor], gradient_checkpointing: bool, persistent: int) -> tuple[list, list[int]]:
    """``(units, trace)``: the modules and the order one training step uses them in (forward, backward).

    The backward runs from the output layer down to the first module holding a trained
    parameter (nothing below it needs a gradient). With gradient checkpointing, each layer's
    backward first runs its forward again (the recompute gathers its parameters again).
    """
    units = _module_units(tensors, persistent)
    forward = list(range(len(units)))
    first = next((i for i, u in enumerate(units) if u[3]), len(units))
    backward: list[int] = []
    i = len(units) - 1
    while i >= first:
        layer = _layer_of(units[i][0])
        if not gradient_checkpointing or layer is None:
            backward.append(i)
            i -= 1
            continue
        block = [j for j in forward if _layer_of(units[j][0]) == layer]
        backward += block + [j for j in reversed(block) if j >= first]
        i = block[0] - 1
    return units, forward + backward


def zero3_gathered_bytes(tensors: Sequence[Tensor], settings: ZeroSettings, gradient_checkpointing: bool) -> int:
    """Peak bytes of parameters gathered whole at once under ZeRO-3, replaying DeepSpeed's coordinator.

    Per module of the trace (``partitioned_param_coordinator.py``, after the first step has
    recorded the trace): ``fetch_sub_module`` gathers the module, then prefetches the next
    modules not yet gathered until ``min(stage3_prefetch_bucket_size, stage3_max_live_parameters
    - gathered)`` elements are in flight (whole parameters: the last one may overshoot);
    ``release_sub_module`` frees the module unless ``__params_to_release`` finds it again within
    ``stage3_max_reuse_distance`` elements of the modules that follow, or a prefetch already
    passed over its next use.
    """
    units, trace = zero3_trace(tensors, gradient_checkpointing, settings.param_persistence_threshold)
    numel = [u[1] for u in units]
    nbytes = [u[2] for u in units]
    # next_use[k]: the next trace position of the module at k; cum[k]: elements of the trace before k
    next_use, seen = [len(trace)] * len(trace), {}
    for k in range(len(trace) - 1, -1, -1):
        next_use[k] = seen.get(trace[k], len(trace))
        seen[trace[k]] = k
    cum = [0]
    for unit in trace:
        cum.append(cum[-1] + numel[unit])
    gathered: set[int] = set()
    live = held = peak = 0
    queue = 0  # the next trace position the prefetcher has not looked at
    fetched_for: dict[int, int] = {}
    for step, unit in enumerate(trace):
        if unit not in gathered and numel[unit]:
            gathered.add(unit)
            live, held = live + numel[unit], held + nbytes[unit]
        queue = max(queue, step + 1)
        fetched_for[unit] = max(fetched_for.get(unit, -1), step)
        budget, prefetching, chosen = min(settings.max_live_parameters - live, settings.prefetch_bucket_size), 0, []
        while queue < len(trace) and prefetching < budget:
            nxt = trace[queue]
            fetched_for[nxt] = max(fetched_for.get(nxt, -1), queue)
            if nxt not in gathered and nxt not in chosen and numel[nxt]:
                chosen.append(nxt)
                prefetching += numel[nxt]
            queue += 1
        for nxt in chosen:
            gathered.add(nxt)
            live, held = live + numel[nxt], held + nbytes[nxt]
        peak = max(peak, held)
        if unit not in gathered or fetched_for[unit] > step:
            continue
        # the next use is reached when fewer than max_reuse_distance elements come before it
        later = next_use[step]
        if later < len(trace) and cum[later] - cum[step + 1] < settings.max_reuse_distance:
            continue
        gathered.discard(unit)
        live, held = live - numel[unit], held - nbytes[unit]
    return peak


def largest_module_gradient(tensors: Sequence[Tensor]) -> int:
    """Elements of the largest set of trained parameters one module owns (its whole gradient exists at once)."""
    per_module: dict[str, int] = {}
    for t in tensors:
        if t.trainable:
            per_module[t.module] = per_module.get(t.module, 0) + t.numel
    return max(per_module.values(), default=0)


# --------------------------------------------------------------------------- activations
def layer_activation_bytes(config: ChatGLMConfig, batch_size: int, seq_len: int,
                           trained_linears: Sequence[str] = LINEARS) -> int:
    """16-bit bytes one layer keeps for backward when the gradient flows through it.

    ``trained_linears``: the linear layers (of :data:`LINEARS`) whose weights or LoRA
    adapters train; ``()`` for a layer the gradient only passes through (P-tuning, or a
    frozen layer above the trained ones).
    """
    h, b, s = config.hidden_size, batch_size, seq_len
    if config.architecture == "glm":
        f = config.inner_hidden_size
        d = h // config.num_attention_heads
        # norm inputs 2 x 2h, SDPA q k v out 8h, the layer's 2D rotary tables 4d; GELU input 2f
        kept = 12 * h + 4 * d + 2 * f
    else:
        f = config.ffn_hidden_size
        groups = config.multi_query_group_num if config.multi_query_attention else config.num_attention_heads
        kv_channels = config.kv_channels or h // config.num_attention_heads
        # norm inputs 2 x 2h, q 2h + k v 4gd, SDPA out 2h; SwiGLU input 4f, silu(gate) 2f
        kept = 8 * h + 4 * groups * kv_channels + 6 * f
    inputs = {"query_key_value": 2 * h, "dense": 2 * h, "dense_h_to_4h": 2 * h, "dense_4h_to_h": 2 * f}
    kept += sum(inputs[name] for name in set(trained_linears) & set(inputs))
    return b * s * kept


def activation_bytes(
    config: ChatGLMConfig,
    batch_size: int,
    seq_len: int,
    layers: int | None = None,
    precision: str = "bf16",
    gradient_checkpointing: bool = False,
    attention_scores: bool = False,
    trained_layers: int | None = None,
    trained_linears: Sequence[str] = LINEARS,
    logits: bool = True,
) -> float:
    """Activation bytes kept for the backward pass through ``layers`` layers (default: all), plus the logits.

    ``trained_layers`` of them (default: all ``layers``) train ``trained_linears``; the
    others only pass the gradient on. ``logits``: add :func:`logits_bytes`. See the module
    docstring for the formula.
    """
    b, s = batch_size, seq_len
    layers = config.num_layers if layers is None else layers
    trained_layers = layers if trained_layers is None else min(trained_layers, layers)
    trained = layer_activation_bytes(config, b, s, trained_linears)
    passing = layer_activation_bytes(config, b, s, ())
    scores = 5 * config.num_attention_heads * s * s * b if attention_scores else 0
    scale = BYTES[precision] / 2  # the formula counts 16-bit activations
    if gradient_checkpointing:  # each layer's input, and one layer rebuilt at a time
        rebuilt = (trained if trained_layers else passing) + scores if layers else 0
        kept = layers * 2 * b * s * config.hidden_size + rebuilt
    else:
        kept = trained_layers * trained + (layers - trained_layers) * passing + layers * scores
    return kept * scale + (logits_bytes(config, b, s) if logits else 0)


def logits_bytes(config: ChatGLMConfig, batch_size: int, seq_len: int) -> int:
    """Bytes of the loss's fp32 tensors at its backward: log-probabilities, their gradient, the logits' gradient."""
    vocab = config.vocab_size if config.architecture == "glm" else config.padded_vocab_size
    return 12 * batch_size * seq_len * vocab


def _activation_layers(config: ChatGLMConfig, method: str, method_args: dict[str, Any]) -> dict[str, Any]:
    """:func:`activation_bytes`' ``layers``, ``trained_layers`` and ``trained_linears`` for ``method``."""
    if method == "all":
        return {"layers": config.num_layers}
    if method == "ptuning":
        return {"layers": config.num_layers, "trained_layers": 0, "trained_linears": ()}
    if method == "lora":
        targets = split_names(method_args.get("lora_module_name") or DEFAULT_LORA_MODULES)
        return {"layers": config.num_layers, "trained_linears": [t for t in targets if t in LINEARS]}
    names = _freeze_matches(config, parameter_shapes(config), method_args.get("freeze_module_name"))
    if any("word_embeddings" in n for n in names):
        return {"layers": config.num_layers}
    indices = layer_indices(names)
    if not indices:
        return {"layers": 0}
    # The gradient flows from the top down to the lowest trained layer.
    return {"layers": config.num_layers - min(indices), "trained_layers": len(indices)}


# --------------------------------------------------------------------------- memory
PARTS = ("weights", "gradients", "optimizer", "buckets", "zero3_working", "activations", "logits", "step")


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated training memory of one configuration: bytes per GPU (``cpu``: per process, on the host).

    The parts are those of the module docstring; ``*_gib`` give each in GiB. The peak is
    ``weights + gradients + optimizer + static buckets`` plus the larger of the backward's
    transient part and the step's (``peak_phase``).
    """

    method: str
    precision: str
    zero_stage: int
    num_gpus: int
    offload: bool
    gradient_checkpointing: bool
    quantization_bit: int
    total_params: int
    trainable_params: int
    weights: int
    gradients: int
    optimizer: int
    buckets: int
    zero3_working: int
    activations: int
    logits: int
    step: int
    cpu: int
    static_buckets: bool = field(default=False, repr=False)  # ZeRO-3 allocates its bucket once, for good

    @property
    def backward_transient(self) -> int:
        return self.activations + self.logits + self.zero3_working + (0 if self.static_buckets else self.buckets)

    @property
    def peak_phase(self) -> str:
        """``"backward"`` or ``"optimizer step"``: when the peak is reached."""
        return "backward" if self.backward_transient >= self.step else "optimizer step"

    @property
    def total(self) -> int:
        """Peak bytes per GPU."""
        static = self.weights + self.gradients + self.optimizer + (self.buckets if self.static_buckets else 0)
        return static + max(self.backward_transient, self.step)

    def __getattr__(self, name: str) -> float:  # weights_gib, ..., gpu_gib, cpu_gib
        if name.endswith("_gib"):
            part = {"gpu": "total"}.get(name[:-4], name[:-4])
            if part in PARTS or part in ("total", "cpu"):
                return getattr(self, part) / GIB
        raise AttributeError(name)

    def as_dict(self) -> dict:
        """Plain dict, for tables and JSON: the bytes, each part in GiB, ``gpu_gib``, ``cpu_gib``, ``peak_phase``."""
        out = {k: v for k, v in asdict(self).items() if k != "static_buckets"}
        out.update({f"{p}_gib": getattr(self, p) / GIB for p in PARTS})
        out.update(total=self.total, gpu_gib=self.total / GIB, cpu_gib=self.cpu / GIB, peak_phase=self.peak_phase)
        return out


def _check_quantization(method: str, quantization_bit: int) -> None:
    if quantization_bit not in QUANTIZATION_BITS:
        raise ValueError(f"--quantization_bit must be 0, 4 or 8 (got {quantization_bit})")
    if quantization_bit and method not in QUANTIZABLE_METHODS:
        raise ValueError(f"--quantization_bit {quantization_bit} needs --train_type lora or ptuning (a quantized "
                         f"base is frozen; {method} trains its weights)")


def zero_settings(zero_stage: int | None = None, offload: bool | None = None,
                  ds_config: str | Path | dict | None = None) -> ZeroSettings:
    """The ZeRO settings of ``ds_config`` (a dict, path or shipped name), else of the shipped config for
    ``zero_stage`` (default 2) and ``offload``; a ``zero_stage``/``offload`` that contradicts ``ds_config`` is an error."""
    if ds_config is None:
        return ZeroSettings.shipped(2 if zero_stage is None else zero_stage, bool(offload))
    settings = ZeroSettings.from_config(read_ds_config(ds_config))
    if zero_stage is not None and zero_stage != settings.stage:
        raise ValueError(f"zero_stage {zero_stage} contradicts the DeepSpeed config (stage {settings.stage})")
    if offload is not None and bool(offload) != settings.offload:
        raise ValueError(f"offload={offload} contradicts the DeepSpeed config (offload {settings.offload})")
    return settings


def estimate_memory(
    config: ChatGLMConfig,
    method: str,
    *,
    precision: str = "bf16",
    zero_stage: int | None = None,
    num_gpus: int = 1,
    offload: bool | None = None,
    batch_size: int = 1,
    seq_len: int = 768,
    gradient_checkpointing: bool = False,
    attention_scores: bool = False,
    quantization_bit: int = 0,
    ds_config: str | Path | dict | None = None,
    **method_args: Any,
) -> MemoryEstimate:
    """Estimated training memory per GPU of ``method`` on ``config`` (see the module docstring).

    ``method_args`` are :func:`trainable_parameters`' keywords (``freeze_module_name``,
    ``pre_seq_len``, ``prefix_projection``, ``lora_dim``, ``lora_module_name``). The ZeRO
    settings come from ``ds_config`` (a DeepSpeed config dict, a path or a shipped name such
    as ``ds_zero3_offload.json``), else from the shipped config of ``zero_stage`` (default 2)
    and ``offload`` (DeepSpeed's defaults for stages 0 and 1). ``quantization_bit`` 4 or 8:
    the frozen base's linear weights quantized (``lora`` and ``ptuning`` only).
    """
    if precision not in BYTES:
        raise ValueError(f"precision must be one of {', '.join(BYTES)} (got {precision!r})")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be at least 1 (got {num_gpus})")
    _check_quantization(method, quantization_bit)
    zero = zero_settings(zero_stage, offload, ds_config)
    stage, n, w = zero.stage, num_gpus, BYTES[precision]
    tensors = method_tensors(config, method, width=w, quantization_bit=quantization_bit, **method_args)
    trainable, total = trainable_parameters(config, method, **method_args)
    assert trainable == sum(t.numel for t in tensors if t.trainable)  # one count, two routes

    # weights: a full copy (ZeRO-0/1/2), or the 1/N partition of each parameter (ceil, as
    # partition_parameters.py pads) plus whole persistent ones (ZeRO-3; on the CPU with offload_param).
    weights = sum(t.nbytes for t in tensors)
    cpu = 0
    if stage == 3:
        partitions = sum(math.ceil(t.numel / n) * (t.nbytes // t.numel) for t in tensors)
        persistent = sum(t.nbytes for t in tensors if t.numel <= zero.param_persistence_threshold)
        weights = persistent + (0 if zero.offload_param else partitions)
        cpu += partitions if zero.offload_param else 0
    if quantization_bit:  # one dequantized 16-bit matrix while its layer runs
        weights += 2 * max(_numel(s) for name, s in parameter_shapes(config).items() if _is_quantized(name))

    shard = math.ceil(trainable / n)
    own = shard if stage >= 1 else trainable  # the optimizer's share
    # 16-bit gradients: on the parameters (ZeRO-0/1), the partition (stage_1_and_2.py grads_in_partition,
    # stage3.py grad_partitions_flat_buffer, in the model's dtype), on the CPU with offload_optimizer.
    gradients = (shard if stage >= 2 else trainable) * w
    # fp32 master (stage_1_and_2.py single_partition_of_fp32_groups, stage3.py fp32_partitioned_groups_flat:
    # a clone even in fp32) and AdamW's exp_avg, exp_avg_sq; ZeRO-0 in fp32 steps the parameters themselves.
    optimizer = own * (8 if stage == 0 and w == 4 else 12)
    if stage == 3:  # fp32 gradients one sub-group at a time (stage3.py _prepare_fp32_grad_for_sub_group)
        step = 2 * 4 * min(own, zero.sub_group_size)
    else:  # the fp32 gradient partition (stage_1_and_2.py step) and AdamW's foreach temporary
        step = (4 if w < 4 or stage >= 1 else 0) * own + 4 * own
    if zero.offload_optimizer and stage >= 1:
        # CPU: fp32 master, moments, fp32 gradient buffer, and a 16-bit staging copy of the partition
        # (stage_1_and_2.py param_buffer_of_bit16_for_cpu_offload_groups; stage3.py grad_partitions_flat_buffer).
        cpu += own * (16 + w)
        gradients = optimizer = step = 0

    # reduce bucket (stage3.py _setup_for_real_optimizer: allocated once; stage_1_and_2.py setup_buckets:
    # each backward; two with overlap_comm), ZeRO-2's largest whole gradient before it is bucketed.
    buckets = 0
    if stage >= 1 and (zero.contiguous_gradients or stage == 3):
        buckets = zero.reduce_bucket_size * w * (2 if zero.overlap_comm and stage < 3 else 1)
    largest_gradient = largest_module_gradient(tensors) * w
    if stage == 2:
        buckets += largest_gradient
    working = 0
    if stage == 3:
        working = zero3_gathered_bytes(tensors, zero, gradient_checkpointing) + largest_gradient

    activations = activation_bytes(config, batch_size, seq_len, precision=precision,
                                   gradient_checkpointing=gradient_checkpointing, attention_scores=attention_scores,
                                   logits=False, **_activation_layers(config, method, method_args))
    return MemoryEstimate(method, precision, stage, n, zero.offload, gradient_checkpointing, quantization_bit,
                          total, trainable, int(weights), int(gradients), int(optimizer), int(buckets), int(working),
                          int(activations), logits_bytes(config, batch_size, seq_len), int(step), int(cpu),
                          static_buckets=stage == 3)


def memory_table(
    config: ChatGLMConfig,
    setups: Sequence[dict] | None = None,
    **common: Any,
) -> list[dict]:
    """Estimates for several setups as a list of dicts (one row each; ``label`` names the row).

    ``setups`` are keyword dicts for :func:`estimate_memory` (``method`` required, ``label``
    optional); ``common`` applies to all of them. The default compares the four methods as
    the original commands ran them: freeze (last 2 layers), P-tuning v2 (16 tokens, with
    projection), LoRA (r=8 on query_key_value), all three on ZeRO-2, and full fine-tuning on
    ZeRO-3 with and without offload.
    """
    last = config.num_layers - 1
    if setups is None:
        setups = [
            {"label": "freeze (2 layers), ZeRO-2", "method": "freeze", "freeze_module_name": f"layers.{last}.,layers.{last - 1}."
             if last > 0 else f"layers.{last}."},
            {"label": "ptuning (16, projection), ZeRO-2", "method": "ptuning", "pre_seq_len": 16, "prefix_projection": True},
            {"label": "ptuning (16, embedding only), ZeRO-2", "method": "ptuning", "pre_seq_len": 16,
             "prefix_projection": False},
            {"label": "lora (r=8, qkv), ZeRO-2", "method": "lora", "lora_dim": 8},
            {"label": "all, ZeRO-3", "method": "all", "zero_stage": 3},
            {"label": "all, ZeRO-3 + offload", "method": "all", "zero_stage": 3, "offload": True},
        ]
    rows = []
    for setup in setups:
        kwargs = {**common, **setup}
        label = kwargs.pop("label", kwargs["method"])
        method = kwargs.pop("method")
        rows.append({"label": label, **estimate_memory(config, method, **kwargs).as_dict()})
    return rows


# --------------------------------------------------------------------------- measuring
def measure_peak_memory(fn: Callable[..., Any], *args: Any, device: Any = None, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)``; return ``(result, stats)`` with the peak memory it used.

    On a CUDA ``device``: ``torch.cuda.max_memory_allocated`` after a reset (``peak_mib``).
    On the CPU: the peak of Python-level allocations seen by ``tracemalloc`` (torch's CPU
    tensors are not traced) is not enough, so ``peak_mib`` is the growth of the process's
    maximum resident set size (``ru_maxrss``) during the call -- zero when the process had
    already been that large -- and ``traced_mib`` the tracemalloc peak. ``seconds``: wall time.
    """
    import torch

    start = time.perf_counter()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        stats = {"device": str(device), "peak_mib": peak / 2**20, "growth_mib": (peak - base) / 2**20}
    else:
        before = _maxrss_bytes()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            result = fn(*args, **kwargs)
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            if not tracing:
                tracemalloc.stop()
        after = _maxrss_bytes()
        stats = {"device": "cpu", "peak_mib": (after - before) / 2**20, "maxrss_mib": after / 2**20,
                 "traced_mib": traced / 2**20}
    stats["seconds"] = time.perf_counter() - start
    return result, stats


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- command line
# The training flags the estimate depends on, under their names in glmlab.args.TrainArgs.
CLI_FLAGS = ("model_name_or_path", "mode", "train_type", "freeze_module_name", "pre_seq_len", "prefix_projection",
             "lora_dim", "lora_module_name", "per_device_train_batch_size", "max_len", "gradient_checkpointing",
             "ds_file", "precision", "quantization_bit")
GRID_COLUMNS = ("method", "zero", "offload", "ckpt", "qbit", "trainable", "weights", "grads", "optim", "buckets",
                "zero3", "acts", "logits", "step", "gpu_gib", "cpu_gib")


def _parser() -> argparse.ArgumentParser:
    from glmlab.args import (
        MODES,
        PRECISIONS,
        TRAIN_TYPES,
        OneLineParser,
        TrainArgs,
        str2bool,
    )

    parser = OneLineParser(prog="python -m glmlab.memory", description=__doc__.split("\n\n")[0],
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
        choices = {"mode": MODES, "train_type": TRAIN_TYPES, "precision": PRECISIONS,
                   "quantization_bit": QUANTIZATION_BITS}.get(name)
        if choices:
            kwargs["choices"] = choices
        parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument("--num_gpus", type=int, default=1, help="GPUs the run is spread over (ZeRO shards by it).")
    parser.add_argument("--grid", action="store_true",
                        help="Every method x shipped ZeRO config (stage 2/3, offload or not) x gradient "
                             "checkpointing x quantization for one model, card count and length.")
    parser.add_argument("--gpu_gib", type=float, default=None, help="Mark which estimates fit on a card of this many GiB.")
    # --- pipeline parallelism (glmlab.memory_pipeline) ---
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

    from glmlab.methods import get_strategy

    for name in ("pre_seq_len", "lora_dim", "per_device_train_batch_size", "max_len", "num_gpus"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if args.gpu_gib is not None and not args.gpu_gib > 0:
        raise ValueError(f"--gpu_gib must be > 0 (got {args.gpu_gib})")
    if not args.grid:
        _check_quantization(args.train_type, args.quantization_bit)
    names = list(parameter_shapes(config))
    for method in METHODS if args.grid else (args.train_type,):
        if method in ("freeze", "lora"):
            get_strategy(method).check(SimpleNamespace(**_method_args(args)), names)


def grid(config: ChatGLMConfig, *, num_gpus: int = 1, batch_size: int = 1, seq_len: int = 768,
         precision: str = "bf16", methods: Sequence[str] = METHODS, **method_args: Any) -> list[MemoryEstimate]:
    """Every method x shipped ZeRO config x gradient checkpointing x quantization (lora, ptuning) for one setting."""
    rows = []
    for method in methods:
        for (stage, offload) in SHIPPED_CONFIGS:
            for checkpointing in (False, True):
                for bits in QUANTIZATION_BITS if method in QUANTIZABLE_METHODS else (0,):
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
        if args.pipeline_stages is not None:  # per-stage rows (glmlab.memory_pipeline)
            from glmlab.memory_pipeline import pipeline_main

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


if __name__ == "__main__":
    raise SystemExit(main())

"""How much memory fine-tuning needs, per method, before you rent the GPUs.

Everything here is arithmetic on a :class:`~glmlab.models.configuration.ChatGLMConfig`; no
model is built. :func:`parameter_shapes` lists every tensor of the model under its official
name (the names glmlab's models and the official checkpoints use), so the counts are exact,
and the methods' trainable sets are found with the same matching rules the training
strategies use (:mod:`glmlab.methods`). :func:`estimate_memory` then adds up, per GPU:

* **weights** -- every parameter in the training precision (2 bytes in bf16/fp16, 4 in fp32).
  ZeRO-3 shards them over the GPUs (``/ num_gpus``) and keeps a working set of about two
  layers gathered (the layer running and the one prefetched); ZeRO-3 with offload keeps
  only that working set on the GPU.
* **gradients** -- one per trainable parameter, in the training precision; ZeRO-2 and -3
  shard them (``/ num_gpus``). With offload they are moved to the CPU for the optimizer step
  (counted on the CPU side, in fp32).
* **optimizer** -- AdamW keeps two fp32 moments per trainable parameter, plus an fp32 master
  copy when training in bf16/fp16: 12 bytes per trainable parameter (8 in fp32). ZeRO-1/2/3
  shard them; offload moves them to the CPU. Not counted: for the step, DeepSpeed also turns
  each 16-bit gradient partition into fp32 (4 more bytes per trainable parameter, per shard);
  on an H200 that put a ChatGLM2-6B ``freeze`` run of two layers (408M trained parameters)
  at 19.3 GiB against 17.5 estimated (``benchmarks/bench_gpu.py``).
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
  linear layer keeps no input, so a layer the gradient only passes through (every layer
  under ``ptuning``, the frozen layers above the lowest trained one under ``freeze``) keeps
  ``6 h + 2 f`` less, the inputs of its four linear layers; ``lora`` keeps the inputs of the
  layers it adapts (2h for ``query_key_value``). The ChatGLM-6B figure is
  Korthikanti et al. 2022's ("Reducing Activation Recomputation in Large Transformer
  Models") without dropout masks. The norms and the GELU keep only their inputs (their
  backward passes are written out); ``tests/test_memory.py`` checks the formula against the
  tensors autograd really saves, for ``all``, ``lora`` and ``ptuning``. SDPA
  (memory-efficient attention) keeps no ``s x s`` scores; ``attention_scores=True`` adds
  ``5 * heads * s^2 * b`` for eager attention. fp32 activations count double. Only layers that gradients must
  flow through keep activations: ``all`` and ``lora`` (adapters in every layer) and
  ``ptuning`` (the prefix feeds every layer's keys and values, so the gradient goes through
  the whole model even though only the prefix trains) keep all of them; ``freeze`` keeps only
  the layers from the first trainable one upwards. With gradient checkpointing each layer
  keeps only its 16-bit input (``2 bsh`` bytes) and one layer's activations are rebuilt at a
  time. The logits are computed in fp32 for the loss: ``8 * b * s * vocab`` bytes (logits and
  their gradient), whatever the method.

The result is an estimate: allocator fragmentation, communication buckets, CUDA context
(~0.5-1 GiB) and temporary buffers come on top. :func:`measure_peak_memory` measures what a
function really used, to compare.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
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

# The official config.json fields that decide the sizes (THUDM/chatglm-6b, chatglm2-6b, chatglm3-6b).
PRESETS: dict[str, dict[str, Any]] = {
    "glm": dict(vocab_size=150528, hidden_size=4096, num_layers=28, num_attention_heads=32,
                inner_hidden_size=16384, max_sequence_length=2048, position_encoding_2d=True),
    "glm2": dict(padded_vocab_size=65024, hidden_size=4096, num_layers=28, num_attention_heads=32,
                 ffn_hidden_size=13696, kv_channels=128, multi_query_attention=True, multi_query_group_num=2,
                 add_qkv_bias=True, add_bias_linear=False, seq_length=32768),
    "glm3": dict(padded_vocab_size=65024, hidden_size=4096, num_layers=28, num_attention_heads=32,
                 ffn_hidden_size=13696, kv_channels=128, multi_query_attention=True, multi_query_group_num=2,
                 add_qkv_bias=True, add_bias_linear=False, seq_length=8192),
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


# --------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated training memory of one configuration, in GiB per GPU (``cpu_gib``: per process, on the host)."""

    method: str
    precision: str
    zero_stage: int
    num_gpus: int
    offload: bool
    gradient_checkpointing: bool
    total_params: int
    trainable_params: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    gpu_gib: float
    cpu_gib: float

    def as_dict(self) -> dict:
        """Plain dict, for tables and JSON."""
        return asdict(self)


# The linear layers of a block, and the width of the input each keeps when its weights (or a
# LoRA adapter on it) train: a frozen linear layer needs no input for its backward pass.
LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


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
) -> float:
    """Activation bytes kept for the backward pass through ``layers`` layers (default: all) plus the logits.

    ``trained_layers`` of them (default: all ``layers``) train ``trained_linears``; the
    others only pass the gradient on. See the module docstring for the formula.
    """
    b, s = batch_size, seq_len
    vocab = config.vocab_size if config.architecture == "glm" else config.padded_vocab_size
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
    logits = 8 * b * s * vocab
    return kept * scale + logits


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


def estimate_memory(
    config: ChatGLMConfig,
    method: str,
    *,
    precision: str = "bf16",
    zero_stage: int = 2,
    num_gpus: int = 1,
    offload: bool = False,
    batch_size: int = 1,
    seq_len: int = 768,
    gradient_checkpointing: bool = False,
    attention_scores: bool = False,
    **method_args: Any,
) -> MemoryEstimate:
    """Estimated training memory per GPU of ``method`` on ``config`` (see the module docstring).

    ``method_args`` are :func:`trainable_parameters`' keywords (``freeze_module_name``,
    ``pre_seq_len``, ``prefix_projection``, ``lora_dim``, ``lora_module_name``). ``zero_stage``
    0-3 shards optimizer states (>=1), gradients (>=2) and weights (3) over ``num_gpus``;
    ``offload`` moves optimizer states (and, with ZeRO-3, the weights) to the CPU.
    """
    if precision not in BYTES:
        raise ValueError(f"precision must be one of {', '.join(BYTES)} (got {precision!r})")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3 (got {zero_stage})")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be at least 1 (got {num_gpus})")
    trainable, total = trainable_parameters(config, method, **method_args)
    width = BYTES[precision]
    optimizer_per_param = 8 + (4 if width < 4 else 0)  # Adam m, v (+ fp32 master copy)

    weights = total * width
    if zero_stage == 3:
        layer = sum(_numel(s) for n, s in parameter_shapes(config).items() if "layers.0." in n)
        working_set = 2 * layer * width  # the running layer and the prefetched one, gathered
        weights = working_set + (0 if offload else weights / num_gpus)
    gradients = trainable * width / (num_gpus if zero_stage >= 2 else 1)
    optimizer = trainable * optimizer_per_param / (num_gpus if zero_stage >= 1 else 1)
    cpu = 0.0
    if offload:
        cpu += optimizer + trainable * 4 / (num_gpus if zero_stage >= 2 else 1)  # states + fp32 gradients
        optimizer = 0.0
        if zero_stage == 3:
            cpu += total * width / num_gpus
    activations = activation_bytes(config, batch_size, seq_len, precision=precision,
                                   gradient_checkpointing=gradient_checkpointing, attention_scores=attention_scores,
                                   **_activation_layers(config, method, method_args))
    gpu = weights + gradients + optimizer + activations
    return MemoryEstimate(method, precision, zero_stage, num_gpus, offload, gradient_checkpointing, total, trainable,
                          weights / GIB, gradients / GIB, optimizer / GIB, activations / GIB, gpu / GIB, cpu / GIB)


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

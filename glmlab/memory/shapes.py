"""The model's parameters from its config: every tensor under its official name and shape, and what
each method trains (asked of :mod:`glmlab.methods`), counted without building a model."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from glmlab.methods import PREFIX_ENCODER, get_strategy
from glmlab.models.configuration import ChatGLMConfig

GIB = 1024**3
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DEFAULT_LORA_MODULES = "query_key_value"  # as the original LoRA command
QUANTIZATION_BITS = (0, 4, 8)

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


def parameter_count(config: ChatGLMConfig) -> int:
    """Total parameter count of the model ``config`` describes (ChatGLM2/3-6B: 6,243,584,000)."""
    return sum(_numel(s) for s in parameter_shapes(config).values())


def method_flags(config: ChatGLMConfig, method: str, method_args: dict[str, Any]) -> SimpleNamespace:
    """The flags the strategy of ``method`` is asked with: ``method_args`` over the estimate's defaults.

    The defaults: ``freeze`` trains the last layer, P-tuning has 16 prefix tokens with the projection,
    LoRA has rank 8 on ``query_key_value`` (as the original LoRA command). Raises ``ValueError`` for an
    unknown method.
    """
    get_strategy(method)  # the one error for an unknown method
    return SimpleNamespace(
        freeze_module_name=method_args.get("freeze_module_name") or f"layers.{config.num_layers - 1}.",
        pre_seq_len=method_args.get("pre_seq_len", 16),
        prefix_projection=bool(method_args.get("prefix_projection", True)),
        lora_dim=method_args.get("lora_dim", 8),
        lora_module_name=method_args.get("lora_module_name") or DEFAULT_LORA_MODULES,
    )


def method_shapes(config: ChatGLMConfig, method: str, method_args: dict[str, Any]) -> tuple[ChatGLMConfig, dict, SimpleNamespace]:
    """``(config, shapes, flags)`` of ``method``'s model: its config (P-tuning adds the prefix encoder),
    every parameter's shape, and the flags (:func:`method_flags`) to ask its strategy with."""
    flags = method_flags(config, method, method_args)
    config = get_strategy(method).model_config(config, flags)
    return config, parameter_shapes(config), flags


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
    The strategy of ``method`` (:mod:`glmlab.methods`) says what trains.
    """
    method_args = {"freeze_module_name": freeze_module_name, "pre_seq_len": pre_seq_len,
                   "prefix_projection": prefix_projection, "lora_dim": lora_dim, "lora_module_name": lora_module_name}
    config, shapes, flags = method_shapes(config, method, method_args)
    strategy = get_strategy(method)
    added = sum(_numel(s) for tensors in strategy.adapters(shapes, flags).values() for s in tensors.values())
    trainable = sum(_numel(s) for s in strategy.trainable_shapes(shapes, flags).values())
    return trainable, sum(_numel(s) for s in shapes.values()) + added

"""The activations training keeps for the backward pass, per layer, and the loss's logits."""

from __future__ import annotations

from collections.abc import Sequence

from glmlab.memory.shapes import BYTES
from glmlab.methods import LINEARS
from glmlab.models.configuration import ChatGLMConfig


# --------------------------------------------------------------------------- activations
def layer_activation_bytes(config: ChatGLMConfig, batch_size: int, seq_len: int,
                           trained_linears: Sequence[str] = LINEARS, pre_seq_len: int = 0) -> int:
    """16-bit bytes one layer keeps for backward when the gradient flows through it.

    ``trained_linears``: the linear layers (of :data:`LINEARS`) whose weights or LoRA
    adapters train; ``()`` for a layer the gradient only passes through (P-tuning, or a
    frozen layer above the trained ones). ``pre_seq_len``: P-tuning's prefix length, whose
    keys and values every layer prepends to its own.

    Counted as autograd keeps them (``glmlab.memory.anatomy`` measures it): a view keeps its
    whole storage, so ``v``, a view of the fused ``query_key_value`` output, keeps all of it;
    with a prefix, ``k`` and ``v`` are new ``P + s``-long tensors and that output is freed.
    SDPA turns a boolean attention mask into one in the activations' dtype and keeps it, per
    layer: ChatGLM-6B always has one (prefix attention), ChatGLM2/3 only with a prefix.
    """
    h, b, s, p = config.hidden_size, batch_size, seq_len, pre_seq_len
    keys = s + p  # the positions attention reads
    if config.architecture == "glm":
        f = config.inner_hidden_size
        d = h // config.num_attention_heads
        q_width = kv_width = h
        qkv_width = 3 * h
        # the layer's 2D rotary tables 4d; GELU input 2f; the float attention mask
        rest = 4 * d + 2 * f + 2 * keys
    else:
        f = config.ffn_hidden_size
        groups = config.multi_query_group_num if config.multi_query_attention else config.num_attention_heads
        kv_channels = config.kv_channels or h // config.num_attention_heads
        q_width, kv_width = config.num_attention_heads * kv_channels, groups * kv_channels
        qkv_width = q_width + 2 * kv_width
        # SwiGLU: its 2f-wide input (gate and up are views of it), silu(gate) 2f; the mask with a prefix
        rest = 6 * f + (2 * keys if p else 0)
    # norm inputs 2 x 2h; q; k and v, P + s long with a prefix, else k and the whole QKV output (v's storage)
    attention = 2 * q_width + (4 * kv_width * keys // s if p else 2 * kv_width + 2 * qkv_width)
    kept = 4 * h + attention + 2 * h + rest  # 2h: SDPA's output
    inputs = {"query_key_value": 2 * h, "dense": 2 * q_width, "dense_h_to_4h": 2 * h, "dense_4h_to_h": 2 * f}
    kept += sum(inputs[name] for name in set(trained_linears) & set(inputs))
    return b * s * kept


def checkpointed_input_bytes(config: ChatGLMConfig, batch_size: int, seq_len: int, pre_seq_len: int = 0,
                             precision: str = "bf16") -> int:
    """Bytes gradient checkpointing keeps while the forward runs: every layer's inputs, in ``precision``.

    Each layer's hidden states (``b s h``, every layer: transformers makes the embedding's output
    require grad when it enables checkpointing, so even the frozen layers below ``freeze``'s lowest
    trained one keep theirs, and are recomputed in the backward), and once, what all layers share:
    ChatGLM-6B's position ids (int64) and boolean mask, ChatGLM2/3's rotary cos and sin (and the mask
    with a prefix), P-tuning's prefix keys and values.
    """
    h, b, s, p, n, w = config.hidden_size, batch_size, seq_len, pre_seq_len, config.num_layers, BYTES[precision]
    kept = n * w * b * s * h
    if config.architecture == "glm":
        kept += b * s * (s + p) + 2 * 8 * b * s  # bool mask, (token, block) int64 positions
        kv_size = 2 * n * h
    else:
        kv_channels = config.kv_channels or h // config.num_attention_heads
        groups = config.multi_query_group_num if config.multi_query_attention else config.num_attention_heads
        kept += 2 * w * b * s * (kv_channels // 4) + (b * s * (s + p) if p else 0)  # cos, sin; bool mask
        kv_size = 2 * n * groups * kv_channels
    return kept + w * b * p * kv_size


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
    pre_seq_len: int = 0,
) -> float:
    """Activation bytes kept for the backward pass through ``layers`` layers (default: all), plus the logits.

    ``trained_layers`` of them (default: all ``layers``) train ``trained_linears``; the
    others only pass the gradient on. ``pre_seq_len``: P-tuning's prefix length. ``logits``:
    add :func:`logits_bytes`. See the module docstring for the formula.
    """
    b, s = batch_size, seq_len
    layers = config.num_layers if layers is None else layers
    trained_layers = layers if trained_layers is None else min(trained_layers, layers)
    trained = layer_activation_bytes(config, b, s, trained_linears, pre_seq_len)
    passing = layer_activation_bytes(config, b, s, (), pre_seq_len)
    scores = 5 * config.num_attention_heads * s * (s + pre_seq_len) * b if attention_scores else 0
    scale = BYTES[precision] / 2  # the formula counts 16-bit activations
    inputs = 0
    if gradient_checkpointing:  # every layer's inputs, and one layer rebuilt at a time
        kept = (trained if trained_layers else passing) + scores if layers else 0
        inputs = checkpointed_input_bytes(config, b, s, pre_seq_len, precision)
    else:
        kept = trained_layers * trained + (layers - trained_layers) * passing + layers * scores
    return kept * scale + inputs + (logits_bytes(config, b, s) if logits else 0)


def logits_bytes(config: ChatGLMConfig, batch_size: int, seq_len: int) -> int:
    """Bytes of the loss's fp32 tensors at its backward: log-probabilities, their gradient, the logits' gradient."""
    vocab = config.vocab_size if config.architecture == "glm" else config.padded_vocab_size
    return 12 * batch_size * seq_len * vocab

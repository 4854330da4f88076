"""The activations training keeps for the backward pass, per layer, and the loss's logits."""

from __future__ import annotations

from collections.abc import Sequence

from glmlab.memory.shapes import BYTES
from glmlab.methods import LINEARS
from glmlab.models.configuration import ChatGLMConfig


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

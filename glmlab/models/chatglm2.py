"""ChatGLM2-6B and ChatGLM3-6B (one architecture) for transformers 5.

Module names follow the official checkpoints key by key
(``transformer.embedding.word_embeddings``, ``transformer.encoder.layers.N.self_attention.query_key_value``,
``transformer.output_layer`` ...), so an official state dict loads strictly and peft's
``target_modules=["query_key_value"]`` means what users expect.

What the architecture is, in one place:

* pre-norm decoder blocks with RMSNorm, SwiGLU MLP and grouped-query attention
  (``multi_query_group_num`` key/value heads shared by ``num_attention_heads`` query heads);
* rotary position embedding on the first half of every head only, rotating the
  *interleaved* pairs ``(x0, x1), (x2, x3), ...`` (not the two halves, as LLaMA does);
* P-tuning v2: ``pre_seq_len`` learnt key/value pairs per layer, prepended inside every
  attention; every token attends to them.

Differences from the official code, none of which changes the arithmetic: tensors are
batch-first ``(B, T, ...)`` instead of sequence-first; the key/value cache is a
transformers ``Cache`` holding only the real tokens (the prefix is recomputed each
forward instead of being stored in the cache); attention always goes through
``torch.nn.functional.scaled_dot_product_attention`` (the official torch-2 path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)

from glmlab.models.configuration import ChatGLMConfig
from glmlab.models.lm_head import causal_lm_output, keep_positions, resolve_cache
from glmlab.models.prefix import PrefixEncoder
from glmlab.quantization import quantize

# Official rotary base. ``rope_ratio`` (the long-context variants) scales it.
ROPE_BASE = 10000.0


def official_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The official RMSNorm, returning ``(output, 1 / rms)``.

    The mean square is taken in fp32; the product with the fp32 reciprocal promotes
    the activations to fp32, the weight is applied there, and the result is cast back.
    """
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    rstd = torch.rsqrt(variance + eps)
    return (weight * (x * rstd)).to(x.dtype), rstd


class _LeanRMSNorm(torch.autograd.Function):
    """:func:`official_rms_norm` that keeps only its input (and one fp32 number per row) for backward.

    Autograd through the formula keeps two fp32 copies of the activations per norm, two
    norms per layer: in bf16 that is 4x the input's own size. The forward runs the very
    same operations; the derivative is written out and computed in fp32.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        out, rstd = official_rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        normed = x.float() * rstd
        grad = grad.float()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            d_normed = grad * weight.float()
            grad_x = (rstd * (d_normed - normed * (d_normed * normed).mean(-1, keepdim=True))).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normed).flatten(0, -2).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


class RMSNorm(nn.Module):
    """Root-mean-square norm with the official order of casts (see :func:`official_rms_norm`)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (hidden_states.requires_grad or self.weight.requires_grad):
            return _LeanRMSNorm.apply(hidden_states, self.weight, self.eps)
        return official_rms_norm(hidden_states, self.weight, self.eps)[0]


def _norm(config: ChatGLMConfig) -> nn.Module:
    if config.rmsnorm:
        return RMSNorm(config.hidden_size, eps=config.layernorm_epsilon)
    return nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)


class RotaryEmbedding(nn.Module):
    """Rotary angles for the first ``dim`` channels of every head (``dim = kv_channels // 2``).

    ``inv_freq`` is a persistent buffer because the official checkpoints store it, so they
    load strictly. Like the official ChatGLM2/3 code, the angles are computed from the
    frequencies recomputed in fp32 rather than from the stored buffer: the checkpoints
    store it rounded to fp16, and a bf16 model would round it further.

    ``rope_ratio`` (long-context checkpoints) follows ChatGLM3-6B-32K/128K: the base becomes
    ``10000 * rope_ratio``. With ``config.rope_position_interpolation = True`` it follows
    ChatGLM2-6B-32K instead: positions are divided by ``rope_ratio``.
    """

    def __init__(self, dim: int, rope_ratio: float = 1.0, position_interpolation: bool = False):
        super().__init__()
        self.dim = dim
        self.rope_ratio = rope_ratio
        self.position_interpolation = position_interpolation
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=True)

    def compute_inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        """The official fp32 frequencies ``1 / base ** (2i / dim)``."""
        base = ROPE_BASE if self.position_interpolation else ROPE_BASE * self.rope_ratio
        exponents = torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim
        return 1.0 / (base**exponents)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``position_ids`` (B, T) -> ``cos``, ``sin`` of shape (B, 1, T, dim // 2) in ``dtype``."""
        positions = position_ids.to(torch.float32)
        if self.position_interpolation and self.rope_ratio != 1.0:
            positions = positions / self.rope_ratio
        angles = positions[..., None] * self.compute_inv_freq(position_ids.device)  # (B, T, dim/2)
        # The official code casts its cos/sin table to the model's half dtype too.
        return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs of the first ``2 * cos.shape[-1]`` channels of ``x``.

    ``x``: (B, nh, T, hs); ``cos``/``sin``: (B, 1, T, rot/2). Channels past the rotary
    width pass through unchanged.
    """
    rot = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x0, x1 = x_rot.unflatten(-1, (-1, 2)).unbind(-1)  # each (B, nh, T, rot/2)
    rotated = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, x_pass), dim=-1)


class SelfAttention(nn.Module):
    """Grouped-query self-attention with rotary positions and optional P-tuning v2 prefix."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.kv_channels
        # Without multi-query attention every query head has its own key/value head, and the
        # official fused projection interleaves [q, k, v] per head instead of [all q, all k, all v].
        self.grouped = bool(config.multi_query_attention)
        self.num_kv_heads = config.multi_query_group_num if self.grouped else self.num_heads
        self.projection_size = self.num_heads * self.head_dim
        qkv_size = self.projection_size + 2 * self.num_kv_heads * self.head_dim
        self.query_key_value = nn.Linear(
            config.hidden_size, qkv_size, bias=config.add_bias_linear or config.add_qkv_bias
        )
        self.dense = nn.Linear(self.projection_size, config.hidden_size, bias=config.add_bias_linear)
        self.attention_dropout = config.attention_dropout

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_key: torch.Tensor | None = None,
        prefix_value: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` (B, T, H) -> (B, T, H).

        ``attention_mask``: boolean (B, 1, T, P + S), True where a query may attend, or None
        for plain causal attention. ``prefix_key``/``prefix_value``: (B, kv, P, hs).
        """
        B, T, _ = hidden_states.shape
        nh, kv, hs = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.query_key_value(hidden_states)  # (B, T, (nh + 2 kv) * hs)
        if self.grouped:
            q, k, v = qkv.split([nh * hs, kv * hs, kv * hs], dim=-1)
            q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            k = k.view(B, T, kv, hs).transpose(1, 2)  # (B, kv, T, hs)
            v = v.view(B, T, kv, hs).transpose(1, 2)  # (B, kv, T, hs)
        else:
            q, k, v = (t.transpose(1, 2) for t in qkv.view(B, T, nh, 3 * hs).chunk(3, dim=-1))

        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)

        if cache is not None:
            # The cache keeps the grouped layout (B, kv, S, hs): groups are expanded only below.
            k, v = cache.update(k, v, self.layer_idx)
        if prefix_key is not None:
            # The prefix is not rotated and not cached: it is prepended in every forward.
            k = torch.cat((prefix_key, k), dim=2)  # (B, kv, P + S, hs)
            v = torch.cat((prefix_value, v), dim=2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            # Without a mask the only case with several queries is the un-cached, unpadded one.
            is_causal=attention_mask is None and q.shape[2] == k.shape[2] and T > 1,
            # Query head h reads key/value head h // (nh / kv), as the official expand does;
            # SDPA expands the groups itself, without materialising (B, nh, S, hs) copies.
            enable_gqa=kv != nh,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.projection_size)
        return self.dense(y)


class MLP(nn.Module):
    """SwiGLU feed-forward: one fused up-projection holding [gate, up]."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size, bias=config.add_bias_linear)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.add_bias_linear)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.dense_h_to_4h(hidden_states).chunk(2, dim=-1)  # each (B, T, ffn)
        return self.dense_4h_to_h(F.silu(gate) * up)


class GLMBlock(nn.Module):
    """One pre-norm decoder layer: attention and MLP, each with a residual connection."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.residual_from_norm = bool(config.apply_residual_connection_post_layernorm)
        self.hidden_dropout = config.hidden_dropout
        self.input_layernorm = _norm(config)
        self.self_attention = SelfAttention(config, layer_idx)
        self.post_attention_layernorm = _norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_key: torch.Tensor | None = None,
        prefix_value: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        normed = self.input_layernorm(hidden_states)
        attn = self.self_attention(normed, cos, sin, attention_mask, prefix_key, prefix_value, cache)
        residual = normed if self.residual_from_norm else hidden_states
        hidden_states = residual + F.dropout(attn, p=self.hidden_dropout, training=self.training)

        normed = self.post_attention_layernorm(hidden_states)
        residual = normed if self.residual_from_norm else hidden_states
        return residual + F.dropout(self.mlp(normed), p=self.hidden_dropout, training=self.training)


class GLMTransformer(nn.Module):
    """The stack of blocks plus the final norm (``transformer.encoder``)."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.layers = nn.ModuleList([GLMBlock(config, i) for i in range(config.num_layers)])
        self.final_layernorm = _norm(config) if config.post_layer_norm else None
        # Set by ``PreTrainedModel.activation_checkpointing_enable`` (with ``_gradient_checkpointing_func``).
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_kv: tuple[torch.Tensor, ...] | None = None,
        cache: Cache | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Run every block; ``prefix_kv`` holds (key, value) of layer i at indices 2i, 2i+1."""
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        all_hidden = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            pk, pv = (prefix_kv[2 * i], prefix_kv[2 * i + 1]) if prefix_kv is not None else (None, None)
            if checkpointing:
                # The recomputation must not write the cache a second time: no cache here
                # (the model turns ``use_cache`` off while checkpointing).
                hidden_states = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, cos, sin, attention_mask, pk, pv, None
                )
            else:
                hidden_states = layer(hidden_states, cos, sin, attention_mask, pk, pv, cache)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        if self.final_layernorm is not None:
            hidden_states = self.final_layernorm(hidden_states)
        return hidden_states, all_hidden


class Embedding(nn.Module):
    """``transformer.embedding``: the word embedding table, in a module of its own as officially."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)  # (B, T, H)


class ChatGLM2PreTrainedModel(PreTrainedModel):
    """Weight initialisation and the flags transformers reads, shared by both model classes."""

    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLMBlock"]
    _supports_sdpa = True

    @property
    def is_gradient_checkpointing(self) -> bool:
        """transformers 5 deprecated this name, but peft 0.21 still reads it: answer without the warning."""
        return self.is_activation_checkpointing

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, 0.02) for linear and embedding weights, zero biases, unit norms."""
        std = getattr(self.config, "initializer_range", None) or 0.02
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(module.inv_freq.device))


def _extend_mask(attention_mask: torch.Tensor | None, past_length: int, seq_length: int) -> torch.Tensor | None:
    """Make a 2D padding mask cover cached + current tokens (a mask of the new tokens only is allowed)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError("attention_mask must be the 2D (batch, length) padding mask")
    missing = past_length + seq_length - attention_mask.shape[1]
    if missing > 0:
        attention_mask = torch.cat((attention_mask.new_ones(attention_mask.shape[0], missing), attention_mask), dim=1)
    return attention_mask


class ChatGLM2Model(ChatGLM2PreTrainedModel):
    """``transformer``: embeddings, rotary table, encoder, LM head (``output_layer``) and prefix encoder."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.num_layers = config.num_layers
        self.kv_heads = config.multi_query_group_num
        self.kv_channels = config.kv_channels
        self.embedding = Embedding(config)
        self.rotary_pos_emb = RotaryEmbedding(
            config.kv_channels // 2,
            rope_ratio=config.rope_ratio or 1.0,
            position_interpolation=bool(getattr(config, "rope_position_interpolation", False)),
        )
        self.encoder = GLMTransformer(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.pre_seq_len = config.pre_seq_len
        if self.pre_seq_len is not None:
            kv_size = config.num_layers * config.kv_channels * config.multi_query_group_num * 2
            self.prefix_encoder = PrefixEncoder(
                config.pre_seq_len,
                kv_size,
                config.prefix_projection,
                embed_dim=kv_size,
                hidden_size=config.hidden_size,
            )
            # Official P-tuning v2 dropout on the prefix keys/values (inactive in eval mode).
            self.prefix_dropout = nn.Dropout(0.1)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embedding.word_embeddings = value

    def get_prompt(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The P-tuning v2 prefix: 2 * num_layers tensors (key, value per layer), each (B, kv, P, hs)."""
        device = self.prefix_encoder.embedding.weight.device
        prefix_tokens = torch.arange(self.pre_seq_len, device=device).unsqueeze(0).expand(batch_size, -1)
        prefix = self.prefix_encoder(prefix_tokens).to(dtype)  # (B, P, kv_size)
        # The flat vector is laid out [layer0 key, layer0 value, layer1 key, ...], each (kv, hs).
        prefix = prefix.view(batch_size, self.pre_seq_len, 2 * self.num_layers, self.kv_heads, self.kv_channels)
        prefix = self.prefix_dropout(prefix)
        return prefix.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, kv, P, hs)

    def _attention_mask(
        self, attention_mask: torch.Tensor | None, batch_size: int, past_length: int, seq_length: int, device
    ) -> torch.Tensor | None:
        """Boolean (B, 1, T, P + S) mask, True = may attend; None when plain causal attention will do."""
        prefix_length = self.pre_seq_len or 0
        padded = attention_mask is not None and not bool(attention_mask.all())
        if not padded and prefix_length == 0 and (past_length == 0 or seq_length == 1):
            return None  # SDPA's own causal mode (or a single query that sees everything)
        total = past_length + seq_length
        query_pos = torch.arange(past_length, total, device=device)
        allowed = torch.arange(total, device=device)[None, :] <= query_pos[:, None]  # (T, S) causal
        allowed = allowed[None].expand(batch_size, -1, -1)  # (B, T, S)
        if padded:
            valid = attention_mask.bool()
            allowed = allowed & valid[:, None, :]  # pad keys are never attended to
            # A left-pad query sees no key at all; let it see everything instead of
            # producing NaN (as the official code does). Its output is never used.
            allowed = allowed | ~valid[:, past_length:, None]
        if prefix_length:
            allowed = torch.cat((allowed.new_ones(batch_size, seq_length, prefix_length), allowed), dim=-1)
        return allowed[:, None]  # (B, 1, T, P + S)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Hidden states after the final norm, (B, T, H); see ``ChatGLM2ForConditionalGeneration.forward``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.encoder.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False  # recomputed layers must not append to the cache twice
        if inputs_embeds is None:
            inputs_embeds = self.embedding(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_length = cache.get_seq_length() if cache is not None else 0
        attention_mask = _extend_mask(attention_mask, past_length, seq_length)

        if position_ids is None:
            if attention_mask is not None:
                # Real tokens count 0, 1, 2 ... from their first unpadded position, so a
                # left-padded row gets the positions it would have without padding.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_length:]
            else:
                position_ids = torch.arange(past_length, past_length + seq_length, device=device)[None]
        position_ids = position_ids.expand(batch_size, -1)
        cos, sin = self.rotary_pos_emb(position_ids, inputs_embeds.dtype)  # (B, 1, T, rot/2)

        mask = self._attention_mask(attention_mask, batch_size, past_length, seq_length, device)
        prefix_kv = self.get_prompt(batch_size, inputs_embeds.dtype) if self.pre_seq_len is not None else None

        hidden_states, all_hidden = self.encoder(
            inputs_embeds, cos, sin, mask, prefix_kv, cache, output_hidden_states=bool(output_hidden_states)
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden)


class ChatGLM2ForConditionalGeneration(ChatGLM2PreTrainedModel, GenerationMixin):
    """ChatGLM2-6B / ChatGLM3-6B causal LM: ``transformer`` (:class:`ChatGLM2Model`) plus the loss.

    The LM head is ``transformer.output_layer`` (official layout, untied from the embeddings).
    ``generate`` works with transformers' own machinery: it builds a ``DynamicCache``,
    derives ``position_ids`` from the 2D attention mask (left padding included) and extends
    both every step; ``forward`` derives the same positions when none are given.
    """

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.transformer = ChatGLM2Model(config)
        if config.quantization_bit:  # THUDM's int4/int8 layers, filled by the loader (glmlab.quantization)
            quantize(self, config.quantization_bit, empty=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.embedding.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.embedding.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.transformer.output_layer

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.transformer.output_layer = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (and the loss when ``labels`` are given).

        Args:
            input_ids: (B, T) token ids (or ``inputs_embeds`` (B, T, H)).
            attention_mask: 2D (B, T) or (B, past + T) 1/0 padding mask, left or right padding.
            position_ids: (B, T); derived from ``attention_mask`` (or the cache length) when None.
            past_key_values / cache: a transformers ``Cache`` (transformers 5 calls it ``cache``;
                ``past_key_values`` is the same thing under the older name).
            labels: (B, T); the loss is the fp32 cross-entropy of position t predicting
                ``labels[t + 1]``, averaged over the labels that are not -100.
            logits_to_keep: compute logits for the last N positions only (0 = all); ``generate`` uses 1.
        """
        cache = resolve_cache(cache, past_key_values)
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        logits = self.transformer.output_layer(keep_positions(outputs.last_hidden_state, logits_to_keep))  # (B, T, V)
        return causal_lm_output(logits, labels, outputs, return_dict)

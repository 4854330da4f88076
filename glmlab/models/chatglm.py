"""ChatGLM-6B (GLM v1) for transformers 5.

The module and parameter names are the official ones (``transformer.word_embeddings``,
``transformer.layers.N.attention.query_key_value``, ``lm_head`` ...), so the official
checkpoints load strictly and peft's ``target_modules`` are the names users know.
The arithmetic is the official one; what differs is only the plumbing:

* tensors are batch-first ``(B, T, ...)`` instead of sequence-first;
* the key/value cache is a transformers ``Cache`` in the layout ``(B, nh, T, hs)``;
* P-tuning v2 prefix keys/values are recomputed in every forward and prepended
  inside the attention instead of being stored in the cache, so a prefix model
  works the same with or without a cache;
* the attention mask and the positions are derived from the ids *and* an ordinary
  2D ``(B, T)`` padding mask, so left-padded batches give the same numbers on their
  real tokens as unpadded rows (the official code needs its own 4D mask for that).

What makes GLM v1 special:

* 2D rotary positions. Every token has a *position id* and a *block position id*.
  Context tokens (everything before ``<sop>``, the ``bos_token_id``) count 0, 1, 2 ...
  with block position 0; from ``<sop>`` on, every token keeps the position of the
  ``[gMASK]`` (or ``[MASK]``) token it fills in, and the block position counts
  1, 2, 3 ... The first half of each head is rotated by the position id, the
  second half by the block position id.
* Attention is bidirectional over the context and causal from ``<sop>`` on.
* Post-scaled residuals: ``h = LN(x) * sqrt(2 * num_layers) + Attn(LN(x))``.
"""

from __future__ import annotations

import math

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

from ..quantization import quantize
from .configuration import ChatGLMConfig
from .lm_head import causal_lm_output, keep_positions, resolve_cache
from .prefix import PrefixEncoder

_GELU_C = 0.7978845608028654  # sqrt(2 / pi)


def official_gelu(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU exactly as the official code writes it (``F.gelu`` rounds differently)."""
    return 0.5 * x * (1.0 + torch.tanh(_GELU_C * x * (1.0 + 0.044715 * x * x)))


class _LeanGelu(torch.autograd.Function):
    """:func:`official_gelu` that keeps only its input for the backward pass.

    Autograd through the formula keeps seven intermediate tensors of the MLP's width
    (16384 in ChatGLM-6B) per layer: most of the model's activation memory. The forward
    runs the very same operations; the derivative is written out and computed in fp32.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return official_gelu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        x = x.float()
        tanh = torch.tanh(_GELU_C * x * (1.0 + 0.044715 * x * x))
        slope = 0.5 * (1.0 + tanh) + 0.5 * x * (1.0 - tanh * tanh) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
        return (grad.float() * slope).to(grad.dtype)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The official tanh GELU; when gradients are needed, through :class:`_LeanGelu`."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _LeanGelu.apply(x)
    return official_gelu(x)


class RotaryEmbedding(nn.Module):
    """Rotary table driven by the stored ``inv_freq`` buffer (official name, persistent).

    The official code creates ``inv_freq`` in fp16, so the checkpoints hold fp16-rounded
    frequencies; those rounded values are what the model was trained with, so they are
    used as stored, never recomputed. The buffer is kept in fp32 even when the model is
    cast to bf16/fp16 (bf16 would round the frequencies again and shift every angle), and
    cos/sin are computed in fp32 and only then cast to the activation dtype.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.base = base
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=True)

    def compute_inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        """The official frequencies: ``1 / base^(2i/dim)`` rounded to fp16, held in fp32."""
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim
        return (1.0 / (self.base**exponent)).half().float()

    def _apply(self, fn, recurse=True):
        # Let `.to(device)` move the buffer but not `.half()` / `.bfloat16()` re-round it.
        inv_freq = self.inv_freq
        super()._apply(fn, recurse)
        if inv_freq.dtype == torch.float32 and self.inv_freq.dtype != torch.float32:
            self.inv_freq = inv_freq.to(self.inv_freq.device)
        return self

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``position_ids`` (B, T) -> cos, sin, each (B, 1, T, dim), in ``dtype``."""
        freqs = position_ids.float()[..., None] * self.inv_freq.float()  # (B, T, dim/2), fp32
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, dim)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, nh, T, d) by the angles in ``cos``/``sin`` (B, 1, T, d)."""
    return x * cos + rotate_half(x) * sin


class SelfAttention(nn.Module):
    """Multi-head attention with the fused per-head QKV projection and 2D rotary positions."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.position_encoding_2d = config.position_encoding_2d
        self.config = config
        # 2D: each half of a head gets its own rotary table, so the table covers head_dim / 2.
        rotary_dim = self.head_dim // 2 if self.position_encoding_2d else self.head_dim
        self.rotary_emb = RotaryEmbedding(rotary_dim)
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_key: torch.Tensor | None = None,
        prefix_value: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` (B, T, H); ``position_ids`` (B, 2, T) or (B, T);
        ``attention_mask`` (B, 1, T, P + S) bool, True = may attend; prefix k/v (B, nh, P, hs)."""
        B, T, _ = hidden_states.shape
        # The official fused layout is per head: [q_h | k_h | v_h] for each head h.
        qkv = self.query_key_value(hidden_states).view(B, T, self.num_heads, 3 * self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.head_dim, dim=-1))  # each (B, nh, T, hs)

        if self.position_encoding_2d:
            cos1, sin1 = self.rotary_emb(position_ids[:, 0], q.dtype)  # token positions
            cos2, sin2 = self.rotary_emb(position_ids[:, 1], q.dtype)  # block positions
            q1, q2 = q.chunk(2, dim=-1)
            k1, k2 = k.chunk(2, dim=-1)
            q = torch.cat((apply_rotary(q1, cos1, sin1), apply_rotary(q2, cos2, sin2)), dim=-1)
            k = torch.cat((apply_rotary(k1, cos1, sin1), apply_rotary(k2, cos2, sin2)), dim=-1)
        else:
            cos, sin = self.rotary_emb(position_ids, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs), S = past + T
        if prefix_key is not None:
            # The prefix is not rotated and not cached: it is prepended in every forward.
            k = torch.cat((prefix_key, k), dim=2)  # (B, nh, P + S, hs)
            v = torch.cat((prefix_value, v), dim=2)

        if self.config._attn_implementation == "eager":
            context = self._eager_attention(q, k, v, attention_mask)
        else:
            # Mathematically the official arithmetic: the layer-scaling coefficient it divides
            # by and multiplies back cancels; SDPA needs no guard against fp16 overflow.
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.head_dim**-0.5)
        context = context.transpose(1, 2).reshape(B, T, -1)  # (B, T, H)
        return self.dense(context)

    def _eager_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The official arithmetic, step by step (``attn_implementation="eager"``)."""
        # query_key_layer_scaling: divide the query by (layer_idx + 1) so the fp16 scores cannot
        # overflow, then multiply back in fp32 before the softmax.
        coeff = float(self.layer_idx + 1)
        scores = torch.matmul(q / (math.sqrt(self.head_dim) * coeff), k.transpose(-1, -2))  # (B, nh, T, P + S)
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask, -10000.0)
        probs = F.softmax(scores.float() * coeff, dim=-1).to(v.dtype)
        return torch.matmul(probs, v)  # (B, nh, T, hs)


class GLU(nn.Module):
    """The MLP (the official class name; it is a plain GELU MLP, no gating)."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        inner = config.inner_hidden_size or 4 * config.hidden_size
        self.dense_h_to_4h = nn.Linear(config.hidden_size, inner, bias=True)
        self.dense_4h_to_h = nn.Linear(inner, config.hidden_size, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(gelu(self.dense_h_to_4h(hidden_states)))


# The layer count the official residual scale is computed from (see GLMBlock).
OFFICIAL_RESIDUAL_LAYERS = 28


class GLMBlock(nn.Module):
    """One transformer layer: LayerNorm -> attention -> LayerNorm -> MLP, with post-scaled residuals."""

    def __init__(self, config: ChatGLMConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = SelfAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = GLU(config)
        # GLM's residual adds the *normalised* input scaled by sqrt(2 * num_layers). The official
        # model never passes its num_layers to the block, so the block's default of 28 layers
        # (ChatGLM-6B's depth) is used whatever the config says; reproduced here.
        self.alpha = (2 * OFFICIAL_RESIDUAL_LAYERS) ** 0.5

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_key: torch.Tensor | None = None,
        prefix_value: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        attention_input = self.input_layernorm(hidden_states)
        attention_output = self.attention(
            attention_input, position_ids, attention_mask, prefix_key, prefix_value, cache
        )
        hidden_states = attention_input * self.alpha + attention_output
        mlp_input = self.post_attention_layernorm(hidden_states)
        return mlp_input * self.alpha + self.mlp(mlp_input)


def _first_index(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a (B, T) bool tensor: (whether any flag is set, index of the first set flag or 0)."""
    return flags.any(dim=1), flags.int().argmax(dim=1)


def get_position_ids(
    input_ids: torch.Tensor, config: ChatGLMConfig, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GLM v1 positions of ``input_ids`` (B, T): (B, 2, T) with 2D positions, else (B, T).

    As the official code: position ids count 0, 1, 2 ... up to ``<sop>`` (``bos_token_id``)
    and stay at the position of ``[gMASK]`` (or ``[MASK]`` when there is no ``[gMASK]``)
    from ``<sop>`` on; block position ids are 0 before ``<sop>`` and 1, 2, 3 ... from it.
    Counting starts at the first real token of the padding mask, so left padding does not
    move any position; padding tokens get 0. Rows without ``<sop>`` are all context; rows
    without a mask token keep plain positions (the official code raises on both).
    """
    _, T = input_ids.shape
    device = input_ids.device
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T), 0 at the first real token

    has_sop, sop_index = _first_index((input_ids == config.bos_token_id) & real)
    context_length = torch.where(has_sop, sop_index, torch.full_like(sop_index, T))  # (B,)
    use_gmask, gmask_index = _first_index((input_ids == config.gmask_token_id) & real)
    has_mask, mask_index = _first_index((input_ids == config.mask_token_id) & real)
    has_any_mask = use_gmask | has_mask
    mask_index = torch.where(use_gmask, gmask_index, mask_index)
    mask_position = positions.gather(1, mask_index[:, None])  # (B, 1)

    t = torch.arange(T, device=device)[None]  # (1, T)
    generated = t >= context_length[:, None]  # (B, T): the span from <sop> on
    if config.position_encoding_2d:
        position_ids = torch.where(generated & has_any_mask[:, None], mask_position, positions)
        block_position_ids = torch.where(generated, t - context_length[:, None] + 1, 0)
        return torch.stack((position_ids, block_position_ids), dim=1) * real[:, None]  # (B, 2, T)
    # 1D variant: only a [MASK] (not a [gMASK]) pins the generated span to the mask position.
    fill = generated & (has_mask & ~use_gmask)[:, None]
    return torch.where(fill, mask_position, positions) * real


def _padding_mask(attention_mask: torch.Tensor | None, past_length: int, seq_length: int) -> torch.Tensor | None:
    """The 2D padding mask as bool (B, past + T); a mask of the new tokens only is allowed."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError("attention_mask must be the 2D (batch, length) padding mask")
    missing = past_length + seq_length - attention_mask.shape[1]
    if missing > 0:
        attention_mask = torch.cat((attention_mask.new_ones(attention_mask.shape[0], missing), attention_mask), dim=1)
    return attention_mask.bool()


class ChatGLMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the flags transformers reads, shared by both model classes."""

    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLMBlock"]
    _supports_sdpa = True
    # Loading in bf16/fp16 must not re-round the stored rotary frequencies.
    _keep_in_fp32_modules_strict = ["rotary_emb"]

    @property
    def is_gradient_checkpointing(self) -> bool:
        """transformers 5 deprecated this name, but peft 0.21 still reads it: answer without the warning."""
        return self.is_activation_checkpointing

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, 0.02) for linear and embedding weights, zero biases, unit norms, official ``inv_freq``."""
        std = getattr(self.config, "initializer_range", None) or 0.02
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(module.inv_freq.device))


class ChatGLMModel(ChatGLMPreTrainedModel):
    """``transformer``: word embeddings, the layers, the final LayerNorm and the prefix encoder."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.num_layers = config.num_layers
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.pre_seq_len = config.pre_seq_len
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([GLMBlock(config, i) for i in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        if self.pre_seq_len is not None:
            self.prefix_encoder = PrefixEncoder(
                config.pre_seq_len,
                kv_size=config.num_layers * config.hidden_size * 2,
                prefix_projection=config.prefix_projection,
                embed_dim=config.hidden_size,
                hidden_size=config.hidden_size,
            )
            self.dropout = nn.Dropout(0.1)  # on the prefix keys/values, as official
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def get_prompt(self, batch_size: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """P-tuning v2 prefix: per layer a (key, value) pair, each (B, nh, P, hs)."""
        device = self.prefix_encoder.embedding.weight.device
        prefix_tokens = torch.arange(self.pre_seq_len, device=device)[None].expand(batch_size, -1)
        kv = self.prefix_encoder(prefix_tokens).to(dtype)  # (B, P, 2 * L * H)
        # Official layout of the flat vector: (2 * L, nh, hs), layer i's key at 2i, its value at 2i + 1.
        kv = self.dropout(kv.view(batch_size, self.pre_seq_len, 2 * self.num_layers, self.num_heads, self.head_dim))
        kv = kv.permute(2, 0, 3, 1, 4)  # (2L, B, nh, P, hs)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.num_layers)]

    def _attention_mask(
        self,
        padding_mask: torch.Tensor | None,
        is_context: torch.Tensor,
        past_length: int,
        seq_length: int,
    ) -> torch.Tensor:
        """Which keys each new token may see: (B, 1, T, P + S) bool, True = attend.

        A key is visible when it is a real token and either not after the query (causal)
        or a context token (bidirectional context). ``is_context`` (B, T) flags the new
        tokens that are context; cached keys are always before the new queries, so only
        the new tokens' flags matter. Every query also sees itself, so padding rows are
        never fully masked (which would give NaN); the prefix is visible to every token.
        """
        B = is_context.shape[0]
        device = is_context.device
        S = past_length + seq_length
        q = torch.arange(past_length, S, device=device)[:, None]  # (T, 1) absolute query index
        k = torch.arange(S, device=device)[None]  # (1, S)
        key_is_context = torch.cat((is_context.new_zeros(B, past_length), is_context), dim=1)  # (B, S)
        allowed = (k <= q)[None] | key_is_context[:, None, :]  # (B, T, S)
        if padding_mask is not None:
            allowed = allowed & padding_mask[:, None, :]
        allowed = allowed | (k == q)[None]
        if self.pre_seq_len is not None:
            allowed = torch.cat((allowed.new_ones(B, seq_length, self.pre_seq_len), allowed), dim=2)
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
        """Hidden states after the final LayerNorm, (B, T, H); see ``ChatGLMForConditionalGeneration.forward``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False  # recomputed layers must not append to the cache twice
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_length = cache.get_seq_length() if cache is not None else 0
        padding_mask = _padding_mask(attention_mask, past_length, seq_length)

        if position_ids is None:
            # GLM positions depend on where [gMASK] and <sop> are, which a cache does not record.
            if input_ids is None or past_length > 0:
                raise ValueError(
                    "ChatGLM-6B needs position_ids with inputs_embeds or a non-empty cache "
                    "(see glmlab.models.chatglm.get_position_ids)"
                )
            position_ids = get_position_ids(input_ids, self.config, padding_mask)
        if self.config.position_encoding_2d:
            is_context = position_ids[:, 1] == 0  # block position 0 = context
        elif past_length == 0 and input_ids is not None:
            is_context = (input_ids == self.config.bos_token_id).long().cumsum(dim=1) == 0
        else:
            is_context = torch.zeros(batch_size, seq_length, dtype=torch.bool, device=inputs_embeds.device)
        mask = self._attention_mask(padding_mask, is_context, past_length, seq_length)
        prefix = self.get_prompt(batch_size, inputs_embeds.dtype) if self.pre_seq_len is not None else None

        hidden_states = inputs_embeds
        all_hidden = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            prefix_key, prefix_value = prefix[i] if prefix is not None else (None, None)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # Positional arguments so the prefix tensors get gradients; no cache (see above).
                hidden_states = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, position_ids, mask, prefix_key, prefix_value, None
                )
            else:
                hidden_states = layer(hidden_states, position_ids, mask, prefix_key, prefix_value, cache)
        hidden_states = self.final_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden)


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    """ChatGLM-6B causal LM: ``transformer`` (:class:`ChatGLMModel`) and an untied ``lm_head``.

    ``generate`` works with transformers' ``DynamicCache`` for greedy search, sampling and
    beam search, with left-padded batches (pass the 2D ``attention_mask``).
    """

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.transformer = ChatGLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.quantization_bit:  # THUDM's int4/int8 layers, filled by the loader (glmlab.quantization)
            quantize(self, config.quantization_bit, empty=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

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
            input_ids: (B, T) token ids (or ``inputs_embeds`` (B, T, H) with ``position_ids``).
            attention_mask: 2D (B, T) or (B, past + T) 1/0 padding mask, left or right padding.
                Without it every token is real; the context/causal structure always comes
                from the ids (``<sop>``), as in the official code.
            position_ids: (B, 2, T); derived from the ids and ``attention_mask`` when None
                (required with a non-empty cache: see :func:`get_position_ids`).
            past_key_values / cache: a transformers ``Cache`` (transformers 5 calls it ``cache``;
                ``past_key_values`` is the same thing under the older name).
            labels: (B, T); the loss is the fp32 cross-entropy of position t predicting
                ``labels[t + 1]``, averaged over the labels that are not -100.
            logits_to_keep: compute logits for the last N positions only (0 = all); ``generate`` uses 1.
        """
        if kwargs.get("output_attentions"):
            raise NotImplementedError("output_attentions is not supported")
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
        logits = self.lm_head(keep_positions(outputs.last_hidden_state, logits_to_keep))  # (B, T, V)
        return causal_lm_output(logits, labels, outputs, return_dict)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """transformers' inputs plus GLM positions, recomputed from the whole sequence every step.

        ``input_ids`` is the full sequence so far (prompt + generated, one row per beam);
        the positions of all of it are computed and the base class keeps the last
        ``next_sequence_length`` of them, like the ids. Recomputing (instead of appending +1
        as the base class does) is what GLM needs: new tokens keep the ``[gMASK]`` position
        and only the block position grows. Any ``position_ids`` passed in are replaced.
        """
        if inputs_embeds is not None and is_first_iteration:
            raise NotImplementedError("generate from inputs_embeds is not supported: GLM positions need the ids")
        kwargs.pop("position_ids", None)
        position_ids = get_position_ids(input_ids, self.config, attention_mask)  # (B, 2, T_total)
        return super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            position_ids=position_ids,
            **kwargs,
        )

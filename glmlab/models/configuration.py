"""One configuration class for every ChatGLM generation.

The official ChatGLM-6B and ChatGLM2/3-6B checkpoints all declare
``"model_type": "chatglm"`` in their ``config.json`` but carry different fields:
ChatGLM-6B (GLM v1) has ``inner_hidden_size``, ``position_encoding_2d`` and
``max_sequence_length``; ChatGLM2/3 have ``ffn_hidden_size``, ``kv_channels``,
``multi_query_group_num`` and ``seq_length``. Transformers allows one config class
per ``model_type``, so this class holds the union of both field sets and says
which architecture a given config describes (:attr:`ChatGLMConfig.architecture`).
Fields of the other generation stay ``None`` and are left out of a saved
``config.json``, so a saved folder looks like the official one.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Defaults of the official ChatGLM-6B configuration (GLM v1).
GLM_DEFAULTS = {
    "vocab_size": 150528,
    "inner_hidden_size": 16384,
    "max_sequence_length": 2048,
    "position_encoding_2d": True,
    "bos_token_id": 150004,
    "eos_token_id": 150005,
    "mask_token_id": 150000,
    "gmask_token_id": 150001,
    "pad_token_id": 0,
}

# Defaults of the official ChatGLM2-6B / ChatGLM3-6B configuration.
GLM2_DEFAULTS = {
    "padded_vocab_size": 65024,
    "ffn_hidden_size": 13696,
    "kv_channels": 128,
    "seq_length": 2048,
    "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False,
    "post_layer_norm": True,
    "add_bias_linear": False,
    "add_qkv_bias": False,
    "bias_dropout_fusion": True,
    "multi_query_attention": False,
    "multi_query_group_num": 1,
    "apply_query_key_layer_scaling": True,
    "attention_softmax_in_fp32": True,
    "fp32_residual_connection": False,
    "original_rope": True,
    "rope_ratio": 1.0,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# A config that sets any of these describes ChatGLM-6B (GLM v1).
_GLM_ONLY_FIELDS = ("inner_hidden_size", "max_sequence_length", "position_encoding_2d", "gmask_token_id", "mask_token_id")


_GENERATION_FIELDS = frozenset(
    ["vocab_size", "bos_token_id", "classifier_dropout", *GLM_DEFAULTS, *GLM2_DEFAULTS, "kv_channels"]
)


class ChatGLMConfig(PretrainedConfig):
    """Configuration of ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B (``model_type`` ``chatglm``).

    Field names are the official ones, so an official ``config.json`` loads
    unchanged. Unset fields of the detected generation take the official
    defaults of that generation in ``__post_init__``.
    """

    model_type = "chatglm"
    # transformers' generation utilities read ``num_hidden_layers``.
    attribute_map = {"num_hidden_layers": "num_layers"}
    keys_to_ignore_at_inference = ["past_key_values"]

    # --- shared by all generations ---
    vocab_size: int | None = None
    hidden_size: int = 4096
    num_layers: int = 28
    num_attention_heads: int = 32
    layernorm_epsilon: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    use_cache: bool = True
    quantization_bit: int = 0
    pre_seq_len: int | None = None
    prefix_projection: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False

    # --- ChatGLM-6B (GLM v1) only ---
    inner_hidden_size: int | None = None
    max_sequence_length: int | None = None
    position_encoding_2d: bool | None = None
    mask_token_id: int | None = None
    gmask_token_id: int | None = None

    # --- ChatGLM2-6B / ChatGLM3-6B only ---
    padded_vocab_size: int | None = None
    ffn_hidden_size: int | None = None
    kv_channels: int | None = None
    seq_length: int | None = None
    rmsnorm: bool | None = None
    apply_residual_connection_post_layernorm: bool | None = None
    post_layer_norm: bool | None = None
    add_bias_linear: bool | None = None
    add_qkv_bias: bool | None = None
    bias_dropout_fusion: bool | None = None
    multi_query_attention: bool | None = None
    multi_query_group_num: int | None = None
    apply_query_key_layer_scaling: bool | None = None
    attention_softmax_in_fp32: bool | None = None
    fp32_residual_connection: bool | None = None
    original_rope: bool | None = None
    rope_ratio: float | None = None
    classifier_dropout: float | None = None

    def __post_init__(self, **kwargs):
        defaults = GLM_DEFAULTS if self.architecture == "glm" else GLM2_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.architecture == "glm2":
            if self.vocab_size is None:
                self.vocab_size = self.padded_vocab_size
            if self.kv_channels is None:
                self.kv_channels = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict:
        """The config as a dict, without the other generation's unset fields (as in the official files)."""
        output = super().to_dict()
        return {key: value for key, value in output.items() if not (value is None and key in _GENERATION_FIELDS)}

    @property
    def architecture(self) -> str:
        """``"glm"`` for ChatGLM-6B, ``"glm2"`` for ChatGLM2-6B and ChatGLM3-6B (one architecture)."""
        if any(getattr(self, name, None) is not None for name in _GLM_ONLY_FIELDS):
            return "glm"
        return "glm2"

"""The names glmlab shares across modules, defined once: modes, methods, precisions, file names.

This module imports nothing from glmlab, so any module (the models included) may import it
without making a cycle. A test (``tests/test_structure.py``) fails when one of these values is
defined again elsewhere in the package.
"""

from __future__ import annotations

#: The three model generations: ChatGLM-6B, ChatGLM2-6B, ChatGLM3-6B.
MODES = ("glm", "glm2", "glm3")
#: ``--train_type`` values; :data:`glmlab.methods.STRATEGIES` holds one strategy for each.
TRAIN_TYPES = ("freeze", "ptuning", "lora", "all")
#: The precisions of training and loading, in their short names ...
PRECISIONS = ("fp32", "bf16", "fp16")
#: ... and the long names accepted as aliases everywhere a precision is asked for.
PRECISION_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}

#: ChatGLM3's conversation roles (its tokenizer's role tokens).
GLM3_ROLES = ("system", "user", "assistant", "observation")
#: The system prompt the official ChatGLM3 demos put before a tool list.
TOOLS_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"

#: Label value the loss ignores (prompt and padding tokens), as PyTorch's cross entropy.
IGNORE_INDEX = -100

#: What every training checkpoint holds beside its weights (:mod:`glmlab.checkpoint` writes it).
CHECKPOINT_INFO_NAME = "glmlab_checkpoint.json"
#: The P-tuning v2 prefix encoder's parameters start with this name ...
PREFIX_ENCODER = "transformer.prefix_encoder."
#: ... and a ``ptuning`` checkpoint saves them in this file.
PREFIX_FILE = "prefix_encoder.safetensors"


def canonical_precision(name: str) -> str:
    """``"bfloat16"`` -> ``"bf16"``: the short name of a precision given by its short or long name.

    Raises ``ValueError`` naming the accepted names for anything else.
    """
    text = str(name).strip().lower().removeprefix("torch.")
    text = PRECISION_ALIASES.get(text, text)
    if text not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or {', '.join(PRECISION_ALIASES)}); "
                         f"got {name!r}")
    return text

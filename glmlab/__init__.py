"""glmlab: fine-tune ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B with a readable loop.

``load_model`` / ``load_tokenizer`` / ``infer_mode`` load official-layout checkpoint folders
(:mod:`glmlab.loading`). Importing glmlab registers ``model_type`` ``chatglm`` with transformers'
Auto classes, so ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` work without ``trust_remote_code``.
"""

from glmlab.loading import (
    CheckpointError,
    infer_mode,
    load_model,
    load_tokenizer,
    register_auto_classes,
)
from glmlab.models.configuration import ChatGLMConfig

__version__ = "0.1.0"

register_auto_classes()

__all__ = ["ChatGLMConfig", "CheckpointError", "__version__", "infer_mode", "load_model", "load_tokenizer"]

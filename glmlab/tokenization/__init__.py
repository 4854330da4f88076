"""Tokenizers of ChatGLM-6B, ChatGLM2-6B and ChatGLM3-6B on transformers 5.

- :class:`ChatGLMTokenizer` — ChatGLM-6B, vocabulary file ``ice_text.model``.
- :class:`ChatGLM2Tokenizer` — ChatGLM2-6B, vocabulary file ``tokenizer.model``.
- :class:`ChatGLM3Tokenizer` — ChatGLM3-6B, vocabulary file ``tokenizer.model``.

Each loads from a folder with ``Cls.from_pretrained(folder)`` and saves with ``save_pretrained``.
"""

from .chatglm import ChatGLMTokenizer
from .chatglm2 import ChatGLM2Tokenizer, ChatGLM3Tokenizer

__all__ = ["ChatGLM2Tokenizer", "ChatGLM3Tokenizer", "ChatGLMTokenizer"]

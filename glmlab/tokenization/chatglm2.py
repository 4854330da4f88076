"""The ChatGLM2-6B and ChatGLM3-6B tokenizers: a plain ``tokenizer.model`` plus appended command tokens.

As the official ``tokenization_chatglm.py`` of THUDM/chatglm2-6b and THUDM/chatglm3-6b:

- text goes straight through SentencePiece (byte fallback; no whitespace rewriting);
- the command tokens ``[MASK] [gMASK] [sMASK] sop eop`` (ChatGLM3 adds ``<|system|> <|user|>
  <|assistant|> <|observation|>``) take the ids right after the SentencePiece vocabulary;
  they are never produced from plain text (``sop`` in a sentence stays a word);
- ``tokenizer(text)`` prefixes ``[gMASK] sop``; padding uses id 0 (``<unk>``), eos is ``</s>``;
- ChatGLM2 builds a ``[Round N]`` text prompt (:meth:`ChatGLM2Tokenizer.build_prompt`), ChatGLM3
  builds the prompt from role tokens (:meth:`ChatGLM3Tokenizer.build_chat_input`).

What differs from the official files: no ``position_ids`` from ``__call__`` and padding works on
either side (the 2D ``attention_mask`` is the only mask).
"""

from __future__ import annotations

import json
import re

from glmlab.constants import GLM3_ROLES

from .base import SentencePieceGLMTokenizer


class ChatGLM2Tokenizer(SentencePieceGLMTokenizer):
    """Tokenizer of ChatGLM2-6B. Build it with ``ChatGLM2Tokenizer.from_pretrained(folder)``,
    where ``folder`` holds ``tokenizer.model`` (and optionally ``tokenizer_config.json``)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}

    COMMAND_TOKENS: tuple[str, ...] = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
    # Command tokens that ``encode_special_tokens=True`` recognises inside text.
    TEXT_COMMAND_TOKENS: tuple[str, ...] = ()
    # Official ChatGLM2 decodes command tokens to nothing, ChatGLM3 to their names.
    DECODE_COMMANDS_AS_TEXT = False

    def __init__(
        self,
        vocab_file: str,
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "<unk>",
        padding_side: str = "left",
        encode_special_tokens: bool = False,
        **kwargs,
    ):
        self.encode_special_tokens = encode_special_tokens
        super().__init__(
            vocab_file,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            padding_side=padding_side,
            encode_special_tokens=encode_special_tokens,
            **kwargs,
        )

    def _init_vocab(self) -> None:
        n_words = self.sp_model.get_piece_size()
        self._commands = {token: n_words + i for i, token in enumerate(self.COMMAND_TOKENS)}
        self._commands_by_id = {i: token for token, i in self._commands.items()}
        # The names the official ``get_command`` accepts besides the command tokens.
        self._sp_commands = {
            "<bos>": self.sp_model.bos_id(),
            "<eos>": self.sp_model.eos_id(),
            "<unk>": self.sp_model.unk_id(),
            "<pad>": self.sp_model.unk_id(),
        }
        # Officially the role tokens are only recognised in text with ``encode_special_tokens``.
        self._text_command_pattern = (
            re.compile("|".join(re.escape(t) for t in self.TEXT_COMMAND_TOKENS)) if self.TEXT_COMMAND_TOKENS else None
        )

    # ----------------------------------------------------------------- commands
    def get_command(self, token: str) -> int:
        """Id of a command token (``"[gMASK]"``, ``"sop"``, ``"<|user|>"``, ...) or of
        ``"<bos>"``, ``"<eos>"``, ``"<unk>"``, ``"<pad>"``."""
        if token in self._sp_commands:
            return self._sp_commands[token]
        if token not in self._commands:
            raise KeyError(f"{token!r} is not a command token of {type(self).__name__}")
        return self._commands[token]

    @property
    def command_ids(self) -> set[int]:
        return set(self._commands_by_id) | {self._sp_commands["<bos>"], self._sp_commands["<eos>"]}

    def get_prefix_tokens(self) -> list[int]:
        """``[gMASK] sop``, the prefix of every ChatGLM2/3 input."""
        return [self.get_command("[gMASK]"), self.get_command("sop")]

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size() + len(self._commands)

    def _convert_token_to_id(self, token: str) -> int:
        if token in self._commands:
            return self._commands[token]
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        if index in self._commands_by_id:
            return self._commands_by_id[index]
        if not 0 <= index < self.sp_model.get_piece_size():
            return ""
        return self.sp_model.id_to_piece(index)

    # ----------------------------------------------------------------- text -> pieces
    def _tokenize(self, text: str, **kwargs) -> list[str]:
        if not (self.encode_special_tokens and self._text_command_pattern):
            return self.sp_model.encode(text, out_type=str)
        pieces, start = [], 0
        for match in self._text_command_pattern.finditer(text):
            if start < match.start():
                pieces.extend(self.sp_model.encode(text[start : match.start()], out_type=str))
            pieces.append(match.group())
            start = match.end()
        if start < len(text):
            pieces.extend(self.sp_model.encode(text[start:], out_type=str))
        return pieces

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        """``[gMASK] sop ids``, or ``[gMASK] sop ids_0 ids_1 </s>`` for a pair."""
        ids = self.get_prefix_tokens() + list(token_ids_0)
        if token_ids_1 is not None:
            ids = ids + list(token_ids_1) + [self.get_command("<eos>")]
        return ids

    def build_prompt(self, query: str, history: list[tuple[str, str]] | None = None) -> str:
        """The official ChatGLM2 chat prompt: ``[Round N]\\n\\n问：...\\n\\n答：...`` per turn."""
        prompt = ""
        for i, (old_query, response) in enumerate(history or []):
            prompt += f"[Round {i + 1}]\n\n问：{old_query}\n\n答：{response}\n\n"
        prompt += f"[Round {len(history or []) + 1}]\n\n问：{query}\n\n答："
        return prompt

    # ----------------------------------------------------------------- ids -> text
    def _decode_piece(self, index: int) -> str:
        if index in self._commands_by_id:
            return self._commands_by_id[index] if self.DECODE_COMMANDS_AS_TEXT else ""
        if index in self._sp_commands.values():  # <unk>/<pad>, <s>, </s> decode to nothing, as officially
            return ""
        return self._convert_id_to_token(index)


class ChatGLM3Tokenizer(ChatGLM2Tokenizer):
    """Tokenizer of ChatGLM3-6B: ChatGLM2's plus the role tokens and the role-based chat format."""

    COMMAND_TOKENS = ChatGLM2Tokenizer.COMMAND_TOKENS + ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
    TEXT_COMMAND_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
    DECODE_COMMANDS_AS_TEXT = True
    ROLES = GLM3_ROLES

    def build_single_message(self, role: str, metadata: str, message: str) -> list[int]:
        """Ids of one turn: ``<|role|>`` + ``metadata\\n`` + ``message`` (no prefix tokens)."""
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}, got {role!r}")
        role_tokens = [self.get_command(f"<|{role}|>")] + self.sp_model.encode(f"{metadata}\n")
        return role_tokens + self.sp_model.encode(message)

    def build_chat_input(self, query: str, history: list[dict] | None = None, role: str = "user"):
        """The official ChatGLM3 chat input: ``[gMASK] sop``, every history turn, the query turn
        and ``<|assistant|>``, as a batch of one (``input_ids`` and ``attention_mask`` tensors).

        ``history`` items are ``{"role", "content"}`` dicts (optionally ``"metadata"``, and ``"tools"``
        on a system turn, appended to its content as JSON).
        """
        input_ids = []
        for item in history or []:
            content = item["content"]
            if item["role"] == "system" and "tools" in item:
                content = content + "\n" + json.dumps(item["tools"], indent=4, ensure_ascii=False)
            input_ids.extend(self.build_single_message(item["role"], item.get("metadata", ""), content))
        input_ids.extend(self.build_single_message(role, "", query))
        input_ids.append(self.get_command("<|assistant|>"))
        return self.prepare_for_model(input_ids, return_tensors="pt", prepend_batch_axis=True)

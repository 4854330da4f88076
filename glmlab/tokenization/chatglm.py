"""The ChatGLM-6B (GLM v1) tokenizer: ``ice_text.model`` with whitespace pieces and in-vocabulary specials.

What it does, as the official ``tokenization_chatglm.py`` of THUDM/chatglm-6b does:

- before SentencePiece, ``\\n`` becomes ``<n>``, ``\\t`` becomes ``<|tab|>`` and every run of 2..80
  spaces becomes one ``<|blank_N|>`` piece (longer runs are cut into runs of 80 first);
- the special pieces (``[MASK]``, ``[gMASK]``, ``<sop>``, ``<eop>``, ...) live inside the
  SentencePiece vocabulary; every SentencePiece id is shifted by ``num_image_tokens`` (20000 in the
  first release, 0 in the released ``tokenizer_config.json`` and in glmlab's fixtures);
- ``tokenizer(text)`` appends ``[gMASK] <sop>`` (a second sequence follows, closed by ``<eop>``).

What differs from the official file: no 4D attention mask and no ``position_ids`` come out of
``__call__`` (the model derives positions from the ids and a 2D padding mask), and padding works
on either side.
"""

from __future__ import annotations

import re

from .base import SentencePieceGLMTokenizer

_IMAGE_TOKEN = re.compile(r"<image_(\d+)>")


class ChatGLMTokenizer(SentencePieceGLMTokenizer):
    """Tokenizer of ChatGLM-6B. Build it with ``ChatGLMTokenizer.from_pretrained(folder)``,
    where ``folder`` holds ``ice_text.model`` (and optionally ``tokenizer_config.json``).

    Special tokens: ``bos_token`` is ``<sop>``, ``eos_token`` is ``<eop>`` (both as in the official
    config: generation stops at ``<eop>``), ``end_token`` is ``</s>``, ``pad_token`` is ``<pad>``.
    """

    vocab_files_names = {"vocab_file": "ice_text.model"}

    # Special pieces of the vocabulary in their official order.
    COMMAND_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>")

    def __init__(
        self,
        vocab_file: str,
        do_lower_case: bool = False,
        remove_space: bool = False,
        bos_token: str = "<sop>",
        eos_token: str = "<eop>",
        end_token: str = "</s>",
        mask_token: str = "[MASK]",
        gmask_token: str = "[gMASK]",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        num_image_tokens: int = 0,
        max_blank_length: int = 80,
        padding_side: str = "left",
        **kwargs,
    ):
        self.do_lower_case = do_lower_case
        self.remove_space = remove_space
        self.num_image_tokens = num_image_tokens
        self.max_blank_length = max_blank_length
        # ``gmask_token`` and ``end_token`` become transformers "model specific" special tokens:
        # they are saved in tokenizer_config.json and dropped by ``skip_special_tokens``.
        super().__init__(
            vocab_file,
            do_lower_case=do_lower_case,
            remove_space=remove_space,
            bos_token=bos_token,
            eos_token=eos_token,
            end_token=end_token,
            mask_token=mask_token,
            gmask_token=gmask_token,
            pad_token=pad_token,
            unk_token=unk_token,
            num_image_tokens=num_image_tokens,
            max_blank_length=max_blank_length,
            padding_side=padding_side,
            **kwargs,
        )

    # ----------------------------------------------------------------- ids of the special tokens
    @property
    def gmask_token_id(self) -> int:
        """Id of ``[gMASK]``: marks where generation starts (appended after the prompt)."""
        return self.convert_tokens_to_ids(str(self._special_tokens_map["gmask_token"]))

    @property
    def eop_token_id(self) -> int:
        """Id of ``<eop>``, the end of a generated piece (the eos token of ChatGLM-6B)."""
        return self.convert_tokens_to_ids("<eop>")

    @property
    def end_token_id(self) -> int:
        """Id of ``</s>``."""
        return self.convert_tokens_to_ids(str(self._special_tokens_map["end_token"]))

    def get_command(self, token: str) -> int:
        """Id of a special piece by name (``"[gMASK]"``, ``"<sop>"``, ``"<eop>"``, ``"<pad>"``, ...)."""
        index = self._convert_token_to_id(token)
        if self._convert_id_to_token(index) != token:
            raise KeyError(f"{token!r} is not in the ChatGLM-6B vocabulary")
        return index

    @property
    def command_ids(self) -> set[int]:
        return {self._convert_token_to_id(t) for t in self.COMMAND_TOKENS + ("</s>", "<s>")}

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return self.num_image_tokens + self.sp_model.get_piece_size()

    def _convert_token_to_id(self, token: str) -> int:
        match = _IMAGE_TOKEN.fullmatch(token)
        if match and int(match.group(1)) < self.num_image_tokens:
            return int(match.group(1))
        return self.sp_model.piece_to_id(token) + self.num_image_tokens

    def _convert_id_to_token(self, index: int) -> str:
        if 0 <= index < self.num_image_tokens:
            return f"<image_{index}>"
        if not 0 <= index < self.vocab_size:
            return ""
        return self.sp_model.id_to_piece(index - self.num_image_tokens)

    # ----------------------------------------------------------------- text -> pieces
    def _encode_whitespace(self, text: str) -> str:
        """``\\n`` -> ``<n>``, ``\\t`` -> ``<|tab|>``, runs of spaces -> ``<|blank_N|>``."""
        text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
        longest = self.max_blank_length

        def blanks(match: re.Match) -> str:
            full, rest = divmod(len(match.group()), longest)
            tail = f"<|blank_{rest}|>" if rest >= 2 else " " * rest
            return f"<|blank_{longest}|>" * full + tail

        return re.sub(" {2,}", blanks, text)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        if self.remove_space:
            text = " ".join(text.strip().split())
        if self.do_lower_case:
            text = text.lower()
        return self.sp_model.encode(self._encode_whitespace(text), out_type=str)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        """``ids [gMASK] <sop>``, or ``ids_0 [gMASK] <sop> ids_1 <eop>`` for a pair."""
        ids = list(token_ids_0) + [self.gmask_token_id, self.bos_token_id]
        if token_ids_1 is not None:
            ids = ids + list(token_ids_1) + [self.eos_token_id]
        return ids

    # ----------------------------------------------------------------- ids -> text
    def _decode_piece(self, index: int) -> str:
        return self._convert_id_to_token(index)

    def _pieces_to_text(self, pieces: list[str]) -> str:
        text = self.sp_model.decode_pieces([p for p in pieces if not _IMAGE_TOKEN.fullmatch(p)])
        text = text.replace("<n>", "\n").replace("<|tab|>", "\t")
        return re.sub(r"<\|blank_(\d+)\|>", lambda m: " " * int(m.group(1)), text)

"""What the three ChatGLM tokenizers share: a SentencePiece model under a transformers 5 slow tokenizer.

The official ChatGLM tokenizer files were written against transformers 4's ``PreTrainedTokenizer``
and no longer construct on transformers 5; their ``_pad`` also pads only on the left and, for
ChatGLM-6B, builds a 4D mask and 2D position ids. Here each generation subclasses
:class:`SentencePieceGLMTokenizer`, which owns the ``sentencepiece`` processor and leaves transformers'
``PythonBackend`` (``PreTrainedTokenizer``) in charge of everything it already does well: splitting on
named special tokens, truncation, padding on either side with a 2D ``attention_mask``, tensors,
``save_pretrained`` / ``from_pretrained``.

We do not use transformers' ``SentencePieceBackend``: it assumes every id is a SentencePiece id
(ChatGLM2/3 append their command tokens after the SentencePiece vocabulary, ChatGLM-6B may offset
every id by ``num_image_tokens``) and it rewrites the model's dummy-prefix handling.

A subclass says how ids map to SentencePiece pieces and to "command" tokens (``[gMASK]``, ``sop``, ...);
decoding, vocabulary, saving and pickling live here.
"""

from __future__ import annotations

import os
from shutil import copyfile

import sentencepiece as spm
from transformers import PreTrainedTokenizer


class SentencePieceGLMTokenizer(PreTrainedTokenizer):
    """Base class: a SentencePiece vocabulary plus generation-specific command tokens.

    Subclasses set ``vocab_files_names`` and implement ``_convert_token_to_id``,
    ``_convert_id_to_token``, ``_tokenize``, ``build_inputs_with_special_tokens``,
    ``vocab_size``, ``command_ids`` and ``_decode_piece``.
    """

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # the official default for all three generations

    def __init__(self, vocab_file: str, **kwargs):
        # The vocabulary must exist before ``super().__init__``: it registers the special tokens,
        # which looks them up in ``get_vocab()``.
        self.vocab_file = vocab_file
        self.sp_model = self._load_sp_model(vocab_file)
        self._base_vocab: dict[str, int] | None = None
        self._init_vocab()
        super().__init__(**kwargs)

    def _init_vocab(self) -> None:
        """Hook for a subclass to lay out its command tokens once ``self.sp_model`` is loaded."""

    @staticmethod
    def _load_sp_model(vocab_file: str) -> spm.SentencePieceProcessor:
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"SentencePiece vocabulary file not found: {vocab_file!r}")
        return spm.SentencePieceProcessor(model_file=vocab_file)

    # ----------------------------------------------------------------- vocabulary
    @property
    def command_ids(self) -> set[int]:
        """Ids of the generation's command tokens (``[MASK]``, ``[gMASK]``, ``sop``/``<sop>``, ...)."""
        raise NotImplementedError

    def get_vocab(self) -> dict[str, int]:
        """Token -> id for the whole vocabulary (SentencePiece pieces, command tokens, added tokens)."""
        if self._base_vocab is None:
            self._base_vocab = {self._convert_id_to_token(i): i for i in range(self.vocab_size)}
        vocab = dict(self._base_vocab)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        """1 for special/command tokens, 0 for text tokens (used by transformers' data collators)."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when the ids already hold their special tokens")
            special = self._special_ids()
            return [1 if int(i) in special else 0 for i in token_ids_0]
        with_special = self.build_inputs_with_special_tokens(list(token_ids_0), token_ids_1)
        return self.get_special_tokens_mask(with_special, already_has_special_tokens=True)

    def _special_ids(self) -> set[int]:
        return set(self.all_special_ids) | set(self.command_ids)

    # ----------------------------------------------------------------- decoding
    def _decode_piece(self, index: int) -> str:
        """The SentencePiece piece that id ``index`` contributes to decoded text ("" for nothing).

        Decoding joins these pieces with one ``DecodePieces`` call, as the official tokenizers do,
        so spacing around command tokens is the official one.
        """
        raise NotImplementedError

    def _pieces_to_text(self, pieces: list[str]) -> str:
        return self.sp_model.decode_pieces(pieces)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs,
    ) -> str:
        """Decode ids to text.

        Padding ids are always dropped (as the official tokenizers do); with ``skip_special_tokens``
        the named special tokens and the command tokens are dropped too. Ids outside the vocabulary
        (a model's padded embedding rows) decode to nothing.
        """
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        skip = self._special_ids() if skip_special_tokens else set()
        pad_id = self.pad_token_id
        pieces = []
        for index in ids:
            if index == pad_id or index in skip or index < 0:
                continue
            if index >= self.vocab_size:  # a token added after loading, or an id the vocabulary lacks
                added = self._added_tokens_decoder.get(index)
                piece = added.content if added is not None else ""
            else:
                piece = self._decode_piece(index)
            if piece:
                pieces.append(piece)
        text = self._pieces_to_text(pieces)
        clean_up = (
            self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        )
        return self.clean_up_tokenization(text) if clean_up else text

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens back into text (pieces the vocabulary lacks are kept as they are)."""
        return self._pieces_to_text(tokens)

    # ----------------------------------------------------------------- saving / pickling
    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write the SentencePiece model under its official file name."""
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"Vocabulary path ({save_directory}) should be a directory")
        name = self.vocab_files_names["vocab_file"]
        out_file = os.path.join(save_directory, f"{filename_prefix}-{name}" if filename_prefix else name)
        if os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(out_file):
                copyfile(self.vocab_file, out_file)
        else:
            with open(out_file, "wb") as f:
                f.write(self.sp_model.serialized_model_proto())
        return (out_file,)

    def __getstate__(self):
        # The SentencePiece processor is rebuilt from its serialized model (DataLoader workers, deepcopy).
        state = self.__dict__.copy()
        state["sp_model"] = None
        state["_sp_model_proto"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        proto = state.pop("_sp_model_proto")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.LoadFromSerializedProto(proto)

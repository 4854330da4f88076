"""Write a tiny random-weight ChatGLM checkpoint folder in the official layout, in seconds.

    python -m glmlab.tiny --mode glm3 --output_dir tiny-glm3

The folder looks like a downloaded ``THUDM/chatglm*-6b`` one (``config.json``, weights, the
SentencePiece vocabulary under its official name, ``tokenizer_config.json``), so everything that
takes a real checkpoint (loading, training, the notebooks, the tests) runs on it on a CPU.

The tokenizer is a SentencePiece model trained here, in-process, on ``glmlab/assets/tiny_corpus.txt``
and laid out like the real vocabularies:

* ``glm`` (ChatGLM-6B, ``ice_text.model``): a unigram model whose vocabulary holds the special
  pieces ``[MASK] [gMASK] [sMASK] <unused_0> <sop> <eop> <ENC> <dBLOCK> <n> <|tab|> <|blank_2|>..<|blank_80|>``,
  with ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 and ``<pad>`` 3.
* ``glm2`` / ``glm3`` (``tokenizer.model``): a plain BPE model with byte fallback (``<unk>`` 0,
  ``<s>`` 1, ``</s>`` 2); the tokenizer class appends its command tokens after it.

The config's special-token ids are the tokenizer's and its vocabulary size is the tokenizer's,
padded to a multiple of 64 (as the official ``padded_vocab_size``). Everything is deterministic for a
given ``--seed``. Both the tokenizer config and the model config record the mode (``glmlab_mode``),
which is how :func:`glmlab.infer_mode` tells a tiny ChatGLM3 folder from a ChatGLM2 one.
"""

from __future__ import annotations

import argparse
import io
import re
import json
import sys
from pathlib import Path

import torch

from glmlab.loading import (
    MODE_KEY,
    MODES,
    VOCAB_FILES,
    WEIGHTS_FORMATS,
    _model_class,
    write_weights,
)
from glmlab.models.configuration import ChatGLMConfig
from glmlab.parsers import OneLineParser

CORPUS = Path(__file__).parent / "assets" / "tiny_corpus.txt"

# ChatGLM-6B's special pieces, in the official order, inside the SentencePiece vocabulary.
GLM_SPECIAL_PIECES = (
    ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>", "<n>", "<|tab|>"]
    + [f"<|blank_{n}|>" for n in range(2, 81)]
)
# Command tokens the ChatGLM2/3 tokenizers append after the SentencePiece vocabulary.
GLM2_COMMANDS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
GLM3_COMMANDS = GLM2_COMMANDS + ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
# SentencePiece vocabulary sizes: enough for the data's words (English ones included) to be single pieces.
SP_VOCAB_SIZE = {"glm": 2000, "glm2": 2000, "glm3": 2000}
VOCAB_MULTIPLE = 64
# Marks the edges of world words in the text the tokenizers are trained on (never in the data).
WORD_EDGE = "\u241f"
# Files make_tiny writes (and, with overwrite=True, removes first).
_CHECKPOINT_FILES = (
    "config.json", "tokenizer_config.json", "ice_text.model", "tokenizer.model",
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
_CHECKPOINT_GLOBS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")


def corpus_lines() -> list[str]:
    """The text the tiny tokenizers are trained on: ``assets/tiny_corpus.txt`` (comment lines dropped)
    plus a sample of every data set glmlab writes (:func:`glmlab.synth.tokenizer_text`), so that
    every character of the project's data has a piece."""
    from glmlab.synth import tokenizer_text

    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")] + tokenizer_text()


def _glm_pretokenize(line: str) -> str:
    """What ChatGLM-6B's tokenizer hands SentencePiece: newlines, tabs and runs of spaces as pieces."""
    import re

    line = line.replace("\n", "<n>").replace("\t", "<|tab|>")
    return re.sub(" {2,}", lambda m: f"<|blank_{min(len(m.group(0)), 80)}|>", line)


def train_sentencepiece(mode: str) -> bytes:
    """Train the tiny SentencePiece vocabulary of ``mode`` in memory; returns the serialized model.

    Laid out as the official vocabularies are: ChatGLM-6B's tokenizer turns whitespace into
    special pieces before SentencePiece sees it; ChatGLM2/3's ``tokenizer.model`` keeps newlines and
    runs of spaces itself (identity normaliser, no whitespace folding, byte fallback: a newline is
    the byte piece ``<0x0A>``). No normaliser folds full-width punctuation, so every line of the
    project's data decodes back to itself. Digits are split, one piece each, and every word of the
    car-repair world is one piece (:func:`glmlab.synth.world_words`), so no piece crosses a word's edge
    ("节气门积碳" is always 节气门 + 积碳): ChatGLM-6B's vocabulary holds them as user-defined pieces after
    its special ones; the BPE trainer of ChatGLM2/3 sees every occurrence fenced off.
    """
    import sentencepiece as spm

    lines = corpus_lines()
    model = io.BytesIO()
    options = dict(
        model_writer=model,
        vocab_size=SP_VOCAB_SIZE[mode],
        character_coverage=1.0,
        num_threads=1,  # deterministic
        unk_id=0,
        bos_id=1,
        eos_id=2,
        split_digits=True,
        max_sentence_length=8192,
        minloglevel=2,
    )
    from glmlab.synth import world_words

    if mode == "glm":  # world words join the special pieces as user-defined ones (after them, as in ice_text)
        lines = [_glm_pretokenize(line) for line in lines]
        options.update(model_type="unigram", pad_id=3, pad_piece="<pad>",
                       user_defined_symbols=GLM_SPECIAL_PIECES + world_words(),
                       normalization_rule_name="identity", hard_vocab_limit=False)
    else:  # no BPE merge may cross the edge of a world word: the trainer sees each occurrence fenced off
        fence = re.compile("|".join(map(re.escape, world_words())))
        lines = [fence.sub(lambda m: f"{WORD_EDGE}{m.group(0)}{WORD_EDGE}", line) for line in lines]
        options.update(model_type="bpe", pad_id=-1, byte_fallback=True, normalization_rule_name="identity",
                       pretokenization_delimiter=WORD_EDGE,
                       remove_extra_whitespaces=False, allow_whitespace_only_pieces=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), **options)
    return model.getvalue()


def special_token_ids(mode: str, sp_model: bytes) -> tuple[dict[str, int], int]:
    """(special token -> id, tokenizer vocabulary size) for a tiny vocabulary, as the tokenizer classes number them."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    n = sp.get_piece_size()
    if mode == "glm":
        ids = {piece: sp.piece_to_id(piece) for piece in ("<pad>", "</s>", "[MASK]", "[gMASK]", "<sop>", "<eop>")}
        return ids, n
    commands = GLM3_COMMANDS if mode == "glm3" else GLM2_COMMANDS
    ids = {token: n + i for i, token in enumerate(commands)}
    ids.update({"<unk>": sp.unk_id(), "</s>": sp.eos_id()})
    return ids, n + len(commands)


def tokenizer_config(mode: str) -> dict:
    """The tiny folder's ``tokenizer_config.json``: the official keys, plus the recorded mode."""
    if mode == "glm":
        config = {
            "name_or_path": "glmlab/tiny-chatglm-6b",
            "bos_token": "<sop>",
            "eos_token": "<eop>",
            "end_token": "</s>",
            "gmask_token": "[gMASK]",
            "mask_token": "[MASK]",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "remove_space": False,
            "do_lower_case": False,
            "num_image_tokens": 0,
        }
    else:
        name = "chatglm3-6b" if mode == "glm3" else "chatglm2-6b"
        config = {"name_or_path": f"glmlab/tiny-{name}", "remove_space": False, "do_lower_case": False}
    # The official files name this class for every generation; glmlab resolves it by mode.
    config["tokenizer_class"] = "ChatGLMTokenizer"
    config[MODE_KEY] = mode
    return config


def _check_sizes(mode: str, sizes: dict) -> None:
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    if hidden % heads:
        raise ValueError(f"--num_attention_heads ({heads}) must divide --hidden_size ({hidden})")
    if mode == "glm":
        for name in ("multi_query_group_num", "kv_channels"):
            if sizes[name] is not None:
                raise ValueError(f"--{name} applies to --mode glm2/glm3 only (ChatGLM-6B has no such field)")
        if (hidden // heads) % 4:
            raise ValueError(f"head size hidden_size/num_attention_heads ({hidden // heads}) must be a multiple of 4 (2D rotary)")
    else:
        groups = sizes["multi_query_group_num"]
        if groups is not None and heads % groups:
            raise ValueError(f"--multi_query_group_num ({groups}) must divide --num_attention_heads ({heads})")
        kv_channels = sizes["kv_channels"] or hidden // heads
        if kv_channels % 4:
            raise ValueError(f"--kv_channels ({kv_channels}) must be a multiple of 4 (rotary on half of each head)")


def tiny_config(
    mode: str,
    special: dict[str, int],
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_attention_heads: int = 4,
    ffn_hidden_size: int | None = None,
    multi_query_group_num: int | None = None,
    kv_channels: int | None = None,
    seq_length: int = 512,
) -> ChatGLMConfig:
    """The tiny model's config: official fields, tiny sizes, the tokenizer's special ids."""
    ffn = ffn_hidden_size or 4 * hidden_size
    common = dict(hidden_size=hidden_size, num_layers=num_layers, num_attention_heads=num_attention_heads, layernorm_epsilon=1e-5)
    if mode == "glm":
        return ChatGLMConfig(
            vocab_size=vocab_size,
            inner_hidden_size=ffn,
            max_sequence_length=seq_length,
            position_encoding_2d=True,
            bos_token_id=special["<sop>"],
            eos_token_id=special["<eop>"],
            mask_token_id=special["[MASK]"],
            gmask_token_id=special["[gMASK]"],
            pad_token_id=special["<pad>"],
            **common,
        )
    return ChatGLMConfig(
        padded_vocab_size=vocab_size,
        vocab_size=vocab_size,
        ffn_hidden_size=ffn,
        kv_channels=kv_channels or hidden_size // num_attention_heads,
        multi_query_attention=True,
        multi_query_group_num=multi_query_group_num or min(2, num_attention_heads),
        seq_length=seq_length,
        add_qkv_bias=True,
        add_bias_linear=False,
        rmsnorm=True,
        apply_residual_connection_post_layernorm=False,
        post_layer_norm=True,
        original_rope=True,
        eos_token_id=special["</s>"],
        pad_token_id=special["<unk>"],
        **common,
    )


def _prepare_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} exists and is not a folder")
    existing = [p for p in output_dir.iterdir()] if output_dir.is_dir() else []
    if existing and not overwrite:
        raise ValueError(f"--output_dir {output_dir} is not empty (pass --overwrite to replace a checkpoint there)")
    if overwrite and output_dir.is_dir():
        stale = [output_dir / name for name in _CHECKPOINT_FILES]
        stale += [p for pattern in _CHECKPOINT_GLOBS for p in output_dir.glob(pattern)]
        for path in stale:
            path.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


def make_tiny(
    mode: str,
    output_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_attention_heads: int = 4,
    ffn_hidden_size: int | None = None,
    multi_query_group_num: int | None = None,
    kv_channels: int | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    weights_format: str = "safetensors",
    overwrite: bool = False,
) -> Path:
    """Write a tiny random-weight checkpoint folder of ``mode`` (glm/glm2/glm3) and return its path.

    Sizes default to a model of about 0.2M parameters (hidden 64, 2 layers, 4 heads; the feed-forward
    width 4x hidden; ChatGLM2/3: 2 key/value groups, kv_channels hidden/heads). ``vocab_size`` (the
    embedding rows) defaults to the tokenizer's size padded to a multiple of 64 and cannot be smaller
    than the tokenizer's. ``weights_format`` is one of ``safetensors``, ``sharded_safetensors``,
    ``bin``, ``sharded_bin``. Raises ValueError (one line) for invalid arguments.
    """
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"--weights_format must be one of {', '.join(WEIGHTS_FORMATS)}, got {weights_format!r}")
    sizes = dict(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_attention_heads=num_attention_heads,
        ffn_hidden_size=ffn_hidden_size,
        multi_query_group_num=multi_query_group_num,
        kv_channels=kv_channels,
        vocab_size=vocab_size,
    )
    _check_sizes(mode, sizes)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")

    sp_model = train_sentencepiece(mode)
    special, tokenizer_vocab = special_token_ids(mode, sp_model)
    padded = -(-tokenizer_vocab // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if vocab_size is not None and vocab_size < tokenizer_vocab:
        raise ValueError(f"--vocab_size ({vocab_size}) is smaller than the tokenizer's vocabulary ({tokenizer_vocab})")
    sizes.pop("vocab_size")
    config = tiny_config(mode, special, vocab_size or padded, **sizes)

    output_dir = Path(output_dir)
    _prepare_output_dir(output_dir, overwrite)

    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = _model_class(config.architecture)(config).float()
    config.architectures = [type(model).__name__]
    setattr(config, MODE_KEY, mode)
    config.dtype = torch.float32
    config.save_pretrained(output_dir)
    write_weights(model.state_dict(), output_dir, weights_format)

    (output_dir / VOCAB_FILES[mode]).write_bytes(sp_model)
    text = json.dumps(tokenizer_config(mode), indent=2, ensure_ascii=False) + "\n"
    (output_dir / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return output_dir


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m glmlab.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", required=True, choices=MODES, help="which ChatGLM generation to imitate")
    parser.add_argument("--output_dir", required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--hidden_size", type=int, default=64, help="model width")
    parser.add_argument("--num_layers", type=int, default=2, help="transformer layers")
    parser.add_argument("--num_attention_heads", type=int, default=4, help="attention heads (must divide hidden_size)")
    parser.add_argument("--ffn_hidden_size", type=int, default=None, help="feed-forward width (default 4 x hidden_size)")
    parser.add_argument("--multi_query_group_num", type=int, default=None, help="glm2/glm3: key/value groups (default 2)")
    parser.add_argument("--kv_channels", type=int, default=None, help="glm2/glm3: per-head key/value width (default hidden/heads)")
    parser.add_argument("--vocab_size", type=int, default=None, help="embedding rows (default: tokenizer size padded to 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    parser.add_argument("--weights_format", choices=WEIGHTS_FORMATS, default="safetensors", help="weights layout")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    mode, output_dir = args.pop("mode"), args.pop("output_dir")
    try:
        path = make_tiny(mode, output_dir, **args)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote a tiny {mode} checkpoint to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

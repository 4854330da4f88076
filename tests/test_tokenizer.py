"""The three ChatGLM tokenizers reproduce the official tokenizers' outputs (``tokenizers_a.json``).

Each tokenizer is built the way users build it: ``Cls.from_pretrained(folder)`` on a folder that
holds the SentencePiece model under its official file name.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from glmlab.tokenization import ChatGLM2Tokenizer, ChatGLM3Tokenizer, ChatGLMTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "tokenizers_a.json").read_text(encoding="utf-8"))

# mode -> (class, fixture SentencePiece model, official vocabulary file name)
SPECS = {
    "glm": (ChatGLMTokenizer, "sp_v1.model", "ice_text.model"),
    "glm2": (ChatGLM2Tokenizer, "sp_v2.model", "tokenizer.model"),
    "glm3": (ChatGLM3Tokenizer, "sp_v2.model", "tokenizer.model"),
}
MODES = list(SPECS)
CASES = [(mode, i) for mode in MODES for i in range(len(REFERENCE[mode]["cases"]))]
BATCH = ["故障现象：发动机水温高", "hi", "line one\nline  two\tend"]


def official_folder(mode: str, root: Path) -> Path:
    """A folder laid out like the official checkpoint's tokenizer files (vocabulary only)."""
    _, model_file, vocab_name = SPECS[mode]
    folder = root / mode
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / model_file, folder / vocab_name)
    return folder


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {mode: SPECS[mode][0].from_pretrained(official_folder(mode, root)) for mode in MODES}


@pytest.mark.parametrize("mode,index", CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_matches_official_outputs(tokenizers, mode, index):
    tok = tokenizers[mode]
    case = REFERENCE[mode]["cases"][index]
    text = case["text"]
    assert tok.tokenize(text) == case["tokens"]
    assert tok(text)["input_ids"] == case["input_ids"]
    assert tok.encode(text) == case["input_ids"]
    assert tok.encode(text, add_special_tokens=False) == case["ids_no_special"]
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == case["ids_no_special"]
    assert tok.decode(case["ids_no_special"]) == case["decoded"]


@pytest.mark.parametrize("mode", MODES)
def test_special_ids_and_vocab_size(tokenizers, mode):
    tok = tokenizers[mode]
    ref = REFERENCE[mode]
    assert tok.vocab_size == ref["vocab_size"] == len(tok)
    for name, index in ref["special"].items():
        if name == "pad":
            assert tok.pad_token_id == index
        elif name == "eos":
            assert tok.eos_token_id == index
        else:
            assert tok.convert_tokens_to_ids(name) == index, name
            if mode != "glm":
                assert tok.get_command(name) == index, name
            assert tok.convert_ids_to_tokens(index) == name
    vocab = tok.get_vocab()
    assert len(vocab) == tok.vocab_size
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in list(vocab.items())[:: max(1, len(vocab) // 200)])


def test_glm_special_token_properties(tokenizers):
    tok = tokenizers["glm"]
    special = REFERENCE["glm"]["special"]
    assert tok.gmask_token_id == special["[gMASK]"]
    assert tok.bos_token_id == special["<sop>"]
    assert tok.eop_token_id == tok.eos_token_id == special["<eop>"]
    assert tok.mask_token_id == special["[MASK]"]
    assert tok.pad_token_id == special["<pad>"]
    assert tok.end_token_id == special["</s>"]
    assert tok.get_command("[gMASK]") == special["[gMASK]"]


@pytest.mark.parametrize("mode", ["glm2", "glm3"])
def test_glm2_glm3_commands(tokenizers, mode):
    tok = tokenizers[mode]
    special = REFERENCE[mode]["special"]
    assert tok.get_command("<pad>") == special["pad"]
    assert tok.get_command("<eos>") == special["eos"]
    assert tok.get_prefix_tokens() == [special["[gMASK]"], special["sop"]]
    with pytest.raises(KeyError):
        tok.get_command("<|nonsense|>")
    # "sop" is a command token, never produced from plain text.
    assert special["sop"] not in tok.encode("sop and eop", add_special_tokens=False)


def test_glm2_build_prompt(tokenizers):
    prompt = tokenizers["glm2"].build_prompt("介绍一下发动机", history=[("你好", "你好！")])
    assert prompt == REFERENCE["glm2"]["prompt"]


def test_glm3_build_chat_input(tokenizers):
    history = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！有什么可以帮你？"},
    ]
    out = tokenizers["glm3"].build_chat_input("介绍一下发动机", history=history, role="user")
    assert isinstance(out["input_ids"], torch.Tensor)
    assert out["input_ids"].tolist() == REFERENCE["glm3"]["chat_input"]
    assert out["attention_mask"].tolist() == [[1] * out["input_ids"].shape[1]]


def test_glm3_role_tokens_in_text_only_with_encode_special_tokens(tokenizers, tmp_path):
    tok = tokenizers["glm3"]
    user = tok.get_command("<|user|>")
    assert user not in tok.encode("<|user|>hi", add_special_tokens=False)
    tok_special = ChatGLM3Tokenizer.from_pretrained(official_folder("glm3", tmp_path), encode_special_tokens=True)
    assert tok_special.encode("<|user|>hi", add_special_tokens=False)[0] == user


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_both_sides(tokenizers, mode, side):
    tok = tokenizers[mode]
    singles = [tok(text)["input_ids"] for text in BATCH]
    longest = max(len(ids) for ids in singles)
    for padding, max_length in [(True, None), ("longest", None), ("max_length", longest + 3)]:
        batch = tok(BATCH, padding=padding, max_length=max_length, padding_side=side, return_tensors="pt")
        width = max_length or longest
        assert batch["input_ids"].shape == batch["attention_mask"].shape == (len(BATCH), width)
        for row, ids in enumerate(singles):
            n_pad = width - len(ids)
            mask = batch["attention_mask"][row].tolist()
            got = batch["input_ids"][row].tolist()
            if side == "left":
                assert mask == [0] * n_pad + [1] * len(ids)
                assert got == [tok.pad_token_id] * n_pad + ids
            else:
                assert mask == [1] * len(ids) + [0] * n_pad
                assert got == ids + [tok.pad_token_id] * n_pad
    # The tokenizer attribute sets the default side (the official default is left).
    assert tok.padding_side == "left"
    tok.padding_side = side
    try:
        mask = tok(BATCH, padding=True)["attention_mask"][1]
        assert (mask[0] == 0) == (side == "left")
    finally:
        tok.padding_side = "left"


@pytest.mark.parametrize("mode", MODES)
def test_truncation_keeps_special_tokens(tokenizers, mode):
    tok = tokenizers[mode]
    out = tok(BATCH[0], truncation=True, max_length=6)["input_ids"]
    full = tok(BATCH[0])["input_ids"]
    assert len(out) == 6
    if mode == "glm":
        assert out == full[:4] + full[-2:]  # text cut, "[gMASK] <sop>" kept at the end
    else:
        assert out == full[:6]  # "[gMASK] sop" prefix, then the first text tokens


@pytest.mark.parametrize("mode", MODES)
def test_decode_skips_special_tokens(tokenizers, mode):
    tok = tokenizers[mode]
    batch = tok(BATCH, padding=True)["input_ids"]
    texts = tok.batch_decode(batch, skip_special_tokens=True)
    expected = [tok.decode(tok.encode(text, add_special_tokens=False)) for text in BATCH]
    assert texts == expected
    assert texts[1] == "hi"
    if mode == "glm":
        assert texts[2] == BATCH[2]  # newline, double space and tab survive the round trip
        assert tok.decode(batch[1]) == "hi[gMASK]<sop>"  # padding is always dropped


@pytest.mark.parametrize("mode", MODES)
def test_save_and_reload_round_trip(tokenizers, mode, tmp_path):
    tok = tokenizers[mode]
    cls, _, vocab_name = SPECS[mode]
    out_dir = tmp_path / "saved"
    tok.save_pretrained(out_dir)
    assert (out_dir / vocab_name).is_file()
    assert (out_dir / "tokenizer_config.json").is_file()
    again = cls.from_pretrained(out_dir)
    assert type(again) is cls
    assert again.vocab_size == tok.vocab_size
    assert again.special_tokens_map == tok.special_tokens_map
    assert again.padding_side == tok.padding_side
    for case in REFERENCE[mode]["cases"]:
        assert again.tokenize(case["text"]) == case["tokens"]
        assert again(case["text"])["input_ids"] == case["input_ids"]
        assert again.decode(case["ids_no_special"]) == case["decoded"]
    a = tok(BATCH, padding=True, return_tensors="pt")
    b = again(BATCH, padding=True, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])


@pytest.mark.parametrize("mode", MODES)
def test_pickle_and_deepcopy(tokenizers, mode):
    tok = tokenizers[mode]
    for clone in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert clone(BATCH, padding=True)["input_ids"] == tok(BATCH, padding=True)["input_ids"]


# tokenizer_config.json as released with each official checkpoint (the parts a loader sees).
OFFICIAL_CONFIGS = {
    "glm": {
        "name_or_path": "THUDM/chatglm-6b",
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
        "tokenizer_class": "ChatGLMTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    },
    "glm2": {
        "name_or_path": "THUDM/chatglm-6b",
        "remove_space": False,
        "do_lower_case": False,
        "tokenizer_class": "ChatGLMTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    },
    "glm3": {
        "added_tokens_decoder": {},
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "</s>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "ChatGLMTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    },
}


@pytest.mark.parametrize("mode", MODES)
def test_loads_official_tokenizer_config(mode, tmp_path):
    folder = official_folder(mode, tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps(OFFICIAL_CONFIGS[mode]), encoding="utf-8")
    tok = SPECS[mode][0].from_pretrained(folder)
    for case in REFERENCE[mode]["cases"][:3]:
        assert tok.tokenize(case["text"]) == case["tokens"]
        assert tok(case["text"])["input_ids"] == case["input_ids"]
    assert tok.vocab_size == REFERENCE[mode]["vocab_size"]
    assert tok.padding_side == "left"

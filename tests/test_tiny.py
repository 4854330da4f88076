"""``glmlab.tiny``: tiny official-layout checkpoints whose config agrees with their tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

import glmlab
from glmlab.tiny import GLM_SPECIAL_PIECES, main, make_tiny

REPO = Path(__file__).resolve().parents[1]
MODES = ["glm", "glm2", "glm3"]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {mode: make_tiny(mode, root / mode) for mode in MODES}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("mode", MODES)
def test_official_layout(tiny_folders, mode):
    folder = tiny_folders[mode]
    vocab = "ice_text.model" if mode == "glm" else "tokenizer.model"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer_config.json", vocab]
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "chatglm"
    assert config["glmlab_mode"] == mode
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "ChatGLMTokenizer"  # as in every official folder
    assert tokenizer_config["glmlab_mode"] == mode


def test_glm_vocabulary_is_laid_out_like_ice_text(tiny_folders):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_folders["glm"] / "ice_text.model"))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert [sp.id_to_piece(4 + i) for i in range(len(GLM_SPECIAL_PIECES))] == GLM_SPECIAL_PIECES
    assert GLM_SPECIAL_PIECES[-1] == "<|blank_80|>"
    assert all(sp.is_control(i) for i in (1, 2, 3)) and sp.is_unknown(0)
    # special pieces are user-defined: text holding them encodes them whole
    assert sp.encode("[gMASK]<sop>", out_type=str)[-2:] == ["[gMASK]", "<sop>"]


@pytest.mark.parametrize("mode", ["glm2", "glm3"])
def test_glm2_vocabulary_is_plain_with_byte_fallback(tiny_folders, mode):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_folders[mode] / "tokenizer.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(3) == "<0x00>"  # byte fallback pieces follow the controls
    assert "<0xE2>" in sp.encode("☃", out_type=str)  # a character outside the corpus falls back to bytes


@pytest.mark.parametrize("mode", MODES)
def test_config_special_ids_match_tokenizer(tiny_folders, mode):
    folder = tiny_folders[mode]
    config = glmlab.ChatGLMConfig.from_pretrained(folder)
    tokenizer = glmlab.load_tokenizer(folder)
    assert config.vocab_size >= tokenizer.vocab_size and config.vocab_size % 64 == 0
    assert config.vocab_size - tokenizer.vocab_size < 64
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    if mode == "glm":
        assert config.bos_token_id == tokenizer.bos_token_id == tokenizer.convert_tokens_to_ids("<sop>")
        assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<eop>")
        assert config.gmask_token_id == tokenizer.gmask_token_id
        assert config.mask_token_id == tokenizer.convert_tokens_to_ids("[MASK]")
        assert config.pad_token_id == 3
    else:
        assert (config.eos_token_id, config.pad_token_id) == (2, 0)
        sp_size = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
        assert tokenizer.get_command("[gMASK]") == sp_size + 1
        assert tokenizer.vocab_size == sp_size + (9 if mode == "glm3" else 5)
        if mode == "glm3":
            assert tokenizer.get_command("<|user|>") == sp_size + 6


def test_deterministic_for_a_seed(tmp_path, tiny_folders):
    again = make_tiny("glm3", tmp_path / "again")
    assert _files(again) == _files(tiny_folders["glm3"])
    other = make_tiny("glm3", tmp_path / "other", seed=1)
    assert _files(other)["model.safetensors"] != _files(again)["model.safetensors"]
    assert _files(other)["tokenizer.model"] == _files(again)["tokenizer.model"]


def test_sizes_are_honoured(tmp_path):
    folder = make_tiny(
        "glm2", tmp_path / "t", hidden_size=96, num_layers=3, num_attention_heads=6,
        ffn_hidden_size=200, multi_query_group_num=3, kv_channels=8, vocab_size=2100,
    )  # fmt: skip
    model = glmlab.load_model(folder)
    c = model.config
    assert (c.hidden_size, c.num_layers, c.num_attention_heads, c.ffn_hidden_size) == (96, 3, 6, 200)
    assert (c.multi_query_group_num, c.kv_channels, c.padded_vocab_size) == (3, 8, 2100)
    assert model.transformer.embedding.word_embeddings.weight.shape == (2100, 96)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mode", "glm4"], "invalid choice"),
        (["--mode", "glm", "--hidden_size", "0"], "--hidden_size must be a positive integer"),
        (["--mode", "glm", "--hidden_size", "abc"], "invalid int value"),
        (["--mode", "glm2", "--num_attention_heads", "5"], "must divide --hidden_size"),
        (["--mode", "glm2", "--multi_query_group_num", "3"], "must divide --num_attention_heads"),
        (["--mode", "glm", "--kv_channels", "16"], "applies to --mode glm2/glm3 only"),
        (["--mode", "glm2", "--kv_channels", "6"], "multiple of 4"),
        (["--mode", "glm3", "--vocab_size", "100"], "smaller than the tokenizer's vocabulary"),
        (["--mode", "glm", "--weights_format", "gguf"], "invalid choice"),
    ],
)
def test_bad_flags_exit_with_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_refuses_non_empty_output_dir_unless_overwrite(tmp_path, capsys):
    folder = make_tiny("glm2", tmp_path / "t", weights_format="safetensors")
    with pytest.raises(SystemExit):
        main(["--mode", "glm2", "--output_dir", str(folder)])
    assert "not empty" in capsys.readouterr().err
    # overwriting with another layout removes the old weights, so only the new ones load
    make_tiny("glm2", folder, weights_format="sharded_bin", overwrite=True, seed=3)
    assert not (folder / "model.safetensors").exists()
    assert (folder / "pytorch_model.bin.index.json").exists()
    glmlab.load_model(folder)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "glmlab.tiny", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
    )


def test_cli_writes_a_loadable_folder(tmp_path):
    result = _run_cli("--mode", "glm", "--output_dir", str(tmp_path / "t"), "--weights_format", "sharded_bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "pytorch_model.bin.index.json").is_file()
    model = glmlab.load_model(tmp_path / "t")
    tokenizer = glmlab.load_tokenizer(tmp_path / "t")
    ids = tokenizer("发动机", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_cli_bad_flag_exits_non_zero_with_one_line(tmp_path):
    result = _run_cli("--mode", "glm2", "--output_dir", str(tmp_path / "t"), "--num_layers", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--num_layers must be a positive integer" in result.stderr

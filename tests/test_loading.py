"""``glmlab.loading``: strict loading of official-layout folders, mode inference, Auto classes, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

import glmlab
from glmlab import CheckpointError, infer_mode, load_model, load_tokenizer
from glmlab.loading import WEIGHTS_FORMATS, write_weights
from glmlab.tiny import make_tiny

MODES = ["glm", "glm2", "glm3"]
PROMPT = "发动机启动困难，怎么办？"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {mode: make_tiny(mode, root / mode) for mode in MODES}


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def _edit_json(file: Path, **changes) -> None:
    data = json.loads(file.read_text()) if file.exists() else {}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    file.write_text(json.dumps(data, ensure_ascii=False))


def _officialise(folder: Path, repo: str | None) -> Path:
    """Make a tiny folder look like a download from the Hub: no glmlab record, remote-code auto_map."""
    modeling = "modeling_chatglm.ChatGLMForConditionalGeneration"
    auto_map = {"AutoConfig": "configuration_chatglm.ChatGLMConfig", "AutoModel": modeling, "AutoModelForCausalLM": modeling}
    _edit_json(folder / "config.json", glmlab_mode=None, architectures=["ChatGLMModel"], auto_map=auto_map, _name_or_path=repo)
    _edit_json(
        folder / "tokenizer_config.json",
        glmlab_mode=None,
        name_or_path=repo,
        auto_map={"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    )
    return folder


def _greedy(model, tokenizer, n: int = 6) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)


def _logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------- loading and generating
@pytest.mark.parametrize("mode", MODES)
def test_load_and_generate(tiny, mode):
    model = load_model(tiny[mode])
    tokenizer = load_tokenizer(tiny[mode])
    expected_model = "ChatGLMForConditionalGeneration" if mode == "glm" else "ChatGLM2ForConditionalGeneration"
    expected_tokenizer = {"glm": "ChatGLMTokenizer", "glm2": "ChatGLM2Tokenizer", "glm3": "ChatGLM3Tokenizer"}[mode]
    assert type(model).__name__ == expected_model and type(tokenizer).__name__ == expected_tokenizer
    assert not model.training
    assert model.config.glmlab_mode == mode
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    out = _greedy(model, tokenizer)
    assert out.shape[1] == tokenizer(PROMPT, return_tensors="pt")["input_ids"].shape[1] + 6


@pytest.mark.parametrize("mode", MODES)
def test_auto_classes_load_official_looking_folders(tiny, tmp_path, mode):
    repo = {"glm": "THUDM/chatglm-6b", "glm2": "THUDM/chatglm2-6b", "glm3": "THUDM/chatglm3-6b"}[mode]
    folder = _officialise(_copy(tiny[mode], tmp_path), repo)
    assert infer_mode(folder) == mode
    # no trust_remote_code: the registered local classes win over the remote-code auto_map
    assert isinstance(AutoConfig.from_pretrained(folder), glmlab.ChatGLMConfig)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference_model, reference_tokenizer = load_model(folder), load_tokenizer(folder)
    assert type(model) is type(reference_model) and type(tokenizer) is type(reference_tokenizer)
    _assert_same_state(model, reference_model)
    assert torch.equal(_greedy(model, tokenizer), _greedy(reference_model, reference_tokenizer))
    assert type(AutoModel.from_pretrained(folder)) is type(reference_model)


def test_auto_model_dtype_and_config_kwargs(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny["glm3"], dtype=torch.bfloat16, device_map="cpu", pre_seq_len=4)
    assert model.transformer.embedding.word_embeddings.weight.dtype == torch.bfloat16
    assert model.config.pre_seq_len == 4 and hasattr(model.transformer, "prefix_encoder")
    assert AutoModel.from_pretrained(tiny["glm"], dtype="float16").lm_head.weight.dtype == torch.float16
    with pytest.raises(TypeError, match="does not support: offload_folder"):
        AutoModelForCausalLM.from_pretrained(tiny["glm3"], offload_folder="offload")
    random = AutoModelForCausalLM.from_config(glmlab.ChatGLMConfig.from_pretrained(tiny["glm"]))
    assert type(random).__name__ == "ChatGLMForConditionalGeneration"


def test_auto_tokenizer_mode_argument(tiny):
    assert type(AutoTokenizer.from_pretrained(tiny["glm3"], mode="glm2")).__name__ == "ChatGLM2Tokenizer"
    assert type(load_tokenizer(tiny["glm3"], mode="glm2")).__name__ == "ChatGLM2Tokenizer"


# --------------------------------------------------------------------------- weights layouts
@pytest.mark.parametrize("mode", ["glm", "glm2"])
@pytest.mark.parametrize("weights_format", WEIGHTS_FORMATS)
def test_every_weights_layout_loads_identically(tiny, tmp_path, mode, weights_format):
    reference = load_model(tiny[mode])
    folder = tmp_path / weights_format
    folder.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(tiny[mode] / name, folder)
    files = write_weights(reference.state_dict(), folder, weights_format)
    assert len(files) == (2 if weights_format.startswith("sharded") else 1)
    if weights_format.startswith("sharded"):
        index = next(folder.glob("*.index.json"))
        weight_map = json.loads(index.read_text())["weight_map"]
        assert set(weight_map) == set(reference.state_dict()) and len(set(weight_map.values())) == 2
    _assert_same_state(load_model(folder), reference)


def test_official_rotary_buffers_are_loaded(tiny):
    glm, glm2 = load_model(tiny["glm"]), load_model(tiny["glm2"])
    state = load_file(tiny["glm2"] / "model.safetensors")
    assert "transformer.rotary_pos_emb.inv_freq" in state and "transformer.output_layer.weight" in state
    assert "lm_head.weight" in glm.state_dict()
    assert glm2.transformer.rotary_pos_emb.inv_freq.dtype == torch.float32


@pytest.mark.parametrize("dtype, expected", [("bf16", torch.bfloat16), ("fp16", torch.float16), (torch.float16, torch.float16), ("float32", torch.float32)])
def test_dtype(tiny, dtype, expected):
    model = load_model(tiny["glm2"], dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}
    assert model.transformer.rotary_pos_emb.inv_freq.dtype == torch.float32  # buffers keep the model's dtype
    assert model.config.dtype == expected


def test_bad_dtype(tiny):
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_model(tiny["glm2"], dtype="int8")


@pytest.mark.parametrize("mode", ["glm", "glm3"])
def test_ptuning_override_initialises_only_the_prefix_encoder(tiny, mode):
    base = load_model(tiny[mode])
    torch.manual_seed(0)
    model = load_model(tiny[mode], pre_seq_len=4, prefix_projection=True)
    state = model.state_dict()
    prefix = {k for k in state if k.startswith("transformer.prefix_encoder.")}
    assert prefix and set(state) - prefix == set(base.state_dict())
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in state.values())
    assert all(torch.equal(state[k], v) for k, v in base.state_dict().items())
    tokenizer = load_tokenizer(tiny[mode])
    _greedy(model, tokenizer, n=2)


# --------------------------------------------------------------------------- save_pretrained round trip
@pytest.mark.parametrize("mode", MODES)
def test_save_pretrained_round_trip(tiny, tmp_path, mode):
    model, tokenizer = load_model(tiny[mode]), load_tokenizer(tiny[mode])
    out = tmp_path / "saved"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert infer_mode(out) == mode
    again, again_tokenizer = load_model(out), load_tokenizer(out)
    assert type(again_tokenizer) is type(tokenizer)
    assert again_tokenizer(PROMPT)["input_ids"] == tokenizer(PROMPT)["input_ids"]
    _assert_same_state(again, model)
    assert torch.equal(_logits(again, again_tokenizer), _logits(model, tokenizer))
    assert torch.equal(_greedy(again, again_tokenizer), _greedy(model, tokenizer))


def test_saved_tokenizer_alone_keeps_its_mode(tiny, tmp_path):
    load_tokenizer(tiny["glm3"]).save_pretrained(tmp_path / "tok")
    assert infer_mode(tmp_path / "tok") == "glm3"
    assert type(AutoTokenizer.from_pretrained(tmp_path / "tok")).__name__ == "ChatGLM3Tokenizer"


# --------------------------------------------------------------------------- mode inference
def test_infer_mode_of_tiny_folders(tiny):
    assert [infer_mode(tiny[m]) for m in MODES] == MODES


@pytest.mark.parametrize(
    "config_changes, tokenizer_changes, expected",
    [
        ({}, {"name_or_path": "THUDM/chatglm2-6b"}, "glm2"),
        ({}, {"name_or_path": "THUDM/chatglm3-6b"}, "glm3"),
        ({"_name_or_path": "THUDM/chatglm3-6b-32k"}, {}, "glm3"),
        ({"auto_map": {"AutoModel": "THUDM/chatglm2-6b--modeling_chatglm.ChatGLMForConditionalGeneration"}}, {}, "glm2"),
        ({}, {"tokenizer_class": "ChatGLM3Tokenizer"}, "glm3"),
        ({}, {"added_tokens_decoder": {"64795": {"content": "<|user|>", "special": True}}}, "glm3"),
        ({}, {"chat_template": "{% for m in messages %}<|{{ m.role }}|>{% endfor %}<|assistant|>"}, "glm3"),
    ],
)
def test_infer_mode_from_official_records(tiny, tmp_path, config_changes, tokenizer_changes, expected):
    folder = _officialise(_copy(tiny["glm2"], tmp_path), None)
    _edit_json(folder / "config.json", **config_changes)
    _edit_json(folder / "tokenizer_config.json", **tokenizer_changes)
    assert infer_mode(folder) == expected


def test_infer_mode_cannot_decide(tiny, tmp_path):
    folder = _officialise(_copy(tiny["glm3"], tmp_path), None)
    message = f"cannot infer mode for {folder}: pass mode='glm2' or mode='glm3'"
    for load in (infer_mode, load_model, load_tokenizer):
        with pytest.raises(CheckpointError) as err:
            load(folder)
        assert str(err.value) == message
    assert load_model(folder, mode="glm3").config.glmlab_mode == "glm3"


def test_infer_mode_of_official_glm_folder(tiny, tmp_path):
    assert infer_mode(_officialise(_copy(tiny["glm"], tmp_path), None)) == "glm"


def test_infer_mode_from_checkpoint_record_without_config(tiny, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(tiny["glm2"] / "tokenizer.model", folder)
    (folder / "glmlab_checkpoint.json").write_text(json.dumps({"train_type": "lora", "mode": "glm3"}))
    assert infer_mode(folder) == "glm3"
    assert type(load_tokenizer(folder)).__name__ == "ChatGLM3Tokenizer"


def test_infer_mode_contradictions(tiny, tmp_path):
    folder = _copy(tiny["glm3"], tmp_path, "a")
    _edit_json(folder / "config.json", glmlab_mode="glm2")
    with pytest.raises(CheckpointError, match="contradictory mode records"):
        infer_mode(folder)
    folder = _copy(tiny["glm2"], tmp_path, "b")
    _edit_json(folder / "config.json", glmlab_mode="glm")
    _edit_json(folder / "tokenizer_config.json", glmlab_mode="glm")
    with pytest.raises(CheckpointError, match="ChatGLM2/3 model"):
        infer_mode(folder)


# --------------------------------------------------------------------------- errors
def test_missing_folder(tmp_path):
    for load in (load_model, load_tokenizer, infer_mode):
        with pytest.raises(CheckpointError, match=f"checkpoint folder not found: {tmp_path / 'nope'}"):
            load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="huggingface-cli download THUDM/chatglm3-6b"):
        load_model("THUDM/chatglm3-6b")


def test_missing_config(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=f"no config.json in {folder}"):
        load_model(folder)


def test_not_a_chatglm_config(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    _edit_json(folder / "config.json", model_type="llama")
    with pytest.raises(CheckpointError, match="model_type is 'llama', expected 'chatglm'"):
        load_model(folder, mode="glm2")


def test_missing_weights(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"no weights in {folder}"):
        load_model(folder)


def test_missing_shard(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    (folder / "model.safetensors").unlink()
    write_weights(load_model(tiny["glm2"]).state_dict(), folder, "sharded_bin")
    (folder / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="names pytorch_model-00002-of-00002.bin, which is missing"):
        load_model(folder)


def test_missing_tokenizer_file(tiny, tmp_path):
    folder = _copy(tiny["glm3"], tmp_path)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match=f"no tokenizer.model in {folder}"):
        load_tokenizer(folder)
    with pytest.raises(CheckpointError, match=r"no ice_text.model in .*found tokenizer.model"):
        load_tokenizer(tiny["glm3"], mode="glm")


@pytest.mark.parametrize("mode, wrong, says", [("glm2", "glm", "ChatGLM2/3 model, not mode='glm'"), ("glm", "glm3", "ChatGLM-6B model, not mode='glm3'")])
def test_config_of_another_generation(tiny, mode, wrong, says):
    with pytest.raises(CheckpointError) as err:
        load_model(tiny[mode], mode=wrong)
    assert str(tiny[mode] / "config.json") in str(err.value) and says in str(err.value)


def _rewrite_weights(folder: Path, change) -> Path:
    file = folder / "model.safetensors"
    state = load_file(file)
    change(state)
    save_file(state, file)
    return file


def test_missing_tensor(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    file = _rewrite_weights(folder, lambda s: s.pop("transformer.encoder.final_layernorm.weight"))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    assert str(err.value) == f"{file}: missing tensor(s): transformer.encoder.final_layernorm.weight"


def test_unexpected_tensor(tiny, tmp_path):
    folder = _copy(tiny["glm"], tmp_path)
    file = _rewrite_weights(folder, lambda s: s.update({"transformer.layers.7.attention.dense.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    assert str(err.value) == f"{file}: unexpected tensor(s) the model does not have: transformer.layers.7.attention.dense.weight"


def test_wrong_shape(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    name = "transformer.output_layer.weight"
    file = _rewrite_weights(folder, lambda s: s.update({name: s[name][:-64].clone()}))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    rows = load_model(tiny["glm2"]).config.padded_vocab_size
    assert str(err.value) == f"{file}: wrong shape: {name} (checkpoint ({rows - 64}, 64), model ({rows}, 64))"


def test_prefix_encoder_missing_without_override_is_an_error(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    _edit_json(folder / "config.json", pre_seq_len=4)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): transformer.prefix_encoder.embedding.weight"):
        load_model(folder)


def test_unknown_override(tiny):
    with pytest.raises(TypeError, match="unknown config override"):
        load_model(tiny["glm2"], pre_seq_length=4)


def test_corrupt_weights_file(tiny, tmp_path):
    folder = _copy(tiny["glm2"], tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=f"cannot read {folder / 'model.safetensors'}"):
        load_model(folder)

"""Every generation x method trains through ``glmlab launch`` on two CPU processes.

Each case runs ``scripts/launch_ds.py --cpu 2`` on a tiny checkpoint: 8 samples, 3 epochs of
2 optimizer steps (global batch 4), evaluated on the same samples at each epoch end. It
checks that the run finishes, that its loss falls (the eval loss after the last epoch is
below the one after the first, whose two steps DeepSpeed's warmup runs at rate 0), and that
the saved checkpoint reloads with :func:`glmlab.inference.load_for_inference`, gives the
eval loss the run logged before saving, and generates. A freeze checkpoint holds every frozen
tensor bit-identical to the base; a P-tuning checkpoint holds the prefix encoder and nothing else.
(freeze and ptuning run with gradient checkpointing.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SPO_TRAIN, run_train, train_argv
from safetensors.torch import load_file

from glmlab.data import encode_file, encode_prompt, read_samples

MODES = ("glm", "glm2", "glm3")
METHOD_FLAGS = {
    "freeze": {"freeze_module_name": "layers.1.", "learning_rate": "1e-2", "gradient_checkpointing": "true"},
    "ptuning": {"pre_seq_len": "4", "prefix_projection": "true", "learning_rate": "3e-2", "gradient_checkpointing": "true"},
    "lora": {"lora_dim": "4", "lora_alpha": "8", "lora_dropout": "0.05", "learning_rate": "3e-2"},
    "all": {"learning_rate": "1e-2"},
}
# ZeRO-2 for every method; ZeRO-3 for lora and all; ZeRO-3 with offload for all. Each case runs once per
# architecture (glm: ChatGLM-6B; glm2: ChatGLM2 and ChatGLM3, one model class). ChatGLM3 differs from ChatGLM2
# only in its data and tokenizer, which neither ZeRO nor freezing or full training touch: it runs the two methods
# that change what the model sees of its prompt (P-tuning's prefix, LoRA's adapters) under ZeRO-2.
CONFIGS = {"freeze": ["zero2"], "ptuning": ["zero2"], "lora": ["zero2", "zero3"], "all": ["zero2", "zero3", "zero3_offload"]}
DS_FILES = {"zero2": "ds_zero2_no_offload.json", "zero3": "ds_zero3_no_offload.json",
            "zero3_offload": "ds_zero3_offload.json"}
CASES = [(mode, method, zero) for mode in MODES for method, zeros in CONFIGS.items() for zero in zeros
         if mode != "glm3" or (zero == "zero2" and method in ("ptuning", "lora"))]


@pytest.fixture(scope="module")
def small_train_file(tmp_path_factory) -> Path:
    """The first 8 samples of data/spo_train.jsonl."""
    path = tmp_path_factory.mktemp("data") / "train8.jsonl"
    path.write_text("".join(SPO_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:8]), encoding="utf-8")
    return path


def token_weighted_loss(model, tokenizer, path: Path, mode: str) -> float:
    """Mean loss over every supervised token of ``path`` (as training's eval computes it)."""
    encoded = encode_file(path, tokenizer, mode, 64, 32, verbose=False)
    total = count = 0.0
    with torch.no_grad():
        for sample in encoded.samples:
            ids = torch.tensor([sample["input_ids"]])
            labels = torch.tensor([sample["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss) * n
            count += n
    return total / count


def check_saved_tensors(method: str, checkpoint: Path, base: Path) -> None:
    """freeze: frozen tensors bit-identical to the base, trained ones changed; ptuning: only the prefix encoder."""
    if method == "freeze":
        saved, original = load_file(str(checkpoint / "model.safetensors")), load_file(str(base / "model.safetensors"))
        assert saved.keys() == original.keys()
        frozen = [k for k in saved if "layers.1." not in k]
        assert frozen and all(torch.equal(saved[k], original[k]) for k in frozen)
        assert any(not torch.equal(saved[k], original[k]) for k in saved if "layers.1." in k)
    if method == "ptuning":
        weights = sorted(p.name for p in checkpoint.glob("*.safetensors"))
        assert weights == ["prefix_encoder.safetensors"]
        keys = load_file(str(checkpoint / "prefix_encoder.safetensors")).keys()
        assert keys and all(k.startswith("transformer.prefix_encoder.") for k in keys)
        config = json.loads((checkpoint / "config.json").read_text())
        assert (config["pre_seq_len"], config["prefix_projection"]) == (4, True)


@pytest.mark.slow
@pytest.mark.parametrize("mode,method,zero", CASES, ids=[f"{m}-{t}-{z}" for m, t, z in CASES])
def test_method_trains_saves_and_reloads(mode, method, zero, tiny_model, small_train_file, tmp_path):
    from glmlab.generation import generate_ids
    from glmlab.inference import load_for_inference

    out = tmp_path / "out"
    argv = train_argv(tiny_model(mode), out, mode=mode, train_type=method, ds_file=DS_FILES[zero],
                      train_path=small_train_file, eval_path=small_train_file, num_train_epochs=3,
                      **METHOD_FLAGS[method])
    result = run_train(argv, out, processes=2)
    assert result.proc.returncode == 0, result.explain()

    assert len(result.losses) == 6, result.metrics
    evals = result.eval_losses
    assert len(evals) == 3 and evals[-1] < evals[0] - 1e-3, evals
    assert all({"step", "epoch", "loss", "lr", "tokens_per_s", "peak_mem_mb"} <= m.keys() for m in result.metrics if "loss" in m)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    checkpoints = result.checkpoints()
    assert [c.name for c in checkpoints] == ["epoch-1-step-2", "epoch-2-step-4", "epoch-3-step-6"]
    last = checkpoints[-1]
    info = json.loads((last / "glmlab_checkpoint.json").read_text())
    assert (info["train_type"], info["mode"], info["step"]) == (method, mode, 6)
    assert not list(out.glob(".*.tmp")), "a temporary checkpoint folder was left behind"

    check_saved_tensors(method, last, tiny_model(mode))

    model, tokenizer, loaded_mode = load_for_inference(last)
    assert loaded_mode == mode
    # The reloaded weights are the trained ones: same loss as the run's final eval.
    assert token_weighted_loss(model, tokenizer, small_train_file, mode) == pytest.approx(evals[-1], rel=1e-4, abs=1e-4)
    prompt = encode_prompt(read_samples(small_train_file)[0], tokenizer, mode, 32)
    new_ids = generate_ids(model, tokenizer, [prompt], mode, max_new_tokens=4)
    assert len(new_ids) == 1 and len(new_ids[0]) <= 4

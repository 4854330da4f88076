"""glmlab.merge_lora: the merged folder computes what base + adapter computed, loads with
glmlab.load_model alone, and the adapter folder is never touched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from glmlab import load_model, load_tokenizer
from glmlab.inference import load_for_inference
from glmlab.merge_lora import check_output_dir, main
from glmlab.methods import get_strategy
from glmlab.tiny import make_tiny

REPO = Path(__file__).resolve().parents[1]


def make_adapter(mode: str, base: Path, out: Path):
    """A LoRA checkpoint saved as training saves it, with non-zero B so merging changes the weights."""
    torch.manual_seed(0)
    args = SimpleNamespace(lora_dim=4, lora_alpha=16, lora_dropout=0.0, lora_module_name="query_key_value")
    strategy = get_strategy("lora")
    model = strategy.prepare(load_model(base, mode=mode), args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    out.mkdir(parents=True)
    strategy.save(model, load_tokenizer(base, mode=mode), out)
    (out / "glmlab_checkpoint.json").write_text(json.dumps({"train_type": "lora", "mode": mode, "base_model": str(base)}))
    return model.eval()


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits


@pytest.mark.parametrize("mode", ["glm", "glm2", "glm3"])
def test_merged_equals_base_plus_adapter(tmp_path, mode):
    base = make_tiny(mode, tmp_path / "base", seed=2)
    adapter = tmp_path / "adapter"
    peft_model = make_adapter(mode, base, adapter)
    before = _hashes(adapter)
    out = tmp_path / "merged"

    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "glmlab.merge_lora", "--base", base, "--adapter", adapter, "--output_dir", out],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "it/s]" not in proc.stderr  # no progress bar where output is kept (a pipe, a log, a notebook cell)
    assert _hashes(adapter) == before  # the adapter folder is untouched
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert not (out / "adapter_config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    tokenizer = load_tokenizer(out)  # tokenizer files saved, mode recorded
    ids = tokenizer.encode("发动机异响，检查后更换火花塞。", add_special_tokens=True)
    merged = load_model(out)  # a plain model: no peft needed
    expected = _logits(peft_model, ids)
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-5, rtol=0)
    assert (_logits(load_model(base), ids) - expected).abs().max() > 1e-3  # the adapter mattered
    model, _, got_mode = load_for_inference(out)
    assert got_mode == mode and not hasattr(model, "peft_config")


def test_refuses_to_overwrite(tmp_path, capsys):
    base = make_tiny("glm2", tmp_path / "base", seed=2)
    adapter = tmp_path / "adapter"
    make_adapter("glm2", base, adapter)
    before = _hashes(adapter)
    for bad in (adapter, adapter / "merged", tmp_path, base, base / "sub"):
        assert main(["--adapter", str(adapter), "--output_dir", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "choose another folder" in err[0], err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert main(["--adapter", str(adapter), "--output_dir", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    assert _hashes(adapter) == before

    # --overwrite replaces a non-empty folder (base taken from glmlab_checkpoint.json); an empty one needs nothing
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    assert main(["--adapter", str(adapter), "--output_dir", str(tmp_path / "full"), "--overwrite"]) == 0
    assert hf_logging.is_progress_bar_enabled() == bars and "it/s]" not in capsys.readouterr().err  # as it was
    assert not (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "full" / "config.json").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["--adapter", str(adapter), "--output_dir", str(tmp_path / "empty")]) == 0
    assert _hashes(adapter) == before


def test_rejects_non_lora_and_missing_base(tmp_path, capsys):
    base = make_tiny("glm3", tmp_path / "base", seed=2)
    assert main(["--adapter", str(base), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a LoRA adapter" in capsys.readouterr().err
    adapter = tmp_path / "adapter"
    make_adapter("glm3", base, adapter)
    assert main(["--adapter", str(adapter), "--base", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="inside the adapter"):
        check_output_dir(adapter / ".", adapter, base)


def test_a_flag_argparse_refuses_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--adapter", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--dtype", "bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "python -m glmlab.merge_lora: error: argument --dtype: invalid choice: 'bogus'" in err[0]
    assert not (tmp_path / "o").exists()

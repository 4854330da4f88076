"""glmlab.notebooks.experiment's bookkeeping: which earlier notebook results 06_eval may reuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from glmlab.notebooks.experiment import LEARNING_RATES, PRE_SEQ_LEN, SHARED_KEYS, reusable_runs, study_methods

SETUP = {"model_dir": "/base", "mode": "glm2", "train_path": "/d/spo_train.jsonl", "test_path": "/d/spo_test.jsonl",
         "nproc": 2, "max_len": 128, "max_src_len": 96, "per_device_train_batch_size": 8, "num_train_epochs": 2,
         "max_steps": None, "seed": 1234, "max_new_tokens": 64, "max_test_samples": None}


# 06's flags per variant (experiment.study_methods on a 4-layer base), and the variant each method's row names
FLAGS = study_methods(4)
VARIANT = {"lora": "lora", "freeze": "freeze", "ptuning": "projection", "all": "zero3"}


def _results(root: Path, name: str, setup: dict, method: str = "lora", lr: float | None = None,
             checkpoint: bool = True, **row) -> None:
    folder = root / name
    ckpt = folder / "lora" / "epoch-2-step-250"
    ckpt.mkdir(parents=True)
    if checkpoint:
        (ckpt / "glmlab_checkpoint.json").write_text("{}")
    run = {"method": method, "variant": VARIANT[method], "checkpoint": str(ckpt), "method_flags": FLAGS[VARIANT[method]],
           "learning_rate": LEARNING_RATES[method] if lr is None else lr, **row}
    (folder / "results.json").write_text(json.dumps({"setup": setup, "runs": [run]}))


def test_only_runs_made_with_the_same_settings_are_reused(tmp_path):
    assert set(SHARED_KEYS) == set(SETUP)
    _results(tmp_path, "04_lora", SETUP)
    _results(tmp_path, "02_freeze", {**SETUP, "num_train_epochs": 1}, method="freeze")  # another step budget
    _results(tmp_path, "03_ptuning", SETUP, method="ptuning", lr=0.5)  # not the documented learning rate
    _results(tmp_path, "05_full_zero3", SETUP, method="all", checkpoint=False)  # checkpoint gone
    names = ("02_freeze", "03_ptuning", "04_lora", "05_full_zero3", "01_missing")
    assert reusable_runs(names, SETUP, FLAGS, root=tmp_path) == {"04_lora": str(tmp_path / "04_lora")}
    assert reusable_runs(names, {**SETUP, "seed": 1}, FLAGS, root=tmp_path) == {}


def test_each_p_tuning_variant_has_its_own_documented_rate(tmp_path):
    """P-tuning with and without the projection learn at different rates (chosen on validation,
    benchmarks/results/sweep_valid.json); a reused 03 run must have used its own variant's."""
    from glmlab.notebooks.experiment import default_learning_rate

    embedding = {"train_type": "ptuning", "prefix_projection": False}
    assert default_learning_rate(embedding) == LEARNING_RATES["ptuning_embedding"] != LEARNING_RATES["ptuning"]
    assert default_learning_rate({**embedding, "prefix_projection": True}) == LEARNING_RATES["ptuning"]
    assert default_learning_rate({"train_type": "ptuning"}) == LEARNING_RATES["ptuning"]  # train's default: projection
    _results(tmp_path, "03_ptuning", SETUP, method="ptuning", lr=LEARNING_RATES["ptuning"])  # a row without
    assert reusable_runs(["03_ptuning"], SETUP, FLAGS, root=tmp_path) == {}  # prefix_projection: not known to be a default


def test_a_run_is_reused_only_if_it_trained_the_shape_06_would_train(tmp_path):
    """A 03 run trained before P-tuning's prefix grew to PRE_SEQ_LEN tokens, or with another -p pre_seq_len, or
    results that recorded no method flags (older ones), are not 06's runs: 06 trains them again."""
    assert PRE_SEQ_LEN == FLAGS["projection"]["pre_seq_len"] == FLAGS["embedding"]["pre_seq_len"] == 32
    projection = {"prefix_projection": True}
    _results(tmp_path, "03_ptuning", SETUP, method="ptuning", **projection)
    assert reusable_runs(["03_ptuning"], SETUP, FLAGS, root=tmp_path) == {"03_ptuning": str(tmp_path / "03_ptuning")}
    shutil.rmtree(tmp_path / "03_ptuning")
    _results(tmp_path, "03_ptuning", SETUP, method="ptuning", method_flags={**FLAGS["projection"], "pre_seq_len": 16},
             **projection)
    assert reusable_runs(["03_ptuning"], SETUP, FLAGS, root=tmp_path) == {}
    shutil.rmtree(tmp_path / "03_ptuning")
    _results(tmp_path, "03_ptuning", SETUP, method="ptuning", method_flags=None, **projection)
    assert reusable_runs(["03_ptuning"], SETUP, FLAGS, root=tmp_path) == {}


def test_f1_by_novelty_only_for_glmlab_synth_splits(tmp_path):
    from glmlab.notebooks.experiment import f1_by_novelty

    samples = [{"input": "据用户说，大灯被查出发暗。", "output": "大灯_部件故障_发暗"}]
    found = f1_by_novelty(tmp_path / "synth-0123abcd-seed0" / "spo_test.jsonl", samples, ["大灯_部件故障_发暗"])
    assert found["form"] == found["opening"] == {"f1": 1.0, "n": 1}
    assert f1_by_novelty(tmp_path / "data" / "spo_test.jsonl", samples, [""]) is None  # a user's own file
    assert f1_by_novelty(tmp_path / "synth-0123abcd-seed0" / "d2q_test.jsonl", samples, [""]) is None

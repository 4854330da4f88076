"""glmlab.memory.anatomy: each component measured on the small bases beside the estimate (issue 16, item 4).

Weights, gradients and AdamW's state are counted from the tensors; activations are the unique storages
autograd saves for backward. Every method, checkpointing off and on, fp32 on the CPU.
"""

from __future__ import annotations

import pytest

from glmlab.loading import build_config
from glmlab.memory import (COMPONENTS, METHOD_SETUPS, anatomy_table, checkpointed_input_bytes, logits_bytes,
                           memory_anatomy)
from glmlab.notebooks.pretrained import base_model_dir

BATCH, SEQ = 2, 64


@pytest.fixture(scope="module", params=["glm", "glm2"])
def anatomy(request):
    """(config, rows) of :func:`memory_anatomy` on the small pretrained base of the mode (the notebooks' model)."""
    folder = str(base_model_dir(request.param))
    config, _ = build_config(folder, request.param)
    setups = METHOD_SETUPS if request.param == "glm" else {k: v for k, v in METHOD_SETUPS.items()
                                                           if k in ("freeze (last layer)", "ptuning (projection)",
                                                                    "lora (r=8, qkv)")}
    return config, {(r["label"], r["gradient_checkpointing"]): r
                    for r in memory_anatomy(folder, setups, batch_size=BATCH, seq_len=SEQ)}


def test_every_component_within_15_percent_of_the_measurement(anatomy):
    config, rows = anatomy
    assert len(rows) >= 6 and {ckpt for _, ckpt in rows} == {False, True}
    for (label, ckpt), row in rows.items():
        # Counted tensor by tensor, weights, gradients and the optimizer's state are exact.
        for part in ("weights", "gradients", "optimizer"):
            assert row[f"{part}_estimated"] == row[f"{part}_measured"] > 0, (label, ckpt, part)
        assert row["optimizer_measured"] == 2 * row["gradients_measured"]  # AdamW: exp_avg and exp_avg_sq, fp32
        assert row["activations_ratio"] == pytest.approx(1.0, abs=0.15), (label, ckpt, row["activations_ratio"])
    table = anatomy_table(list(rows.values()))
    assert [list(line)[:2] + list(line)[2:6] for line in table][0] == ["setting", "checkpointing", *COMPONENTS]


def test_freeze_saves_nothing_below_its_lowest_trained_layer(anatomy):
    config, rows = anatomy
    freeze, last = rows[("freeze (last layer)", False)]["per_layer"], config.num_layers - 1
    assert freeze[:last] == [0] * last and freeze[last] > 0
    if ("all", False) in rows:  # the trained layer keeps what it keeps under full training
        assert freeze[last] == rows[("all", False)]["per_layer"][last]


def test_ptuning_and_lora_save_the_whole_models_activations(anatomy):
    config, rows = anatomy
    h = config.hidden_size
    for label in ("ptuning (projection)", "lora (r=8, qkv)"):
        per_layer = rows[(label, False)]["per_layer"]
        # Every layer keeps activations (the gradient passes through all of them), far more than its input.
        assert len(per_layer) == config.num_layers and min(per_layer) > 5 * BATCH * SEQ * h * 4, (label, per_layer)
    # The loss's fp32 log-probabilities are saved outside the layers: a third of the estimate's logits part.
    outside = rows[("lora (r=8, qkv)", False)]["outside"]
    assert logits_bytes(config, BATCH, SEQ) / 3 <= outside < logits_bytes(config, BATCH, SEQ) / 3 + 3 * BATCH * SEQ * h * 4


def test_checkpointing_keeps_only_layer_inputs(anatomy):
    config, rows = anatomy
    layer_input = BATCH * SEQ * config.hidden_size * 4  # fp32 hidden states
    for (label, ckpt), row in rows.items():
        if not ckpt:
            continue
        per_layer = row["per_layer"]
        # Each layer keeps its input (freeze's frozen layers too); the first also what all layers share
        # (positions, mask, P-tuning's prefix keys and values), counted once.
        assert per_layer[1:] == [layer_input] * (config.num_layers - 1), (label, per_layer)
        shared = checkpointed_input_bytes(config, BATCH, SEQ, 16 if label.startswith("ptuning") else 0, "fp32")
        shared -= config.num_layers * layer_input
        assert per_layer[0] == pytest.approx(layer_input + shared, rel=0.01), (label, per_layer[0], shared)
        # The backward rebuilds one layer at a time: the largest of the plain forward.
        assert row["measured"].rebuilt == max(rows[(label, False)]["per_layer"])
        plain = rows[(label, False)]["activations_measured"]
        if label.startswith("freeze"):  # its one trained layer rebuilt, plus inputs of layers that kept nothing
            assert row["activations_measured"] > plain
        else:
            assert row["activations_measured"] < plain

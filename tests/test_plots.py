"""glmlab.notebooks.plots: what the notebooks' charts show (drawn off screen, read back from the axes)."""

from __future__ import annotations

import json

import matplotlib
import pytest

from glmlab import memory
from glmlab.notebooks import plots

matplotlib.use("agg")


def _run(folder, losses):
    folder.mkdir()
    records = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_loss_curves_use_a_log_scale_when_every_loss_is_positive(tmp_path):
    a = _run(tmp_path / "a", [19.0, 2.0, 0.3, 0.01])
    b = _run(tmp_path / "b", [18.0, 1.0, 0.5, 0.4])
    ax = plots.plot_loss({"lora": a, "freeze": b})
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["lora", "freeze"]
    assert list(ax.get_lines()[0].get_ydata()) == [19.0, 2.0, 0.3, 0.01]
    zero = _run(tmp_path / "zero", [3.0, 0.0])
    assert plots.plot_loss(zero).get_yscale() == "linear"


@pytest.mark.parametrize("mode, step_peak", [("glm", False), ("glm2", True)])
def test_memory_bars_end_with_the_estimate_and_say_when_the_step_is_the_peak(mode, step_peak):
    rows = memory.memory_table(memory.preset_config(mode), precision="bf16", num_gpus=1, batch_size=1, seq_len=1560)
    ax = plots.plot_memory(rows)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(rows)
    for row, text in zip(rows, texts):
        assert text.split()[0] == f"{row['gpu_gib']:.1f}"
        backward = sum(row[k] for k in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib",
                                         "logits_gib", "buckets_gib", "zero3_working_gib"))
        assert ("optimizer step" in text) == (row["gpu_gib"] > backward + 0.05)
    # ChatGLM2's freeze row peaks at the step (fp32 gradients of 2 layers > its smaller logits)
    assert any("optimizer step" in t for t in texts) == step_peak
    # the legend sits outside the axes, where it cannot hide a bar
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1


@pytest.mark.parametrize("zero3", [False, True])
def test_every_estimate_ends_inside_the_axes(zero3):
    """Autoscaling sees the bars, not the figures written after them: 05's chart (full fine-tuning over ZeRO stages and
    GPU counts) wrote its longest bar's "153.6 (peak at the optimizer step)" into the legend, 03's 46.8 under it."""
    setups = [{"label": f"ZeRO-{stage}{' + offload' if off else ''} on {n} GPU(s)", "method": "all", "zero_stage": stage,
               "offload": off, "num_gpus": n} for n in (1, 4) for stage, off in ((2, False), (3, False), (3, True))]
    if not zero3:
        setups = [s for s in setups if s["zero_stage"] == 2]
    rows = memory.memory_table(memory.preset_config("glm"), setups, precision="bf16", batch_size=8, seq_len=768,
                               gradient_checkpointing=True)
    ax = plots.plot_memory(rows)
    assert any("optimizer step" in t.get_text() for t in ax.texts)  # the long note is there to fit
    renderer = ax.figure.canvas.get_renderer()
    right = ax.get_window_extent(renderer).x1
    assert all(t.get_window_extent(renderer).x1 <= right for t in ax.texts), [t.get_text() for t in ax.texts]

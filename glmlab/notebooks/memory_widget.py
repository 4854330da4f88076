"""A memory calculator for the notebooks, on :func:`glmlab.memory.estimate_memory`.

``calculator(...)`` returns an object the notebook displays: drop-downs (model, method, DeepSpeed
config, precision, quantization) and sliders (GPUs, batch, length, card size) whose table of
the estimate's parts updates as they move. It is shown through IPython's rich display with a
static HTML table beside the widget view, so a front-end that renders widgets (JupyterLab,
Notebook 7) shows the live calculator, and anything else -- a notebook executed by papermill and
opened later, nbviewer, a terminal, or a Python without ipywidgets -- shows the table of the
starting values instead. Nothing here fails for want of a widget front-end.

``method_table(...)`` is the plain-text grid of one method (``python -m glmlab.memory --grid``'s
rows), for the training notebooks.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from glmlab import memory
from glmlab.constants import MODES, PRECISIONS, TRAIN_TYPES

DS_FILES = tuple(memory.SHIPPED_CONFIGS.values())
PART_LABELS = {
    "weights": "weights",
    "gradients": "gradients",
    "optimizer": "optimizer (fp32 master + AdamW)",
    "buckets": "reduce buckets",
    "zero3_working": "ZeRO-3 gathered parameters",
    "activations": "activations",
    "logits": "loss (fp32 logits)",
    "step": "optimizer step (fp32 gradients)",
}


def method_table(
    mode: str,
    method: str,
    *,
    num_gpus: int = 1,
    batch_size: int = 1,
    seq_len: int = 1560,
    gpu_gib: float | None = 24.0,
    precision: str = "bf16",
    **method_args: Any,
) -> str:
    """The grid rows of ``method`` on the official 6B model of ``mode`` as a text table (fit marked on ``gpu_gib``)."""
    estimates = memory.grid(
        memory.preset_config(mode),
        num_gpus=num_gpus,
        batch_size=batch_size,
        seq_len=seq_len,
        precision=precision,
        methods=(method,),
        **method_args,
    )
    title = (
        f"{mode} 6B, {method}: {num_gpus} GPU(s), batch {batch_size}, length {seq_len}, {precision}; "
        f"GiB per GPU" + (f", fits: <= {gpu_gib:g} GiB" if gpu_gib is not None else "")
    )
    return title + "\n" + memory.format_table(memory.grid_rows(estimates, gpu_gib))


def estimate(values: dict[str, Any]) -> memory.MemoryEstimate:
    """The estimate for the calculator's ``values`` (its controls' names and values)."""
    method_args = {
        k: values[k]
        for k in (
            "freeze_module_name",
            "pre_seq_len",
            "prefix_projection",
            "lora_dim",
            "lora_module_name",
        )
        if k in values
    }
    return memory.estimate_memory(
        memory.preset_config(values["mode"]),
        values["method"],
        precision=values["precision"],
        ds_config=values["ds_file"],
        num_gpus=values["num_gpus"],
        batch_size=values["batch_size"],
        seq_len=values["seq_len"],
        gradient_checkpointing=values["gradient_checkpointing"],
        quantization_bit=values["quantization_bit"],
        **method_args,
    )


def breakdown_html(values: dict[str, Any]) -> str:
    """The estimate of ``values`` as an HTML table (GiB per GPU), or the reason there is none."""
    if values.get("pipeline_stages"):  # pipeline parallelism: one row per stage (glmlab.memory.pipeline)
        from glmlab.memory.pipeline import breakdown_html as pipeline_html

        return pipeline_html(values)
    try:
        est = estimate(values)
    except (
        ValueError
    ) as err:  # e.g. quantization with freeze/all: say so in place of the table
        return f"<p><b>No estimate:</b> {html.escape(str(err))}</p>"
    rows = "".join(
        f"<tr><td>{PART_LABELS[p]}</td><td style='text-align:right'>{getattr(est, p) / memory.GIB:.2f}"
        f"</td></tr>"
        for p in memory.PARTS
    )
    gib = est.total / memory.GIB
    fits = values.get("gpu_gib")
    verdict = (
        ""
        if fits is None
        else (
            f" &mdash; <b>{'fits' if gib <= fits else 'does not fit'}</b> on a "
            f"{fits:g} GiB card"
        )
    )
    return (
        f"<p>{values['mode']} 6B, {est.method}, ZeRO-{est.zero_stage}{' + offload' if est.offload else ''}, "
        f"{est.num_gpus} GPU(s), {est.trainable_params:,} trainable parameters</p>"
        f"<table><thead><tr><th>part</th><th>GiB per GPU</th></tr></thead><tbody>{rows}"
        f"<tr><td><b>peak ({est.peak_phase})</b></td><td style='text-align:right'><b>{gib:.2f}</b></td></tr>"
        f"<tr><td>CPU per process (offload)</td><td style='text-align:right'>{est.cpu / memory.GIB:.2f}</td>"
        f"</tr></tbody></table><p>peak {gib:.2f} GiB per GPU{verdict}</p>"
    )


class Calculator:
    """Controls plus a table that follows them; displays as a widget, or as the static table without one."""

    def __init__(self, values: dict[str, Any]):
        self.values = dict(values)
        self.box = self._build()

    def _build(self):
        try:
            import ipywidgets as w
        except ImportError:
            return None
        try:
            v = self.values
            controls = {
                "mode": w.Dropdown(
                    options=list(MODES), value=v["mode"], description="model"
                ),
                "method": w.Dropdown(
                    options=list(TRAIN_TYPES), value=v["method"], description="method"
                ),
                "ds_file": w.Dropdown(
                    options=list(DS_FILES), value=v["ds_file"], description="DeepSpeed"
                ),
                "precision": w.Dropdown(
                    options=list(PRECISIONS),
                    value=v["precision"],
                    description="precision",
                ),
                "quantization_bit": w.Dropdown(
                    options=list(memory.QUANTIZATION_BITS),
                    value=v["quantization_bit"],
                    description="quant. bits",
                ),
                "gradient_checkpointing": w.Checkbox(
                    value=v["gradient_checkpointing"], description="checkpointing"
                ),
                "num_gpus": w.IntSlider(
                    value=v["num_gpus"], min=1, max=64, description="GPUs"
                ),
                "batch_size": w.IntSlider(
                    value=v["batch_size"], min=1, max=64, description="batch"
                ),
                "seq_len": w.IntSlider(
                    value=v["seq_len"], min=64, max=8192, step=8, description="length"
                ),
                "gpu_gib": w.FloatSlider(
                    value=v["gpu_gib"], min=4, max=141, step=1, description="card GiB"
                ),
                # pipeline parallelism (glmlab.memory.pipeline): 0 stages = none
                "pipeline_stages": w.IntSlider(value=v.get("pipeline_stages", 0), min=0, max=28, description="pipeline"),
                "micro_batches": w.IntSlider(value=v.get("micro_batches", 8), min=1, max=64, description="micro-batches"),
            }
            # The table (or a long "No estimate" message) takes the room left and wraps inside it; the two
            # columns of controls keep their width (flex: none), so no drop-down arrow or slider value is cut.
            table = w.HTML(breakdown_html(v), layout=w.Layout(flex="1 1 18em", min_width="18em", max_width="42em"))

            def update(_change=None) -> None:
                self.values.update(
                    {name: control.value for name, control in controls.items()}
                )
                table.value = breakdown_html(self.values)

            for control in controls.values():
                control.observe(update, names="value")
            names = list(controls)
            column = w.Layout(flex="none", overflow="visible")
            for name in names[6:]:  # the sliders' labels ("micro-batches") whole, not cut to "micro-bat..."
                controls[name].style.description_width = "96px"
            return w.HBox(
                [
                    w.VBox([controls[n] for n in names[:6]], layout=column),
                    w.VBox([controls[n] for n in names[6:]], layout=column),
                    table,
                ],
                layout=w.Layout(flex_flow="row wrap", align_items="flex-start"),  # a narrow page puts the table below
            )
        except Exception:  # noqa: BLE001 -- a widget problem must never stop a notebook: fall back to the table
            return None

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self.box is not None:
            bundle.update(
                self.box._repr_mimebundle_(include=include, exclude=exclude) or {}
            )
        # What a front-end without a widget manager shows (papermill output, nbviewer, a terminal).
        bundle["text/html"] = breakdown_html(self.values)
        bundle["text/plain"] = self.text()
        return bundle

    def text(self) -> str:
        """The current estimate as plain text (:func:`glmlab.memory.format_breakdown`)."""
        try:
            if self.values.get("pipeline_stages"):  # one row per stage (glmlab.memory.pipeline)
                from glmlab.memory.pipeline import pipeline_text

                return pipeline_text(self.values)
            return memory.format_breakdown(
                estimate(self.values), self.values.get("gpu_gib")
            )
        except ValueError as err:
            return f"no estimate: {err}"

    def __repr__(self) -> str:
        return self.text()


def calculator(
    mode: str = "glm2",
    method: str = "lora",
    *,
    ds_file: str = "ds_zero2_no_offload.json",
    precision: str = "bf16",
    quantization_bit: int = 0,
    gradient_checkpointing: bool = True,
    num_gpus: int = 1,
    batch_size: int = 1,
    seq_len: int = 1560,
    gpu_gib: float = 24.0,
    **method_args: Any,
) -> Calculator:
    """The interactive calculator, starting from these values (``method_args``: the method's flags)."""
    values = {
        "mode": mode,
        "method": method,
        "ds_file": ds_file,
        "precision": precision,
        "quantization_bit": quantization_bit,
        "gradient_checkpointing": gradient_checkpointing,
        "num_gpus": num_gpus,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "gpu_gib": gpu_gib,
        **method_args,
    }
    estimate(
        values
    )  # bad starting values fail here, with the estimator's one-line message
    return Calculator(values)


__all__: Sequence[str] = (
    "Calculator",
    "breakdown_html",
    "calculator",
    "estimate",
    "method_table",
)

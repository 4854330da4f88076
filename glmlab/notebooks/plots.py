"""Small plotting and display helpers the notebooks share.

* :func:`read_metrics` / :func:`plot_loss` -- the loss curve of one or several runs from
  their ``output_dir/metrics.jsonl`` (written by :mod:`glmlab.train`);
* :func:`plot_lengths` -- token-length histograms of an :class:`glmlab.data.EncodedFile`
  against ``max_src_len`` / ``max_len``, to choose them;
* :func:`supervision_html` -- one encoded sample with its supervised tokens highlighted
  (what the loss sees);
* :func:`plot_memory` -- a stacked bar chart of :func:`glmlab.memory.memory_table` rows.

matplotlib is imported lazily so importing glmlab never needs a display.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from glmlab.constants import IGNORE_INDEX


def read_metrics(output_dir: str | Path) -> list[dict]:
    """The records of ``output_dir/metrics.jsonl`` in order (empty when the file does not exist).

    Raises :class:`glmlab.checkpoint.MixedRunsError` (one line naming them) when the folder holds
    several runs' files (left by an older glmlab): a curve must be one run's."""
    from glmlab.checkpoint import one_run

    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    one_run(output_dir)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def loss_curve(output_dir: str | Path) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` of the training-loss records of a run."""
    records = [r for r in read_metrics(output_dir) if "loss" in r]
    return [r["step"] for r in records], [r["loss"] for r in records]


def plot_loss(runs: str | Path | Mapping[str, str | Path], ax=None, title: str = "training loss"):
    """Plot the loss against the optimizer step for one run folder or ``{label: folder}``; returns the axes.

    The y axis is logarithmic when every loss is positive: a run's first steps drop the loss by an
    order of magnitude, and on a linear axis that hides where the methods end up."""
    import matplotlib.pyplot as plt

    if not isinstance(runs, Mapping):
        runs = {Path(runs).name: runs}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    lowest = float("inf")
    for label, folder in runs.items():
        steps, losses = loss_curve(folder)
        ax.plot(steps, losses, marker="o", markersize=3, label=str(label))
        lowest = min([lowest, *losses])
    if 0 < lowest < float("inf"):  # a log scale: the runs differ in the tail, after the first big drop
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over supervised tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def compare_losses(reference: tuple[str, str | Path], other: tuple[str, str | Path], every: int = 6) -> list[tuple]:
    """Two runs' training losses at the optimizer steps both logged, drawn together and printed.

    ``reference`` and ``other`` are ``(label, run folder)``. Two runs that compute the same thing in
    different ways (ZeRO-3 with and without offload, a pipeline against ZeRO-3) should draw one line;
    the largest difference says how far they drifted. Returns ``[(step, reference_loss, other_loss)]``.
    """
    import matplotlib.pyplot as plt

    (label_a, dir_a), (label_b, dir_b) = reference, other
    a, b = dict(zip(*loss_curve(dir_a))), dict(zip(*loss_curve(dir_b)))
    same = [(step, a[step], b[step]) for step in sorted(b) if step in a]
    if not same:
        print(f"{label_a} and {label_b} logged no step in common (losses are logged every --show_loss_step "
              f"optimizer steps): run {label_b} longer")
        return same
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _, _ in same], [x for _, x, _ in same], label=label_a)
    ax.plot([s for s, _, _ in same], [y for _, _, y in same], "--", label=label_b)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    plt.show()
    for step, x, y in same[:: max(1, len(same) // every)]:
        print(f"step {step:4d}: {label_a} {x:.4f}   {label_b} {y:.4f}")
    print(f"largest difference over {len(same)} logged steps: {max(abs(x - y) for _, x, y in same):.4f}")
    return same


def plot_lengths(encoded, ax=None, bins: int = 30):
    """Histograms of source and target token lengths (before any cut) of an ``EncodedFile``.

    Dashed lines mark ``max_src_len`` and what ``max_len`` leaves for a target after the
    longest kept source, so a reader sees how many samples the cut touches.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(encoded.source_lengths, bins=bins, alpha=0.6, label="source (prompt) tokens")
    ax.hist(encoded.target_lengths, bins=bins, alpha=0.6, label="target (answer) tokens")
    ax.axvline(encoded.max_src_len, color="C0", linestyle="--", label=f"max_src_len = {encoded.max_src_len}")
    ax.axvline(encoded.max_len, color="k", linestyle=":", label=f"max_len = {encoded.max_len}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("samples")
    ax.set_title(f"{Path(encoded.path).name} ({encoded.mode})")
    ax.legend(fontsize=8)
    return ax


def supervision_html(tokenizer, input_ids: Sequence[int], labels: Sequence[int], max_tokens: int = 200) -> str:
    """HTML showing each token of a sample, supervised ones (label != -100) highlighted in green.

    Special tokens show as their names; each token is a box, so the reader sees exactly where
    the prompt ends and the loss starts. Wrap it in ``IPython.display.HTML`` to show it.
    """
    boxes = []
    for token_id, label in list(zip(input_ids, labels))[:max_tokens]:
        text = tokenizer.convert_ids_to_tokens([int(token_id)])[0] if hasattr(tokenizer, "convert_ids_to_tokens") \
            else tokenizer.decode([int(token_id)])
        text = str(text).replace("\n", "\\n").replace("▁", "␣")
        supervised = label != IGNORE_INDEX
        style = "background:#b7e4c7;" if supervised else "background:#e9ecef;color:#6c757d;"
        boxes.append(f'<span title="id {token_id}, label {label}" style="{style}padding:1px 3px;margin:1px;'
                     f'border-radius:3px;display:inline-block;font-family:monospace">{html.escape(text)}</span>')
    more = len(input_ids) - max_tokens
    tail = f" <i>... {more} more</i>" if more > 0 else ""
    legend = ('<div style="font-size:85%"><span style="background:#b7e4c7;padding:0 4px">supervised</span> '
              '<span style="background:#e9ecef;color:#6c757d;padding:0 4px">context (label -100)</span></div>')
    return legend + "<div style='line-height:1.9'>" + "".join(boxes) + tail + "</div>"


def plot_memory(rows: Sequence[Mapping], ax=None, title: str = "estimated training memory per GPU"):
    """Stacked horizontal bars (weights, gradients, optimizer, activations, logits, buckets, ZeRO-3; GiB), one per row.

    A hatched bar to the right shows what offload keeps on the CPU instead.
    """
    import matplotlib.pyplot as plt

    parts = ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "logits_gib", "buckets_gib",
             "zero3_working_gib")  # the backward's peak (glmlab.memory); rows without a part count it 0
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    labels = [r.get("label", r["method"]) for r in rows]
    left = [0.0] * len(rows)
    for part in parts:
        values = [float(r.get(part, 0.0)) for r in rows]
        ax.barh(labels, values, left=left, label=part.replace("_gib", ""))
        left = [a + b for a, b in zip(left, values)]
    notes = []
    for y, (row, backward) in enumerate(zip(rows, left)):  # the estimate at the end of each bar
        peak = float(row.get("gpu_gib", backward))
        text = f"{peak:.1f}" + (" (peak at the optimizer step)" if peak > backward + 0.05 else "")
        notes.append(ax.annotate(text, (backward, y), xytext=(3, 0), textcoords="offset points", va="center",
                                 fontsize=8))
    cpu = [float(r.get("cpu_gib", 0.0)) for r in rows]
    if any(cpu):
        ax.barh(labels, cpu, left=left, color="none", edgecolor="grey", hatch="//", label="on the CPU (offload)")
    ax.invert_yaxis()
    ax.set_xlabel("GiB")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it hid the longest bars
    ax.grid(axis="x", alpha=0.3)
    _make_room(ax, notes)
    return ax


def _make_room(ax, notes: Sequence) -> None:
    """Widen ``ax``'s x range so that every note (text placed in points right of a bar's end, ``ax.annotate``) ends
    inside the axes: autoscaling sees the bars, not the text, so the longest bar's figure ran into the legend.
    A note of ``w`` pixels after a bar ending at ``b`` fits when ``b + w * (xmax - xmin) / W <= xmax`` on an axes
    ``W`` pixels wide."""
    ax.figure.canvas.draw()  # lays the texts out: their widths in pixels
    renderer = ax.figure.canvas.get_renderer()
    width = ax.get_window_extent(renderer).width
    low, high = ax.get_xlim()
    need = high
    for note in notes:
        bar = note.xy[0]
        share = (note.get_window_extent(renderer).x1 - ax.transData.transform((bar, 0))[0] + 4) / width
        if share < 1:
            need = max(need, (bar - low * share) / (1 - share))
    if need > high:
        ax.set_xlim(low, need)


def table_html(rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A plain HTML table of ``rows`` (dicts); floats rounded to ``digits``, ints with thousands separators.

    Wrap it in ``IPython.display.HTML``. ``columns`` picks and orders the keys (default: the first row's).
    """
    columns = list(columns or (rows[0].keys() if rows else []))

    def cell(value) -> str:
        if isinstance(value, bool) or value is None:
            return html.escape(str(value))
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return html.escape(str(value)).replace("\n", "<br>")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

"""Memory per stage of pipeline-parallel full fine-tuning (``--pipeline_stages``, :mod:`glmlab.pipeline`).

    python -m glmlab.memory --mode glm2 --train_type all --pipeline_stages 4 --num_gpus 4 \\
        --gradient_accumulation_steps 8 --max_len 1024

Arithmetic only, on the same exact tensor list as :mod:`glmlab.memory`
(:func:`~glmlab.memory.parameter_shapes`) and its activation and logits formulas. With ``p``
stages, ``m`` micro-batches per optimizer step (``--gradient_accumulation_steps``) and ``D =
num_gpus / p`` data-parallel replicas of every stage, stage ``s`` holds:

* **weights, gradients** -- its own parameters only (the blocks DeepSpeed's type partition
  gives it, the word embedding on the first stage, final norm and LM head on the last), in the
  training precision; ZeRO-0/1 keep every gradient of the stage.
* **optimizer** -- AdamW's two fp32 moments and DeepSpeed's fp32 master copy, 12 bytes per
  parameter (ZeRO-0 in fp32: 8, the parameters are stepped themselves), divided by ``D`` under
  ZeRO-1. ZeRO-2/3 are refused by DeepSpeed's pipeline engine.
* **activations** -- DeepSpeed's 1F1B schedule (``TrainSchedule``) keeps at most ``min(p - s, m)``
  micro-batches in flight on stage ``s`` (forwarded, not yet back-propagated): the first stage
  the most, the last one a single micro-batch. Each holds what its layers keep for the backward
  (:func:`~glmlab.memory.layer_activation_bytes`; with gradient checkpointing each block's
  16-bit input plus one block rebuilt at a time) and the hidden state it received.
* **logits** -- on the last stage only: the fp32 loss tensors of one micro-batch
  (:func:`~glmlab.memory.logits_bytes`).
* **step** -- after the backward (activations gone): the fp32 gradients and AdamW's fp32
  temporary of the optimizer's share, ``8`` bytes per parameter (``/ D`` under ZeRO-1), as
  :mod:`glmlab.memory` counts them. The peak is the static part plus the larger of the
  backward's (activations, logits) and the step's.
* **sends** -- per optimizer step a stage boundary carries each micro-batch's hidden state forward
  and its gradient back: ``2 m b s h`` elements in the training precision (ZeRO-3, by contrast,
  all-gathers every weight in the forward and again in the backward, and reduce-scatters every
  gradient).

The **bubble** -- the share of a step each stage waits for -- is ``(p - 1) / (m + p - 1)``:
``m + p - 1`` forward slots (and as many backward ones) for ``m`` micro-batches of work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glmlab.memory.activations import layer_activation_bytes, logits_bytes
from glmlab.memory.shapes import BYTES, GIB, parameter_shapes
from glmlab.models.configuration import ChatGLMConfig


def stage_layers(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """``(first, stop)`` block indices of every stage, as ``partition_method="type:BlockLayer"`` splits them.

    DeepSpeed balances the blocks (weight 1; embedding and head weight 0) with
    ``partition_balanced``; it is called here so the estimate and the run agree.
    """
    from deepspeed.runtime.utils import partition_balanced

    parts = [int(x) for x in partition_balanced(weights=[0] + [1] * num_layers + [0], num_parts=stages)]
    # Layer list indices -> block indices: list index i (1 <= i <= L) is block i - 1.
    return [(max(parts[s], 1) - 1, min(parts[s + 1], num_layers + 1) - 1) for s in range(stages)]


def _stage_of(name: str, config: ChatGLMConfig, bounds: list[tuple[int, int]]) -> int:
    marker = "transformer.layers." if config.architecture == "glm" else "transformer.encoder.layers."
    if name.startswith(marker):
        block = int(name[len(marker):].split(".", 1)[0])
        return next(s for s, (first, stop) in enumerate(bounds) if first <= block < stop)
    return 0 if "word_embeddings" in name else len(bounds) - 1  # embedding first, norm and head last


@dataclass
class StageEstimate:
    """Bytes on one GPU of stage ``stage`` (see the module docstring)."""

    stage: int
    blocks: tuple[int, int]  # (first, stop) block indices
    parameters: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    in_flight: int  # micro-batches whose activations are held at once
    step: float = 0.0

    @property
    def peak(self) -> float:
        return self.weights + self.gradients + self.optimizer + max(self.activations + self.logits, self.step)


@dataclass
class PipelineEstimate:
    """Every stage's :class:`StageEstimate`, the bubble and the bytes a stage boundary carries per step."""

    stages: list[StageEstimate] = field(default_factory=list)
    micro_batches: int = 1
    data_parallel: int = 1
    bubble: float = 0.0
    sends_per_step: float = 0.0  # bytes per optimizer step across one stage boundary, both directions

    @property
    def peak(self) -> float:
        """The largest stage's bytes: the GPU size the run needs."""
        return max(s.peak for s in self.stages)

    def rows(self) -> list[dict]:
        """One row per stage, in GiB, for a table or a DataFrame."""
        return [{"stage": s.stage, "blocks": f"{s.blocks[0]}-{s.blocks[1] - 1}", "params_M": s.parameters / 1e6,
                 "weights": s.weights / GIB, "grads": s.gradients / GIB, "optim": s.optimizer / GIB,
                 "activations": s.activations / GIB, "logits": s.logits / GIB, "step": s.step / GIB,
                 "in_flight": s.in_flight,
                 "peak_GiB": s.peak / GIB} for s in self.stages]


def bubble_fraction(stages: int, micro_batches: int) -> float:
    """Share of a 1F1B step each stage idles: ``(p - 1) / (m + p - 1)``."""
    return (stages - 1) / (micro_batches + stages - 1)


def estimate_pipeline_memory(config: ChatGLMConfig, stages: int, *, num_gpus: int | None = None,
                             micro_batches: int = 1, batch_size: int = 1, seq_len: int = 768,
                             precision: str = "bf16", zero_stage: int = 1,
                             gradient_checkpointing: bool = False) -> PipelineEstimate:
    """Per-stage memory of full fine-tuning on ``stages`` pipeline stages (``num_gpus`` = stages x replicas).

    ``micro_batches`` is ``--gradient_accumulation_steps`` (1F1B's ``m``), ``batch_size`` the
    micro-batch size, ``seq_len`` the padded length. Raises ValueError for a combination the
    pipeline path refuses.
    """
    num_gpus = num_gpus or stages
    if stages < 1 or stages > config.num_layers:
        raise ValueError(f"pipeline stages must be between 1 and the {config.num_layers} layers (got {stages})")
    if num_gpus % stages:
        raise ValueError(f"{stages} pipeline stages do not divide {num_gpus} GPUs")
    if zero_stage not in (0, 1):
        raise ValueError(f"DeepSpeed's pipeline engine takes ZeRO stage 0 or 1 (got {zero_stage})")
    replicas = num_gpus // stages
    w = BYTES[precision]
    bounds = stage_layers(config.num_layers, stages)
    params = [0] * stages
    for name, shape in parameter_shapes(config).items():
        n = 1
        for dim in shape:
            n *= dim
        params[_stage_of(name, config, bounds)] += n
    b, s, h = batch_size, seq_len, config.hidden_size
    per_layer = layer_activation_bytes(config, b, s) * w / 2  # the formula counts 16-bit activations
    estimate = PipelineEstimate(micro_batches=micro_batches, data_parallel=replicas,
                                bubble=bubble_fraction(stages, micro_batches), sends_per_step=2 * micro_batches * b * s * h * w)
    for stage, ((first, stop), n) in enumerate(zip(bounds, params, strict=True)):
        blocks = stop - first
        if gradient_checkpointing:  # each block's input, one block rebuilt at a time (during the backward)
            one = blocks * b * s * h * w
            rebuilt = per_layer if blocks else 0
        else:
            one, rebuilt = blocks * per_layer, 0
        in_flight = min(stages - stage, micro_batches)
        received = b * s * h * w if stage else 0  # the hidden state each in-flight micro-batch arrived with
        optimizer_bytes = 8 if zero_stage == 0 and precision == "fp32" else 12
        share = replicas if zero_stage == 1 else 1
        estimate.stages.append(StageEstimate(
            stage=stage, blocks=(first, stop), parameters=n, weights=n * w, gradients=n * w,
            optimizer=n * optimizer_bytes / share, step=8 * n / share,
            activations=in_flight * (one + received) + rebuilt,
            logits=logits_bytes(config, b, s) if stage == stages - 1 else 0, in_flight=in_flight))
    return estimate


def format_pipeline(e: PipelineEstimate) -> str:
    """The per-stage table plus the bubble and the bytes sent per step, as text."""
    head = f"{'stage':>5} {'blocks':>7} {'params':>8} {'weights':>8} {'grads':>8} {'optim':>8} {'activ':>8} " \
           f"{'logits':>8} {'step':>8} {'inflight':>8} {'peak':>8}"
    lines = [head]
    for r in e.rows():
        lines.append(f"{r['stage']:>5} {r['blocks']:>7} {r['params_M']:>7.0f}M {r['weights']:>7.2f}G {r['grads']:>7.2f}G "
                     f"{r['optim']:>7.2f}G {r['activations']:>7.2f}G {r['logits']:>7.2f}G {r['step']:>7.2f}G {r['in_flight']:>8} "
                     f"{r['peak_GiB']:>7.2f}G")
    lines.append(f"bubble (p-1)/(m+p-1) = {e.bubble:.1%} with m = {e.micro_batches} micro-batches; "
                 f"{e.data_parallel} data-parallel replica(s) per stage; each stage boundary carries "
                 f"{e.sends_per_step / 2**20:.1f} MiB per optimizer step (activations forward, gradients back)")
    return "\n".join(lines)


def pipeline_main(args, config: ChatGLMConfig) -> int:
    """``python -m glmlab.memory ... --pipeline_stages N``: print the per-stage table (raises ValueError, one line)."""
    from glmlab.memory.zero import read_ds_config
    from glmlab.methods import get_strategy

    if not get_strategy(args.train_type).pipelines:
        raise ValueError(f"--pipeline_stages works with --train_type all only (got {args.train_type})")
    if args.gradient_accumulation_steps < 1:
        raise ValueError(f"--gradient_accumulation_steps must be at least 1 (got {args.gradient_accumulation_steps})")
    zero = read_ds_config(args.ds_file).get("zero_optimization", {}).get("stage", 0) if args.ds_file else 1
    if args.ds_file == "ds_zero2_no_offload.json":  # the training default, which the pipeline refuses: assume ZeRO-1
        zero = 1
    estimate = estimate_pipeline_memory(config, args.pipeline_stages, num_gpus=max(args.num_gpus, args.pipeline_stages),
                                        micro_batches=args.gradient_accumulation_steps,
                                        batch_size=args.per_device_train_batch_size, seq_len=args.max_len,
                                        precision=args.precision, zero_stage=zero,
                                        gradient_checkpointing=args.gradient_checkpointing)
    print(f"{args.model_name_or_path or args.mode + ' 6B'}: all, {args.pipeline_stages} pipeline stages x "
          f"{estimate.data_parallel} replica(s), ZeRO-{zero}, micro-batch {args.per_device_train_batch_size} x "
          f"{args.gradient_accumulation_steps}, length {args.max_len}, {args.precision}; per GPU of each stage")
    print(format_pipeline(estimate))
    return 0


def _from_values(values: dict) -> PipelineEstimate:
    """The estimate for the memory calculator's control ``values`` (ZeRO-1, whatever its DeepSpeed config says)."""
    from glmlab.memory.shapes import preset_config
    from glmlab.methods import get_strategy

    if not get_strategy(values["method"]).pipelines:
        raise ValueError(f"pipeline parallelism trains the method all only (got {values['method']})")
    return estimate_pipeline_memory(preset_config(values["mode"]), values["pipeline_stages"], num_gpus=values["num_gpus"],
                                    micro_batches=values.get("micro_batches", 8), batch_size=values["batch_size"],
                                    seq_len=values["seq_len"], precision=values["precision"],
                                    gradient_checkpointing=values["gradient_checkpointing"])


def pipeline_text(values: dict) -> str:
    """The calculator's plain-text table when its ``pipeline_stages`` control is set (raises ValueError)."""
    return format_pipeline(_from_values(values))


def breakdown_html(values: dict) -> str:
    """The calculator's table (``glmlab.notebooks.memory_widget``) when its ``pipeline_stages`` control is set.

    ``values`` are the calculator's controls (``mode``, ``method``, ``num_gpus``, ``batch_size``,
    ``seq_len``, ``precision``, ``gradient_checkpointing``, ``gpu_gib``, ``pipeline_stages``,
    ``micro_batches``). The pipeline runs ZeRO-1 whatever the DeepSpeed config control says.
    """
    import html

    stages = values["pipeline_stages"]
    try:
        e = _from_values(values)
    except ValueError as err:
        return f"<p><b>No estimate:</b> {html.escape(str(err))}</p>"
    columns = ("stage", "blocks", "weights", "grads", "optim", "activations", "logits", "step", "in_flight", "peak_GiB")
    body = "".join("<tr>" + "".join(f"<td style='text-align:right'>{r[c]:.2f}</td>" if isinstance(r[c], float)
                                     else f"<td>{r[c]}</td>" for c in columns) + "</tr>" for r in e.rows())
    fits = values.get("gpu_gib")
    verdict = "" if fits is None else f" &mdash; <b>{'fits' if e.peak / GIB <= fits else 'does not fit'}</b> on a {fits:g} GiB card"
    return (f"<p>{values['mode']} 6B, all, {stages} pipeline stages x {e.data_parallel} replica(s), ZeRO-1; GiB per GPU</p>"
            f"<table><thead><tr>{''.join(f'<th>{c}</th>' for c in columns)}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>peak {e.peak / GIB:.2f} GiB per GPU{verdict}; bubble {e.bubble:.1%}; each stage boundary carries "
            f"{e.sends_per_step / 2**20:.0f} MiB per step</p>")

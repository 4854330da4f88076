"""The estimate: training memory per GPU of one setting, part by part (see :mod:`glmlab.memory`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glmlab.memory.activations import activation_bytes, logits_bytes
from glmlab.memory.shapes import (
    BYTES,
    GIB,
    QUANTIZATION_BITS,
    _numel,
    method_shapes,
    parameter_shapes,
    trainable_parameters,
)
from glmlab.memory.zero import (
    ZeroSettings,
    _is_quantized,
    largest_module_gradient,
    method_tensors,
    read_ds_config,
    zero3_gathered_bytes,
)
from glmlab.methods import STRATEGIES, get_strategy, top_layers
from glmlab.models.configuration import ChatGLMConfig


# --------------------------------------------------------------------------- memory
PARTS = ("weights", "gradients", "optimizer", "buckets", "zero3_working", "activations", "logits", "step")


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated training memory of one configuration: bytes per GPU (``cpu``: per process, on the host).

    The parts are those of the module docstring; ``*_gib`` give each in GiB. The peak is
    ``weights + gradients + optimizer + static buckets`` plus the larger of the backward's
    transient part and the step's (``peak_phase``).
    """

    method: str
    precision: str
    zero_stage: int
    num_gpus: int
    offload: bool
    gradient_checkpointing: bool
    quantization_bit: int
    total_params: int
    trainable_params: int
    weights: int
    gradients: int
    optimizer: int
    buckets: int
    zero3_working: int
    activations: int
    logits: int
    step: int
    cpu: int
    static_buckets: bool = field(default=False, repr=False)  # ZeRO-3 allocates its bucket once, for good

    @property
    def backward_transient(self) -> int:
        return self.activations + self.logits + self.zero3_working + (0 if self.static_buckets else self.buckets)

    @property
    def peak_phase(self) -> str:
        """``"backward"`` or ``"optimizer step"``: when the peak is reached."""
        return "backward" if self.backward_transient >= self.step else "optimizer step"

    @property
    def total(self) -> int:
        """Peak bytes per GPU."""
        static = self.weights + self.gradients + self.optimizer + (self.buckets if self.static_buckets else 0)
        return static + max(self.backward_transient, self.step)

    def __getattr__(self, name: str) -> float:  # weights_gib, ..., gpu_gib, cpu_gib
        if name.endswith("_gib"):
            part = {"gpu": "total"}.get(name[:-4], name[:-4])
            if part in PARTS or part in ("total", "cpu"):
                return getattr(self, part) / GIB
        raise AttributeError(name)

    def as_dict(self) -> dict:
        """Plain dict, for tables and JSON: the bytes, each part in GiB, ``gpu_gib``, ``cpu_gib``, ``peak_phase``."""
        out = {k: v for k, v in asdict(self).items() if k != "static_buckets"}
        out.update({f"{p}_gib": getattr(self, p) / GIB for p in PARTS})
        out.update(total=self.total, gpu_gib=self.total / GIB, cpu_gib=self.cpu / GIB, peak_phase=self.peak_phase)
        return out


def _check_quantization(method: str, quantization_bit: int) -> None:
    if quantization_bit not in QUANTIZATION_BITS:
        raise ValueError(f"--quantization_bit must be 0, 4 or 8 (got {quantization_bit})")
    if quantization_bit and not get_strategy(method).quantizable:
        quantizable = " or ".join(sorted(name for name, s in STRATEGIES.items() if s.quantizable))
        raise ValueError(f"--quantization_bit {quantization_bit} needs --train_type {quantizable} (a quantized "
                         f"base is frozen; {method} trains its weights)")


def zero_settings(zero_stage: int | None = None, offload: bool | None = None,
                  ds_config: str | Path | dict | None = None) -> ZeroSettings:
    """The ZeRO settings of ``ds_config`` (a dict, path or shipped name), else of the shipped config for
    ``zero_stage`` (default 2) and ``offload``; a ``zero_stage``/``offload`` that contradicts ``ds_config`` is an error."""
    if ds_config is None:
        return ZeroSettings.shipped(2 if zero_stage is None else zero_stage, bool(offload))
    settings = ZeroSettings.from_config(read_ds_config(ds_config))
    if zero_stage is not None and zero_stage != settings.stage:
        raise ValueError(f"zero_stage {zero_stage} contradicts the DeepSpeed config (stage {settings.stage})")
    if offload is not None and bool(offload) != settings.offload:
        raise ValueError(f"offload={offload} contradicts the DeepSpeed config (offload {settings.offload})")
    return settings


def estimate_memory(
    config: ChatGLMConfig,
    method: str,
    *,
    precision: str = "bf16",
    zero_stage: int | None = None,
    num_gpus: int = 1,
    offload: bool | None = None,
    batch_size: int = 1,
    seq_len: int = 768,
    gradient_checkpointing: bool = False,
    attention_scores: bool = False,
    quantization_bit: int = 0,
    ds_config: str | Path | dict | None = None,
    **method_args: Any,
) -> MemoryEstimate:
    """Estimated training memory per GPU of ``method`` on ``config`` (see the module docstring).

    ``method_args`` are :func:`trainable_parameters`' keywords (``freeze_module_name``,
    ``pre_seq_len``, ``prefix_projection``, ``lora_dim``, ``lora_module_name``). The ZeRO
    settings come from ``ds_config`` (a DeepSpeed config dict, a path or a shipped name such
    as ``ds_zero3_offload.json``), else from the shipped config of ``zero_stage`` (default 2)
    and ``offload`` (DeepSpeed's defaults for stages 0 and 1). ``quantization_bit`` 4 or 8:
    the frozen base's linear weights quantized (``lora`` and ``ptuning`` only).
    """
    if precision not in BYTES:
        raise ValueError(f"precision must be one of {', '.join(BYTES)} (got {precision!r})")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be at least 1 (got {num_gpus})")
    _check_quantization(method, quantization_bit)
    zero = zero_settings(zero_stage, offload, ds_config)
    stage, n, w = zero.stage, num_gpus, BYTES[precision]
    tensors = method_tensors(config, method, width=w, quantization_bit=quantization_bit, **method_args)
    trainable, total = trainable_parameters(config, method, **method_args)
    assert trainable == sum(t.numel for t in tensors if t.trainable)  # one count, two routes

    # weights: a full copy (ZeRO-0/1/2), or the 1/N partition of each parameter (ceil, as
    # partition_parameters.py pads) plus whole persistent ones (ZeRO-3; on the CPU with offload_param).
    weights = sum(t.nbytes for t in tensors)
    cpu = 0
    if stage == 3:
        partitions = sum(math.ceil(t.numel / n) * (t.nbytes // t.numel) for t in tensors)
        persistent = sum(t.nbytes for t in tensors if t.numel <= zero.param_persistence_threshold)
        weights = persistent + (0 if zero.offload_param else partitions)
        cpu += partitions if zero.offload_param else 0
    if quantization_bit:  # one dequantized 16-bit matrix while its layer runs
        weights += 2 * max(_numel(s) for name, s in parameter_shapes(config).items() if _is_quantized(name))

    shard = math.ceil(trainable / n)
    own = shard if stage >= 1 else trainable  # the optimizer's share
    # 16-bit gradients: on the parameters (ZeRO-0/1), the partition (stage_1_and_2.py grads_in_partition,
    # stage3.py grad_partitions_flat_buffer, in the model's dtype), on the CPU with offload_optimizer.
    gradients = (shard if stage >= 2 else trainable) * w
    # fp32 master (stage_1_and_2.py single_partition_of_fp32_groups, stage3.py fp32_partitioned_groups_flat:
    # a clone even in fp32) and AdamW's exp_avg, exp_avg_sq; ZeRO-0 in fp32 steps the parameters themselves.
    optimizer = own * (8 if stage == 0 and w == 4 else 12)
    if stage == 3:  # fp32 gradients one sub-group at a time (stage3.py _prepare_fp32_grad_for_sub_group)
        step = 2 * 4 * min(own, zero.sub_group_size)
    else:  # the fp32 gradient partition (stage_1_and_2.py step) and AdamW's foreach temporary
        step = (4 if w < 4 or stage >= 1 else 0) * own + 4 * own
    if zero.offload_optimizer and stage >= 1:
        # CPU: fp32 master, moments, fp32 gradient buffer, and a 16-bit staging copy of the partition
        # (stage_1_and_2.py param_buffer_of_bit16_for_cpu_offload_groups; stage3.py grad_partitions_flat_buffer).
        cpu += own * (16 + w)
        gradients = optimizer = step = 0

    # reduce bucket (stage3.py _setup_for_real_optimizer: allocated once; stage_1_and_2.py setup_buckets:
    # each backward; two with overlap_comm), ZeRO-2's largest whole gradient before it is bucketed.
    buckets = 0
    if stage >= 1 and (zero.contiguous_gradients or stage == 3):
        buckets = zero.reduce_bucket_size * w * (2 if zero.overlap_comm and stage < 3 else 1)
    largest_gradient = largest_module_gradient(tensors) * w
    if stage == 2:
        buckets += largest_gradient
    working = 0
    if stage == 3:
        working = zero3_gathered_bytes(tensors, zero, gradient_checkpointing) + largest_gradient

    activations = activation_bytes(config, batch_size, seq_len, precision=precision,
                                   gradient_checkpointing=gradient_checkpointing, attention_scores=attention_scores,
                                   logits=False, **_activation_layers(config, method, method_args))
    return MemoryEstimate(method, precision, stage, n, zero.offload, gradient_checkpointing, quantization_bit,
                          total, trainable, int(weights), int(gradients), int(optimizer), int(buckets), int(working),
                          int(activations), logits_bytes(config, batch_size, seq_len), int(step), int(cpu),
                          static_buckets=stage == 3)


def memory_table(
    config: ChatGLMConfig,
    setups: Sequence[dict] | None = None,
    **common: Any,
) -> list[dict]:
    """Estimates for several setups as a list of dicts (one row each; ``label`` names the row).

    ``setups`` are keyword dicts for :func:`estimate_memory` (``method`` required, ``label``
    optional); ``common`` applies to all of them. The default compares the four methods as
    the original commands ran them: freeze (last 2 layers), P-tuning v2 (16 tokens, with
    projection), LoRA (r=8 on query_key_value), all three on ZeRO-2, and full fine-tuning on
    ZeRO-3 with and without offload.
    """
    if setups is None:
        setups = [
            {"label": "freeze (2 layers), ZeRO-2", "method": "freeze", "freeze_module_name": top_layers(config.num_layers, 2)},
            {"label": "ptuning (16, projection), ZeRO-2", "method": "ptuning", "pre_seq_len": 16, "prefix_projection": True},
            {"label": "ptuning (16, embedding only), ZeRO-2", "method": "ptuning", "pre_seq_len": 16,
             "prefix_projection": False},
            {"label": "lora (r=8, qkv), ZeRO-2", "method": "lora", "lora_dim": 8},
            {"label": "all, ZeRO-3", "method": "all", "zero_stage": 3},
            {"label": "all, ZeRO-3 + offload", "method": "all", "zero_stage": 3, "offload": True},
        ]
    rows = []
    for setup in setups:
        kwargs = {**common, **setup}
        label = kwargs.pop("label", kwargs["method"])
        method = kwargs.pop("method")
        rows.append({"label": label, **estimate_memory(config, method, **kwargs).as_dict()})
    return rows


def _activation_layers(config: ChatGLMConfig, method: str, method_args: dict[str, Any]) -> dict[str, Any]:
    """:func:`activation_bytes`' ``layers``, ``trained_layers`` and ``trained_linears`` (the strategy of ``method``
    says) and ``pre_seq_len`` (P-tuning's prefix, which every layer's attention reads)."""
    config, shapes, flags = method_shapes(config, method, method_args)
    return {**get_strategy(method).activation_layers(config, shapes, flags), "pre_seq_len": config.pre_seq_len or 0}

"""DeepSpeed's ZeRO settings, and the tensors training holds as DeepSpeed sees them: the ZeRO-3
fetch/prefetch/release replay that finds the parameters gathered at once."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmlab.methods import LINEARS, PREFIX_ENCODER, get_strategy, layer_indices
from glmlab.memory.shapes import _numel, method_shapes
from glmlab.models.configuration import ChatGLMConfig


# --------------------------------------------------------------------------- DeepSpeed settings
SHIPPED_CONFIGS = {(2, False): "ds_zero2_no_offload.json", (2, True): "ds_zero2_offload.json",
                   (3, False): "ds_zero3_no_offload.json", (3, True): "ds_zero3_offload.json"}


@dataclass(frozen=True)
class ZeroSettings:
    """The ZeRO settings of a DeepSpeed config that decide memory, with DeepSpeed 0.19's defaults.

    Defaults from ``deepspeed/runtime/zero/config.py`` (``DeepSpeedZeroConfig``): buckets of
    5e8 elements, ``overlap_comm`` on for stage 3 only (``overlap_comm_valid``), prefetch
    5e7, persistence threshold 1e5, live parameters and reuse distance 1e9, sub-groups 1e9.
    """

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    prefetch_bucket_size: int = 50_000_000
    param_persistence_threshold: int = 100_000
    max_live_parameters: int = 1_000_000_000
    max_reuse_distance: int = 1_000_000_000
    sub_group_size: int = 1_000_000_000

    @property
    def offload(self) -> bool:
        return self.offload_optimizer or self.offload_param

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ZeroSettings:
        """Read ``config["zero_optimization"]`` (DeepSpeed's key names, ``stage3_`` prefixes included)."""
        # DeepSpeed's config models drop every "auto" value and use their default instead
        # (runtime/config_utils.py, DeepSpeedConfigModel): an offload "device": "auto" is no offload.
        zero = {k: v for k, v in (config.get("zero_optimization", {}) or {}).items() if v != "auto"}
        stage = int(zero.get("stage", 0))
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_optimization.stage must be 0, 1, 2 or 3 (got {stage})")

        def on_cpu(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")).lower() not in ("none", "auto", "")

        def number(key: str, default: int) -> int:
            value = zero.get(f"stage3_{key}", zero.get(key, default))
            return int(float(value))

        defaults = cls()
        overlap = zero.get("overlap_comm")
        return cls(stage=stage, offload_optimizer=on_cpu("offload_optimizer"), offload_param=on_cpu("offload_param"),
                   reduce_bucket_size=number("reduce_bucket_size", defaults.reduce_bucket_size),
                   allgather_bucket_size=number("allgather_bucket_size", defaults.allgather_bucket_size),
                   overlap_comm=stage == 3 if overlap is None else bool(overlap),
                   contiguous_gradients=bool(zero.get("contiguous_gradients", True)),
                   prefetch_bucket_size=number("prefetch_bucket_size", defaults.prefetch_bucket_size),
                   param_persistence_threshold=number("param_persistence_threshold",
                                                      defaults.param_persistence_threshold),
                   max_live_parameters=number("max_live_parameters", defaults.max_live_parameters),
                   max_reuse_distance=number("max_reuse_distance", defaults.max_reuse_distance),
                   sub_group_size=number("sub_group_size", defaults.sub_group_size))

    @classmethod
    def shipped(cls, stage: int, offload: bool = False) -> ZeroSettings:
        """The settings of glmlab's shipped config for ``stage`` 2/3 (DeepSpeed's defaults for 0/1)."""
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3 (got {stage})")
        return _shipped(stage, bool(offload))


@functools.cache
def _shipped(stage: int, offload: bool) -> ZeroSettings:
    if stage in (2, 3):
        return ZeroSettings.from_config(read_ds_config(SHIPPED_CONFIGS[(stage, offload)]))
    return ZeroSettings(stage=stage, offload_optimizer=offload)


def read_ds_config(ds_file: str | Path | dict) -> dict[str, Any]:
    """A DeepSpeed config: a dict as it is, else ``--ds_file``'s path or shipped name, parsed."""
    if isinstance(ds_file, dict):
        return ds_file
    from glmlab.args import resolve_ds_file

    path = resolve_ds_file(str(ds_file))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--ds_file {path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--ds_file {path}: expected a JSON object")  # noqa: TRY004 (one error type for the CLI)
    return config


# --------------------------------------------------------------------------- tensors as trained
@dataclass(frozen=True)
class Tensor:
    """One parameter as training holds it: stored elements and bytes (quantized or not), trained or not."""

    name: str
    numel: int
    nbytes: int
    trainable: bool

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]


def _is_quantized(name: str) -> bool:
    """The weight matrices ``quantization_bit`` stores in 8/4 bits (biases, norms, embeddings stay 16-bit)."""
    parts = name.split(".")
    return "layers" in parts and parts[-1] == "weight" and parts[-2] in LINEARS


def quantized_weight_bytes(shape: Sequence[int], bits: int) -> tuple[int, int]:
    """``(stored elements, bytes)`` of a quantized ``(out, in)`` weight and its fp16 scales.

    8 bits: one int8 per weight; 4 bits: two weights packed per int8 byte; plus one fp16
    ``weight_scale`` per output row (official ``quantization.py`` layout).
    """
    out, inp = shape
    packed = out * inp * bits // 8
    return packed + out, packed + 2 * out


def method_tensors(config: ChatGLMConfig, method: str, *, width: int = 2, quantization_bit: int = 0,
                   **method_args: Any) -> list[Tensor]:
    """Every parameter of ``method``'s model in forward order, as DeepSpeed sees it.

    The prefix encoder (``ptuning``) runs right after the word embedding; a LoRA adapter's
    ``lora_A``/``lora_B`` follow the layer they adapt (peft names them
    ``<module>.lora_A.default.weight``; the frozen weight becomes ``<module>.base_layer.weight``).
    Quantized weights count their packed elements and their scales as one tensor each.
    """
    config, shapes, flags = method_shapes(config, method, method_args)
    strategy = get_strategy(method)
    trained = strategy.trained_parameters(shapes, flags)
    adapters = strategy.adapters(shapes, flags)  # module -> its LoRA A and B
    prefix = [n for n in shapes if n.startswith(PREFIX_ENCODER)]
    order = [n for n in shapes if not n.startswith(PREFIX_ENCODER)]
    order[1:1] = prefix  # after the word embedding
    tensors: list[Tensor] = []
    for name in order:
        shape = shapes[name]
        module, _, leaf = name.rpartition(".")
        stored = f"{module}.base_layer.{leaf}" if module in adapters else name
        if quantization_bit and _is_quantized(name):
            numel, nbytes = quantized_weight_bytes(shape, quantization_bit)
            tensors.append(Tensor(stored, numel - shape[0], nbytes - 2 * shape[0], False))
            tensors.append(Tensor(stored + "_scale", shape[0], 2 * shape[0], False))
        else:
            tensors.append(Tensor(stored, _numel(shape), _numel(shape) * width, name in trained))
        if module in adapters and leaf == "weight":
            for adapter, adapter_shape in adapters[module].items():  # lora_A (r x in), lora_B (out x r)
                tensors.append(Tensor(adapter, _numel(adapter_shape), _numel(adapter_shape) * width, True))
    return tensors


def _module_units(tensors: Sequence[Tensor], persistent: int) -> list[tuple[str, int, int, int]]:
    """Modules in forward order as ``(name, numel, bytes, trained numel)`` of their non-persistent parameters.

    DeepSpeed gathers and releases the parameters a module owns directly (``iter_params(module,
    recurse=False)`` in ``partitioned_param_coordinator.py``); parameters of at most ``persistent``
    elements stay gathered for good (``mark_persistent_parameters`` in ``parameter_offload.py``).
    """
    units: dict[str, list[int]] = {}
    for t in tensors:
        unit = units.setdefault(t.module, [0, 0, 0])
        if t.numel > persistent:
            unit[0] += t.numel
            unit[1] += t.nbytes
        unit[2] += t.numel if t.trainable else 0
    return [(name, *values) for name, values in units.items()]


def _layer_of(module: str) -> int | None:
    found = layer_indices([module + "."])
    return next(iter(found)) if found else None


def zero3_trace(tensors: Sequence[Tensor], gradient_checkpointing: bool, persistent: int) -> tuple[list, list[int]]:
    """``(units, trace)``: the modules and the order one training step uses them in (forward, backward).

    The backward runs from the output layer down to the first module holding a trained
    parameter (nothing below it needs a gradient). With gradient checkpointing, each layer's
    backward first runs its forward again (the recompute gathers its parameters again).
    """
    units = _module_units(tensors, persistent)
    forward = list(range(len(units)))
    first = next((i for i, u in enumerate(units) if u[3]), len(units))
    backward: list[int] = []
    i = len(units) - 1
    while i >= first:
        layer = _layer_of(units[i][0])
        if not gradient_checkpointing or layer is None:
            backward.append(i)
            i -= 1
            continue
        block = [j for j in forward if _layer_of(units[j][0]) == layer]
        backward += block + [j for j in reversed(block) if j >= first]
        i = block[0] - 1
    return units, forward + backward


def zero3_gathered_bytes(tensors: Sequence[Tensor], settings: ZeroSettings, gradient_checkpointing: bool) -> int:
    """Peak bytes of parameters gathered whole at once under ZeRO-3, replaying DeepSpeed's coordinator.

    Per module of the trace (``partitioned_param_coordinator.py``, after the first step has
    recorded the trace): ``fetch_sub_module`` gathers the module, then prefetches the next
    modules not yet gathered until ``min(stage3_prefetch_bucket_size, stage3_max_live_parameters
    - gathered)`` elements are in flight (whole parameters: the last one may overshoot);
    ``release_sub_module`` frees the module unless ``__params_to_release`` finds it again within
    ``stage3_max_reuse_distance`` elements of the modules that follow, or a prefetch already
    passed over its next use.
    """
    units, trace = zero3_trace(tensors, gradient_checkpointing, settings.param_persistence_threshold)
    numel = [u[1] for u in units]
    nbytes = [u[2] for u in units]
    # next_use[k]: the next trace position of the module at k; cum[k]: elements of the trace before k
    next_use, seen = [len(trace)] * len(trace), {}
    for k in range(len(trace) - 1, -1, -1):
        next_use[k] = seen.get(trace[k], len(trace))
        seen[trace[k]] = k
    cum = [0]
    for unit in trace:
        cum.append(cum[-1] + numel[unit])
    gathered: set[int] = set()
    live = held = peak = 0
    queue = 0  # the next trace position the prefetcher has not looked at
    fetched_for: dict[int, int] = {}
    for step, unit in enumerate(trace):
        if unit not in gathered and numel[unit]:
            gathered.add(unit)
            live, held = live + numel[unit], held + nbytes[unit]
        queue = max(queue, step + 1)
        fetched_for[unit] = max(fetched_for.get(unit, -1), step)
        budget, prefetching, chosen = min(settings.max_live_parameters - live, settings.prefetch_bucket_size), 0, []
        while queue < len(trace) and prefetching < budget:
            nxt = trace[queue]
            fetched_for[nxt] = max(fetched_for.get(nxt, -1), queue)
            if nxt not in gathered and nxt not in chosen and numel[nxt]:
                chosen.append(nxt)
                prefetching += numel[nxt]
            queue += 1
        for nxt in chosen:
            gathered.add(nxt)
            live, held = live + numel[nxt], held + nbytes[nxt]
        peak = max(peak, held)
        if unit not in gathered or fetched_for[unit] > step:
            continue
        # the next use is reached when fewer than max_reuse_distance elements come before it
        later = next_use[step]
        if later < len(trace) and cum[later] - cum[step + 1] < settings.max_reuse_distance:
            continue
        gathered.discard(unit)
        live, held = live - numel[unit], held - nbytes[unit]
    return peak


def largest_module_gradient(tensors: Sequence[Tensor]) -> int:
    """Elements of the largest set of trained parameters one module owns (its whole gradient exists at once)."""
    per_module: dict[str, int] = {}
    for t in tensors:
        if t.trainable:
            per_module[t.module] = per_module.get(t.module, 0) + t.numel
    return max(per_module.values(), default=0)

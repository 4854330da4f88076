"""peft LoRA on glmlab's quantized layers, through peft's custom-module mechanism.

peft adapts ``nn.Linear`` (and the quantized layers of bitsandbytes, GPTQ, ...) itself; for any
other layer type it dispatches through ``LoraConfig._register_custom_module({LayerType:
LoraLayerType})`` (peft's "custom models" guide). :class:`QuantizedLoraLinear` is that LoRA layer
for :class:`~glmlab.quantization.QuantizedLinear`: peft's own ``LoraLayer`` does everything
(adapter creation and initialisation, scaling, dropout, active / disabled adapters, saving);
this class only says how the base layer is called and that the adapter is added to its output::

    y = quantized(x) + (alpha / r) * B(A(dropout(x)))

The adapters live in the layer's compute dtype (its scale's), as peft does for ``nn.Linear``.
A saved adapter folder is an ordinary peft one; peft does not save the registration, so load
it with :func:`load_lora_adapter`, which registers the layer again.

Merging: an int8 / int4 weight cannot hold ``W + BA`` (the update is mostly smaller than half a
quantization step and would vanish on re-quantizing), so :meth:`QuantizedLoraLinear.merge`
refuses. To merge, dequantize the base first (:func:`glmlab.quantization.dequantize`, which is
what ``glmlab.merge_lora`` does): the merged model then computes what the quantized base plus the
adapter computed, in 16/32 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora.layer import LoraLayer
from torch import nn

from glmlab.quantization import QuantizedLinear

MERGE_REFUSED = (
    "LoRA on a quantized layer cannot be merged in place (an int8/int4 weight cannot hold W + BA); "
    "dequantize the base first (glmlab.quantization.dequantize, as python -m glmlab.merge_lora does)"
)


class QuantizedLoraLinear(nn.Module, LoraLayer):
    """A LoRA adapter around a :class:`QuantizedLinear` (peft's ``LoraLayer`` conventions)."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: LoraConfig,
        r: int = 0,
        lora_alpha: int = 1,
        **kwargs: Any,
    ):
        if config.use_dora:
            raise ValueError(
                "DoRA is not supported on glmlab's quantized layers; set use_dora=False"
            )
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.fan_in_fan_out = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        return base.in_features, base.out_features

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """``(alpha / r) * B @ A``, the (out, in) update the adapter adds to the weight."""
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return (b @ a) * self.scaling[adapter]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x)  # (..., out)
        if self.disable_adapters:
            return result
        for adapter in self.active_adapters:
            if adapter not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[adapter], self.lora_B[adapter]
            h = self._cast_input_dtype(x, lora_a.weight.dtype)
            update = (
                lora_b(lora_a(self.lora_dropout[adapter](h))) * self.scaling[adapter]
            )
            result = result + update.to(result.dtype)
        return result

    def merge(
        self, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> None:
        raise ValueError(MERGE_REFUSED)

    def unmerge(self) -> None:
        """Nothing to undo: :meth:`merge` never changes the layer."""

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


def register_quantized_lora(config: LoraConfig) -> LoraConfig:
    """Tell peft to adapt :class:`QuantizedLinear` layers with :class:`QuantizedLoraLinear`; returns ``config``."""
    config._register_custom_module({QuantizedLinear: QuantizedLoraLinear})
    return config


def load_lora_adapter(
    model: nn.Module, adapter_dir: str | Path, **kwargs: Any
) -> PeftModel:
    """``PeftModel.from_pretrained`` for glmlab models, quantized ones included (the registration restored)."""
    config = register_quantized_lora(LoraConfig.from_pretrained(str(adapter_dir)))
    return PeftModel.from_pretrained(model, str(adapter_dir), config=config, **kwargs)

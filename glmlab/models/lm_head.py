"""What both ChatGLM architectures do after their last layer: pick positions, loss, output.

ChatGLM-6B (``lm_head``) and ChatGLM2/3 (``transformer.output_layer``) differ only in the
name of the output projection, so the causal-LM plumbing around it lives here once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from glmlab.constants import IGNORE_INDEX


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """transformers 5 calls the cache ``cache``; accept the older name ``past_key_values`` too."""
    if past_key_values is not None:
        if cache is not None:
            raise ValueError("pass the cache as either `cache` or `past_key_values`, not both")
        return past_key_values
    return cache


def keep_positions(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> the positions whose logits are wanted (``generate`` asks for the last one only)."""
    if isinstance(logits_to_keep, int):
        return hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
    return hidden_states[:, logits_to_keep]


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean fp32 cross-entropy of position t predicting ``labels[t + 1]``, -100 ignored.

    Shifting the labels (the last position gets -100) instead of slicing the logits
    avoids copying the (B, T, V) logits.
    """
    shift_labels = F.pad(labels.to(logits.device), (0, 1), value=IGNORE_INDEX)[:, 1:]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def causal_lm_output(
    logits: torch.Tensor, labels: torch.Tensor | None, outputs, return_dict: bool
) -> CausalLMOutputWithPast | tuple:
    """Wrap logits, the loss (when ``labels`` are given) and the base model's cache/hidden states."""
    loss = shifted_cross_entropy(logits, labels) if labels is not None else None
    if not return_dict:
        output = tuple(x for x in (logits, outputs.cache, outputs.hidden_states) if x is not None)
        return (loss, *output) if loss is not None else output
    return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)


def supervised_tokens(labels):
    """How many tokens a batch's loss averages over: the shifted labels that are not ignored (a tensor)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()

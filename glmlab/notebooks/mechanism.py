"""Each method's mechanism, seen in tensors on the small model (notebooks 03 and 04).

* :func:`prefix_view` -- P-tuning v2: the prefix encoder's output, reshaped into each layer's past keys and
  values, and the attention of a layer seeing ``pre_seq_len`` more key positions than there are tokens;
* :func:`lora_view` -- LoRA: one adapted module before and after peft wraps it, the ``lora_A``/``lora_B``
  shapes, and the logits of the wrapped model at initialisation against the base's (``B = 0``: equal).

Each returns what it measured, so the notebook cell prints it and asserts on it.
"""

from __future__ import annotations

import inspect
from typing import Any


def _attention_inputs(model, batch: dict) -> dict[str, Any]:
    """The first attention block's ``attention_mask`` and ``prefix_key`` shapes during a forward of ``batch``."""
    import torch

    seen: dict[str, Any] = {}
    module = next(m for m in model.modules()
                  if {"attention_mask", "prefix_key"} <= set(inspect.signature(m.forward).parameters))

    def hook(mod, args, kwargs):
        bound = inspect.signature(mod.forward).bind(*args, **kwargs)
        for name in ("attention_mask", "prefix_key"):
            value = bound.arguments.get(name)
            seen.setdefault(name, tuple(value.shape) if value is not None else None)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    finally:
        handle.remove()
    return seen


def prefix_view(model, batch: dict) -> dict[str, Any]:
    """What the prefix encoder of a P-tuning ``model`` (built with ``pre_seq_len``) feeds each layer, for ``batch``.

    Returns ``{"encoder_output": (B, P, kv_size), "per_layer": [(key shape, value shape)] * L, "tokens": T,
    "attention_mask": (B, 1, T, P + T), "prefix_key": ..., "pre_seq_len": P}``; it prints them as it goes.
    """
    import torch

    transformer = model.transformer
    encoder = transformer.prefix_encoder
    B, T = batch["input_ids"].shape
    P = transformer.pre_seq_len
    dtype = next(encoder.parameters()).dtype
    with torch.no_grad():
        flat = encoder(torch.arange(P)[None].expand(B, -1))  # (B, P, kv_size)
        prompt = transformer.get_prompt(B, dtype)
    # ChatGLM-6B: a list of (key, value) per layer; ChatGLM2/3: a flat tuple key, value, key, value ...
    pairs = list(prompt) if isinstance(prompt[0], (tuple, list)) else list(zip(prompt[0::2], prompt[1::2]))
    per_layer = [(tuple(k.shape), tuple(v.shape)) for k, v in pairs]
    seen = _attention_inputs(model, batch)
    print(f"prefix encoder output: {tuple(flat.shape)} = (batch, pre_seq_len, num_layers x 2 x key width "
          f"= {len(pairs)} x 2 x {flat.shape[-1] // (2 * len(pairs))})")
    for i, (k, v) in enumerate(per_layer):
        print(f"  layer {i}: past key {k}, past value {v}   (batch, heads, pre_seq_len, head width)")
    print(f"the first layer's attention: {T} tokens, keys over P + T = {P} + {T} = {P + T} positions; "
          f"mask {seen.get('attention_mask')}, prefix key {seen.get('prefix_key')}")
    return {"encoder_output": tuple(flat.shape), "per_layer": per_layer, "tokens": T, "pre_seq_len": P, **seen}


def lora_view(model, strategy, args, batch: dict) -> tuple[Any, dict[str, Any]]:
    """Wrap the base ``model`` with LoRA (``strategy.prepare``), showing one adapted module before and after,
    and the logits on ``batch`` before and after wrapping. Returns ``(peft model, facts)``; ``facts`` holds
    ``module``, ``lora_A``/``lora_B`` shapes, ``max_abs_B`` and ``max_logit_difference``."""
    import torch

    from glmlab.methods import match_modules, module_names, split_names

    names = [n for n, _ in model.named_parameters()]
    matched = match_modules(split_names(args.lora_module_name), module_names(names))
    adapted = set().union(*matched.values())
    target = next(m for m in module_names(names) if m in adapted)  # the first, in the model's order
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(**batch, use_cache=False).logits
    print(f"{target}, before:\n  {model.get_submodule(target)}")
    peft_model = strategy.prepare(model, args)
    module = model.get_submodule(target)  # peft replaced it in place inside the same model
    print("after peft wraps it:\n  " + "\n  ".join(str(module).splitlines()))
    a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(**batch, use_cache=False).logits
    peft_model.train(was_training)
    facts = {"module": target, "lora_A": tuple(a.shape), "lora_B": tuple(b.shape),
             "scaling": module.scaling["default"], "max_abs_B": float(b.detach().abs().max()),
             "max_logit_difference": float((after - before).abs().max())}
    print(f"lora_A {facts['lora_A']} (r x in), lora_B {facts['lora_B']} (out x r), scaling alpha / r = "
          f"{facts['scaling']:g}; at initialisation max |B| = {facts['max_abs_B']}, so B @ A = 0")
    print(f"logits of the wrapped model vs the base on the first batch: max |difference| = "
          f"{facts['max_logit_difference']}")
    return peft_model, facts

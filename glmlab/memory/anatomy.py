"""Memory measured from the tensors themselves, beside the estimate of the same small model.

:func:`estimate_memory` is arithmetic; this module opens the box of a real (small) model and
counts, per component, the bytes training holds:

* **weights** -- every parameter's bytes (the base, plus P-tuning's prefix encoder or LoRA's A and B);
* **gradients** -- the bytes of ``.grad`` of the trainable parameters after one backward;
* **optimizer** -- the state ``torch.optim.AdamW`` holds after one step (``exp_avg``, ``exp_avg_sq``;
  the scalar ``step`` left out). That is a plain one-process loop, which the estimate calls ZeRO-0:
  in fp32 it steps the parameters themselves, 8 bytes a trainable parameter. ZeRO-1/2/3 add the
  fp32 master copy DeepSpeed keeps (12 bytes); ``tests/test_memory.py`` checks that figure against
  DeepSpeed's own buffers, so it is not measured again here;
* **activations** -- the bytes autograd keeps for backward, seen by
  ``torch.autograd.graph.saved_tensors_hooks`` during the forward: each saved tensor's *storage*,
  counted once (a view keeps its whole storage alive: ChatGLM's ``v`` is a view of the fused
  ``query_key_value`` output, so the whole output stays), parameters and buffers left out. Each
  storage is charged to the layer that saved it first; what the embedding, the prefix encoder,
  the final norm, the output layer and the loss save is reported apart (``outside``), since the
  estimate counts the loss's fp32 tensors in ``logits``.

With gradient checkpointing (non-reentrant, as ``glmlab.train`` enables it) the forward saves
only each layer's inputs (torch's ``checkpoint`` keeps them as saved tensors, outside its own
hooks, so they are seen here); the backward then rebuilds one layer at a time, and torch checks
that the rebuild saves exactly the tensors the plain forward saved. The measured figure is
therefore the layers' inputs plus the largest layer of the same model's plain forward.

:func:`memory_anatomy` runs it for every method (and checkpointing off/on) on one model folder
and returns rows with the measurement beside :func:`estimate_memory` of the same config,
precision (fp32 on a CPU), batch, length and checkpointing.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from glmlab.memory.estimate import estimate_memory

#: The parts measured beside the estimate.
COMPONENTS = ("weights", "gradients", "optimizer", "activations")

#: The settings :func:`memory_anatomy` compares: label -> (method, method flags).
METHOD_SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "freeze (last layer)": ("freeze", {}),
    "ptuning (projection)": ("ptuning", {"pre_seq_len": 16, "prefix_projection": True}),
    "ptuning (embedding only)": ("ptuning", {"pre_seq_len": 16, "prefix_projection": False}),
    "lora (r=8, qkv)": ("lora", {"lora_dim": 8, "lora_module_name": "query_key_value"}),
    "all": ("all", {}),
}


@dataclass
class Measured:
    """Bytes held while one model trains one batch, per component (see the module docstring).

    ``per_layer``: the activation bytes each layer saved (with checkpointing: its inputs, the first
    layer also the position ids and mask it shares with the others); ``rebuilt``: the largest layer's
    bytes when it is rebuilt (0 without checkpointing); ``outside``: what is saved outside the layers;
    ``kernels``: the attention's backward nodes (:func:`attention_kernels`).
    """

    weights: int
    gradients: int
    optimizer: int
    per_layer: list[int]
    rebuilt: int = 0
    outside: int = 0
    regions: dict[str, int] = field(default_factory=dict, repr=False)
    kernels: tuple[str, ...] = ()

    @property
    def activations(self) -> int:
        """What the layers keep for backward, at its peak: every layer's saved bytes plus one rebuilt layer."""
        return sum(self.per_layer) + self.rebuilt


# --------------------------------------------------------------------------- saved tensors
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The ChatGLM model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class _Saved:
    """What autograd stores for a saved tensor while it is measured: the tensor, and a weak reference's target."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    @staticmethod
    def unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    transformer = _unwrap(model).transformer
    return transformer.layers if hasattr(transformer, "layers") else transformer.encoder.layers


def saved_bytes_by_layer(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[dict[str, int], torch.Tensor]:
    """Run ``model(**batch)`` and return ``({region: bytes}, loss)``: the unique storages autograd saved.

    Only tensors still saved when the forward has returned count (a garbage collection first).
    Regions are ``"layer.N"`` (from the end of layer N-1, or of the embedding, to the end of layer N:
    checkpointing saves a layer's inputs just before it runs), ``"prefix"`` (P-tuning's encoder) and
    ``"outside"`` (embedding lookup, final norm, output layer, loss). Parameters and buffers are left out.
    """
    base = _unwrap(model)
    layers = _layers(model)
    region = ["outside"]
    hooks = [base.get_input_embeddings().register_forward_hook(lambda *_: region.__setitem__(0, "layer.0"))]
    prefix = getattr(base.transformer, "prefix_encoder", None)
    if prefix is not None:  # the encoder, then the dropout on its keys and values (ChatGLM-6B: `dropout`)
        done = getattr(base.transformer, "prefix_dropout", None) or getattr(base.transformer, "dropout", None) or prefix
        hooks.append(prefix.register_forward_pre_hook(lambda *_: region.__setitem__(0, "prefix")))
        hooks.append(done.register_forward_hook(lambda *_: region.__setitem__(0, "layer.0")))
    for i, layer in enumerate(layers):
        after = f"layer.{i + 1}" if i + 1 < len(layers) else "outside"
        hooks.append(layer.register_forward_pre_hook(lambda *_, i=i: region.__setitem__(0, f"layer.{i}")))
        hooks.append(layer.register_forward_hook(lambda *_, after=after: region.__setitem__(0, after)))
    saved: list[tuple[weakref.ref, int, int, str]] = []  # (holder, storage address, bytes, region), in order

    def pack(tensor: torch.Tensor) -> _Saved:
        holder = _Saved(tensor)
        storage = tensor.untyped_storage()
        saved.append((weakref.ref(holder), storage.data_ptr(), storage.nbytes(), region[0]))
        return holder

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, _Saved.unpack):
            loss = model(**batch).loss
    finally:
        for hook in hooks:
            hook.remove()
    gc.collect()  # a saved tensor no backward can reach (a checkpointed frozen layer's inputs) is dropped
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    kept: dict[int, tuple[int, str]] = {}  # storage address -> (bytes, region of its first live saver)
    for holder, address, nbytes, where in saved:
        if holder() is not None and address not in own:
            kept.setdefault(address, (nbytes, where))
    out: dict[str, int] = {f"layer.{i}": 0 for i in range(len(layers))}
    for nbytes, where in kept.values():
        out[where] = out.get(where, 0) + nbytes
    return out, loss


def attention_kernels(loss: torch.Tensor) -> tuple[str, ...]:
    """The attention kernels a loss's autograd graph ran, by their backward nodes' names.

    ``ScaledDotProductFlashAttentionForCpuBackward0``: SDPA's fused CPU kernel (no ``s x s`` scores
    kept); ``ScaledDotProductEfficientAttentionBackward0`` / ``...FlashAttentionBackward0``: its CUDA
    kernels; ``SoftmaxBackward0``: eager attention, which keeps the scores.
    """
    names: set[str] = set()
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        name = node.name()
        if "Attention" in name or name == "SoftmaxBackward0":
            names.add(name)
        stack.extend(fn for fn, _ in node.next_functions)
    return tuple(sorted(names))


def _set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    base = _unwrap(model)
    if on:  # as glmlab.train enables it
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif base.is_gradient_checkpointing:
        base.activation_checkpointing_disable()
        base.disable_input_require_grads()  # transformers made the embedding's output require grad; undo it too


def measure_anatomy(model: torch.nn.Module, batch: dict[str, torch.Tensor], gradient_checkpointing: bool = False,
                    lr: float = 1e-3) -> Measured:
    """Train ``model`` (prepared by its strategy, in train mode) one step on ``batch`` and count what it held.

    The model's trainable parameters are updated (one AdamW step) and their ``.grad`` left set.
    ``gradient_checkpointing``: measure with it on (as ``glmlab.train`` enables it); the model is left
    as it was found.
    """
    was = bool(_unwrap(model).is_gradient_checkpointing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    rebuilt = 0
    try:
        if gradient_checkpointing:  # the layer a backward rebuilds: a plain forward's largest layer
            _set_checkpointing(model, False)
            plain, _ = saved_bytes_by_layer(model, batch)
            rebuilt = max(v for k, v in plain.items() if k.startswith("layer."))
        _set_checkpointing(model, gradient_checkpointing)
        for p in trainable:
            p.grad = None
        regions, loss = saved_bytes_by_layer(model, batch)
        kernels = attention_kernels(loss)
        loss.backward()
    finally:
        _set_checkpointing(model, was)
    gradients = sum(p.grad.nbytes for p in trainable if p.grad is not None)
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    optimizer.step()
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim())
    layers = len(_layers(model))
    return Measured(
        weights=sum(p.nbytes for p in model.parameters()),
        gradients=gradients,
        optimizer=state,
        per_layer=[regions[f"layer.{i}"] for i in range(layers)],
        rebuilt=rebuilt,
        outside=regions.get("outside", 0) + regions.get("prefix", 0),
        regions=regions,
        kernels=kernels,
    )


# --------------------------------------------------------------------------- beside the estimate
def example_batch(config: Any, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-length batch (no padding) of random tokens for ``config``'s model, the second half supervised.

    ChatGLM-6B's prompts end with ``[gMASK] <sop>``, which its positions and attention mask are built from.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = config.vocab_size if config.architecture == "glm" else config.padded_vocab_size
    ids = torch.randint(10, vocab, (batch_size, seq_len), generator=generator)
    half = seq_len // 2
    if config.architecture == "glm":
        specials = {config.gmask_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id}
        ids[torch.isin(ids, torch.tensor(sorted(specials)))] = 10
        ids[:, half - 2], ids[:, half - 1] = config.gmask_token_id, config.bos_token_id
    labels = ids.clone()
    labels[:, :half] = -100
    return {"input_ids": ids, "labels": labels}


def method_args(config: Any, method: str, flags: dict[str, Any]) -> SimpleNamespace:
    """The strategy's flags of ``method`` (training-only ones at neutral values: no dropout)."""
    last = config.num_layers - 1
    return SimpleNamespace(train_type=method, freeze_module_name=flags.get("freeze_module_name", f"layers.{last}."),
                           pre_seq_len=flags.get("pre_seq_len", 16), prefix_projection=flags.get("prefix_projection", True),
                           lora_dim=flags.get("lora_dim", 8), lora_alpha=flags.get("lora_alpha", 16), lora_dropout=0.0,
                           lora_module_name=flags.get("lora_module_name", "query_key_value"))


def memory_anatomy(
    model_dir: str | Path,
    setups: dict[str, tuple[str, dict[str, Any]]] | None = None,
    *,
    batch_size: int = 2,
    seq_len: int = 64,
    checkpointing: Iterable[bool] = (False, True),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Each method's memory on the model of ``model_dir``, measured (fp32, CPU) beside its estimate.

    ``setups``: label -> (method, flags) (default :data:`METHOD_SETUPS`). One row per setting and
    checkpointing: ``label``, ``method``, ``gradient_checkpointing``, then for each of :data:`COMPONENTS`
    ``<part>_measured``, ``<part>_estimated`` (bytes) and ``<part>_ratio`` (estimate / measurement; 1.0
    when both are 0), ``per_layer`` (activation bytes by layer), ``outside`` (saved outside the layers)
    and ``measured`` (the :class:`Measured`).
    """
    from glmlab.loading import build_config, load_model
    from glmlab.methods import get_strategy

    config, mode = build_config(str(model_dir), None)
    batch = example_batch(config, batch_size, seq_len, seed)
    rows = []
    for label, (method, flags) in (setups or METHOD_SETUPS).items():
        args = method_args(config, method, flags)
        strategy = get_strategy(method)
        torch.manual_seed(seed)
        model = strategy.prepare(load_model(str(model_dir), mode=mode, dtype="fp32", **strategy.config_overrides(args)),
                                 args).train()
        for ckpt in checkpointing:
            measured = measure_anatomy(model, batch, gradient_checkpointing=ckpt)
            estimate = estimate_memory(config, method, precision="fp32", zero_stage=0, num_gpus=1,
                                       batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=ckpt,
                                       freeze_module_name=args.freeze_module_name, pre_seq_len=args.pre_seq_len,
                                       prefix_projection=args.prefix_projection, lora_dim=args.lora_dim,
                                       lora_module_name=args.lora_module_name)
            row: dict[str, Any] = {"label": label, "method": method, "gradient_checkpointing": ckpt}
            for part in COMPONENTS:
                got, want = getattr(measured, part), getattr(estimate, part)
                row.update({f"{part}_measured": got, f"{part}_estimated": want,
                            f"{part}_ratio": want / got if got else (1.0 if not want else float("inf"))})
            row.update(per_layer=measured.per_layer, outside=measured.outside, measured=measured)
            rows.append(row)
    return rows


def anatomy_table(rows: Sequence[dict[str, Any]], unit: int = 1024) -> list[dict[str, Any]]:
    """:func:`memory_anatomy`'s rows as a display table: KiB (``unit``) measured / estimated per component."""
    out = []
    for row in rows:
        line: dict[str, Any] = {"setting": row["label"], "checkpointing": "on" if row["gradient_checkpointing"] else "off"}
        for part in COMPONENTS:
            line[part] = (f"{row[f'{part}_measured'] / unit:,.0f} / {row[f'{part}_estimated'] / unit:,.0f} "
                          f"({100 * (row[f'{part}_ratio'] - 1):+.0f}%)")
        line["saved outside the layers"] = f"{row['outside'] / unit:,.0f}"
        out.append(line)
    return out

"""Pipeline-parallel full fine-tuning on DeepSpeed's own pipeline engine (``--pipeline_stages N``).

ZeRO-3 splits every weight over the processes and gathers each layer's weights for every
forward and backward; pipeline parallelism splits the *layers* instead: stage ``s`` holds
only its own blocks (weights, gradients, Adam states) and the stages pass activations
(forward) and their gradients (backward) to their neighbours. ``N`` stages x ``D``
data-parallel replicas = the world size (rank = stage * D + replica, DeepSpeed's
``PipeDataParallelTopology``); the replicas of a stage all-reduce their gradients.

The model is cut into DeepSpeed ``LayerSpec`` s built from the model's own modules (nothing
is re-implemented): the word embedding, one spec per GLM block, and the final norm with the
LM head. Each layer mounts those modules under their *official* names
(``transformer.encoder.layers.3...``), so a layer's ``state_dict`` holds official keys:
loading a stage reads just its keys from the checkpoint folder (built on the meta device,
filled tensor by tensor: no process ever holds the whole model), DeepSpeed's per-layer
checkpoint files hold official keys, and the saved model folder is the union of the stages'
shards (``model-0000s-of-0000N.safetensors`` + ``model.safetensors.index.json``, the official
sharded layout), which ``glmlab.load_model`` reloads strictly.

What travels between stages, following DeepSpeed's rules: every floating tensor sent gets
``requires_grad`` and must receive a gradient back, so only the hidden state is floating;
positions and masks travel as integer tensors and each block rebuilds its attention mask
and rotary angles from them (the model's own functions). Labels never travel: DeepSpeed
gives them to the last stage from the loader. Batches are padded to their longest row, so the
engine runs with ``dynamic_shape=True``; layers are split by type (blocks evenly; the
embedding goes with the first stage, the head with the last) because
``partition_method="parameters"`` would build every layer on every rank. Activation
checkpointing uses torch's non-reentrant checkpoint (the reentrant one fails inside the
pipeline: its inputs need not require grad).

The loop stays :func:`glmlab.train.train`: :class:`Pipeline` is another way to take one
optimizer step -- it holds the accumulation's micro-batches and hands them to
``engine.train_batch``, which runs DeepSpeed's 1F1B schedule *and the optimizer step*. The one
promise that changes: a non-finite loss is seen only after ``train_batch`` has applied the
step, so training stops then, without saving (the last checkpoint on disk is the last good
state). ZeRO-2/3 are refused (DeepSpeed's pipeline engine takes ZeRO-0/1 only).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from glmlab.loading import (
    SAFETENSORS_INDEX_NAME,
    CheckpointError,
    _iter_tensors,
    build_config,
    weight_files,
)
from glmlab.methods import FullStrategy
from glmlab.models.lm_head import shifted_cross_entropy

SHARD_NAME = "model-{stage:05d}-of-{stages:05d}.safetensors"
# The models' mask builders read only ``pre_seq_len`` from their module; full fine-tuning has no prefix.
_NO_PREFIX = SimpleNamespace(pre_seq_len=None)


def data_parallel_position(rank: int, world: int, stages: int) -> tuple[int, int]:
    """``(replica, replicas)`` of global ``rank``: which data shard it reads, as DeepSpeed's topology lays ranks out."""
    replicas = world // stages
    return rank % replicas, replicas


# =============================================================================== reading tensors
def read_tensors(folder: str | Path, names: set[str]) -> dict[str, torch.Tensor]:
    """Only the tensors ``names`` of a checkpoint folder (any official layout), read one at a time.

    Safetensors files are opened lazily (a tensor is read when asked for); ``.bin`` shards are
    memory-mapped. Raises :class:`CheckpointError` naming what is missing.
    """
    folder = Path(folder)
    found = {name: tensor for file in weight_files(folder) for name, tensor in _iter_tensors(file, names)}
    missing = sorted(names - set(found))
    if missing:
        raise CheckpointError(f"{folder}: missing tensor(s): {', '.join(missing[:8])}")
    return found


def _mount(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` under the dotted ``path`` of ``root``, creating empty parents (official names)."""
    *parents, last = path.split(".")
    node = root
    for part in parents:
        if part not in node._modules:
            node.add_module(part, nn.Module())
        node = node._modules[part]
    node.add_module(last, module)


class StageLayer(nn.Module):
    """One pipeline layer: model modules mounted under their official names, loaded from the folder.

    The modules are built on the meta device (nothing allocated) and then filled with this
    layer's tensors only, parameters in ``dtype``, buffers in the dtype the model makes them.
    """

    def __init__(self, folder: str, dtype: torch.dtype, modules: dict[str, Any]):
        super().__init__()
        with torch.device("meta"):
            for path, make in modules.items():
                _mount(self, path, make())
        expected = self.state_dict(keep_vars=True)
        tensors = read_tensors(folder, set(expected))
        for name, tensor in tensors.items():
            target = expected[name]
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(f"{folder}: {name} has shape {tuple(tensor.shape)}, the model {tuple(target.shape)}")
            wanted = dtype if isinstance(target, nn.Parameter) and tensor.is_floating_point() else target.dtype
            tensors[name] = tensor.to(dtype=wanted)
        self.load_state_dict(tensors, strict=True, assign=True)
        left = [n for n, t in self.state_dict(keep_vars=True).items() if t.device.type == "meta"]
        if left:
            raise CheckpointError(f"{folder}: tensor(s) left unloaded: {', '.join(left)}")


# =============================================================================== ChatGLM2 / ChatGLM3
class Glm2EmbeddingLayer(StageLayer):
    """``transformer.embedding`` (+ the official ``rotary_pos_emb`` buffer): ids -> (hidden, positions, mask)."""

    def __init__(self, config, folder: str, dtype: torch.dtype):
        from glmlab.models.chatglm2 import Embedding, RotaryEmbedding

        super().__init__(folder, dtype, {
            "transformer.embedding": partial(Embedding, config),
            "transformer.rotary_pos_emb": partial(_glm2_rotary, config, RotaryEmbedding),
        })

    def forward(self, inputs):
        input_ids, attention_mask = inputs  # (B, T) each, integers
        hidden = self.transformer.embedding(input_ids)  # (B, T, H)
        # As ChatGLM2Model.forward: real tokens count 0, 1, 2 ... from their first unpadded position.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return hidden, position_ids, attention_mask


def _glm2_rotary(config, cls):
    return cls(config.kv_channels // 2, rope_ratio=config.rope_ratio or 1.0,
               position_interpolation=bool(getattr(config, "rope_position_interpolation", False)))


class Glm2BlockLayer(StageLayer):
    """``transformer.encoder.layers.i``: rebuilds the mask and rotary angles from the integers it receives."""

    def __init__(self, config, folder: str, dtype: torch.dtype, index: int):
        from glmlab.models.chatglm2 import GLMBlock, RotaryEmbedding

        self.path = f"transformer.encoder.layers.{index}"
        super().__init__(folder, dtype, {self.path: partial(GLMBlock, config, index)})
        # The angles come from frequencies recomputed in fp32 (ChatGLM2's RotaryEmbedding ignores its
        # buffer), so this private copy is not registered: the official buffer lives in the embedding layer.
        self.__dict__["rotary"] = _glm2_rotary(config, RotaryEmbedding)

    def forward(self, inputs):
        from glmlab.models.chatglm2 import ChatGLM2Model

        hidden, position_ids, attention_mask = inputs
        batch, length = position_ids.shape
        mask = ChatGLM2Model._attention_mask(_NO_PREFIX, attention_mask, batch, 0, length, hidden.device)
        cos, sin = self.rotary(position_ids, hidden.dtype)  # (B, 1, T, rot/2)
        hidden = self.get_submodule(self.path)(hidden, cos, sin, mask)
        return hidden, position_ids, attention_mask


class Glm2HeadLayer(StageLayer):
    """``transformer.encoder.final_layernorm`` and ``transformer.output_layer``: hidden -> logits."""

    def __init__(self, config, folder: str, dtype: torch.dtype):
        from glmlab.models.chatglm2 import _norm

        modules = {"transformer.encoder.final_layernorm": partial(_norm, config)} if config.post_layer_norm else {}
        modules["transformer.output_layer"] = partial(nn.Linear, config.hidden_size, config.padded_vocab_size, bias=False)
        super().__init__(folder, dtype, modules)
        self.post_layer_norm = bool(config.post_layer_norm)

    def forward(self, inputs):
        hidden = inputs[0]
        if self.post_layer_norm:
            hidden = self.transformer.encoder.final_layernorm(hidden)
        return self.transformer.output_layer(hidden)  # (B, T, V)


# =============================================================================== ChatGLM-6B
class GlmEmbeddingLayer(StageLayer):
    """``transformer.word_embeddings``: ids -> (hidden, GLM 2D positions, the bidirectional/causal mask)."""

    def __init__(self, config, folder: str, dtype: torch.dtype):
        super().__init__(folder, dtype, {
            "transformer.word_embeddings": partial(nn.Embedding, config.vocab_size, config.hidden_size)})
        self.config = config

    def forward(self, inputs):
        from glmlab.models.chatglm import ChatGLMModel, get_position_ids

        input_ids, attention_mask = inputs
        padding = attention_mask.bool()
        position_ids = get_position_ids(input_ids, self.config, padding)  # (B, 2, T) or (B, T)
        if self.config.position_encoding_2d:  # as ChatGLMModel.forward
            is_context = position_ids[:, 1] == 0
        else:
            is_context = (input_ids == self.config.bos_token_id).long().cumsum(dim=1) == 0
        mask = ChatGLMModel._attention_mask(_NO_PREFIX, padding, is_context, 0, input_ids.shape[1])
        return self.transformer.word_embeddings(input_ids), position_ids, mask.to(torch.uint8)


class GlmBlockLayer(StageLayer):
    """``transformer.layers.i`` (with its own official ``rotary_emb.inv_freq``)."""

    def __init__(self, config, folder: str, dtype: torch.dtype, index: int):
        from glmlab.models.chatglm import GLMBlock

        self.path = f"transformer.layers.{index}"
        super().__init__(folder, dtype, {self.path: partial(GLMBlock, config, index)})

    def forward(self, inputs):
        hidden, position_ids, mask = inputs
        return self.get_submodule(self.path)(hidden, position_ids, mask.bool()), position_ids, mask


class GlmHeadLayer(StageLayer):
    """``transformer.final_layernorm`` and the untied ``lm_head``: hidden -> logits."""

    def __init__(self, config, folder: str, dtype: torch.dtype):
        super().__init__(folder, dtype, {
            "transformer.final_layernorm": partial(nn.LayerNorm, config.hidden_size, eps=config.layernorm_epsilon),
            "lm_head": partial(nn.Linear, config.hidden_size, config.vocab_size, bias=False)})

    def forward(self, inputs):
        return self.lm_head(self.transformer.final_layernorm(inputs[0]))  # (B, T, V)


def layer_specs(config, folder: str | Path, dtype: torch.dtype) -> list:
    """The model as DeepSpeed ``LayerSpec`` s: embedding, one per block, head (built only by their stage)."""
    from deepspeed.pipe import LayerSpec

    embedding, block, head = ((GlmEmbeddingLayer, GlmBlockLayer, GlmHeadLayer) if config.architecture == "glm"
                              else (Glm2EmbeddingLayer, Glm2BlockLayer, Glm2HeadLayer))
    folder = str(folder)
    return [LayerSpec(embedding, config, folder, dtype),
            *(LayerSpec(block, config, folder, dtype, i) for i in range(config.num_layers)),
            LayerSpec(head, config, folder, dtype)]


# =============================================================================== the engine
class Pipeline:
    """One optimizer step = ``engine.train_batch`` over the accumulation's micro-batches.

    The last stage records each micro-batch's loss (mean over its supervised tokens) as the
    engine computes it, so the loop's meter logs the same numbers as without a pipeline.
    """

    def __init__(self, engine, accumulation: int):
        self.engine = engine
        self.accumulation = accumulation
        self.held: list[dict] = []
        self.losses: list[torch.Tensor] = []

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The models' loss (fp32 shifted cross-entropy, -100 ignored), recorded for logging."""
        loss = shifted_cross_entropy(logits, labels)
        self.losses.append(loss.detach())
        return loss

    def hold(self, batch: dict) -> bool:
        """Keep a micro-batch; True once the accumulation is complete (time for :meth:`train_batch`)."""
        self.held.append(batch)
        return len(self.held) == self.accumulation

    @staticmethod
    def _feed(batches: list[dict]):
        # DeepSpeed's format: (inputs for the first stage, labels for the last).
        return iter([((b["input_ids"], b["attention_mask"]), b["labels"]) for b in batches])

    def train_batch(self, meter) -> None:
        """Forward, backward and the optimizer step of the held micro-batches (DeepSpeed's 1F1B schedule)."""
        batches, self.held = self.held, []
        self.engine.train_batch(self._feed(batches))
        if self.engine.is_last_stage():  # the other stages add nothing to the all-reduced sums
            for loss, batch in zip(self.losses, batches, strict=True):
                meter.add(loss, batch)
        self.losses.clear()

    def evaluate(self, loader) -> tuple[float, float]:
        """``(sum of loss x supervised tokens, supervised tokens)`` of this replica's eval batches (last stage)."""
        from glmlab.models.lm_head import supervised_tokens

        batches = list(loader)
        self.engine.eval_batch(self._feed(batches), bcast_loss=False, num_micro_batches=len(batches))
        total = count = 0.0
        if self.engine.is_last_stage():
            for loss, batch in zip(self.losses, batches, strict=True):
                n = int(supervised_tokens(batch["labels"]))
                total, count = total + float(loss) * n, count + n
        self.losses.clear()
        return total, count


def build_engine(args, ds_config: dict[str, Any], dtype: torch.dtype, weight_decay: float):
    """Build this process's stage from ``args.model_name_or_path`` and DeepSpeed's pipeline engine around it.

    Returns ``(engine, pipeline)``. Only the layers of this process's stage are built and loaded.
    """
    import deepspeed
    from deepspeed.pipe import PipelineModule

    from glmlab.ds_config import param_groups

    config, _ = build_config(args.model_name_or_path, args.mode)
    config.use_cache = False
    pipeline = Pipeline(None, args.gradient_accumulation_steps)
    checkpointing = {}
    if args.gradient_checkpointing:  # every block recomputed in the backward pass, as the model does it
        checkpointing = dict(activation_checkpoint_interval=1, checkpointable_layers=["Glm2BlockLayer", "GlmBlockLayer"],
                             activation_checkpoint_func=partial(torch.utils.checkpoint.checkpoint, use_reentrant=False))
    module = PipelineModule(layers=layer_specs(config, args.model_name_or_path, dtype), num_stages=args.pipeline_stages,
                            loss_fn=pipeline.loss_fn, partition_method="type:BlockLayer", dynamic_shape=True,
                            **checkpointing)
    module.requires_grad_(True)
    engine, *_ = deepspeed.initialize(model=module, model_parameters=param_groups(module, weight_decay), config=ds_config)
    pipeline.engine = engine
    return engine, pipeline


def stage_layout(engine) -> str:
    """``stage s: layers a-b`` of every stage (layer 0 is the embedding, the last one the head)."""
    parts = engine.module.parts
    return ", ".join(f"stage {s}: layers {parts[s]}-{parts[s + 1] - 1}" for s in range(len(parts) - 1))


# =============================================================================== saving
def stage_state_dict(module) -> dict[str, torch.Tensor]:
    """This stage's tensors under their official names (every key of the model is in exactly one stage)."""
    state: dict[str, torch.Tensor] = {}
    for layer in module.forward_funcs:
        for name, tensor in layer.state_dict().items():
            if name in state:
                raise RuntimeError(f"{name} is held twice by one stage")
            state[name] = tensor
    return state


def write_model_folder(engine, folder: str | Path, config, generation, tokenizer=None) -> None:
    """Write the official sharded folder from the stages; every process must call it.

    Replica 0 of each stage writes its shard; rank 0 writes the index, ``config.json``,
    ``generation_config.json`` (``generation``) and the tokenizer. Fails when a key is held by two stages.
    """
    import torch.distributed as dist
    from safetensors.torch import save_file

    folder = Path(folder)
    grid = engine.grid
    stages = grid.pipe_parallel_size
    written: list[tuple[str, str, int]] = []  # (key, shard, bytes) of what this process wrote
    if grid.data_parallel_id == 0:
        shard = SHARD_NAME.format(stage=grid.get_stage_id() + 1, stages=stages)
        state = {n: t.detach().to("cpu").contiguous().clone() for n, t in stage_state_dict(engine.module).items()}
        save_file(state, str(folder / shard), metadata={"format": "pt"})
        written = [(n, shard, t.numel() * t.element_size()) for n, t in state.items()]
        del state
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, written)
    if dist.get_rank() != 0:
        return
    weight_map, total = {}, 0
    for name, shard, size in (entry for part in gathered for entry in part):
        if name in weight_map:
            raise RuntimeError(f"{name} is saved by two stages ({weight_map[name]} and {shard})")
        weight_map[name] = shard
        total += size
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / SAFETENSORS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    config.save_pretrained(str(folder))
    generation.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def saved_config(model_name_or_path: str, mode: str, dtype: torch.dtype):
    """``(config, generation config)`` that a full-training checkpoint of this base holds, as the model's
    ``save_pretrained`` writes them (the generation config is made when the model loads, before training
    turns ``use_cache`` off)."""
    from transformers import GenerationConfig

    from glmlab.loading import _model_class

    config, _ = build_config(model_name_or_path, mode)
    generation = GenerationConfig.from_model_config(config)
    config.use_cache = False
    config.dtype = dtype
    config.architectures = [_model_class(config.architecture).__name__]
    return config, generation


class PipelineStrategy(FullStrategy):
    """``all`` on the pipeline: the stages write the model folder's shards themselves (see :func:`write_model_folder`).

    :func:`glmlab.checkpoint.save_checkpoint` calls :meth:`gather_state_dict` on every process
    (where each stage writes its shard) and then :meth:`save` on rank 0 (config and tokenizer).
    """

    def __init__(self, config, generation):
        self.config, self.generation = config, generation

    def gather_state_dict(self, engine, folder: Path) -> None:
        write_model_folder(engine, folder, self.config, self.generation)

    def save(self, model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
        tokenizer.save_pretrained(str(out_dir))


# =============================================================================== setup
def setup_pipeline(run, replicas: int, samples: int):
    """Finish :func:`glmlab.train.setup` for ``--pipeline_stages``: this stage, its engine, ``--resume_from``.

    ``run`` comes with the data already sharded over the ``replicas``; its engine, strategy and
    pipeline are filled in here. Nothing is written before everything has loaded.
    """
    from glmlab.checkpoint import load_checkpoint
    from glmlab.ds_config import build_ds_config, print_plan
    from glmlab.loading import parse_dtype

    args, plan = run.args, run.plan
    ds_config = build_ds_config(args, replicas, plan, args.precision)
    overridden = ds_config.pop("_glmlab_overridden")
    dtype = parse_dtype(args.precision)
    run.engine, run.pipeline = build_engine(args, ds_config, dtype, args.weight_decay)
    run.strategy = PipelineStrategy(*saved_config(args.model_name_or_path, args.mode, dtype))
    if run.rank == 0:
        print(f"all on a pipeline: {args.pipeline_stages} stages x {replicas} data-parallel replica(s) "
              f"({stage_layout(run.engine)}; layer 0 is the embedding, the last the head)", flush=True)
        print_plan(args, plan, ds_config, overridden, samples, run.world_size, per="replica")
    if args.resume_from:
        run.position, run.rng = load_checkpoint(run.engine, args.resume_from)
        if run.rank == 0:
            print(f"resumed from {args.resume_from} at optimizer step {run.position['step']}", flush=True)
    return run  # glmlab.train writes nothing but the lock before this point

"""How much memory fine-tuning needs, per method, before you rent the GPUs.

    glmlab memory --mode glm2 --train_type lora --max_len 1560 --per_device_train_batch_size 1

    python -m glmlab.memory --mode glm2 --train_type lora --max_len 1560 --per_device_train_batch_size 1
    python -m glmlab.memory --mode glm --grid --num_gpus 4 --max_len 1560 --gpu_gib 24

Everything here is arithmetic on a :class:`~glmlab.models.configuration.ChatGLMConfig`; no
model is built. :func:`parameter_shapes` lists every tensor of the model under its official
name, so the counts are exact, and the methods' trainable sets are found with the same
matching rules the training strategies use (:mod:`glmlab.methods`). :func:`estimate_memory`
then adds up, per GPU, what DeepSpeed 0.19 allocates for the ZeRO settings of the DeepSpeed
config (:class:`ZeroSettings`, read from the shipped ``glmlab/configs/*.json`` or a
``--ds_file``). ``N`` below is ``num_gpus``, ``T`` the trainable parameters, ``w`` the
bytes of the training precision (2 in bf16/fp16, 4 in fp32). The file and line of
DeepSpeed each rule comes from are cited next to the code.

* **weights** -- every parameter in ``w`` bytes; under ``quantization_bit`` 8 (4) the
  weight matrices of ``query_key_value``, ``dense``, ``dense_h_to_4h`` and ``dense_4h_to_h``
  take 1 (1/2) byte per element plus one fp16 scale per output row, and one 16-bit
  dequantized copy of the largest of them lives while its layer runs. ZeRO-0/1/2 keep
  a full copy on every GPU. ZeRO-3 keeps ``1/N`` of every parameter (its partition), plus
  whole copies of the *persistent* ones (``stage3_param_persistence_threshold``: norms,
  biases); with ``offload_param`` the partitions live on the CPU.
* **gradients** -- the 16-bit gradients DeepSpeed stores: all of them for ZeRO-0/1, the
  partition (``T/N``) for ZeRO-2/3; on the CPU with ``offload_optimizer``.
* **optimizer** -- AdamW's two fp32 moments plus DeepSpeed's fp32 master copy: 12 bytes per
  trainable parameter (ZeRO-1/2/3 clone an fp32 master partition in fp32 training too; only
  ZeRO-0 in fp32 steps the parameters themselves: 8 bytes), ``/N`` from ZeRO-1 on; on the CPU
  with offload.
* **buckets** -- the gradient reduce bucket, ``reduce_bucket_size`` elements in ``w`` bytes
  (two with ``overlap_comm``): ZeRO-3 allocates it once at start-up, ZeRO-1/2 during each
  backward; ZeRO-2 adds the largest trainable tensor's whole gradient, made before it is
  copied into the bucket. ``allgather_bucket_size`` allocates nothing: the updated partitions
  are all-gathered in place into the flat 16-bit buffer.
* **zero3_working** (ZeRO-3 only) -- the parameters gathered whole at once, in 16 bits, found
  by replaying DeepSpeed's fetch/prefetch/release rules over the model's modules (forward,
  then backward, with the recompute of gradient checkpointing): the module running, the next
  ones prefetched up to ``stage3_prefetch_bucket_size`` elements while fewer than
  ``stage3_max_live_parameters`` are gathered, and those kept because they are used again
  within ``stage3_max_reuse_distance`` elements. For the ChatGLM models the peak is at the
  output layer (ChatGLM-6B: 150528 x 4096 = 616M parameters; ChatGLM2/3: 65024 x 4096),
  plus the whole 16-bit gradient of the largest trained module (the word embedding or the
  output layer under ``all``) before it is reduced into the partitions. Loading counts for
  nothing more: ``glmlab.train`` partitions the model tensor by tensor before DeepSpeed sees
  it (:func:`glmlab.train.partition_for_zero3`); handed the whole model, DeepSpeed would first
  put all of it on every GPU, 12.8 GiB for ChatGLM-6B in 16 bits.
* **activations** -- the tensors glmlab's models keep for the backward pass, counted per
  layer for 16-bit activations, ``s`` tokens, batch ``b``, width ``h``, feed-forward width
  ``f``, ``g`` key/value groups of ``d`` channels (ChatGLM2/3)::

      ChatGLM-6B:   layer_bytes = b * s * (22 h + 4 d + 4 f + 2 s)      (d = h / heads)
                    # norms 2 x (in + out), QKV in, q, k, the whole 3h QKV output (v is a
                    # view of it), SDPA out, dense in, 2D rotary tables, SDPA's float mask;
                    # GELU in, dense_4h_to_h in
      ChatGLM2/3:   layer_bytes = b * s * (16 h + 6 g d + 8 f)
                    # norms 2 x (in + out), QKV in, q, k, the whole h + 2gd QKV output,
                    # SDPA out, dense in; SwiGLU: its 2f-wide input, silu(gate), the product

  That is a layer whose weights train (``all``, the trained layers of ``freeze``). A frozen
  (or quantized) linear layer keeps no input, so a layer the gradient only passes through
  (every layer under ``ptuning``, the frozen layers above the lowest trained one under
  ``freeze``) keeps ``6 h + 2 f`` less, the inputs of its four linear layers; ``lora`` keeps
  the inputs of the layers it adapts (2h for ``query_key_value``). P-tuning's ``P`` prefix
  positions make ``k`` and ``v`` new ``P + s``-long tensors (the QKV output is then freed)
  and its mask ``P + s`` wide; ChatGLM2/3 get a mask only then (else SDPA runs causal).
  The figures are what ``glmlab.memory.anatomy`` measures on the small bases (the unique
  storages autograd saves, within 4% for every method; ``tests/test_memory_anatomy.py``) and
  ``tests/test_memory.py`` at a 6B-like width in bf16. SDPA keeps no ``s x s`` scores;
  ``attention_scores=True`` adds ``5 * heads * s^2 * b`` for eager attention. fp32
  activations count double. Only the layers gradients flow through keep activations
  (``freeze``: from the lowest trained layer up). With gradient checkpointing every layer
  keeps only its 16-bit input (``2 bsh`` bytes; every layer, ``freeze``'s frozen ones below
  too: transformers makes the embedding's output require grad when it enables checkpointing),
  plus once what all layers share (positions, mask, P-tuning's prefix keys and values), and
  one layer's activations are rebuilt at a time.
* **logits** -- the loss is computed in fp32 whatever the training precision: at its
  backward the fp32 log-probabilities kept by ``log_softmax``, their gradient and the
  gradient of the logits coexist, ``12 * b * s * vocab`` bytes (measured on the CPU for bf16
  and fp32 logits: 3 x 4 bytes per logit above the 16-bit logits).
* **step** -- the optimizer step runs after the backward, when activations and logits are
  gone: DeepSpeed turns the gradient partition into fp32 (``T/N`` x 4 bytes; ZeRO-3 one
  ``sub_group_size`` sub-group at a time) and ``torch.optim.AdamW`` (foreach) makes one more
  fp32 temporary of the same size (``sqrt`` of the second moment). Not on the GPU with
  offload (DeepSpeed's CPU Adam steps on the CPU).

The peak per GPU is the static part (weights, gradients, optimizer, ZeRO-3's bucket) plus
the larger of the backward's transient part (activations, logits, ZeRO-3 working set,
ZeRO-1/2 bucket) and the step's: ``MemoryEstimate.peak_phase`` says which.
``tests/test_memory.py`` checks the weights, gradients, optimizer and bucket bytes against
the tensors DeepSpeed really allocates, for every method and ZeRO stage, on a tiny model.
Not counted: allocator fragmentation, the CUDA context (~0.5-1 GiB), NCCL buffers.
:func:`measure_peak_memory` measures what a function really used, to compare.

The package, one concern a module (every name is importable from ``glmlab.memory`` itself):

* :mod:`~glmlab.memory.shapes` -- parameter shapes from a config, and what each method trains
  (its strategy in :mod:`glmlab.methods` says);
* :mod:`~glmlab.memory.zero` -- the ZeRO settings of a DeepSpeed config and the ZeRO-3 replay;
* :mod:`~glmlab.memory.activations` -- activations and logits kept for backward;
* :mod:`~glmlab.memory.estimate` -- :func:`estimate_memory` and :func:`memory_table`;
* :mod:`~glmlab.memory.measure` -- :func:`measure_peak_memory`;
* :mod:`~glmlab.memory.anatomy` -- :func:`memory_anatomy`: each component measured from the tensors of
  a small model (weights, gradients, AdamW state, the storages autograd saves) beside the estimate;
* :mod:`~glmlab.memory.cli` -- the command line (``python -m glmlab.memory``) and its tables.

The notebooks' interactive estimate is :mod:`glmlab.notebooks.memory_widget`.
"""

from __future__ import annotations

from glmlab.memory.shapes import (
    BYTES,
    DEFAULT_LORA_MODULES,
    GIB,
    PRESETS,
    QUANTIZATION_BITS,
    method_flags,
    method_shapes,
    parameter_count,
    parameter_shapes,
    prefix_encoder_shapes,
    preset_config,
    trainable_parameters,
)
from glmlab.memory.zero import (
    SHIPPED_CONFIGS,
    Tensor,
    ZeroSettings,
    largest_module_gradient,
    method_tensors,
    quantized_weight_bytes,
    read_ds_config,
    zero3_gathered_bytes,
    zero3_trace,
)
from glmlab.methods import LINEARS  # the linear layers of a block (methods owns what they are)
from glmlab.memory.activations import (
    activation_bytes,
    checkpointed_input_bytes,
    layer_activation_bytes,
    logits_bytes,
)
from glmlab.memory.estimate import (
    MemoryEstimate,
    PARTS,
    estimate_memory,
    memory_table,
    zero_settings,
)
from glmlab.memory.measure import (
    measure_peak_memory,
)
from glmlab.memory.anatomy import (
    COMPONENTS,
    METHOD_SETUPS,
    Measured,
    anatomy_table,
    attention_kernels,
    measure_anatomy,
    memory_anatomy,
)
from glmlab.memory.cli import (
    CLI_FLAGS,
    GRID_COLUMNS,
    format_breakdown,
    format_table,
    grid,
    grid_rows,
    main,
)

__all__ = [
    "BYTES",
    "COMPONENTS",
    "CLI_FLAGS",
    "DEFAULT_LORA_MODULES",
    "GIB",
    "GRID_COLUMNS",
    "LINEARS",
    "METHOD_SETUPS",
    "Measured",
    "MemoryEstimate",
    "PARTS",
    "PRESETS",
    "QUANTIZATION_BITS",
    "SHIPPED_CONFIGS",
    "Tensor",
    "ZeroSettings",
    "activation_bytes",
    "anatomy_table",
    "attention_kernels",
    "checkpointed_input_bytes",
    "estimate_memory",
    "format_breakdown",
    "format_table",
    "grid",
    "grid_rows",
    "largest_module_gradient",
    "layer_activation_bytes",
    "logits_bytes",
    "main",
    "measure_anatomy",
    "measure_peak_memory",
    "memory_anatomy",
    "memory_table",
    "method_flags",
    "method_shapes",
    "method_tensors",
    "parameter_count",
    "parameter_shapes",
    "prefix_encoder_shapes",
    "preset_config",
    "quantized_weight_bytes",
    "read_ds_config",
    "trainable_parameters",
    "zero3_gathered_bytes",
    "zero3_trace",
    "zero_settings",
]

"""glmlab.memory: exact parameter counts, method trainable sets, and the memory arithmetic by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from glmlab.loading import _model_class, load_model
from glmlab.memory import (
    GIB,
    LINEARS,
    ZeroSettings,
    activation_bytes,
    estimate_memory,
    logits_bytes,
    main,
    measure_peak_memory,
    memory_table,
    parameter_count as count_parameters,
    method_tensors,
    parameter_shapes,
    preset_config,
    trainable_parameters,
    zero3_gathered_bytes,
)
from glmlab.methods import count_parameters as model_counts
from glmlab.methods import get_strategy

REPO = Path(__file__).resolve().parent.parent


def _meta_model(config):
    with torch.device("meta"):
        return _model_class(config.architecture)(config)


def test_6b_presets_by_hand():
    # ChatGLM2/3-6B: embedding + output layer 2 x 65024 x 4096, 28 layers of
    # qkv 4096x4608 (+ bias 4608), dense 4096x4096, MLP 4096x27392 + 13696x4096, two RMSNorms, final norm.
    layer = 4096 * 4608 + 4608 + 4096 * 4096 + 4096 * 2 * 13696 + 13696 * 4096 + 2 * 4096
    assert count_parameters(preset_config("glm2")) == 2 * 65024 * 4096 + 28 * layer + 4096 == 6_243_584_000
    assert count_parameters(preset_config("glm3")) == 6_243_584_000
    # ChatGLM-6B: the "6.2B" quoted is the model without its (untied) 150528 x 4096 LM head.
    glm = count_parameters(preset_config("glm"))
    assert glm == 6_871_769_088
    assert 6.2e9 < glm - 150528 * 4096 < 6.3e9


@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_shapes_match_the_models(mode):
    config = preset_config(mode)
    model = _meta_model(config)
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == parameter_shapes(config)


@pytest.mark.parametrize("mode", ["glm", "glm3"])
def test_method_counts_match_the_strategies(tiny_model, mode):
    folder = tiny_model(mode)
    base = load_model(folder)
    config = base.config
    args = SimpleNamespace(freeze_module_name="layers.1.,final_layernorm", lora_dim=4, lora_alpha=16, lora_dropout=0.0,
                           lora_module_name="query_key_value,dense_4h_to_h", pre_seq_len=4, prefix_projection=True)

    freeze = get_strategy("freeze").prepare(load_model(folder), args)
    assert trainable_parameters(config, "freeze", freeze_module_name=args.freeze_module_name) == model_counts(freeze)

    lora = get_strategy("lora").prepare(load_model(folder), args)
    trainable, total = lora.get_nb_trainable_parameters()  # peft's own count
    assert trainable_parameters(config, "lora", lora_dim=4, lora_module_name=args.lora_module_name) == (trainable, total)

    for projection in (True, False):
        model = load_model(folder, pre_seq_len=4, prefix_projection=projection)
        model = get_strategy("ptuning").prepare(model, SimpleNamespace(**{**vars(args), "prefix_projection": projection}))
        expected = model_counts(model)
        assert trainable_parameters(config, "ptuning", pre_seq_len=4, prefix_projection=projection) == expected

    assert trainable_parameters(config, "all") == model_counts(base)


def test_memory_arithmetic_by_hand():
    config = preset_config("glm2")
    n = 6_243_584_000
    est = estimate_memory(config, "all", precision="bf16", zero_stage=0, num_gpus=1, batch_size=1, seq_len=512)
    assert est.weights == est.gradients == 2 * n
    assert est.optimizer == 12 * n  # fp32 master + Adam m and v
    # Activations: 28 layers x b*s*(16h + 6gd + 8f) bytes (2 groups of 128: v keeps the whole h + 2gd QKV
    # output); the loss: 3 fp32 tensors of b*s*vocab.
    assert est.activations == 28 * 512 * (16 * 4096 + 6 * 2 * 128 + 8 * 13696)
    assert est.logits == 12 * 512 * 65024
    # The step: fp32 gradients and AdamW's temporary, 8 bytes a parameter -- more than the activations here.
    assert est.step == 8 * n and est.peak_phase == "optimizer step"
    assert est.total == 2 * n + 2 * n + 12 * n + 8 * n
    assert est.gpu_gib == pytest.approx(est.total / GIB)
    fp32 = estimate_memory(config, "all", precision="fp32", zero_stage=0)
    assert fp32.optimizer == 8 * n  # ZeRO-0 in fp32: AdamW steps the parameters themselves
    # ZeRO-1/2 clone an fp32 master partition even in fp32 (stage_1_and_2.py single_partition_of_fp32_groups)
    assert estimate_memory(config, "all", precision="fp32", zero_stage=2, num_gpus=4).optimizer == 12 * n // 4


def test_zero3_divides_by_gpus_and_offload_moves_to_cpu():
    config = preset_config("glm2")
    one = estimate_memory(config, "all", zero_stage=3, num_gpus=1)
    eight = estimate_memory(config, "all", zero_stage=3, num_gpus=8)
    n = 6_243_584_000
    assert eight.optimizer == 12 * n // 8 and one.optimizer == 12 * n
    assert eight.gradients == 2 * n // 8
    # Norms and biases (<= 1e5 elements, stage3_param_persistence_threshold) stay whole on every GPU.
    persistent = sum(2 * math.prod(s) for s in parameter_shapes(config).values() if math.prod(s) <= 100_000)
    assert eight.weights - persistent == pytest.approx((one.weights - persistent) / 8, rel=1e-6)
    assert eight.activations == one.activations  # activations are per GPU, not sharded
    assert eight.buckets == 50_000_000 * 2  # the shipped config's reduce_bucket_size, allocated once
    zero2 = estimate_memory(config, "all", zero_stage=2, num_gpus=8)
    assert zero2.weights == 2 * n  # ZeRO-2 keeps a full copy
    off = estimate_memory(config, "all", zero_stage=3, num_gpus=8, offload=True)
    assert off.optimizer == off.gradients == off.step == 0
    # CPU: the 16-bit partitions, fp32 master + moments + fp32 gradients, the 16-bit gradient partitions
    assert off.cpu == pytest.approx(one.weights / 8 + (16 + 2) * n / 8, rel=1e-3)
    assert off.total < eight.total


def test_activations_by_method_and_checkpointing():
    config = preset_config("glm2")
    full = activation_bytes(config, 1, 1024)
    ckpt = activation_bytes(config, 1, 1024, gradient_checkpointing=True)
    # Checkpointing keeps each layer's 16-bit input (and once the rotary cos and sin, 2 x d/4 a token), rebuilds
    # one layer at a time; the loss's fp32 tensors stay.
    assert ckpt == (28 * 2 * 1024 * 4096 + 2 * 2 * 1024 * 128 // 4 + 1024 * (16 * 4096 + 6 * 2 * 128 + 8 * 13696)
                    + 12 * 1024 * 65024)
    assert logits_bytes(config, 1, 1024) == 12 * 1024 * 65024
    assert ckpt < full / 4
    full = activation_bytes(config, 1, 1024, logits=False)  # estimate_memory counts the logits apart
    # ptuning trains 0.004% of the parameters but back-propagates through every layer; frozen linear
    # layers keep no inputs, so it keeps less than full training, and LoRA on the QKV a little more.
    ptuning = estimate_memory(config, "ptuning", prefix_projection=False, seq_len=1024)
    lora = estimate_memory(config, "lora", seq_len=1024)
    freeze = estimate_memory(config, "freeze", freeze_module_name="layers.27.", seq_len=1024)
    assert ptuning.activations_gib < lora.activations_gib < full / GIB
    # Per token and layer LoRA keeps the QKV input (2h), k (2gd) and, through v's view, the whole QKV output
    # (2(h + 2gd)); P-tuning keeps k and v copied 16 positions longer (4gd x 1040/1024) and SDPA's float mask.
    gd = 2 * 128
    per_token = 2 * 4096 + 2 * gd + 2 * (4096 + 2 * gd) - 4 * gd * 1040 // 1024 - 2 * 1040
    assert lora.activations_gib - ptuning.activations_gib == pytest.approx(28 * 1024 * per_token / GIB)
    assert ptuning.activations_gib > 0.6 * full / GIB
    assert freeze.activations_gib < ptuning.activations_gib / 5


def test_memory_table_rows():
    rows = memory_table(preset_config("glm"), num_gpus=4, seq_len=768)
    assert [r["method"] for r in rows] == ["freeze", "ptuning", "ptuning", "lora", "all", "all"]
    assert all(r["gpu_gib"] > 0 for r in rows)
    assert rows[-1]["cpu_gib"] > 0 and rows[-1]["gpu_gib"] < rows[-2]["gpu_gib"]
    with pytest.raises(ValueError):
        estimate_memory(preset_config("glm"), "adapter")


def test_measure_peak_memory_on_cpu():
    result, stats = measure_peak_memory(lambda: len(bytearray(32 * 2**20)))
    assert result == 32 * 2**20
    assert stats["device"] == "cpu" and stats["traced_mib"] >= 31 and 0 < stats["seconds"] < 60


def _saved_activation_bytes(model, input_ids, labels) -> int:
    """Bytes of the distinct tensors autograd keeps for backward, parameters left out."""
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=input_ids, labels=labels)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in kept.items() if ptr not in params)


@pytest.mark.parametrize("method", ["all", "lora", "ptuning"])
@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_activation_formula_matches_what_autograd_keeps(mode, method):
    """Per layer, in bf16, the formula counts what the model prepared for ``method`` really saves.

    It leaves out what P-tuning's prefix and LoRA's small matrices add to a layer: under 0.5%
    at the 6B width and 768 tokens, up to 3% at this test's small width and length.
    """
    config = preset_config(mode)
    config.hidden_size, config.num_attention_heads = 1024, 8  # 128 channels a head, as in the 6B models
    config.use_cache = False  # as glmlab.train sets it: a cache would copy k and v and free the QKV output
    if mode == "glm":
        config.inner_hidden_size, config.vocab_size = 4096, 1000
        config.mask_token_id, config.gmask_token_id, config.bos_token_id, config.eos_token_id = 996, 997, 998, 999
    else:
        config.ffn_hidden_size, config.kv_channels, config.padded_vocab_size = 3424, 128, 1000
    args = SimpleNamespace(train_type=method, pre_seq_len=4, prefix_projection=False, lora_dim=8, lora_alpha=16,
                           lora_dropout=0.0, lora_module_name="query_key_value", freeze_module_name=None)
    strategy = get_strategy(method)
    for key, value in strategy.config_overrides(args).items():
        setattr(config, key, value)
    seq = 128
    torch.manual_seed(0)
    input_ids = torch.randint(5, 990, (2, seq))
    if mode == "glm":
        input_ids[:, 60], input_ids[:, 61] = config.gmask_token_id, config.bos_token_id
    labels = input_ids.clone()
    labels[:, :62] = -100
    saved, formula = {}, {}
    for layers in (2, 3):
        config.num_layers = layers
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            # DeepSpeed's bf16 engine casts the prepared model (LoRA adapters included) to bf16
            model = strategy.prepare(_model_class(config.architecture)(config), args).to(torch.bfloat16).train()
        finally:
            torch.set_default_dtype(default)
        saved[layers] = _saved_activation_bytes(model, input_ids, labels)
        formula[layers] = estimate_memory(config, method, batch_size=2, seq_len=seq, pre_seq_len=4,
                                          lora_dim=8).activations_gib * GIB
    assert saved[3] - saved[2] == pytest.approx(formula[3] - formula[2], rel=0.04)


# --------------------------------------------------------------------------- against DeepSpeed
METHOD_FLAGS = {"freeze_module_name": "layers.1.,final_layernorm", "pre_seq_len": 4, "prefix_projection": True,
                "lora_dim": 4, "lora_module_name": "query_key_value,dense_4h_to_h"}
DS_FILES = ("ds_zero2_no_offload.json", "ds_zero2_offload.json", "ds_zero3_no_offload.json", "ds_zero3_offload.json")


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def deepspeed_bytes(folder: str, method: str, ds_file: str, precision: str) -> dict[str, int]:
    """What ``deepspeed.initialize`` (one CPU process, glmlab's DeepSpeed config) allocates, by the estimate's parts.

    Counted after one forward and backward (the 16-bit gradients) and one optimizer step (AdamW
    creates its moments at the first step): the engine's 16-bit flat buffers or ZeRO-3 partitions
    and persistent parameters, gradient partitions, fp32 master partitions and their gradients,
    the offload staging buffers, ``optimizer.state`` tensors and the reduce bucket.
    """
    import deepspeed

    from glmlab import load_model
    from glmlab.args import resolve_ds_file
    from glmlab.methods import get_strategy
    from glmlab.train import Plan, build_ds_config, param_groups, partition_for_zero3

    args = SimpleNamespace(train_type=method, lora_alpha=8, lora_dropout=0.0, per_device_train_batch_size=2,
                           gradient_accumulation_steps=1, max_grad_norm=1.0, learning_rate=1e-3, weight_decay=0.1,
                           ds_path=resolve_ds_file(ds_file), **METHOD_FLAGS)
    strategy = get_strategy(method)
    model = strategy.prepare(load_model(folder, dtype=precision, **strategy.config_overrides(args)), args)
    config = build_ds_config(args, 1, Plan(1, 1, 10, 1), precision)
    config.pop("_glmlab_overridden")
    # Offload with torch's AdamW instead of DeepSpeed's CPU Adam (a C++ op built on first use): the
    # same fp32 partitions and moments on the CPU, without a compiler in the test.
    config["zero_force_ds_cpu_optimizer"] = False
    config["optimizer"]["params"]["torch_adam"] = True
    groups = param_groups(model, 0.1)
    if config["zero_optimization"]["stage"] == 3:  # as glmlab.train does
        partition_for_zero3(model, config, torch.device("cpu"))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    opt, stage = engine.optimizer, config["zero_optimization"]["stage"]
    offload = "offload_optimizer" in config["zero_optimization"]
    ids = torch.randint(5, 100, (2, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    params = list(engine.module.parameters())
    out = {"gradients": 0, "buckets": 0, "cpu": 0}
    if stage == 3:
        grads16 = _nbytes([opt.grad_partitions_flat_buffer])
    elif not offload:
        grads16 = sum(_nbytes(g) for g in opt.averaged_gradients.values())  # the partition (one process: all)
    engine.step()
    state = _nbytes(t for s in opt.optimizer.state.values() for t in s.values() if t.numel() > 1)  # not `step`
    if stage == 3:
        master = opt.fp32_partitioned_groups_flat
        partitions = _nbytes(p.ds_tensor for p in params)
        out["weights"] = _nbytes(p.data for p in params if p.ds_persist) + (0 if offload else partitions)
        out["buckets"] = sum(_nbytes([b.buffer]) for b in opt.ipg_buckets.values())
        if offload:  # fp32 gradient sub-group buffers stay (stage3.py initialize_optimizer_states)
            out["cpu"] = partitions + _nbytes(master) + _nbytes(m.grad for m in master) + grads16 + state
    else:
        master = opt.single_partition_of_fp32_groups
        out["weights"] = _nbytes(p for p in params if not p.requires_grad) + _nbytes(opt.bit16_groups_flat)
        if offload:  # pinned fp32 gradients and a 16-bit staging copy of the partition
            out["cpu"] = (_nbytes(master) + _nbytes(m.grad for m in master) + state
                          + _nbytes(opt.param_buffer_of_bit16_for_cpu_offload_groups))
    if not offload:
        out["gradients"], out["optimizer"] = grads16, _nbytes(master) + state
    else:
        out["optimizer"] = 0
    return out


def _measure_main(folder: str, precision: str, cases: str) -> None:
    """Print ``deepspeed_bytes`` of every ``method:ds_file`` case as one JSON line (run in a subprocess)."""
    from glmlab.train import _init_processes

    _init_processes()
    results = {}
    for case in cases.split(","):
        method, ds_file = case.split(":")
        results[case] = deepspeed_bytes(folder, method, ds_file, precision)
    print("RESULT " + json.dumps(results), flush=True)


@pytest.mark.parametrize("mode,precision", [("glm2", "bf16"), ("glm", "fp32")])
def test_estimate_equals_what_deepspeed_allocates(tiny_model, mode, precision):
    """Weights, gradients, optimizer, ZeRO-3 bucket and CPU bytes of every method and shipped config, as allocated."""
    from conftest import subprocess_env

    from glmlab.loading import build_config

    folder = str(tiny_model(mode))
    cases = [f"{m}:{d}" for m in ("freeze", "ptuning", "lora", "all") for d in DS_FILES]
    if precision == "fp32":  # the fp32 widths once: a partial and a full method, ZeRO-2 and ZeRO-3
        cases = [c for c in cases if c.endswith("no_offload.json") and c.split(":")[0] in ("lora", "all")]
    code = f"from tests.test_memory import _measure_main; _measure_main({folder!r}, {precision!r}, {','.join(cases)!r})"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=subprocess_env(),
                          timeout=300, cwd=str(REPO))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    measured = json.loads(lines[0][len("RESULT "):])
    config, _ = build_config(folder, mode)
    for case, got in measured.items():
        method, ds_file = case.split(":")
        est = estimate_memory(config, method, precision=precision, ds_config=ds_file, **METHOD_FLAGS)
        expected = {"weights": est.weights, "gradients": est.gradients, "optimizer": est.optimizer, "cpu": est.cpu,
                    "buckets": est.buckets if est.zero_stage == 3 else 0}
        # ZeRO-1/2 align each flat group to 2 elements (flatten_dense_tensors_aligned): a few bytes at most.
        for part, value in expected.items():
            assert got[part] == pytest.approx(value, abs=16), (case, part, got, expected)


# --------------------------------------------------------------------------- quantization and ZeRO-3
def test_quantized_weights_by_hand():
    config = preset_config("glm2")
    shapes = parameter_shapes(config)
    linear = {n: s for n, s in shapes.items() if n.split(".")[-2] in LINEARS and n.endswith(".weight")}
    elements, rows = sum(math.prod(s) for s in linear.values()), sum(s[0] for s in linear.values())
    largest = max(math.prod(s) for s in linear.values())  # dense_h_to_4h: 27392 x 4096, dequantized while it runs
    full = estimate_memory(config, "lora", zero_stage=2)
    for bits in (4, 8):
        q = estimate_memory(config, "lora", zero_stage=2, quantization_bit=bits)
        # 16-bit linear weights replaced by `bits` per element plus an fp16 scale per output row
        assert q.weights == full.weights - 2 * elements + elements * bits // 8 + 2 * rows + 2 * largest
    four = estimate_memory(config, "lora", zero_stage=2, quantization_bit=4)
    other = full.weights - 2 * elements
    assert (four.weights - other - 2 * rows - 2 * largest) * 4 == 2 * elements  # a quarter of the 16-bit bytes
    assert four.trainable_params == full.trainable_params and four.activations == full.activations
    for method in ("freeze", "all"):
        with pytest.raises(ValueError, match="--quantization_bit"):
            estimate_memory(config, method, quantization_bit=4)
    with pytest.raises(ValueError, match="0, 4 or 8"):
        estimate_memory(config, "lora", quantization_bit=2)


def test_zero3_working_set_holds_the_6b_embedding_and_output_layer():
    config = preset_config("glm")
    embedding = 150528 * 4096  # 616M parameters, gathered whole in 16 bits
    assert embedding == 616_562_688
    for method in ("lora", "ptuning", "freeze"):
        est = estimate_memory(config, method, zero_stage=3, offload=True, num_gpus=4, seq_len=1560)
        assert est.zero3_working >= 2 * embedding, method
    full = estimate_memory(config, "all", zero_stage=3, offload=True, num_gpus=4, seq_len=1560)
    assert full.zero3_working >= 2 * embedding + 2 * embedding  # the output layer and its whole 16-bit gradient
    assert full.logits == 12 * 1560 * 150528
    assert full.total > full.zero3_working + full.logits + full.activations


def test_zero3_replay_by_hand():
    """DeepSpeed's fetch / prefetch / release rules on a model small enough to follow by hand."""
    config = preset_config("glm2")
    tensors = method_tensors(config, "lora")
    units = {}
    for t in tensors:
        if t.numel > 100_000:
            units[t.module] = units.get(t.module, 0) + t.nbytes
    # No prefetch, no reuse: only the module running is gathered; the largest is the output layer.
    bare = ZeroSettings(stage=3, prefetch_bucket_size=0, max_reuse_distance=0)
    assert zero3_gathered_bytes(tensors, bare, False) == max(units.values()) == 2 * 65024 * 4096
    # No room under stage3_max_live_parameters: no prefetch either, whatever the bucket.
    capped = ZeroSettings(stage=3, prefetch_bucket_size=10**9, max_live_parameters=0, max_reuse_distance=0)
    assert zero3_gathered_bytes(tensors, capped, False) == 2 * 65024 * 4096
    # Every module run prefetches up to a bucket more, so the window grows to the live-parameter cap
    # (plus one whole parameter: the prefetch stops only once it has reached its budget).
    for live in (300_000_000, 1_000_000_000):
        window = ZeroSettings(stage=3, prefetch_bucket_size=50_000_000, max_live_parameters=live)
        gathered = zero3_gathered_bytes(tensors, window, False)
        assert 2 * live <= gathered <= 2 * (live + 2 * 65024 * 4096)
    assert ZeroSettings.shipped(3).max_live_parameters == 1_000_000_000  # what the shipped configs set


def test_ds_config_settings():
    config = preset_config("glm2")
    assert estimate_memory(config, "lora", ds_config="ds_zero3_offload.json") == estimate_memory(
        config, "lora", zero_stage=3, offload=True)
    custom = {"zero_optimization": {"stage": 2, "reduce_bucket_size": 1000, "overlap_comm": True}}
    est = estimate_memory(config, "lora", ds_config=custom)
    # two 16-bit buckets of 1000 (overlap_comm) + the largest whole gradient: lora_B of the QKV, 4608 x r 8
    assert est.buckets == 2 * 1000 * 2 + 2 * 4608 * 8
    with pytest.raises(ValueError, match="contradicts"):
        estimate_memory(config, "lora", zero_stage=3, ds_config="ds_zero2_no_offload.json")


HF_STYLE = {"stage": 3, "offload_optimizer": {"device": "auto"}, "offload_param": {"device": "cpu"},
            "overlap_comm": "auto", "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 2e8,
            "sub_group_size": 1e8}
ORIGINAL_ZERO2 = {"stage": 2, "offload_param": {"device": "auto"}, "offload_optimizer": {"device": "auto"}}


@pytest.mark.parametrize("zero", ["ds_zero2_no_offload.json", "ds_zero2_offload.json", "ds_zero3_no_offload.json",
                                  "ds_zero3_offload.json", ORIGINAL_ZERO2, HF_STYLE, {"stage": 1}, {}],
                         ids=["z2", "z2-offload", "z3", "z3-offload", "original-auto", "hf-auto", "z1", "none"])
def test_zero_settings_read_a_config_as_deepspeed_does(zero):
    """Every setting the estimate uses, read by ZeroSettings and by DeepSpeed's own config model:
    shipped configs, the original project's ("device": "auto" is no offload to DeepSpeed) and a
    Hugging Face style one full of "auto" (DeepSpeed's defaults)."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    from glmlab.memory import ZeroSettings, read_ds_config

    zero = read_ds_config(zero)["zero_optimization"] if isinstance(zero, str) else zero
    ours = ZeroSettings.from_config({"zero_optimization": zero})
    theirs = DeepSpeedZeroConfig(**zero)

    def on(offload):
        return offload is not None and str(offload.device) not in ("none", "OffloadDeviceEnum.none")

    assert (ours.stage, ours.offload_optimizer, ours.offload_param) == (
        int(theirs.stage), on(theirs.offload_optimizer), on(theirs.offload_param))
    for name in ("reduce_bucket_size", "allgather_bucket_size", "overlap_comm", "contiguous_gradients",
                 "prefetch_bucket_size", "param_persistence_threshold", "max_live_parameters",
                 "max_reuse_distance", "sub_group_size"):
        assert getattr(ours, name) == getattr(theirs, name), name


# --------------------------------------------------------------------------- command line
def _cli(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_cli_breakdown(capsys, tiny_model):
    out = _cli(capsys, "--mode", "glm2", "--train_type", "lora", "--per_device_train_batch_size", "1", "--max_len",
               "1560", "--gradient_checkpointing", "--quantization_bit", "4", "--gpu_gib", "8")
    est = estimate_memory(preset_config("glm2"), "lora", batch_size=1, seq_len=1560, gradient_checkpointing=True,
                          quantization_bit=4)
    for part in ("weights", "gradients", "optimizer", "buckets", "zero3_working", "activations", "logits", "step"):
        line = next(line for line in out.splitlines() if line.split()[0] == part)
        assert f"{getattr(est, part) / GIB:8.2f} GiB" in line, part
    assert f"  total         {est.total / GIB:8.2f} GiB   per GPU, peak at the backward" in out
    assert f"fits on a 8 GiB card: {'yes' if est.total / GIB <= 8 else 'no'}" in out
    folder = tiny_model("glm3")
    out = _cli(capsys, "--model_name_or_path", str(folder), "--mode", "glm3", "--train_type", "all",
               "--ds_file", "ds_zero3_offload.json", "--num_gpus", "2")
    assert "all, bf16, ZeRO-3 + offload, 2 GPU(s)" in out


def test_cli_grid_marks_fit(capsys):
    out = _cli(capsys, "--mode", "glm", "--grid", "--num_gpus", "4", "--max_len", "1560",
               "--per_device_train_batch_size", "1", "--gpu_gib", "24")
    lines = out.splitlines()
    header = lines[1].split()
    assert header[:5] == ["method", "zero", "offload", "ckpt", "qbit"] and header[-1] == "fits"
    rows = [line.split() for line in lines[3:]]
    # freeze and all: 2 stages x 2 offload x 2 checkpointing; lora and ptuning also x 3 quantizations
    assert len(rows) == 8 + 24 + 24 + 8
    gpu = header.index("gpu_gib")
    assert all((float(r[gpu]) <= 24) == (r[-1] == "yes") for r in rows)
    assert {r[-1] for r in rows} == {"yes", "no"}  # full fine-tuning without offload does not fit
    # the same numbers as estimate_memory
    lora = next(r for r in rows if r[:5] == ["lora", "3", "yes", "yes", "4"])
    est = estimate_memory(preset_config("glm"), "lora", zero_stage=3, offload=True, num_gpus=4, seq_len=1560,
                          gradient_checkpointing=True, quantization_bit=4, prefix_projection=True)
    assert float(lora[gpu]) == pytest.approx(est.total / GIB, abs=0.006)


@pytest.mark.parametrize("argv,flag", [
    (["--train_type", "lora", "--lora_module_name", "nope"], "--lora_module_name"),
    (["--train_type", "freeze", "--freeze_module_name", "layers.99."], "--freeze_module_name"),
    (["--train_type", "all", "--quantization_bit", "4"], "--quantization_bit"),
    (["--quantization_bit", "3"], "--quantization_bit"),
    (["--ds_file", "nope.json"], "--ds_file"),
    (["--num_gpus", "0"], "--num_gpus"),
    (["--model_name_or_path", "/nonexistent"], "--model_name_or_path"),
])
def test_cli_bad_flags_one_line(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err, err


def test_cli_entry_point():
    proc = subprocess.run([sys.executable, "-m", "glmlab.memory", "--mode", "glm3", "--train_type", "ptuning"],
                          check=False, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ptuning, bf16, ZeRO-2, 1 GPU(s)") and "total" in proc.stdout


# --------------------------------------------------------------------------- notebook calculator
def test_calculator_widget_and_static_table(monkeypatch):
    from glmlab.notebooks import memory_widget

    calc = memory_widget.calculator("glm", "all", ds_file="ds_zero3_offload.json", num_gpus=4, seq_len=1560)
    est = estimate_memory(preset_config("glm"), "all", ds_config="ds_zero3_offload.json", num_gpus=4, seq_len=1560,
                          gradient_checkpointing=True)
    bundle = calc._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a widget front-end renders the live calculator
    assert f"<b>{est.total / GIB:.2f}</b>" in bundle["text/html"]  # anything else shows the table
    first, _sliders, table = calc.box.children
    first.children[1].value = "lora"  # the method drop-down: the table follows
    assert "lora" in table.value and calc.values["method"] == "lora"
    first.children[4].value = 4
    lora4 = estimate_memory(preset_config("glm"), "lora", ds_config="ds_zero3_offload.json", num_gpus=4, seq_len=1560,
                            gradient_checkpointing=True, quantization_bit=4)
    assert f"<b>{lora4.total / GIB:.2f}</b>" in table.value
    first.children[1].value = "all"  # quantized full fine-tuning: a message, not an exception
    assert "No estimate" in table.value and "--quantization_bit" in table.value
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # no ipywidgets: the static table alone
    bare = memory_widget.calculator("glm2", "lora")._repr_mimebundle_()
    assert set(bare) == {"text/html", "text/plain"} and "peak" in bare["text/html"]
    text = memory_widget.method_table("glm2", "ptuning", pre_seq_len=16)
    assert text.count("\nptuning ") == 24 and text.splitlines()[1].split()[-1] == "fits"

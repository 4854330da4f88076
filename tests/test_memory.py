"""glmlab.memory: exact parameter counts, method trainable sets, and the memory arithmetic by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from glmlab.loading import _model_class, load_model
from glmlab.memory import (
    GIB,
    activation_bytes,
    count_parameters,
    estimate_memory,
    measure_peak_memory,
    memory_table,
    parameter_shapes,
    preset_config,
    trainable_parameters,
)
from glmlab.methods import count_parameters as model_counts
from glmlab.methods import get_strategy


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
    assert est.weights_gib == pytest.approx(2 * n / GIB)
    assert est.gradients_gib == pytest.approx(2 * n / GIB)
    assert est.optimizer_gib == pytest.approx(12 * n / GIB)  # fp32 master + Adam m and v
    # Activations: 28 layers x b*s*(14h + 4gd + 8f) bytes (2 groups of 128), plus fp32 logits and their gradient.
    acts = 28 * 512 * (14 * 4096 + 4 * 2 * 128 + 8 * 13696) + 8 * 512 * 65024
    assert est.activations_gib == pytest.approx(acts / GIB)
    assert est.gpu_gib == pytest.approx(est.weights_gib + est.gradients_gib + est.optimizer_gib + est.activations_gib)
    fp32 = estimate_memory(config, "all", precision="fp32", zero_stage=0)
    assert fp32.optimizer_gib == pytest.approx(8 * n / GIB)  # no separate master copy


def test_zero3_divides_by_gpus_and_offload_moves_to_cpu():
    config = preset_config("glm2")
    one = estimate_memory(config, "all", zero_stage=3, num_gpus=1)
    eight = estimate_memory(config, "all", zero_stage=3, num_gpus=8)
    assert eight.optimizer_gib == pytest.approx(one.optimizer_gib / 8)
    assert eight.gradients_gib == pytest.approx(one.gradients_gib / 8)
    layer = sum(s[0] * (s[1] if len(s) > 1 else 1) for k, s in parameter_shapes(config).items() if "layers.0." in k)
    working = 2 * layer * 2 / GIB
    assert eight.weights_gib - working == pytest.approx((one.weights_gib - working) / 8)
    assert eight.activations_gib == one.activations_gib  # activations are per GPU, not sharded
    zero2 = estimate_memory(config, "all", zero_stage=2, num_gpus=8)
    assert zero2.weights_gib == pytest.approx(2 * 6_243_584_000 / GIB)  # ZeRO-2 keeps a full copy
    off = estimate_memory(config, "all", zero_stage=3, num_gpus=8, offload=True)
    assert off.optimizer_gib == 0 and off.cpu_gib > eight.optimizer_gib
    assert off.gpu_gib < eight.gpu_gib


def test_activations_by_method_and_checkpointing():
    config = preset_config("glm2")
    full = activation_bytes(config, 1, 1024)
    ckpt = activation_bytes(config, 1, 1024, gradient_checkpointing=True)
    # Checkpointing keeps each layer's 16-bit input, rebuilds one layer at a time; the logits stay.
    assert ckpt == 28 * 2 * 1024 * 4096 + 1024 * (14 * 4096 + 4 * 2 * 128 + 8 * 13696) + 8 * 1024 * 65024
    assert ckpt < full / 4
    # ptuning trains 0.004% of the parameters but back-propagates through every layer; frozen linear
    # layers keep no inputs, so it keeps less than full training, and LoRA on the QKV a little more.
    ptuning = estimate_memory(config, "ptuning", prefix_projection=False, seq_len=1024)
    lora = estimate_memory(config, "lora", seq_len=1024)
    freeze = estimate_memory(config, "freeze", freeze_module_name="layers.27.", seq_len=1024)
    assert ptuning.activations_gib < lora.activations_gib < full / GIB
    assert lora.activations_gib - ptuning.activations_gib == pytest.approx(28 * 2 * 1024 * 4096 / GIB)
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
    assert stats["device"] == "cpu" and stats["traced_mib"] >= 31 and stats["seconds"] >= 0


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

"""ChatGLM2/3 model: proved against the official code's outputs (fixtures) and against itself.

The fixtures hold logits, loss and greedy generations of the official ChatGLM2-6B /
ChatGLM3-6B modeling code on tiny random weights (see tests/fixtures/README.md). The
other tests check properties the fixtures do not cover: padding, caching, gradient
checkpointing, other decoding modes, bf16 and peft.
"""

from __future__ import annotations

import pytest
import torch
from fixture_models import fixture_model, load_fixture

from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration

FIXTURES = ["glm2_a", "glm2_a_pt_proj", "glm2_a_pt_emb", "glm3_a", "glm3_a_pt_proj", "glm3_a_pt_emb"]
PAD = 0


def _greedy(model, input_ids, **kwargs):
    return model.generate(input_ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=PAD, **kwargs)


def _left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1D id tensors to one batch; returns (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_official_fixture(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    assert set(model.state_dict()) == set(fx["state_dict"])  # official key names, nothing more or less
    with torch.no_grad():
        out = model(input_ids=fx["input_ids"], labels=fx["labels"], use_cache=False)
    torch.testing.assert_close(out.logits, fx["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, fx["loss"], atol=1e-5, rtol=0)
    generated = _greedy(model, fx["generate"]["prompt_ids"])
    assert torch.equal(generated, fx["generate"]["output_ids"])


@pytest.mark.parametrize("name", ["glm2_a", "glm3_a_pt_proj"])
def test_left_padding_gives_unpadded_logits(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    rows = [fx["input_ids"][0], fx["input_ids"][1, 5:]]
    ids, mask = _left_pad(rows)
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=row[None], use_cache=False).logits[0]
            torch.testing.assert_close(batched[i, -len(row) :], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["glm2_a", "glm2_a_pt_emb"])
def test_right_padding_loss_ignores_pads(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    ids = fx["input_ids"].clone()
    labels = fx["labels"].clone()
    mask = torch.ones_like(ids)
    ids[1, 15:], labels[1, 15:], mask[1, 15:] = PAD, -100, 0
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        alone = model(input_ids=ids[1:, :15], use_cache=False).logits[0]
    torch.testing.assert_close(padded.logits[1, :15], alone, atol=1e-5, rtol=0)
    assert torch.isfinite(padded.loss)


@pytest.mark.parametrize("name", ["glm2_a", "glm3_a_pt_proj"])
def test_cached_generation_equals_uncached_and_batched(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    rows = [fx["input_ids"][0, :12], fx["input_ids"][1, :7]]
    ids, mask = _left_pad(rows)
    cached = _greedy(model, ids, attention_mask=mask, use_cache=True)
    uncached = _greedy(model, ids, attention_mask=mask, use_cache=False)
    assert torch.equal(cached, uncached)
    for i, row in enumerate(rows):
        alone = _greedy(model, row[None])
        assert torch.equal(cached[i, ids.shape[1] - len(row) :], alone[0])


def test_step_by_step_cache_matches_full_forward():
    """Decoding token by token through ``past_key_values`` reproduces the full-sequence logits."""
    fx = load_fixture("glm2_a_pt_proj")
    model = fixture_model("glm2_a_pt_proj")
    ids = fx["input_ids"]
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        out = model(input_ids=ids[:, :10], use_cache=True)
        cache = out.cache
        # Keys and values are cached in the grouped layout (B, kv_heads, T, head_dim), without the prefix.
        assert cache.layers[0].keys.shape == (2, 2, 10, 16)
        steps = [out.logits]
        for t in range(10, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_inputs_embeds_equal_input_ids():
    fx = load_fixture("glm3_a")
    model = fixture_model("glm3_a")
    with torch.no_grad():
        by_ids = model(input_ids=fx["input_ids"], use_cache=False).logits
        embeds = model.get_input_embeddings()(fx["input_ids"])
        by_embeds = model(inputs_embeds=embeds, use_cache=False).logits
    torch.testing.assert_close(by_ids, by_embeds, atol=0, rtol=0)


def _grads(model, fx, checkpointing: bool) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable()
        encoder = model.transformer.encoder
        checkpoint_func = encoder._gradient_checkpointing_func
        calls = []
        encoder._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or checkpoint_func(*a, **k)
    else:
        model.activation_checkpointing_disable()
    torch.manual_seed(0)  # the P-tuning prefix dropout is active in training
    model(input_ids=fx["input_ids"], labels=fx["labels"]).loss.backward()
    if checkpointing:
        assert len(calls) == model.config.num_layers  # every layer went through the checkpoint function
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["glm2_a", "glm2_a_pt_proj"])
def test_gradient_checkpointing_same_gradients(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    plain = _grads(model, fx, checkpointing=False)
    checkpointed = _grads(model, fx, checkpointing=True)
    assert set(plain) == {n for n, _ in model.named_parameters()}  # the model freezes nothing
    assert set(plain) == set(checkpointed)
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], atol=1e-6, rtol=1e-5, msg=n)


def test_rope_ratio_scales_the_base():
    """ChatGLM3 long-context checkpoints (rope_ratio) use base 10000 * rope_ratio; ChatGLM2-32K divides positions."""
    from glmlab.models.configuration import ChatGLMConfig

    config = ChatGLMConfig(**{**load_fixture("glm3_a")["config"], "rope_ratio": 50.0})
    rotary = ChatGLM2ForConditionalGeneration(config).transformer.rotary_pos_emb
    expected = 1.0 / (500000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    torch.testing.assert_close(rotary.inv_freq, expected, atol=0, rtol=0)
    config.rope_position_interpolation = True
    rotary = ChatGLM2ForConditionalGeneration(config).transformer.rotary_pos_emb
    cos, _ = rotary(torch.tensor([[100]]), torch.float32)
    expected = torch.cos(2.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8)))
    torch.testing.assert_close(cos[0, 0, 0], expected)


def test_sampling_and_beam_search_run():
    fx = load_fixture("glm3_a_pt_emb")
    model = fixture_model("glm3_a_pt_emb")
    rows = [fx["input_ids"][0, :9], fx["input_ids"][1, :5]]
    ids, mask = _left_pad(rows)
    torch.manual_seed(0)
    sampled = model.generate(
        ids, attention_mask=mask, do_sample=True, top_p=0.8, temperature=0.8, max_new_tokens=6,
        eos_token_id=None, pad_token_id=PAD, num_return_sequences=2,
    )
    assert sampled.shape == (4, ids.shape[1] + 6)
    beams = model.generate(
        ids, attention_mask=mask, num_beams=3, do_sample=False, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD
    )
    assert beams.shape == (2, ids.shape[1] + 6)
    for i, row in enumerate(rows):
        alone = model.generate(row[None], num_beams=3, do_sample=False, max_new_tokens=6, eos_token_id=None)
        assert torch.equal(beams[i, ids.shape[1] - len(row) :], alone[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["glm2_a", "glm3_a_pt_proj"])
def test_half_precision_forward_and_generate(name, dtype):
    fx = load_fixture(name)
    model = fixture_model(name).to(dtype)
    with torch.no_grad():
        out = model(input_ids=fx["input_ids"], labels=fx["labels"], use_cache=False)
    assert out.logits.dtype == dtype
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    assert abs(out.loss.item() - fx["loss"].item()) < 0.05
    assert _greedy(model, fx["generate"]["prompt_ids"]).shape == (1, fx["generate"]["prompt_ids"].shape[1] + 8)


def test_save_and_from_pretrained_round_trip(tmp_path):
    fx = load_fixture("glm2_a_pt_proj")
    model = fixture_model("glm2_a_pt_proj")
    model.save_pretrained(tmp_path)
    loaded = ChatGLM2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        logits = loaded(input_ids=fx["input_ids"], use_cache=False).logits
    torch.testing.assert_close(logits, fx["logits"], atol=1e-5, rtol=0)


def test_peft_lora_forward_and_generate():
    peft = pytest.importorskip("peft")
    fx = load_fixture("glm2_a")
    model = fixture_model("glm2_a")
    lora = peft.get_peft_model(
        model, peft.LoraConfig(task_type="CAUSAL_LM", target_modules=["query_key_value"], r=4, lora_alpha=8)
    )
    lora.print_trainable_parameters()
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "query_key_value" in n for n in trainable)
    lora.train()
    lora.base_model.model.enable_input_require_grads()
    lora.base_model.model.activation_checkpointing_enable()
    out = lora(input_ids=fx["input_ids"], labels=fx["labels"])
    out.loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if p.requires_grad)
    lora.eval()
    ids, mask = _left_pad([fx["input_ids"][0, :8], fx["input_ids"][1, :5]])
    generated = lora.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=PAD
    )
    assert generated.shape == (2, ids.shape[1] + 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_rms_norm_is_the_official_formula_with_its_gradients(dtype):
    from glmlab.models.chatglm2 import RMSNorm, official_rms_norm

    torch.manual_seed(0)
    norm = RMSNorm(64).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    x = (torch.randn(3, 5, 64) * 2).to(dtype)
    lean, plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    weight = norm.weight.detach().clone().requires_grad_()
    out = norm(lean)
    reference = official_rms_norm(plain, weight, norm.eps)[0]
    assert torch.equal(out, reference)  # the forward is the very same operations
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(lean.grad, plain.grad, **tol)
    torch.testing.assert_close(norm.weight.grad, weight.grad, **tol)
    # frozen weight (LoRA, P-tuning): only the input's gradient
    norm.weight.requires_grad_(False)
    frozen = x.clone().requires_grad_()
    norm(frozen).backward(grad)
    torch.testing.assert_close(frozen.grad, lean.grad, rtol=0, atol=0)

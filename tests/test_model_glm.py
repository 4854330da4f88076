"""ChatGLM-6B (GLM v1) model: proved against the official code's numbers on tiny fixtures.

The fixtures (tests/fixtures/README.md) hold logits, loss and a greedy generation that the
official modeling code computed on the same random weights; the other tests check the
properties the official code does not have or that generation relies on (padding, cache,
beam search, gradient checkpointing, dtypes).
"""

from __future__ import annotations

import pytest
import torch

from glmlab.models.chatglm import ChatGLMForConditionalGeneration, get_position_ids
from glmlab.models.configuration import ChatGLMConfig
from tests.fixture_models import fixture_model, load_fixture

FIXTURES = ["glm_a", "glm_a_pt_proj", "glm_a_pt_emb"]


@pytest.fixture(scope="module", params=FIXTURES)
def glm(request):
    """(fixture dict, model) for each fixture, loaded once per module."""
    return load_fixture(request.param), fixture_model(request.param)


def _greedy(model, input_ids, **kwargs):
    return model.generate(
        input_ids,
        eos_token_id=model.config.eos_token_id,
        min_new_tokens=8,
        max_new_tokens=8,
        do_sample=False,
        **kwargs,
    )


def _left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1D id tensors to one batch: (ids, 2D attention mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return ids, mask


def _prompts(fx: dict) -> list[torch.Tensor]:
    """Two prompts of different lengths, each ending in [gMASK] <sop>."""
    long_prompt = fx["generate"]["prompt_ids"][0]
    ids = fx["input_ids"][1]
    sop = int((ids == fx["config"]["bos_token_id"]).nonzero()[0])
    return [long_prompt, ids[sop - 5 : sop + 1]]


# --- reference numbers -------------------------------------------------------------------


def test_logits_and_loss_match_official(glm):
    fx, model = glm
    with torch.no_grad():
        out = model(input_ids=fx["input_ids"], labels=fx["labels"], use_cache=False)
    torch.testing.assert_close(out.logits, fx["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, fx["loss"], atol=1e-5, rtol=0)
    assert out.loss.dtype == torch.float32


def test_eager_attention_matches_official(glm):
    """The step-by-step official arithmetic (query-key layer scaling) gives the same logits."""
    fx, model = glm
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            logits = model(input_ids=fx["input_ids"], use_cache=False).logits
    finally:
        model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(logits, fx["logits"], atol=1e-5, rtol=0)


def test_greedy_generation_matches_official(glm):
    fx, model = glm
    out = _greedy(model, fx["generate"]["prompt_ids"])
    assert out.tolist() == fx["generate"]["output_ids"].tolist()


def test_generation_without_cache_matches_cache(glm):
    fx, model = glm
    prompt = fx["generate"]["prompt_ids"]
    assert _greedy(model, prompt, use_cache=False).tolist() == _greedy(model, prompt).tolist()


def test_official_key_names():
    fx = load_fixture("glm_a_pt_proj")
    model = fixture_model("glm_a_pt_proj")
    assert set(model.state_dict()) == set(fx["state_dict"])
    assert "transformer.layers.0.attention.rotary_emb.inv_freq" in model.state_dict()
    assert model.lm_head.weight.data_ptr() != model.transformer.word_embeddings.weight.data_ptr()


# --- positions, masks, padding -----------------------------------------------------------


def test_positions_2d():
    config = ChatGLMConfig(**load_fixture("glm_a")["config"])
    g, s, p = config.gmask_token_id, config.bos_token_id, config.pad_token_id
    ids = torch.tensor([[p, p, 10, 11, g, s, 12, 13]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    pos = get_position_ids(ids, config, mask)
    assert pos[0, 0].tolist() == [0, 0, 0, 1, 2, 2, 2, 2]  # generated span keeps the [gMASK] position
    assert pos[0, 1].tolist() == [0, 0, 0, 0, 0, 1, 2, 3]  # block positions count from <sop>


def test_left_padding_matches_unpadded_rows(glm):
    fx, model = glm
    rows = _prompts(fx)
    # Add a continuation after <sop> so both the bidirectional and the causal part are covered.
    rows = [torch.cat((r, torch.tensor([5, 6, 7]))) for r in rows]
    ids, mask = _left_pad(rows, fx["config"]["pad_token_id"])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=row[None], use_cache=False).logits[0]
            torch.testing.assert_close(padded[i, -len(row) :], alone, atol=1e-5, rtol=0)
    assert not padded.isnan().any()


def test_right_padding_keeps_loss(glm):
    """Right padding with -100 labels changes nothing on the real tokens (training batches)."""
    fx, model = glm
    ids, labels = fx["input_ids"][:1], fx["labels"][:1]
    pad = torch.full((1, 4), fx["config"]["pad_token_id"])
    ids_p = torch.cat((ids, pad), dim=1)
    labels_p = torch.cat((labels, torch.full((1, 4), -100)), dim=1)
    mask = torch.cat((torch.ones_like(ids), torch.zeros_like(pad)), dim=1)
    with torch.no_grad():
        plain = model(input_ids=ids, labels=labels, use_cache=False)
        padded = model(input_ids=ids_p, attention_mask=mask, labels=labels_p, use_cache=False)
    torch.testing.assert_close(padded.logits[:, : ids.shape[1]], plain.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.loss, plain.loss, atol=1e-5, rtol=0)


def test_left_padded_greedy_generation_matches_unpadded(glm):
    fx, model = glm
    rows = _prompts(fx)
    ids, mask = _left_pad(rows, fx["config"]["pad_token_id"])
    batch = _greedy(model, ids, attention_mask=mask, pad_token_id=fx["config"]["pad_token_id"])
    for i, row in enumerate(rows):
        alone = _greedy(model, row[None])
        assert batch[i, ids.shape[1] :].tolist() == alone[0, len(row) :].tolist()


# --- other generation modes --------------------------------------------------------------


def test_sampling_shapes(glm):
    fx, model = glm
    ids, mask = _left_pad(_prompts(fx), fx["config"]["pad_token_id"])
    torch.manual_seed(0)
    out = model.generate(
        ids, attention_mask=mask, do_sample=True, top_p=0.9, temperature=0.9, max_new_tokens=5,
        min_new_tokens=5, num_return_sequences=2, pad_token_id=fx["config"]["pad_token_id"],
    )
    assert out.shape == (4, ids.shape[1] + 5)
    assert out[:, : ids.shape[1]].tolist() == ids.repeat_interleave(2, dim=0).tolist()


def test_beam_search_shapes_and_cache(glm):
    """Beam search runs on a left-padded batch, and with the (reordered) cache it equals no cache."""
    fx, model = glm
    ids, mask = _left_pad(_prompts(fx), fx["config"]["pad_token_id"])
    kwargs = dict(
        attention_mask=mask, num_beams=3, num_return_sequences=2, max_new_tokens=6, min_new_tokens=6,
        do_sample=False, pad_token_id=fx["config"]["pad_token_id"],
    )
    with_cache = model.generate(ids, **kwargs)
    assert with_cache.shape == (4, ids.shape[1] + 6)
    assert model.generate(ids, use_cache=False, **kwargs).tolist() == with_cache.tolist()


# --- training and dtypes -----------------------------------------------------------------


def _grads(model, fx) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(input_ids=fx["input_ids"], labels=fx["labels"]).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["glm_a", "glm_a_pt_proj"])
def test_gradient_checkpointing_same_gradients(name):
    fx = load_fixture(name)
    model = fixture_model(name).train()
    if model.config.pre_seq_len is not None:
        model.transformer.dropout.p = 0.0  # both passes must see the same prefix
    reference = _grads(model, fx)
    model.activation_checkpointing_enable()
    checkpointed = _grads(model, fx)
    assert model.transformer.gradient_checkpointing
    assert set(checkpointed) == set(reference) and len(reference) == len(list(model.parameters()))
    for key, grad in reference.items():
        torch.testing.assert_close(checkpointed[key], grad, atol=1e-6, rtol=1e-5)


def test_prefix_dropout_only_in_training():
    fx = load_fixture("glm_a_pt_emb")
    model = fixture_model("glm_a_pt_emb")
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        train_logits = model(input_ids=fx["input_ids"], use_cache=False).logits
        model.eval()
        eval_logits = model(input_ids=fx["input_ids"], use_cache=False).logits
    torch.testing.assert_close(eval_logits, fx["logits"], atol=1e-5, rtol=0)
    assert not torch.allclose(train_logits, eval_logits, atol=1e-4)


def test_bf16_forward_keeps_fp32_rotary():
    fx = load_fixture("glm_a_pt_proj")
    model = fixture_model("glm_a_pt_proj").to(torch.bfloat16)
    inv_freq = model.transformer.layers[0].attention.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32
    torch.testing.assert_close(inv_freq, fx["state_dict"]["transformer.layers.0.attention.rotary_emb.inv_freq"])
    with torch.no_grad():
        out = model(input_ids=fx["input_ids"], labels=fx["labels"], use_cache=False)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert (out.logits.float() - fx["logits"]).abs().max() < 0.1
    assert (out.loss - fx["loss"]).abs() < 0.05


def test_fresh_model_builds_official_inv_freq():
    fx = load_fixture("glm_a")
    model = ChatGLMForConditionalGeneration(ChatGLMConfig(**fx["config"]))
    for i in range(model.config.num_layers):
        key = f"transformer.layers.{i}.attention.rotary_emb.inv_freq"
        assert torch.equal(model.state_dict()[key], fx["state_dict"][key])
    assert all(p.requires_grad for p in model.parameters())
    std = model.transformer.layers[0].attention.query_key_value.weight.std().item()
    assert 0.015 < std < 0.025


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_gelu_is_the_official_formula_with_its_gradient(dtype):
    from glmlab.models.chatglm import gelu, official_gelu

    torch.manual_seed(0)
    x = (torch.randn(3, 5, 64) * 3).to(dtype)
    lean, plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, reference = gelu(lean), official_gelu(plain)
    assert torch.equal(out, reference)  # the forward is the very same operations
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    # fp32: the written-out derivative equals autograd through the formula; bf16: it is closer to the
    # exact derivative than bf16 autograd, so compare at bf16's resolution.
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(lean.grad, plain.grad, **tol)
    x64 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gelu, (x64,))

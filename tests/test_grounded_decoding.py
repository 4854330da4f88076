"""Grounded decoding (``python -m glmlab.predict --grounded decode``): greedy search that writes only triples whose
head and tail are spans of the record. The processor on a real tokenizer with scores set by hand, then generation
with the shipped small bases."""

import json
from pathlib import Path

import pytest
import torch

from glmlab.generation import GroundedDecoding, generate_ids_pruned, stop_token_ids
from glmlab.loading import load_tokenizer
from glmlab.metrics import grounded_end, grounded_prefix

BASES = Path(__file__).resolve().parent.parent / "glmlab" / "assets" / "base"
RECORD = "检修时发现压缩机异响，随后发现怠速过低。"


def piece(tokenizer, text: str) -> int:
    """The id of ``text`` as one piece (its encoding after SentencePiece's dummy prefix)."""
    ids = tokenizer.encode(text, add_special_tokens=False)[1:]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def choose(tokenizer, mode: str, before: list[str], ranked: list, scan: int = 256) -> tuple[int, GroundedDecoding]:
    """The token the processor lets a row take after the pieces ``before``, when the model ranks ``ranked`` (pieces,
    or ids) first, second, ...; every other token is scored far below."""
    stops = stop_token_ids(tokenizer, mode)
    prefix = [piece(tokenizer, p) for p in before]
    scores = torch.full((1, len(tokenizer)), -50.0)
    for rank, item in enumerate(ranked):
        scores[0, item if isinstance(item, int) else piece(tokenizer, item)] = 10.0 - rank
    processor = GroundedDecoding(tokenizer, mode, [RECORD], [prefix], width=3, stops=stops, scan=scan)
    out = processor(torch.zeros((1, 3), dtype=torch.long), scores)
    assert torch.isfinite(out[0]).sum() == 1  # greedy search can take one token only
    return int(out[0].argmax()), processor


def test_a_word_the_record_does_not_hold_is_replaced_by_the_best_one_it_does():
    tok = load_tokenizer(BASES / "glm")
    eos = stop_token_ids(tok, "glm")[0]
    # the model would write 鼓包; the record says 异响, its second choice
    token, processor = choose(tok, "glm", ["压缩机", "_", "部件故障", "_"], ["鼓包", "异响"])
    assert token == piece(tok, "异响") and processor.refused == 1
    # a choice the record allows is the model's own: nothing refused
    token, processor = choose(tok, "glm", ["压缩机", "_", "部件故障", "_"], ["异响", "鼓包"])
    assert token == piece(tok, "异响") and processor.refused == 0
    # it may not stop inside a triple, and may after a whole one
    token, _ = choose(tok, "glm", ["压缩机", "_", "部件故障"], [eos, "_"])
    assert token == piece(tok, "_")
    token, _ = choose(tok, "glm", ["压缩机", "_", "部件故障", "_", "异响"], [eos, "鼓包"])
    assert token == eos
    # a head must be a span of the record too
    token, _ = choose(tok, "glm", [], ["鼓包", "怠速"])
    assert token == piece(tok, "怠速")
    # nothing among the tokens tried fits: the model's best stands (the filter drops the line afterwards) ...
    token, processor = choose(tok, "glm", ["压缩机", "_", "部件故障", "_"], ["鼓包", "异响"], scan=1)
    assert token == piece(tok, "鼓包") and processor.refused == 0
    # ... or, where the answer may end, it ends
    token, _ = choose(tok, "glm", ["压缩机", "_", "部件故障", "_", "异响"], ["鼓包", "异响"], scan=1)
    assert token == eos


def test_chatglm3s_metadata_line_must_be_empty():
    tok = load_tokenizer(BASES / "glm3")
    newline = tok.encode("\n", add_special_tokens=False)[-1]
    token, _ = choose(tok, "glm3", [], ["压缩机", newline])
    assert token == newline  # a grounded answer is a plain one: its metadata line ends at once
    stops = stop_token_ids(tok, "glm3")
    prefix = [newline, piece(tok, "压缩机")]
    scores = torch.full((1, len(tok)), -50.0)
    scores[0, piece(tok, "鼓包")], scores[0, piece(tok, "_")] = 10.0, 9.0
    out = GroundedDecoding(tok, "glm3", [RECORD], [prefix], 1, stops)(torch.zeros((1, 1), dtype=torch.long), scores)
    assert int(out[0].argmax()) == piece(tok, "_")


@pytest.mark.parametrize("mode", ["glm", "glm3"])
def test_decoded_answers_are_grounded(mode):
    """With a shipped base (which does not know the task: none of its own answers is grounded), on synth test records:
    every answer decoding writes can still become grounded triples, and one that ended before the budget may end
    there. That an answer the model writes grounded on its own comes out unchanged is checked on the fine-tuned runs
    of ``benchmarks/grounded.py --decode`` (``tests/test_published_tables.py``)."""
    from glmlab.data import encode_prompt
    from glmlab.generation import decode_answers
    from glmlab.inference import load_for_inference
    from glmlab.notebooks import experiment

    model, tok, mode = load_for_inference(BASES / mode, mode=mode)
    lines = experiment.data_path("spo_test").read_text(encoding="utf-8").splitlines()[:12]
    samples = [json.loads(line) for line in lines]
    records = [s["input"] for s in samples]
    prompts = [encode_prompt(s, tok, mode, 96) for s in samples]
    budget = 24
    free = generate_ids_pruned(model, tok, prompts, mode, budget, batch_size=4)
    decoded = generate_ids_pruned(model, tok, prompts, mode, budget, batch_size=4, grounded_in=records)
    free_text, decoded_text = decode_answers(tok, free, mode), decode_answers(tok, decoded, mode)
    for ids, answer, record in zip(decoded, decoded_text, records):
        assert grounded_prefix(answer, record), (answer, record)
        assert len(ids) == budget or grounded_end(answer, record), (answer, record)
    assert not any(grounded_prefix(answer, record) for answer, record in zip(free_text, records))
    with pytest.raises(ValueError, match="one text per prompt"):
        generate_ids_pruned(model, tok, prompts, mode, budget, grounded_in=records[:2])

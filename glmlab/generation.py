"""Generation, in one place: stop tokens, left padding, batched generation and cutting at a stop.

:func:`generate_batch` generates for a batch of prompts (ids as :func:`glmlab.data.encode_prompt`
builds them) with left padding and returns the decoded answers; :func:`generate_ids` returns the new
ids, cut before the first stop id. :func:`generation_kwargs` is what glmlab hands ``model.generate``,
shared by batch generation and :mod:`glmlab.chat`, so a streamed chat answer equals a batch one.
:mod:`glmlab.inference` loads the models; :mod:`glmlab.chat`, :mod:`glmlab.predict` and the notebooks
call this module to generate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from glmlab.metrics import grounded_end, grounded_prefix


# The original prediction scripts' generation settings. ``max_new_tokens`` there was
# ``max_len - max_src_len - 3``; ``min_length=5`` counted the prompt too, so it never bit.
DEFAULT_TOP_P = 0.7
DEFAULT_TEMPERATURE = 0.95
DEFAULT_DO_SAMPLE = False


def stop_token_ids(tokenizer, mode: str, model=None) -> list[int]:
    """Ids that end an answer: ``<eop>``/eos for ChatGLM-6B, ``</s>`` for ChatGLM2, plus ``<|user|>`` and
    ``<|observation|>`` for ChatGLM3 (a chat turn ends where the next speaker would start)."""
    ids: list[int | None] = [tokenizer.eos_token_id]
    if mode == "glm":
        ids.append(getattr(tokenizer, "eop_token_id", None))
        config_eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        ids.extend(config_eos if isinstance(config_eos, list) else [config_eos])
    elif mode == "glm3":
        ids += [tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
    out: list[int] = []
    for i in ids:
        if i is not None and i not in out:
            out.append(int(i))
    return out


def left_pad(prompts_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts to the longest: ids and the 2D 1/0 attention mask, both (B, T)."""
    width = max(len(p) for p in prompts_ids)
    ids = torch.full((len(prompts_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts_ids), width), dtype=torch.long)
    for row, prompt in enumerate(prompts_ids):
        if len(prompt):
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids, mask


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def generation_kwargs(
    model,
    tokenizer,
    mode: str,
    max_new_tokens: int = 256,
    do_sample: bool = DEFAULT_DO_SAMPLE,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    **gen_kwargs,
) -> dict:
    """The keyword arguments glmlab gives ``model.generate``: the mode's stop ids as ``eos_token_id``,
    the pad id, and ``top_p``/``temperature`` only when sampling (greedy search would warn about
    them). Shared by batch generation and chat, so a streamed answer equals a non-streamed one."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stops = stop_token_ids(tokenizer, mode, model)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "eos_token_id": stops, "pad_token_id": pad_id}
    if do_sample:
        kwargs.update(top_p=top_p, temperature=temperature)
    kwargs.update(gen_kwargs)
    return kwargs


def cut_at_stop(row: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The generated ids before the first stop id (what follows it is padding)."""
    cut = next((i for i, t in enumerate(row) if t in stops), len(row))
    return list(row[:cut])


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts_ids: Sequence[Sequence[int]],
    mode: str,
    max_new_tokens: int = 256,
    do_sample: bool = DEFAULT_DO_SAMPLE,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    **gen_kwargs,
) -> list[list[int]]:
    """Generate for a batch of prompts (left-padded) and return each row's new ids, cut before the first stop id."""
    if not prompts_ids or any(len(p) == 0 for p in prompts_ids):
        raise ValueError("generate needs at least one prompt and no empty prompt")
    kwargs = generation_kwargs(model, tokenizer, mode, max_new_tokens, do_sample, top_p, temperature, **gen_kwargs)
    ids, mask = left_pad(prompts_ids, kwargs["pad_token_id"])
    device = model_device(model)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    stops = stop_token_ids(tokenizer, mode, model)
    return [cut_at_stop(row, stops) for row in out[:, ids.shape[1] :].tolist()]


@torch.no_grad()
def generate_ids_pruned(
    model,
    tokenizer,
    prompts_ids: Sequence[Sequence[int]],
    mode: str,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    chunk: int = 8,
    grounded_in: Sequence[str] | None = None,
) -> list[list[int]]:
    """Greedy answers for many prompts, each row leaving its batch as soon as it has ended.

    :func:`generate_ids` runs a batch until its longest answer ends, so one row that never stops (a
    model that forgot how to) makes every other row of its batch generate ``max_new_tokens``. Here
    the prompts go in batches of similar length, and each batch generates ``chunk`` tokens at a
    time; after each chunk the rows that stopped are cut at their stop id and dropped, and the rest
    continue from their prompt plus what they generated so far (the model recomputes that prefix:
    greedy search from the same sequence picks the same next token). Returns each prompt's new ids,
    cut before the first stop id, in the order given: what :func:`generate_ids` returns for greedy
    search, in a fraction of the time when answers differ in length.

    ``grounded_in`` (one text per prompt, the record each answer is extracted from) decodes triples that name only
    what their record says (:class:`GroundedDecoding`).
    """
    if not prompts_ids or any(len(p) == 0 for p in prompts_ids):
        raise ValueError("generate needs at least one prompt and no empty prompt")
    if grounded_in is not None and len(grounded_in) != len(prompts_ids):
        raise ValueError(f"grounded_in needs one text per prompt (got {len(grounded_in)} for {len(prompts_ids)})")
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be >= 1 (got {batch_size}, {chunk})")
    kwargs = generation_kwargs(model, tokenizer, mode, max_new_tokens, do_sample=False)
    stop_ids = stop_token_ids(tokenizer, mode, model)
    stops = set(stop_ids)
    device = model_device(model)
    answers: list[list[int] | None] = [None] * len(prompts_ids)
    order = sorted(range(len(prompts_ids)), key=lambda i: len(prompts_ids[i]))
    for start in range(0, len(order), batch_size):
        active = {i: [] for i in order[start : start + batch_size]}  # row -> ids generated so far
        while active:
            rows = list(active)
            budget = min(chunk, max_new_tokens - len(active[rows[0]]))
            ids, mask = left_pad([list(prompts_ids[i]) + active[i] for i in rows], kwargs["pad_token_id"])
            extra = {}
            if grounded_in is not None:
                from transformers import LogitsProcessorList

                extra["logits_processor"] = LogitsProcessorList([GroundedDecoding(
                    tokenizer, mode, [grounded_in[i] for i in rows], [active[i] for i in rows], ids.shape[1], stop_ids)])
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 **{**kwargs, "max_new_tokens": budget}, **extra)
            for row, new in zip(rows, out[:, ids.shape[1] :].tolist()):
                new = new[:budget]
                cut = next((k for k, t in enumerate(new) if t in stops), None)
                if cut is not None:
                    answers[row] = active.pop(row) + new[:cut]
                else:
                    active[row] += new
                    if len(active[row]) >= max_new_tokens:
                        answers[row] = active.pop(row)
    return answers  # type: ignore[return-value]


class GroundedDecoding:
    """A logits processor for greedy search that lets each row write only triples grounded in its record.

    At every step a row takes the highest-scored token after which its answer still satisfies
    :func:`glmlab.metrics.grounded_prefix` (every finished line a triple whose head and tail occur in the record, the
    open line the start of one), and it may stop only where :func:`glmlab.metrics.grounded_end` holds. Where the
    model would write a word the record does not hold ("鼓包" for a record that says "异响"), it writes its best
    choice among what the record does say, so a triple the grounding filter (:func:`glmlab.metrics.grounded_triples`)
    would drop is replaced rather than dropped. The record alone decides; the relation is free, as the filter's is.

    ``records``: one per row; ``prefixes``: the ids each row generated before this call (a row of
    :func:`generate_ids_pruned` resumes from its prompt plus those); ``width``: the padded input's width, where this
    call's new ids start. Only the ``scan`` best-scored tokens are tried; when none of them fits, the row ends if it
    may, and otherwise writes its best token (the filter then drops the line). ChatGLM3's answer starts with its
    metadata line, which must be empty: a grounded answer is a plain one. ``refused`` counts the steps where the
    model's own first choice was not allowed.
    """

    def __init__(self, tokenizer, mode: str, records: Sequence[str], prefixes: Sequence[Sequence[int]], width: int,
                 stops: Sequence[int], scan: int = 256):
        self.tokenizer, self.mode, self.records = tokenizer, mode, list(records)
        self.prefixes, self.width, self.stops, self.scan = [list(p) for p in prefixes], width, list(stops), scan
        self.refused = 0

    def _answer(self, ids: list[int]) -> str | None:
        """The answer text of ``ids`` as the filter will read it (:func:`decode_answers`), or None when it cannot be
        a plain answer (ChatGLM3 metadata that is not empty)."""
        text = self.tokenizer.decode(ids)
        if self.mode != "glm3" or not text:
            return text
        return text[1:].lstrip() if text.startswith("\n") else None

    def _allowed(self, ids: list[int], token: int, record: str, may_end: bool) -> bool:
        if token in self.stops:
            return may_end
        answer = self._answer(ids + [token])
        return answer is not None and grounded_prefix(answer, record)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, float("-inf"))
        best = scores.topk(min(self.scan, scores.shape[-1]), dim=-1).indices.tolist()
        for row, record in enumerate(self.records):
            ids = self.prefixes[row] + input_ids[row, self.width :].tolist()
            if any(t in self.stops for t in ids):  # ended: generate pads it from here on
                out[row] = scores[row]
                continue
            answer = self._answer(ids)
            may_end = answer is not None and grounded_end(answer, record)
            token = next((t for t in best[row] if self._allowed(ids, t, record, may_end)), None)
            if token is None:
                token = self.stops[0] if may_end else best[row][0]
            self.refused += token != best[row][0]
            out[row, token] = scores[row, token]
        return out


def _clean(text: str, mode: str) -> str:
    """ChatGLM3 answers start with their metadata line: when it is empty (a plain answer), drop it and
    strip the content, as the official ``process_response`` does (the content was encoded on its own,
    so it starts with SentencePiece's dummy-prefix space)."""
    if mode == "glm3" and text.startswith("\n"):
        return text[1:].strip()
    return text


def generate_batch(model, tokenizer, prompts_ids: Sequence[Sequence[int]], mode: str, *args, **gen_kwargs) -> list[str]:
    """Generate an answer for each prompt (ids as ``glmlab.data.encode_prompt`` builds them).

    Takes :func:`generate_ids`' arguments (``max_new_tokens=256, do_sample, top_p, temperature``, then
    keyword arguments for ``model.generate``). The batch is left-padded with a 2D attention mask, so
    every prompt ends where generation starts; the model derives positions from the mask. Defaults are
    the original prediction scripts' (greedy; ``top_p=0.7``, ``temperature=0.95`` when ``do_sample``).
    Only the new tokens are decoded, cut at the first eos / ``<eop>`` (ChatGLM3 also ``<|user|>`` /
    ``<|observation|>``).
    """
    new_ids = generate_ids(model, tokenizer, prompts_ids, mode, *args, **gen_kwargs)
    return decode_answers(tokenizer, new_ids, mode)


def decode_answers(tokenizer, new_ids: Sequence[Sequence[int]], mode: str) -> list[str]:
    """Each row of new ids as answer text (ChatGLM3's empty metadata line dropped)."""
    return [_clean(tokenizer.decode(ids), mode) for ids in new_ids]

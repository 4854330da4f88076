"""Talk to a model the way the official ChatGLM models taught users to: ``chat`` and ``stream_chat``.

``response, history = chat(model, tokenizer, query, history)`` works for every generation and every
training output (:func:`glmlab.inference.load_for_inference`: full, freeze, LoRA adapter, P-tuning
prefix); the mode is read from the tokenizer (or the model's config) unless passed. The prompts are
the ones the official ``model.chat`` of each generation builds:

* ``glm`` (ChatGLM-6B): history is a list of ``(query, response)`` pairs. Without history the prompt
  is the query alone; with history it is ``[Round 0]\\n问：q0\\n答：r0\\n`` ... then
  ``[Round n]\\n问：query\\n答：`` (rounds counted from 0); the tokenizer appends ``[gMASK] <sop>``.
  The answer is cleaned as the official ``process_response`` does: stripped, ``[[训练时间]]`` becomes
  ``2023年``, and a half-width ``, ! : ; ?`` next to a CJK character becomes full-width.
* ``glm2`` (ChatGLM2-6B): ``(query, response)`` pairs; ``[Round 1]\\n\\n问：q\\n\\n答：r\\n\\n`` ... rounds
  counted from 1, also for the first question; ``[gMASK] sop`` in front. The answer is stripped and
  ``[[训练时间]]`` replaced.
* ``glm3`` (ChatGLM3-6B): history is a list of role messages ``{"role", "content"}`` (``system``,
  ``user``, ``assistant`` with its ``metadata``, ``observation``), encoded by
  ``tokenizer.build_chat_input``; a system message may carry ``"tools": [...]`` (appended to its
  content as indented JSON, as the official tokenizer does). An answer is ``metadata\\ncontent``:
  empty metadata is a plain answer; a tool name is a tool call, ``tool_call(a=1, b="x")`` in a code
  fence, returned as ``{"name": ..., "parameters": {...}}`` (parsed with :mod:`ast`, never ``eval``).
  The next turn passes the tool's result with ``role="observation"``.

:func:`stream_chat` yields ``(response, history)`` while the answer grows, as the official
``stream_chat`` does; ``model.generate`` runs in a thread and feeds transformers'
``TextIteratorStreamer``. Its last pair is exactly what :func:`chat` returns for the same call
(greedy decoding makes them equal).

Generation defaults are the official chat's: sampling with ``top_p=0.7, temperature=0.95``
(ChatGLM-6B) or ``top_p=0.8, temperature=0.8`` (ChatGLM2/3); pass ``do_sample=False`` for greedy,
reproducible answers. Generation stops at the mode's stop ids
(:func:`glmlab.generation.stop_token_ids`).
"""

from __future__ import annotations

import ast
import copy
import re
import threading
from collections.abc import Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from glmlab.constants import GLM3_ROLES, MODES
# A system message in this form makes ChatGLM3 answer with tool calls (the official tool demo's text).
from glmlab.constants import TOOLS_PROMPT as DEFAULT_TOOL_SYSTEM
from glmlab.generation import (
    cut_at_stop,
    generate_ids,
    generation_kwargs,
    left_pad,
    model_device,
    stop_token_ids,
)

# The official chat's sampling settings: (top_p, temperature); all three sample by default.
CHAT_SAMPLING = {"glm": (0.7, 0.95), "glm2": (0.8, 0.8), "glm3": (0.8, 0.8)}
DEFAULT_MAX_NEW_TOKENS = 1024
# What the official models were trained to write for their training date.
_TRAINING_TIME = ("[[训练时间]]", "2023年")
# ChatGLM-6B's clean-up: half-width punctuation next to a CJK character becomes full-width.
_PUNCTUATION = {",": "，", "!": "！", ":": "：", ";": "；", "?": "？"}
_CJK = "\u4e00-\u9fff"


class ToolCallError(ValueError):
    """Tool-call code that is not ``tool_call(name=literal, ...)``."""


# --------------------------------------------------------------------------- mode and prompts


def chat_mode(model, tokenizer, mode: str | None = None) -> str:
    """The generation to chat as: ``mode`` if given, else the tokenizer's class (its prompt format),
    else the ``glmlab_mode`` the model's config records. Raises ``ValueError`` when none decides or
    ``mode`` asks for a format the tokenizer cannot build."""
    from glmlab.tokenization import (
        ChatGLM2Tokenizer,
        ChatGLM3Tokenizer,
        ChatGLMTokenizer,
    )

    if isinstance(tokenizer, ChatGLM3Tokenizer):
        found = "glm3"
    elif isinstance(tokenizer, ChatGLM2Tokenizer):
        found = "glm2"
    elif isinstance(tokenizer, ChatGLMTokenizer):
        found = "glm"
    else:
        found = getattr(getattr(model, "config", None), "glmlab_mode", None)
    if mode is None:
        if found not in MODES:
            raise ValueError(
                f"cannot tell the chat format of {type(tokenizer).__name__}: pass mode='glm'|'glm2'|'glm3'"
            )
        return found
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if mode == "glm3" and not hasattr(tokenizer, "build_chat_input"):
        raise ValueError(
            f"mode glm3 needs a ChatGLM3 tokenizer (with build_chat_input), not {type(tokenizer).__name__}"
        )
    return mode


def round_prompt(query: str, history: Sequence[Sequence[str]] | None, mode: str) -> str:
    """The official ``[Round N]`` prompt text of ChatGLM-6B (``glm``) or ChatGLM2-6B (``glm2``)."""
    history = list(history or [])
    if mode == "glm":
        if not history:  # the official ChatGLM-6B sends a first question on its own
            return query
        prompt = "".join(f"[Round {i}]\n问：{q}\n答：{r}\n" for i, (q, r) in enumerate(history))
        return prompt + f"[Round {len(history)}]\n问：{query}\n答："
    if mode == "glm2":
        prompt = "".join(f"[Round {i + 1}]\n\n问：{q}\n\n答：{r}\n\n" for i, (q, r) in enumerate(history))
        return prompt + f"[Round {len(history) + 1}]\n\n问：{query}\n\n答："
    raise ValueError(f"round prompts are ChatGLM-6B's and ChatGLM2-6B's (mode glm/glm2), not {mode!r}")


def _check_history(history, mode: str) -> list:
    """A copy of ``history`` in the mode's form: (query, response) tuples, or glm3 message dicts."""
    out = []
    for i, item in enumerate(history or []):
        if mode == "glm3":
            if (
                not isinstance(item, dict)
                or item.get("role") not in GLM3_ROLES
                or not isinstance(item.get("content"), str)
            ):
                raise ValueError(f"history[{i}]: a ChatGLM3 message is {{'role': one of {GLM3_ROLES}, 'content': str}}")
            out.append(copy.deepcopy(item))
        else:
            if isinstance(item, dict) or len(item) != 2 or not all(isinstance(s, str) for s in item):
                raise ValueError(f"history[{i}]: mode {mode} history is (query, response) pairs of strings")
            out.append((item[0], item[1]))
    return out


def _first_row(input_ids) -> list[int]:
    """``build_chat_input`` returns a batch of one; its row as a list of ints."""
    if isinstance(input_ids, torch.Tensor):
        input_ids = input_ids.tolist()
    if input_ids and isinstance(input_ids[0], list):
        input_ids = input_ids[0]
    return [int(i) for i in input_ids]


def chat_prompt_ids(tokenizer, query: str, history=None, mode: str = "glm3", role: str = "user") -> list[int]:
    """The ids the official ``model.chat`` of ``mode`` feeds the model for ``query`` after ``history``."""
    if mode == "glm3":
        if role not in GLM3_ROLES:
            raise ValueError(f"role must be one of {GLM3_ROLES} (got {role!r})")
        return _first_row(tokenizer.build_chat_input(query, history=history or [], role=role)["input_ids"])
    if role != "user":
        raise ValueError(f"only ChatGLM3 has roles; mode {mode} chats as role='user' (got {role!r})")
    return list(tokenizer(round_prompt(query, history, mode))["input_ids"])


# --------------------------------------------------------------------------- answers


def clean_response(text: str, mode: str) -> str:
    """The official ``process_response`` of ChatGLM-6B (``glm``) or ChatGLM2-6B (``glm2``)."""
    text = text.strip().replace(*_TRAINING_TIME)
    if mode == "glm":
        for half, full in _PUNCTUATION.items():
            half = re.escape(half)
            text = re.sub(rf"([{_CJK}]){half}", rf"\1{full}", text)
            text = re.sub(rf"{half}([{_CJK}])", rf"{full}\1", text)
    return text


def parse_tool_call(code: str) -> dict:
    """The keyword arguments of ChatGLM3 tool-call code ``tool_call(a=1, b="x")``, optionally in a
    ``` fence, as a dict. Only literals are accepted (:func:`ast.literal_eval`); anything else
    raises :class:`ToolCallError`."""
    lines = code.strip().split("\n")
    if lines[0].lstrip().startswith("```"):  # the official model fences the call: ```python ... ```
        lines = lines[1:]
        if lines and lines[-1].strip() == "```":
            lines = lines[:-1]
    text = "\n".join(lines).strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ToolCallError(f"tool call is not Python: {text!r}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tool_call"):
        raise ToolCallError(f"tool call must be tool_call(...): {text!r}")
    if node.args or any(kw.arg is None for kw in node.keywords):
        raise ToolCallError(f"tool_call takes named arguments only: {text!r}")
    parameters = {}
    for kw in node.keywords:
        try:
            parameters[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ToolCallError(f"tool_call argument {kw.arg} is not a literal: {text!r}") from None
    return parameters


def _has_tools(history: Sequence[dict]) -> bool:
    return any(m.get("role") == "system" and "tools" in m for m in history)


def glm3_response(text: str, history: Sequence[dict], parse_tools: bool = True):
    """ChatGLM3's answer text (``metadata\\ncontent``, segments split by ``<|assistant|>``) as the
    official ``process_response`` reads it: returns ``(response, assistant_messages)``.

    Each segment becomes an assistant message ``{"role": "assistant", "metadata", "content"}``
    (content stripped, so it encodes back to the tokens the model wrote). The response is the last
    segment's: its text (``[[训练时间]]`` replaced) for empty metadata; with a tool name as metadata
    and tools in a system message of ``history``, ``{"name", "parameters"}`` (``{"name", "content"}``
    when the code is not a ``tool_call(...)``, or without tools, as officially). With
    ``parse_tools=False`` (a stream still growing) a tool call's response is its code so far.
    """
    response: str | dict = ""
    messages = []
    for segment in text.split("<|assistant|>"):
        metadata, content = segment.split("\n", 1) if "\n" in segment else ("", segment)
        content = content.strip()
        messages.append({"role": "assistant", "metadata": metadata, "content": content})
        if not metadata.strip():
            response = content.replace(*_TRAINING_TIME)
        elif not parse_tools:
            response = content
        else:
            name = metadata.strip()
            response = {"name": name, "content": content}
            if _has_tools(history):
                try:
                    response = {"name": name, "parameters": parse_tool_call(content)}
                except ToolCallError:
                    pass
    return response, messages


def _answer(text: str, mode: str, query: str, role: str, history: list, final: bool = True):
    """``(response, new_history)`` for the decoded answer ``text``."""
    if mode == "glm3":
        asked = [*history, {"role": role, "content": query}]
        response, messages = glm3_response(text, asked, parse_tools=final)
        return response, asked + messages
    response = clean_response(text, mode)
    return response, [*history, (query, response)]


def _settled(text: str, mode: str) -> str | None:
    """The part of a growing answer whose clean-up can no longer change, or ``None`` before any.

    Held back: an unfinished UTF-8 character, the start of ``[[训练时间]]``, ChatGLM-6B's last
    half-width punctuation (the next character decides it), and ChatGLM3's metadata line until its
    newline arrives. So every answer :func:`stream_chat` yields is a prefix of the next.
    """
    text = text.rstrip("\ufffd")
    marker = _TRAINING_TIME[0]
    for n in range(len(marker) - 1, 0, -1):
        if text.endswith(marker[:n]):
            text = text[:-n]
            break
    if mode == "glm" and text[-1:] in _PUNCTUATION:
        text = text[:-1]
    if mode == "glm3":
        last = text.rsplit("<|assistant|>", 1)[-1]
        if "\n" not in last:  # metadata still growing: answer or tool name?
            text = text[: len(text) - len(last)].removesuffix("<|assistant|>")
    return text or None


# --------------------------------------------------------------------------- chat


def _sampling(mode: str, do_sample: bool | None, top_p: float | None, temperature: float | None) -> dict:
    """The official chat's sampling settings for ``mode``, where the caller gave none."""
    official_top_p, official_temperature = CHAT_SAMPLING[mode]
    return {
        "do_sample": True if do_sample is None else do_sample,
        "top_p": official_top_p if top_p is None else top_p,
        "temperature": official_temperature if temperature is None else temperature,
    }


def chat(
    model,
    tokenizer,
    query: str,
    history=None,
    *,
    mode: str | None = None,
    role: str = "user",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    do_sample: bool | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    **gen_kwargs,
):
    """One chat turn, as the official ``model.chat``: returns ``(response, new_history)``.

    ``history`` (not modified) is ``(query, response)`` pairs for ``glm``/``glm2`` and role
    messages for ``glm3`` (see the module docstring); ``role`` is ChatGLM3's (``"observation"``
    passes a tool's result). ``response`` is a string, or for a ChatGLM3 tool call a dict
    ``{"name", "parameters"}``. ``do_sample``/``top_p``/``temperature`` default to the official
    chat's for the mode; extra keyword arguments go to ``model.generate``.
    """
    mode = chat_mode(model, tokenizer, mode)
    history = _check_history(history, mode)
    prompt = chat_prompt_ids(tokenizer, query, history, mode, role)
    sampling = _sampling(mode, do_sample, top_p, temperature)
    (new,) = generate_ids(model, tokenizer, [prompt], mode, max_new_tokens, **sampling, **gen_kwargs)
    return _answer(tokenizer.decode(new), mode, query, role, history)


class _ChatStreamer(TextIteratorStreamer):
    """transformers' ``TextIteratorStreamer`` for one chat answer: the prompt skipped, the stop ids
    never shown (ChatGLM3's ``<|user|>`` would decode as text)."""

    def __init__(self, tokenizer, stop_ids: Sequence[int]):
        super().__init__(tokenizer, skip_prompt=True)
        self.stop_ids = set(stop_ids)

    def put(self, value: torch.Tensor) -> None:
        if self.next_tokens_are_prompt:  # the prompt: TextStreamer skips it
            return super().put(value)
        kept = [t for t in value.reshape(-1).tolist() if t not in self.stop_ids]
        if kept:
            super().put(torch.tensor(kept))


class _StopRequest(StoppingCriteria):
    """Ends generation at the next token once ``requested`` is set (the caller stopped reading)."""

    requested = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.requested, dtype=torch.bool, device=input_ids.device)


def stream_chat(
    model,
    tokenizer,
    query: str,
    history=None,
    *,
    mode: str | None = None,
    role: str = "user",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    do_sample: bool | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    **gen_kwargs,
) -> Iterator[tuple[str | dict, list]]:
    """:func:`chat`, streamed: yields ``(response_so_far, history)`` as the answer grows.

    ``model.generate`` runs in a thread and feeds a ``TextIteratorStreamer``; each yielded response
    extends the previous one (text whose clean-up could still change is held back), and the last
    pair is exactly :func:`chat`'s for the same arguments (a ChatGLM3 tool call becomes its dict
    only then). Leaving the loop early (``break``, Ctrl-C) stops the generation at the next token.
    """
    mode = chat_mode(model, tokenizer, mode)
    history = _check_history(history, mode)
    prompt = chat_prompt_ids(tokenizer, query, history, mode, role)
    kwargs = generation_kwargs(
        model, tokenizer, mode, max_new_tokens, **_sampling(mode, do_sample, top_p, temperature), **gen_kwargs
    )
    stops = stop_token_ids(tokenizer, mode, model)
    streamer = _ChatStreamer(tokenizer, stops)
    stop = _StopRequest()
    criteria = StoppingCriteriaList([stop, *(kwargs.pop("stopping_criteria", None) or [])])
    ids, mask = left_pad([prompt], kwargs["pad_token_id"])
    device = model_device(model)
    result: dict = {}

    def generate() -> None:
        try:
            result["ids"] = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), streamer=streamer,
                stopping_criteria=criteria, **kwargs,
            )  # fmt: skip
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
            result["error"] = err
            streamer.end()  # wake the loop below

    thread = threading.Thread(target=generate, name="glmlab-stream-chat", daemon=True)
    thread.start()
    text, last = "", None
    try:
        for piece in streamer:
            text += piece
            settled = _settled(text, mode)
            if settled is None:
                continue
            update = _answer(settled, mode, query, role, history, final=False)
            if update != last:
                last = update
                yield update
    finally:
        stop.requested = True
        thread.join()
    if "error" in result:
        raise result["error"]
    new = cut_at_stop(result["ids"][0, len(prompt) :].tolist(), stops)
    final = _answer(tokenizer.decode(new), mode, query, role, history)
    if final != last:
        yield final


def system_history(system: str | None = None, tools: Sequence[dict] | None = None) -> list[dict]:
    """A ChatGLM3 history that opens with a system message: ``system`` (default: the official tool
    demo's text when only ``tools`` are given) carrying ``tools``; ``[]`` when neither is given."""
    if system is None and tools is None:
        return []
    message = {"role": "system", "content": DEFAULT_TOOL_SYSTEM if system is None else system}
    if tools is not None:
        message["tools"] = [dict(tool) for tool in tools]
    return [message]

"""Training data: reading samples, the per-generation training formats, batching.

One data path serves the three generations; what differs is the prompt format,
written out in :func:`encode_sample` per ``mode``:

* ``glm`` (ChatGLM-6B): ``source [gMASK] <sop> target <eop>``, the source being
  ``"[Round 1]\\n问：" + instruction + input + "\\n答："``; every position before
  ``<sop>`` is unsupervised (label -100).
* ``glm2`` (ChatGLM2-6B): ``[gMASK] sop source target </s>`` with
  ``"[Round 1]\\n\\n问：" + instruction + input + "\\n\\n答："``.
* ``glm3`` (ChatGLM3-6B): ``[gMASK] sop <|user|> \\n instruction+input
  <|assistant|> \\n output </s>``.

These are exactly the sequences the original ChatGLM-Finetuning code built
(``tests/fixtures/data_a.json`` pins them id by id), including its cuts: an
over-long source keeps its head and, for glm/glm2, its last 3/4 tokens (the
"答：" cue); the target is cut to what is left of ``max_len``.

Sample files
------------
JSON lines (one sample per line, blank lines ignored) or one JSON array of
samples. A sample is either

* an instruction sample ``{"instruction": str, "input": str, "output": str}``
  (all modes), or
* a ChatGLM3 conversation (``glm3`` only): ``{"conversations": [message, ...]}``
  (optionally with ``"tools": [tool, ...]``) or the bare list ``[message, ...]``, each
  message ``{"role": "system"|"user"|"assistant"|"observation", "content": str}``. A file
  whose whole content is one list of messages is read as one conversation.

Conversations are encoded the way the official ChatGLM3 ``finetune_demo`` does, each
message as the official tokenizer's ``build_single_message`` builds it:
``[gMASK] sop`` then, per message, ``<|role|> metadata \\n content``, then ``</s>``.
Every assistant message is supervised on the tokens after its role token (its metadata
line, its content) and on the token that follows it (the next message's role token, or
the final ``</s>``), so the model learns both what to say and when to stop (after a tool
call: ``<|observation|>``); system, user and observation messages and the
``<|assistant|>`` token itself are not supervised. An assistant message with
``"loss": false`` is not supervised either (as in the demo). A conversation is cut to
``max_len`` tokens (``max_src_len`` is not used for it); one that keeps no supervised
token after the cut is dropped and counted in ``skipped``.

Conversations with tools
------------------------
The official fine-tuning demo's tool format:

* the tool list, ``"tools": [{"name": ..., "description": ..., "parameters": ...}, ...]``,
  either at the top of the sample or on a system message (``{"role": "system",
  "content": ..., "tools": [...]}``, as ``build_chat_input`` takes it). It is written into
  the system message exactly as the official tokenizer does: ``content + "\\n" +
  json.dumps(tools, indent=4, ensure_ascii=False)``. A top-level list goes onto the
  conversation's first message when that is a system message, else onto a new first
  system message whose content is the demo's :data:`TOOLS_PROMPT`;
* a tool call is an assistant message whose ``metadata`` is the tool's name and whose
  content is the call, e.g. ``"```python\\ntool_call(part='火花塞')\\n```"`` (what
  ChatGLM3's ``chat`` parses back into ``{"name", "parameters"}``);
* the tool's answer is an ``observation`` message, directly after the call;
* the demo's shorthand ``{"role": "tool", "name": ..., "parameters": {...},
  "observation": ...}`` is accepted and expanded into that call and that observation
  (the call written as the demo writes it, ``tool_call(key=value, ...)`` in a python
  block; a non-string observation as JSON).

:func:`show_turns` lists a conversation's encoded turns with what the loss sees of each.

Every file is validated by :func:`read_samples` before any encoding (or model
loading) happens; problems raise :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from glmlab.constants import GLM3_ROLES as ROLES
from glmlab.constants import IGNORE_INDEX, MODES, TOOLS_PROMPT

logger = logging.getLogger(__name__)

# The fine-tuning demo's shorthand for a tool call and its observation (expanded when encoding).
TOOL_ROLE = "tool"
INSTRUCTION_FIELDS = ("instruction", "input", "output")

# Prompt templates of the original fine-tuning code (single round).
GLM_TEMPLATE = "[Round 1]\n问：{}\n答："
GLM2_TEMPLATE = "[Round 1]\n\n问：{}\n\n答："
# How many tokens at the end of an over-long glm/glm2 source are kept (the "答：" cue).
_SOURCE_TAIL = {"glm": 3, "glm2": 4, "glm3": 0}
# encode_file warns when more than this share of a file's sources is cut.
CUT_WARNING_SHARE = 0.05
# Positions of max_len that the format reserves besides source and target (the
# original used 3 for glm/glm2 and 6 for glm3, where the role tokens sit in the target).
_RESERVED = {"glm": 3, "glm2": 3, "glm3": 6}


class DataError(ValueError):
    """A sample file that cannot be used; the message names the file and line."""


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``glm``, ``glm2``, ``glm3``; raise ``ValueError`` otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    return mode


def check_lengths(mode: str, max_len: int, max_src_len: int) -> None:
    """Raise ``ValueError`` unless ``max_len``/``max_src_len`` leave room for a source and a target."""
    check_mode(mode)
    if max_src_len <= _SOURCE_TAIL[mode]:
        raise ValueError(f"max_src_len must be > {_SOURCE_TAIL[mode]} for mode {mode} (got {max_src_len})")
    if max_len - _RESERVED[mode] - max_src_len < 1:
        raise ValueError(
            f"max_len must be at least max_src_len + {_RESERVED[mode] + 1} for mode {mode} "
            f"(got max_len={max_len}, max_src_len={max_src_len})"
        )


# --------------------------------------------------------------------------- reading


def _validate(sample: Any, where: str, references: bool = False) -> dict:
    """Check one raw sample; return it in canonical form (conversations as ``{"conversations": [...]}``).

    With ``references`` (test files), ``output`` may also be a list of reference strings.
    """
    if isinstance(sample, list):
        sample = {"conversations": sample}
    if not isinstance(sample, dict):
        raise DataError(f"{where}: a sample must be a JSON object or a list of messages, got {type(sample).__name__}")
    if "conversations" in sample:
        _validate_conversation(sample, where)
        return sample
    if "tools" in sample:
        raise DataError(f"{where}: 'tools' belongs to a conversation sample ({{\"tools\": [...], \"conversations\": [...]}})")
    for key in INSTRUCTION_FIELDS:
        if key not in sample:
            raise DataError(f"{where}: missing the field '{key}' (a sample needs {', '.join(INSTRUCTION_FIELDS)})")
        value = sample[key]
        if references and key == "output" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            continue
        if not isinstance(value, str):
            expected = "a string or a non-empty list of strings" if references and key == "output" else "a string"
            raise DataError(f"{where}: field '{key}' must be {expected}, got {type(value).__name__}")
    return sample


def _tool_name(tool: Any) -> str | None:
    """The name of one tools entry: ``{"name": ...}`` or the OpenAI form ``{"function": {"name": ...}}``."""
    if not isinstance(tool, dict):
        return None
    name = tool.get("name")
    if name is None and isinstance(tool.get("function"), dict):
        name = tool["function"].get("name")
    return name if isinstance(name, str) and name.strip() else None


def _tool_names(tools: Any, where: str, owner: str) -> list[str]:
    """Validate a tools list (``owner`` says where it sits) and return its names."""
    if not isinstance(tools, list) or not tools:
        raise DataError(f"{where}: {owner} 'tools' must be a non-empty list of tool descriptions")
    names: list[str] = []
    for i, tool in enumerate(tools):
        name = _tool_name(tool)
        if name is None:
            raise DataError(f"{where}: {owner} tools entry {i} has no 'name' "
                            f"(a tool is an object {{\"name\": ..., \"description\": ..., \"parameters\": ...}})")
        if name in names:
            raise DataError(f"{where}: {owner} tools entries {names.index(name)} and {i} are both named {name!r}")
        names.append(name)
    return names


def _validate_conversation(sample: dict, where: str) -> None:
    """Check a conversation sample (roles, fields, tools, tool calls and observations) in place."""
    conv = sample["conversations"]
    if not isinstance(conv, list) or not conv:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of messages")
    tools: list[str] | None = None
    if "tools" in sample:
        tools = _tool_names(sample["tools"], where, "the sample's")
    roles = ROLES + (TOOL_ROLE,)
    previous = None  # the previous message, to place observations
    for i, msg in enumerate(conv):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: message {i} must be an object with 'role' and 'content'")
        if "role" not in msg:
            raise DataError(f"{where}: message {i} is missing the field 'role'")
        role = msg["role"]
        if not isinstance(role, str):
            raise DataError(f"{where}: message {i} field 'role' must be a string, got {type(role).__name__}")
        if role not in roles:
            raise DataError(f"{where}: message {i} has role {role!r}; expected one of {', '.join(roles)}")
        needed = ("name", "parameters", "observation") if role == TOOL_ROLE else ("content",)
        for key in needed:
            if key not in msg:
                raise DataError(f"{where}: message {i} is missing the field '{key}'")
        for key in ("content", "metadata") + (("name",) if role == TOOL_ROLE else ()):
            if key in msg and not isinstance(msg[key], str):
                raise DataError(f"{where}: message {i} field '{key}' must be a string, got {type(msg[key]).__name__}")
        if "loss" in msg and not isinstance(msg["loss"], bool):
            raise DataError(f"{where}: message {i} field 'loss' must be true or false, got {msg['loss']!r}")
        if "tools" in msg:
            if role != "system":
                raise DataError(f"{where}: message {i} ({role}) has 'tools'; only a system message carries them")
            if tools is not None:
                raise DataError(f"{where}: message {i} gives a second tools list; give the tools once "
                                f"(at the top of the sample or on one system message)")
            tools = _tool_names(msg["tools"], where, f"message {i}'s")
        if msg.get("metadata", "") and role != "assistant":
            raise DataError(f"{where}: message {i} ({role}) has 'metadata'; only an assistant tool call has one "
                            f"(the tool's name)")
        called = msg.get("metadata", "").strip() if role == "assistant" else None
        if role == TOOL_ROLE:
            called = msg["name"].strip()
            if not isinstance(msg["parameters"], dict):
                raise DataError(f"{where}: message {i} field 'parameters' must be an object of argument values, "
                                f"got {type(msg['parameters']).__name__}")
            bad = [key for key in msg["parameters"] if not key.isidentifier()]
            if bad:
                raise DataError(f"{where}: message {i} parameter {bad[0]!r} is not a Python name (the call is "
                                f"written tool_call(name=value, ...))")
        if called and tools is None:
            raise DataError(f"{where}: message {i} calls the tool {called!r}, but the sample has no tools list "
                            f"(give 'tools' at the top of the sample or on its system message)")
        if called and called not in tools:
            raise DataError(f"{where}: message {i} calls the tool {called!r}, which is not in the tools list "
                            f"({', '.join(tools)})")
        if role == "observation":
            after_call = previous is not None and previous["role"] == "assistant" and previous.get("metadata", "").strip()
            if not after_call:
                if previous is None:
                    what = "starts the conversation"
                elif previous["role"] == TOOL_ROLE:
                    what = f"comes after message {i - 1}, a 'tool' message that holds its own observation"
                else:
                    what = f"comes after message {i - 1} ({previous['role']}, not a tool call)"
                raise DataError(f"{where}: message {i} is an observation but {what}; an observation must directly "
                                f"follow an assistant tool call (an assistant message with 'metadata', the tool's name)")
        previous = msg


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _iter_array(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, element)`` for each element of a top-level JSON array, with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)

    def skip_ws(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
        yield line, value
        pos = skip_ws(pos)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < n and text[pos] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            raise DataError(f"{path}:{line}: malformed JSON array (expected ',' or ']')")


def _read_numbered(path: str | Path, references: bool = False) -> list[tuple[int, dict]]:
    """Read and validate a sample file; return ``(line, sample)`` pairs in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}:1: empty file, no samples")

    raw: list[tuple[int, Any]] = []
    whole: Any = None
    if text.lstrip().startswith("["):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as e:
            # JSON lines whose first line is a conversation list, or a broken JSON array?
            first = next(line for line in text.splitlines() if line.strip())
            try:
                json.loads(first)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    if isinstance(whole, list):
        first_line = text[: text.index("[")].count("\n") + 1
        if _is_message_list(whole):
            raw = [(first_line, whole)]  # the whole file is one conversation
        else:
            raw = list(_iter_array(text, path))
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    if not raw:
        raise DataError(f"{path}:1: no samples (empty JSON array)")
    return [(line, _validate(s, f"{path}:{line}", references)) for line, s in raw]


def read_samples(path: str | Path, references: bool = False) -> list[dict]:
    """Read a JSON-lines file (or one JSON array) of samples and validate every one.

    Returns the samples in file order; conversations come back as
    ``{"conversations": [...]}``. Raises :class:`DataError` (a ``ValueError``) whose
    one-line message names the file and line for malformed JSON, a missing or
    non-string field, a bad message role, or an empty file. Call it before loading a
    model so bad data fails fast. ``references=True`` is for test files: there ``output``
    may also be a list of reference strings (doc-to-question: several good questions).
    """
    return [s for _, s in _read_numbered(path, references)]


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedSample:
    """One sample in training format plus what the cut did to it.

    ``source_len``/``target_len`` are token counts before any cut (for glm3 they
    include the role and newline tokens; for a conversation ``source_len`` counts
    every unsupervised-message token and ``target_len`` the assistant messages').
    """

    input_ids: list[int]
    labels: list[int]
    source_len: int
    target_len: int
    source_truncated: bool = False
    target_truncated: bool = False

    @property
    def truncated(self) -> bool:
        """Whether the source or the target was cut (what ``--is_skip`` drops)."""
        return self.source_truncated or self.target_truncated

    @property
    def num_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def as_dict(self) -> dict[str, list[int]]:
        return {"input_ids": list(self.input_ids), "labels": list(self.labels)}


def _is_conversation(sample: dict) -> bool:
    return "conversations" in sample


def _canonical(sample: dict | list) -> dict:
    """Accept a bare list of messages as a conversation sample."""
    return {"conversations": sample} if isinstance(sample, list) else sample


def _text(sample: dict) -> str:
    return sample["instruction"] + sample["input"]


def _cut_source(tokens: list, keep: int, tail: int) -> tuple[list, bool]:
    """Keep the first ``keep - tail`` and last ``tail`` items when ``tokens`` is longer than ``keep``."""
    if len(tokens) <= keep:
        return tokens, False
    head = tokens[: keep - tail]
    return (head + tokens[-tail:] if tail else head), True


def _glm_source_tokens(sample: dict, tokenizer, mode: str, max_src_len: int) -> tuple[list, int, bool]:
    """The (possibly cut) source of an instruction sample: tokens for glm/glm2, ids for glm3."""
    if mode == "glm3":
        src = (
            [tokenizer.get_command("<|user|>")]
            + tokenizer.encode("\n", add_special_tokens=False)
            + tokenizer.encode(_text(sample), add_special_tokens=False)
        )
    else:
        template = GLM_TEMPLATE if mode == "glm" else GLM2_TEMPLATE
        src = tokenizer.tokenize(template.format(_text(sample)))
    cut, truncated = _cut_source(src, max_src_len, _SOURCE_TAIL[mode])
    return cut, len(src), truncated


def chat_messages(sample: dict | list) -> list[dict]:
    """A validated conversation as the message list ChatGLM3's ``build_chat_input`` takes as history.

    Each message is ``{"role", "content"}`` plus ``"metadata"`` (an assistant tool call's tool
    name), ``"tools"`` (on the system message that carries the tool list) and ``"loss"`` where
    the sample gives them. A top-level ``tools`` list is moved onto the first message when it is
    a system message, else onto a new system message with :data:`TOOLS_PROMPT`; the demo's
    ``tool`` shorthand becomes an assistant tool call and an observation.
    """
    sample = _canonical(sample)
    messages: list[dict] = []
    for msg in sample["conversations"]:
        if msg["role"] != TOOL_ROLE:
            messages.append(dict(msg))
            continue
        call = {"role": "assistant", "metadata": msg["name"], "content": _tool_call_code(msg["parameters"])}
        if "loss" in msg:
            call["loss"] = msg["loss"]
        observation = msg["observation"]
        if not isinstance(observation, str):
            observation = json.dumps(observation, ensure_ascii=False)
        messages += [call, {"role": "observation", "content": observation}]
    if "tools" in sample:
        if messages[0]["role"] == "system":
            messages[0]["tools"] = sample["tools"]
        else:
            messages.insert(0, {"role": "system", "content": TOOLS_PROMPT, "tools": sample["tools"]})
    return messages


def _tool_call_code(parameters: dict) -> str:
    """A tool call as the demo writes it for ChatGLM3: ``tool_call(key=value, ...)`` in a python block."""
    keywords = [ast.keyword(arg=key, value=ast.Constant(value)) for key, value in parameters.items()]
    call = ast.Call(func=ast.Name(id="tool_call"), args=[], keywords=keywords)
    return "```python\n" + ast.unparse(call) + "\n```"


def _message_ids(tokenizer, msg: dict) -> list[int]:
    """``<|role|> metadata \\n content`` exactly as ChatGLM3's ``build_single_message`` builds one message.

    A system message carrying ``tools`` gets them appended to its content as the official
    ``build_chat_input`` does: ``content + "\\n" + json.dumps(tools, indent=4, ensure_ascii=False)``.
    ``metadata`` and its newline are encoded as one text, as the official tokenizer does.
    """
    content = msg["content"]
    if msg["role"] == "system" and "tools" in msg:
        content = content + "\n" + json.dumps(msg["tools"], indent=4, ensure_ascii=False)
    return tokenizer.build_single_message(msg["role"], msg.get("metadata", ""), content)


def _supervised(msg: dict) -> bool:
    """Whether the loss falls on a message: assistant messages, unless they say ``"loss": false``."""
    return msg["role"] == "assistant" and msg.get("loss", True)


def _conversation_segments(sample: dict, tokenizer) -> list[tuple[str, list[int], bool]]:
    """``(role, ids, supervised)`` per piece of the full sequence: the ``[gMASK] sop`` head, each
    message, the final ``</s>``. ``supervised`` says whether the tokens *after* each of these ids
    are targets (the official demo's loss mask, before its shift by one)."""
    segments = [("prefix", [tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")], False)]
    for msg in chat_messages(sample):
        segments.append((msg["role"], _message_ids(tokenizer, msg), _supervised(msg)))
    segments.append(("end", [tokenizer.eos_token_id], False))
    return segments


def _encode_conversation(sample: dict, tokenizer, max_len: int) -> EncodedSample:
    input_ids: list[int] = []
    supervise: list[bool] = []  # whether the *next* position's token is predicted and supervised
    src_len = tgt_len = 0
    for role, ids, sup in _conversation_segments(sample, tokenizer):
        if role not in ("prefix", "end"):
            if sup:
                tgt_len += len(ids)
            else:
                src_len += len(ids)
        input_ids += ids
        supervise += [sup] * len(ids)
    # Official finetune_demo: the loss mask is shifted right by one, so an assistant
    # message supervises what follows its role token, and the token after it.
    supervise = [False] + supervise[:-1]
    labels = [tok if sup else IGNORE_INDEX for tok, sup in zip(input_ids, supervise)]
    truncated = len(input_ids) > max_len
    return EncodedSample(input_ids[:max_len], labels[:max_len], src_len, tgt_len, False, truncated)


def encode_sample(sample: dict, tokenizer, mode: str, max_len: int, max_src_len: int) -> EncodedSample:
    """Encode one validated sample into ``input_ids``/``labels`` in the ``mode``'s training format.

    See the module docstring for the formats. The returned :class:`EncodedSample`
    says whether the source or target was cut, so callers can apply ``is_skip``.
    """
    check_lengths(mode, max_len, max_src_len)
    sample = _canonical(sample)
    if _is_conversation(sample):
        if mode != "glm3":
            raise ValueError(f"conversation samples need mode glm3 (got mode {mode})")
        return _encode_conversation(sample, tokenizer, max_len)

    src, src_len, src_cut = _glm_source_tokens(sample, tokenizer, mode, max_src_len)
    max_tgt_len = max_len - _RESERVED[mode] - len(src)
    if mode == "glm3":
        tgt = (
            [tokenizer.get_command("<|assistant|>")]
            + tokenizer.encode("\n", add_special_tokens=False)
            + tokenizer.encode(sample["output"], add_special_tokens=False)
        )
    else:
        tgt = tokenizer.tokenize(sample["output"])
    tgt_len, tgt_cut = len(tgt), len(tgt) > max_tgt_len
    tgt = tgt[:max_tgt_len]

    if mode == "glm":
        # source [gMASK] <sop> target <eop>; supervised from <sop> on.
        input_ids = (
            tokenizer.convert_tokens_to_ids(src)
            + [tokenizer.gmask_token_id, tokenizer.bos_token_id]
            + tokenizer.convert_tokens_to_ids(tgt)
            + [tokenizer.eop_token_id]
        )
        context = len(src) + 1  # everything before <sop>
    else:
        # [gMASK] sop source target </s>; supervised after the source.
        if mode == "glm2":
            src, tgt = tokenizer.convert_tokens_to_ids(src), tokenizer.convert_tokens_to_ids(tgt)
        head = [tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")]
        input_ids = head + src + tgt + [tokenizer.eos_token_id]
        context = len(src) + 2
    labels = [IGNORE_INDEX] * context + input_ids[context:]
    return EncodedSample(input_ids, labels, src_len, tgt_len, src_cut, tgt_cut)


def encode_prompt(sample: dict, tokenizer, mode: str, max_src_len: int) -> list[int]:
    """The prompt ids of ``sample`` exactly as training built them, up to where generation starts.

    glm: ``source [gMASK] <sop>``; glm2: ``[gMASK] sop source``; glm3:
    ``[gMASK] sop <|user|> \\n text <|assistant|>``. The source is cut to
    ``max_src_len`` the same way as in training. For a conversation (glm3) the
    prompt is every message before its last assistant message (or every message,
    when it does not end with one) followed by ``<|assistant|>``; it is not cut.
    """
    check_mode(mode)
    sample = _canonical(sample)
    if _is_conversation(sample):
        if mode != "glm3":
            raise ValueError(f"conversation samples need mode glm3 (got mode {mode})")
        conv = chat_messages(sample)
        if conv[-1]["role"] == "assistant":
            conv = conv[:-1]
        ids = [tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")]
        for msg in conv:
            ids += _message_ids(tokenizer, msg)
        return ids + [tokenizer.get_command("<|assistant|>")]
    if max_src_len <= _SOURCE_TAIL[mode]:
        raise ValueError(f"max_src_len must be > {_SOURCE_TAIL[mode]} for mode {mode} (got {max_src_len})")
    src, _, _ = _glm_source_tokens(sample, tokenizer, mode, max_src_len)
    if mode == "glm":
        return tokenizer.convert_tokens_to_ids(src) + [tokenizer.gmask_token_id, tokenizer.bos_token_id]
    head = [tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")]
    if mode == "glm2":
        return head + tokenizer.convert_tokens_to_ids(src)
    return head + src + [tokenizer.get_command("<|assistant|>")]


# --------------------------------------------------------------------------- showing a conversation


@dataclass(frozen=True)
class TurnPiece:
    """A run of consecutive tokens of one encoded conversation that the loss treats alike.

    ``role`` is the message the tokens belong to (``prefix`` for ``[gMASK] sop``, ``end`` for
    the final ``</s>``), ``text`` the tokens decoded (special tokens by name) and
    ``supervised`` whether they are loss targets (label = the token, not -100).
    """

    role: str
    text: str
    supervised: bool
    num_tokens: int


def _piece_text(tokenizer, ids: list[int]) -> str:
    """Decode ``ids``, writing command tokens and ``</s>`` by name (``decode`` would drop some)."""
    specials = set(getattr(tokenizer, "command_ids", ())) | {tokenizer.eos_token_id}
    text, run = "", []
    for token in ids + [None]:
        if token is not None and token not in specials:
            run.append(token)
            continue
        if run:
            text += tokenizer.decode(run)
            run = []
        if token is not None:
            text += tokenizer.convert_ids_to_tokens([token])[0]
    return text


def show_turns(sample: dict | list, tokenizer, max_len: int = 1024) -> list[TurnPiece]:
    """A ChatGLM3 conversation as training encodes it (cut to ``max_len``), one row per run of tokens.

    Consecutive tokens of one message with the same label mask form one :class:`TurnPiece`, so
    a reader sees, message by message, which tokens the loss falls on: e.g. an assistant
    message's role token is context while its metadata line, content and the next role token
    are supervised. The sample is validated first (:class:`DataError` on a bad one); print the
    rows with :func:`format_turns`.
    """
    sample = _validate(sample, "sample")
    if not _is_conversation(sample):
        raise ValueError("show_turns shows ChatGLM3 conversations ({'conversations': [...]})")
    encoded = _encode_conversation(sample, tokenizer, max_len)
    owners = [role for role, ids, _ in _conversation_segments(sample, tokenizer) for _ in ids]
    pieces: list[TurnPiece] = []
    start = 0
    for end in range(1, len(encoded.input_ids) + 1):
        here = (owners[start], encoded.labels[start] != IGNORE_INDEX)
        if end < len(encoded.input_ids) and (owners[end], encoded.labels[end] != IGNORE_INDEX) == here:
            continue
        ids = encoded.input_ids[start:end]
        pieces.append(TurnPiece(here[0], _piece_text(tokenizer, ids), here[1], len(ids)))
        start = end
    return pieces


def format_turns(pieces: Sequence[TurnPiece], width: int | None = 100) -> str:
    """:func:`show_turns` rows as a plain-text table (newlines shown as ``\\n``; text cut to ``width``)."""
    lines = [f"{'role':<12} {'loss':<4} {'tokens':>6}  text"]
    for piece in pieces:
        text = piece.text.replace("\n", "\\n")
        if width is not None and len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"{piece.role:<12} {'yes' if piece.supervised else '-':<4} {piece.num_tokens:>6}  {text}")
    return "\n".join(lines)


def _has_empty_output(sample: dict) -> bool:
    if _is_conversation(sample):
        return any(m["role"] == "assistant" and not m["content"].strip() for m in chat_messages(sample))
    return not sample["output"].strip()


@dataclass
class EncodedFile:
    """A sample file in training format, with the statistics of how it was built.

    ``samples`` are the kept samples in file order. The per-sample lists
    (``source_lengths``, ``target_lengths``: token counts before any cut;
    ``lengths``: final ``input_ids`` length) cover every sample read, kept or not,
    so a notebook can plot them to choose ``max_len``/``max_src_len``.
    """

    path: str
    mode: str
    max_len: int
    max_src_len: int
    is_skip: bool
    samples: list[dict] = field(default_factory=list)
    skipped: int = 0
    empty_outputs: int = 0
    source_truncated: int = 0
    target_truncated: int = 0
    num_read: int = 0
    source_lengths: list[int] = field(default_factory=list)
    target_lengths: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skip_message(self) -> str:
        """The line the original training code printed."""
        return f"the number of skipping data is {self.skipped}"

    @property
    def supervised_tokens(self) -> int:
        return sum(sum(1 for x in s["labels"] if x != IGNORE_INDEX) for s in self.samples)

    def cut_warning(self) -> str | None:
        """A warning line when more than :data:`CUT_WARNING_SHARE` of the sources were cut, else ``None``."""
        if not self.num_read or self.source_truncated <= CUT_WARNING_SHARE * self.num_read:
            return None
        longest = max(self.source_lengths)
        return (f"warning: {self.path}: {self.source_truncated} of {self.num_read} sources "
                f"({100 * self.source_truncated / self.num_read:.0f}%) are longer than --max_src_len "
                f"{self.max_src_len} and were cut, losing the end of their input (the longest is {longest} "
                f"tokens); raise --max_src_len (and --max_len) to keep them whole")

    def summary(self) -> str:
        """A one-line account of what was read, kept, cut and skipped."""
        return (
            f"{self.path}: read {self.num_read}, kept {len(self.samples)}, skipped {self.skipped}, "
            f"source cut {self.source_truncated}, target cut {self.target_truncated}, "
            f"empty outputs {self.empty_outputs} (mode {self.mode}, max_len {self.max_len}, "
            f"max_src_len {self.max_src_len}, is_skip {self.is_skip})"
        )


def encode_file(
    path: str | Path,
    tokenizer,
    mode: str,
    max_len: int,
    max_src_len: int,
    is_skip: bool = False,
    verbose: bool = True,
) -> EncodedFile:
    """Read, validate and encode a sample file for training.

    With ``is_skip`` every sample whose source or target was cut is dropped and
    counted in ``skipped``. Samples with an empty output are kept (they still teach
    the model to stop) and counted in ``empty_outputs``. With ``verbose`` prints
    the original's ``the number of skipping data is N`` line, plus a warning when
    some outputs are empty and one when more than :data:`CUT_WARNING_SHARE` of the sources
    were cut (the cut keeps the instruction and drops the end of the input: often the very
    text the answer must come from).
    """
    check_lengths(mode, max_len, max_src_len)
    numbered = _read_numbered(path)
    if mode != "glm3":
        for line, s in numbered:
            if _is_conversation(s):
                raise DataError(f"{path}:{line}: conversation samples need mode glm3 (got mode {mode})")
    out = EncodedFile(str(path), mode, max_len, max_src_len, is_skip, num_read=len(numbered))
    for line, sample in numbered:
        enc = encode_sample(sample, tokenizer, mode, max_len, max_src_len)
        out.source_lengths.append(enc.source_len)
        out.target_lengths.append(enc.target_len)
        out.lengths.append(len(enc.input_ids))
        out.source_truncated += enc.source_truncated
        out.target_truncated += enc.target_truncated
        if _has_empty_output(sample):
            out.empty_outputs += 1
        if (is_skip and enc.truncated) or enc.num_supervised == 0:
            if enc.num_supervised == 0:
                logger.warning("%s:%d: no supervised token left after the cut to max_len=%d; dropped",
                               path, line, max_len)
            out.skipped += 1
            continue
        out.samples.append(enc.as_dict())
    logger.info(out.summary())
    if verbose:
        print(out.skip_message)
        if out.empty_outputs:
            print(f"the number of samples with an empty output is {out.empty_outputs}")
        warning = out.cut_warning()
        if warning:
            print(warning)
    return out


# --------------------------------------------------------------------------- batching


class EncodedDataset(Dataset):
    """A torch ``Dataset`` over encoded samples (``{"input_ids", "labels"}`` dicts).

    Items are LongTensors, made once here rather than in every batch, so the
    collator's work in the training loop is a single padding call per field.
    """

    def __init__(self, samples: EncodedFile | Sequence[dict]):
        self.encoded = samples if isinstance(samples, EncodedFile) else None
        rows = samples.samples if isinstance(samples, EncodedFile) else samples
        self.samples = [{key: torch.as_tensor(row[key], dtype=torch.long) for key in ("input_ids", "labels")} for row in rows]

    @classmethod
    def from_file(cls, path, tokenizer, mode: str, max_len: int, max_src_len: int, is_skip: bool = False, **kw):
        """Encode ``path`` with :func:`encode_file` and wrap the result."""
        return cls(encode_file(path, tokenizer, mode, max_len, max_src_len, is_skip, **kw))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


class DataCollator:
    """Pads a list of encoded samples to the batch's longest row, on the right.

    Returns LongTensors ``input_ids`` (padded with ``pad_token_id``), ``labels``
    (padded with -100) and ``attention_mask`` (1 on real tokens, 0 on padding),
    each ``(B, T)``.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id must be an int (the tokenizer's pad_token_id)")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        ids = [torch.as_tensor(s["input_ids"], dtype=torch.long) for s in batch]
        labels = [torch.as_tensor(s["labels"], dtype=torch.long) for s in batch]
        for i, (x, y) in enumerate(zip(ids, labels)):
            if len(x) != len(y):
                raise ValueError(f"sample {i}: {len(x)} input_ids but {len(y)} labels")
        input_ids = pad_sequence(ids, batch_first=True, padding_value=self.pad_token_id)  # (B, T)
        labels_t = pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)  # (B, T)
        attention_mask = pad_sequence([torch.ones_like(x) for x in ids], batch_first=True)  # (B, T)
        if self.pad_to_multiple_of:
            extra = -input_ids.shape[1] % self.pad_to_multiple_of
            input_ids = F.pad(input_ids, (0, extra), value=self.pad_token_id)
            labels_t = F.pad(labels_t, (0, extra), value=IGNORE_INDEX)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
        return {"input_ids": input_ids, "labels": labels_t, "attention_mask": attention_mask}

"""Predict a test file with a base model plus any training output, or chat with it.

File mode::

    python -m glmlab.predict --model_name_or_path BASE --checkpoint OUT/epoch-1-step-45 \\
        --test_path data/spo_test.jsonl --output_path preds.jsonl

builds each sample's prompt exactly as training did (``glmlab.data.encode_prompt``),
generates in left-padded batches, writes one JSON line per sample (its fields plus
``prediction``) and prints a score: triple F1 (the original project's mean
per-sample F1, plus micro P/R/F1) when the references are ``head_relation_tail``
lines, ROUGE-1/2/L and BLEU-4 as THUDM's official ChatGLM evaluation computes them
(jieba + rouge-chinese, nltk) when they are lists of questions (doc-to-question), or as
``--metric`` says.

Chat mode (all three generations)::

    python -m glmlab.predict --checkpoint DIR --chat
    python -m glmlab.predict --checkpoint DIR --chat --system "..." --tools tools.json   # ChatGLM3

reads one query per line from stdin and streams each answer token by token, in the
official chat format of the model's generation, keeping the history: ``clear`` starts over,
``exit`` or end of input (Ctrl-D) leaves, Ctrl-C too. A ChatGLM3 session may open with a
system prompt and a tools file (a JSON list of tool definitions, as the official tool demo
passes them); after a tool call the next line is the tool's result (an ``observation``).
:func:`glmlab.chat.chat` and :func:`glmlab.chat.stream_chat` do the same from Python.

Every path and flag is checked before a model is loaded; a problem is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from glmlab.chat import chat, chat_mode, stream_chat, system_history
from glmlab.constants import PRECISION_ALIASES, PRECISIONS
from glmlab.checkpoint import CheckpointInfo, checkpoint_mode, describe_checkpoint
from glmlab.generation import DEFAULT_DO_SAMPLE, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, generate_batch
from glmlab.inference import load_for_inference
from glmlab.loading import CheckpointError
from glmlab.json_files import write_jsonl
from glmlab.metrics import generation_scores, grounded_triples, looks_like_triples, triple_f1
from glmlab.parsers import OneLineParser

__all__ = [
    "build_parser",
    "chat",
    "chat_loop",
    "main",
    "parse_args",
    "predict_samples",
    "read_tools",
    "record_of",
    "reference_of",
    "score",
]

PROG = "glmlab.predict"
# glmlab.train's defaults; a checkpoint's glmlab_checkpoint.json records the values it was trained with.
DEFAULT_MAX_LEN = 1024
DEFAULT_MAX_SRC_LEN = 256


class UsageError(ValueError):
    """A bad flag or path, found before any model is loaded."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags (names as in the original ChatGLM fine-tuning scripts where they exist)."""
    p = OneLineParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_name_or_path", help="base model folder (default: the base recorded in the checkpoint)")
    p.add_argument("--checkpoint", help="training output: all/freeze/lora/ptuning checkpoint folder (or a model folder)")
    p.add_argument("--test_path", help="JSON-lines test file (instruction/input/output samples or glm3 conversations)")
    p.add_argument("--output_path", help="where to write the predictions (JSON lines)")
    p.add_argument("--mode", choices=["glm", "glm2", "glm3"], help="model generation (default: recorded / inferred)")
    p.add_argument("--max_len", type=int, help=f"training max_len; with max_src_len it gives the default max_new_tokens "
                   f"(default: the checkpoint's training value, else {DEFAULT_MAX_LEN})")
    p.add_argument("--max_src_len", type=int, help=f"prompts are cut to this many tokens, as in training "
                   f"(default: the checkpoint's training value, else {DEFAULT_MAX_SRC_LEN})")
    p.add_argument("--max_new_tokens", type=int, help="default: max_len - max_src_len - 3 (as the original scripts)")
    p.add_argument("--top_p", type=float, default=DEFAULT_TOP_P, help="nucleus sampling (only with --do_sample)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature (only with --do_sample)")
    p.add_argument("--do_sample", action="store_true", default=DEFAULT_DO_SAMPLE, help="sample instead of greedy decoding")
    p.add_argument("--batch_size", type=int, default=8, help="prompts generated together (left-padded)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (matters with --do_sample)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or a bare GPU number N")
    p.add_argument("--dtype", default="fp32", type=str.lower, choices=PRECISIONS + tuple(PRECISION_ALIASES),
                   help="weights dtype: fp32, bf16 or fp16 (the long names float32, bfloat16, float16 too)")
    p.add_argument("--quantization_bit", type=int, choices=[0, 4, 8],
                   help="quantize the (base) model to 4 or 8 bits as it loads, 0: not (default: as the checkpoint "
                        "was trained; a THUDM int4/int8 folder loads as it is)")
    p.add_argument("--metric", default="auto", choices=["auto", "f1", "rouge", "none"],
                   help="score to print (auto: chosen by the references)")
    p.add_argument("--limit", type=int, help="predict only the first N samples")
    p.add_argument("--grounded", nargs="?", const="decode", choices=["decode", "filter"],
                   help="triple extraction: write only triples whose head and tail occur in the sample's input (an "
                        "extracted entity is a span of its record). decode (the default, chosen on validation: "
                        "benchmarks/grounded.py --decode): greedy search that lets the model write only such triples, "
                        "each word it would write that the record does not hold replaced by its best choice among "
                        "what the record says; filter: generate freely, then drop the other triples. The generated "
                        "text is kept as raw_prediction, and the score is the kept triples'")
    p.add_argument("--chat", action="store_true", help="interactive chat on stdin instead of a test file")
    p.add_argument("--system", help="--chat, ChatGLM3: the system prompt that opens the conversation")
    p.add_argument("--tools", help="--chat, ChatGLM3: JSON file with a list of tool definitions the model may call")
    return p


def _device(value: str) -> str:
    import torch

    device = f"cuda:{value}" if value.isdigit() else value
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {value!r} is not a device (cpu, cuda, cuda:N or N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {value}: CUDA is not available on this machine")
    return device


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, CheckpointInfo]:
    """Parse and validate the flags; return them and what the checkpoint holds. Loads no model.

    Raises :class:`UsageError` (or :class:`CheckpointError`) with a one-line message.
    ``args.mode``, ``args.device``, ``args.max_len`` / ``args.max_src_len`` (default: the
    values the checkpoint was trained with) and ``args.max_new_tokens`` come back resolved, and
    ``args.samples`` holds the validated test samples (file mode).
    """
    from glmlab.data import DataError, check_lengths, read_samples

    args = build_parser().parse_args(argv)
    if args.checkpoint is None and args.model_name_or_path is None:
        raise UsageError("pass --checkpoint and/or --model_name_or_path")
    for flag in ("checkpoint", "model_name_or_path"):
        value = getattr(args, flag)
        if value is not None and not Path(value).is_dir():
            raise UsageError(f"--{flag} {value}: folder not found")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1 (got {args.batch_size})")
    if not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top_p must be in (0, 1] (got {args.top_p})")
    if args.temperature <= 0:
        raise UsageError(f"--temperature must be > 0 (got {args.temperature})")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1 (got {args.limit})")

    if args.chat:
        if args.test_path or args.output_path:
            raise UsageError("--chat reads stdin; do not pass --test_path / --output_path with it")
        if args.tools is not None:
            args.tools = read_tools(args.tools)
    elif args.system is not None or args.tools is not None:
        raise UsageError("--system and --tools go with --chat")
    else:
        if not args.test_path or not args.output_path:
            raise UsageError("pass --test_path and --output_path (or --chat)")
        test, out = Path(args.test_path), Path(args.output_path)
        if not test.is_file():
            raise UsageError(f"--test_path {test}: file not found")
        if out.is_dir():
            raise UsageError(f"--output_path {out} is a folder; give a file name")
        if out.exists() and out.resolve() == test.resolve():
            raise UsageError("--output_path must not be the test file")
        if out.parent != Path("") and out.parent.exists() and not out.parent.is_dir():
            raise UsageError(f"--output_path {out}: {out.parent} is not a folder")

    if args.checkpoint is not None:
        info = describe_checkpoint(args.checkpoint, args.model_name_or_path)
    else:
        info = describe_checkpoint(args.model_name_or_path)
        if info.needs_base:
            raise UsageError(
                f"--model_name_or_path {args.model_name_or_path} is a {info.kind} checkpoint; pass it as --checkpoint"
            )
    args.mode = checkpoint_mode(info, args.mode)
    trained = info.meta.get("args") if isinstance(info.meta.get("args"), dict) else {}
    if args.max_len is None:
        args.max_len = int(trained.get("max_len", DEFAULT_MAX_LEN))
    if args.max_src_len is None:
        args.max_src_len = int(trained.get("max_src_len", DEFAULT_MAX_SRC_LEN))
    if args.chat and (args.system is not None or args.tools is not None) and args.mode != "glm3":
        raise UsageError(f"--system and --tools need a ChatGLM3 model (mode glm3); this one is {args.mode}")

    if not args.chat:
        try:
            check_lengths(args.mode, args.max_len, args.max_src_len)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if args.max_new_tokens is None:
        args.max_new_tokens = args.max_len - args.max_src_len - 3
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be >= 1 (got {args.max_new_tokens})")
    args.device = _device(args.device)

    args.samples = None
    if not args.chat:
        try:
            args.samples = read_samples(args.test_path, references=True)
        except DataError as err:
            raise UsageError(str(err)) from None
        if args.limit is not None:
            args.samples = args.samples[: args.limit]
        if any("conversations" in s for s in args.samples) and args.mode != "glm3":
            raise UsageError(f"{args.test_path}: conversation samples need a ChatGLM3 model; this one is {args.mode}")
    if args.grounded and (args.chat or not looks_like_triples([reference_of(s) for s in args.samples])):
        raise UsageError("--grounded keeps triples found in the input: it needs a --test_path of triple extraction "
                         f"(references of head_relation_tail lines){'' if args.chat else f'; {args.test_path} is not one'}")
    if args.grounded == "decode" and args.do_sample:
        raise UsageError("--grounded decode is greedy search: it cannot be combined with --do_sample "
                         "(use --grounded filter to ground sampled answers)")
    return args, info


def read_tools(path: str | Path) -> list[dict]:
    """The tool definitions of a ``--tools`` file: a JSON list of objects, each with a ``"name"``
    (as the official ChatGLM3 tool demo writes them). Raises :class:`UsageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--tools {path}: file not found")
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"--tools {path}: not valid JSON ({err})") from None
    if not isinstance(tools, list):
        raise UsageError(f"--tools {path}: expected a JSON list of tool definitions, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise UsageError(f'--tools {path}: tool {i} is not an object with a "name"')
    return tools


def reference_of(sample: dict):
    """The expected answer of a sample: ``output`` (a string, or a list of acceptable ones), or a
    conversation's final assistant message; ``None`` when the sample has none."""
    if "conversations" in sample:
        last = sample["conversations"][-1]
        return last["content"] if last["role"] == "assistant" else None
    return sample.get("output")


def record_of(sample: dict) -> str:
    """The text a sample's answer is extracted from: its ``input``, or a conversation's last user message."""
    if "conversations" in sample:
        return next((m["content"] for m in reversed(sample["conversations"]) if m["role"] == "user"), "")
    return sample.get("input", "")


def predict_samples(
    model,
    tokenizer,
    mode: str,
    samples: Sequence[dict],
    max_src_len: int,
    batch_size: int = 8,
    progress: TextIO | None = None,
    grounded_decoding: bool = False,
    **gen_kwargs,
) -> list[str]:
    """Generate a prediction for every sample, ``batch_size`` prompts at a time; returned in file order.

    Greedy search (the default) goes through :func:`glmlab.generation.generate_ids_pruned`: batches of
    prompts of similar length, each row dropped from its batch when its answer ends. Sampling keeps
    :func:`glmlab.generation.generate_batch` in file order (its random draws depend on the batch).
    ``grounded_decoding`` (greedy only) lets each answer name only what its record (:func:`record_of`) says:
    :class:`glmlab.generation.GroundedDecoding`.
    """
    from glmlab.data import encode_prompt
    from glmlab.generation import decode_answers, generate_ids_pruned

    prompts = [encode_prompt(s, tokenizer, mode, max_src_len) for s in samples]
    predictions: list[str] = []
    greedy = not gen_kwargs.get("do_sample", DEFAULT_DO_SAMPLE) and set(gen_kwargs) <= {"do_sample", "max_new_tokens",
                                                                                         "top_p", "temperature"}
    if grounded_decoding and not greedy:
        raise ValueError("grounded decoding is greedy search: it takes no sampling or other generate arguments")
    if greedy:
        if progress is not None:
            how = "greedy, grounded in each record" if grounded_decoding else "greedy"
            print(f"{PROG}: {len(prompts)} samples, {how}, batches of {batch_size}", file=progress, flush=True)
        new_ids = generate_ids_pruned(model, tokenizer, prompts, mode, gen_kwargs.get("max_new_tokens", 256),
                                      batch_size=batch_size,
                                      grounded_in=[record_of(s) for s in samples] if grounded_decoding else None)
        return decode_answers(tokenizer, new_ids, mode)
    for start in range(0, len(prompts), batch_size):
        predictions += generate_batch(model, tokenizer, prompts[start : start + batch_size], mode, **gen_kwargs)
        if progress is not None:
            print(f"{PROG}: {len(predictions)}/{len(prompts)} samples", file=progress, flush=True)
    return predictions


def score(samples: Sequence[dict], predictions: Sequence[str], metric: str = "auto") -> dict | None:
    """Score predictions against the samples' references.

    ``metric``: ``f1`` (triples), ``rouge`` (ROUGE-1/2/L and BLEU-4 as the official ChatGLM
    evaluation computes them, in [0, 1]: keys ``rouge-1``, ``rouge-2``, ``rouge-l``, ``bleu-4``,
    ``n_samples``; see :func:`glmlab.metrics.generation_scores`), ``none``,
    or ``auto``: ``f1`` when every reference is triples, ``rouge`` when references are
    lists of strings (doc-to-question), otherwise nothing. Returns ``None`` when there
    is nothing to score.
    """
    refs = [reference_of(s) for s in samples]
    if metric == "none" or not refs or any(r is None for r in refs):
        return None
    if metric == "auto":
        if looks_like_triples(refs):
            metric = "f1"
        elif any(isinstance(r, list) for r in refs):
            metric = "rouge"
        else:
            return None
    if metric == "f1":
        if not all(isinstance(r, str) for r in refs):
            raise ValueError("triple F1 needs string references")
        return {"metric": "triple_f1", **triple_f1(predictions, refs).as_dict()}
    return {"metric": "rouge", **generation_scores(predictions, refs)}


def _stream_answer(model, tokenizer, query: str, history: list, mode: str, role: str, stdout: TextIO, gen_kwargs):
    """Stream one answer to ``stdout`` as it grows; return ``(response, new_history)``."""
    printed, response, new_history = "", "", history
    stream = stream_chat(model, tokenizer, query, history, mode=mode, role=role, **gen_kwargs)
    with contextlib.closing(stream):  # Ctrl-C stops the generation thread at once
        for response, new_history in stream:
            if isinstance(response, str) and response.startswith(printed):
                print(response[len(printed) :], end="", file=stdout, flush=True)
                printed = response
    if isinstance(response, dict):  # a ChatGLM3 tool call: its code was streamed, here is what it calls
        print(("\n" if printed else "") + "[tool call] " + json.dumps(response, ensure_ascii=False), file=stdout)
    elif response != printed:  # not expected (each streamed answer extends the last), but never hide the answer
        print(f"\nChatGLM：{response}", file=stdout)
    else:
        print(file=stdout)
    stdout.flush()
    return response, new_history


def chat_loop(
    model,
    tokenizer,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    *,
    mode: str | None = None,
    system: str | None = None,
    tools: list[dict] | None = None,
    **gen_kwargs,
) -> list:
    """Interactive chat: one query per line, each answer streamed as it is generated, history kept.

    ``clear`` starts over (the system prompt and tools stay), ``exit`` or end of input (Ctrl-D)
    leaves, so does Ctrl-C (generation stops at the next token). ``mode`` defaults to the
    tokenizer's generation. ChatGLM3 only: ``system`` / ``tools`` open the history with a system
    message; after a tool call the next line is the tool's result (role ``observation``).
    Extra keyword arguments go to :func:`glmlab.chat.stream_chat`. Returns the final history.
    """
    stdin = sys.stdin if stdin is None else stdin  # read at call time, so a replaced sys.stdin is honoured
    stdout = sys.stdout if stdout is None else stdout
    mode = chat_mode(model, tokenizer, mode)
    if mode != "glm3" and (system is not None or tools is not None):
        raise ValueError(f"a system prompt and tools need a ChatGLM3 model (mode glm3); this one is {mode}")
    start = system_history(system, tools)
    history, role = list(start), "user"
    print(f"Chat with the model ({mode}). clear: start over; exit or Ctrl-D: quit.", file=stdout, flush=True)
    try:
        while True:
            print("观察：" if role == "observation" else "用户：", end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                break
            query = line.rstrip("\r\n")
            if query.strip() == "exit":
                break
            if query.strip() == "clear":
                history, role = list(start), "user"
                print("(history cleared)", file=stdout, flush=True)
                continue
            if not query.strip():
                continue
            print("ChatGLM：", end="", file=stdout, flush=True)
            response, history = _stream_answer(model, tokenizer, query, history, mode, role, stdout, gen_kwargs)
            role = "observation" if isinstance(response, dict) and "parameters" in response else "user"
    except KeyboardInterrupt:
        pass
    print(file=stdout, flush=True)
    return history


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m glmlab.predict``."""
    try:
        args, info = parse_args(argv)
    except (UsageError, CheckpointError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2

    import torch

    torch.manual_seed(args.seed)
    try:
        model, tokenizer, mode = load_for_inference(
            info.path, base=args.model_name_or_path, dtype=args.dtype, device=args.device, mode=args.mode,
            quantization_bit=args.quantization_bit,
        )
    except CheckpointError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    gen = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "top_p": args.top_p,
           "temperature": args.temperature}  # fmt: skip

    if args.chat:
        chat_loop(model, tokenizer, mode=mode, system=args.system, tools=args.tools, **gen)
        return 0

    predictions = predict_samples(
        model, tokenizer, mode, args.samples, args.max_src_len, args.batch_size, progress=sys.stderr,
        grounded_decoding=args.grounded == "decode", **gen
    )
    raw = predictions
    if args.grounded:
        predictions = [grounded_triples(p, record_of(s)) for s, p in zip(args.samples, raw)]
    write_jsonl(Path(args.output_path), [{**s, "prediction": p, **({"raw_prediction": r} if args.grounded else {})}
                                         for s, p, r in zip(args.samples, predictions, raw)])
    print(f"{PROG}: wrote {len(predictions)} predictions to {args.output_path}", file=sys.stderr)
    result = score(args.samples, predictions, args.metric)
    if result is not None:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

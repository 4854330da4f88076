"""ChatGLM3 conversations with tools (glmlab.data) against sequences built by hand from the official rules.

The rules, read from THUDM's code: ``tokenization_chatglm.py`` (chatglm3-6b) builds a message as
``[<|role|>] + sp.encode(metadata + "\\n") + sp.encode(content)`` and writes a system message's
tools as ``content + "\\n" + json.dumps(tools, indent=4, ensure_ascii=False)``; the fine-tuning demo
(``finetune_chatmodel_demo/preprocess_utils.py``) starts with ``[gMASK] sop``, ends with ``</s>``,
marks every token of a supervised message (assistant) and shifts the mask right by one, so a label
is the token itself when the token *before* it belongs to an assistant message. Its tool list with
no system message becomes the system prompt "Answer the following questions ... tools:\\n" + JSON.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_train, train_argv

from glmlab.args import ArgsError, parse_args
from glmlab.data import (
    IGNORE_INDEX,
    DataError,
    encode_file,
    encode_prompt,
    encode_sample,
    format_turns,
    read_samples,
    show_turns,
)

FIXTURES = Path(__file__).parent / "fixtures"
TOOLS_FILE = REPO / "data" / "tools3_train.jsonl"
TOOLS = [
    {
        "name": "query_part_price",
        "description": "查询配件的价格（元）",
        "parameters": {"type": "object", "properties": {"part": {"type": "string"}}},
    },
    {"name": "lookup_fault_code", "description": "查询故障码的含义"},
]
CALL = "```python\ntool_call(part='火花塞')\n```"
OBSERVATION = '{"part": "火花塞", "price": 45}'
CONVERSATION = [
    {"role": "user", "content": "火花塞多少钱？"},
    {"role": "assistant", "metadata": "query_part_price", "content": CALL},
    {"role": "observation", "content": OBSERVATION},
    {"role": "assistant", "content": "火花塞的价格是45元。"},
]
DEMO_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:\n"


@pytest.fixture(scope="module", params=["fixture", "tiny"])
def tok(request, tiny_model, tmp_path_factory):
    """ChatGLM3 tokenizers: the tests' fixture vocabulary (no newline piece) and a tiny model's (one)."""
    import glmlab
    from glmlab.tokenization import ChatGLM3Tokenizer

    if request.param == "tiny":
        return glmlab.load_tokenizer(str(tiny_model("glm3")), "glm3")
    folder = tmp_path_factory.mktemp("sp3")
    shutil.copy(FIXTURES / "sp_v2.model", folder / "tokenizer.model")
    return ChatGLM3Tokenizer.from_pretrained(str(folder))


def by_hand(tok, messages: list[tuple[str, str, str]]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` from ``(role, metadata, content)`` triples, by the official rules."""
    cmd = tok.get_command
    ids, loss = [cmd("[gMASK]"), cmd("sop")], [False, False]
    for role, metadata, content in messages:
        message = (
            [cmd(f"<|{role}|>")]
            + tok.sp_model.encode(metadata + "\n")
            + tok.sp_model.encode(content)
        )
        ids += message
        loss += [role == "assistant"] * len(message)
    ids.append(tok.eos_token_id)
    loss.append(False)
    shifted = [False] + loss[:-1]
    return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, shifted)]


def test_tool_conversation_matches_the_official_rules(tok):
    system = DEMO_PROMPT + json.dumps(TOOLS, indent=4, ensure_ascii=False)
    expected_ids, expected_labels = by_hand(tok, [
        ("system", "", system),
        ("user", "", "火花塞多少钱？"),
        ("assistant", "query_part_price", CALL),
        ("observation", "", OBSERVATION),
        ("assistant", "", "火花塞的价格是45元。"),
    ])  # fmt: skip
    enc = encode_sample(
        {"tools": TOOLS, "conversations": CONVERSATION}, tok, "glm3", 4096, 256
    )
    assert enc.input_ids == expected_ids
    assert enc.labels == expected_labels
    # What is supervised, spelled out: the call (after <|assistant|>) and the <|observation|> that ends it,
    # the answer and the </s>; never the <|assistant|> tokens, the system, user or observation text.
    cmd = tok.get_command
    supervised = [t for t in enc.labels if t != IGNORE_INDEX]
    call = (
        tok.sp_model.encode("query_part_price\n")
        + tok.sp_model.encode(CALL)
        + [cmd("<|observation|>")]
    )
    answer = (
        tok.sp_model.encode("\n")
        + tok.sp_model.encode("火花塞的价格是45元。")
        + [tok.eos_token_id]
    )
    assert supervised == call + answer
    assert cmd("<|assistant|>") not in supervised


def test_tools_on_the_system_message_and_at_the_top_are_one_format(tok):
    system = {"role": "system", "content": "你是汽修店的助手。"}
    on_system = encode_sample(
        {"conversations": [{**system, "tools": TOOLS}] + CONVERSATION},
        tok,
        "glm3",
        4096,
        256,
    )
    at_top = encode_sample(
        {"tools": TOOLS, "conversations": [system] + CONVERSATION},
        tok,
        "glm3",
        4096,
        256,
    )
    content = "你是汽修店的助手。\n" + json.dumps(TOOLS, indent=4, ensure_ascii=False)
    expected = by_hand(tok, [
        ("system", "", content),
        ("user", "", "火花塞多少钱？"),
        ("assistant", "query_part_price", CALL),
        ("observation", "", OBSERVATION),
        ("assistant", "", "火花塞的价格是45元。"),
    ])  # fmt: skip
    assert (on_system.input_ids, on_system.labels) == expected
    assert (at_top.input_ids, at_top.labels) == expected


def test_training_prompt_is_the_official_chat_input(tok):
    """Up to an assistant turn, training sees what ChatGLM3's build_chat_input gives the model at chat time."""
    history = [
        {"role": "system", "content": "你是汽修店的助手。", "tools": TOOLS}
    ] + CONVERSATION[:2]
    sample = {"conversations": history + CONVERSATION[2:]}
    official = tok.build_chat_input(OBSERVATION, history=history, role="observation")[
        "input_ids"
    ][0].tolist()
    assert encode_prompt(sample, tok, "glm3", 256) == official
    # and it is the head of the training sequence
    assert (
        encode_sample(sample, tok, "glm3", 4096, 256).input_ids[: len(official)]
        == official
    )


def test_tool_shorthand_expands_to_a_call_and_an_observation(tok):
    short = {"tools": TOOLS, "conversations": [
        CONVERSATION[0],
        {"role": "tool", "name": "query_part_price", "parameters": {"part": "火花塞"},
         "observation": {"part": "火花塞", "price": 45}},
        CONVERSATION[3],
    ]}  # fmt: skip
    full = {"tools": TOOLS, "conversations": CONVERSATION}
    assert (
        encode_sample(short, tok, "glm3", 4096, 256).as_dict()
        == encode_sample(full, tok, "glm3", 4096, 256).as_dict()
    )


def test_loss_false_leaves_an_assistant_turn_unsupervised(tok):
    conv = [dict(m) for m in CONVERSATION]
    conv[1]["loss"] = False
    enc = encode_sample({"tools": TOOLS, "conversations": conv}, tok, "glm3", 4096, 256)
    supervised = [t for t in enc.labels if t != IGNORE_INDEX]
    assert supervised == tok.sp_model.encode("\n") + tok.sp_model.encode(
        "火花塞的价格是45元。"
    ) + [tok.eos_token_id]


def test_show_turns_lists_what_the_loss_sees(tok):
    sample = {"tools": TOOLS, "conversations": CONVERSATION}
    pieces = show_turns(sample, tok)
    assert [(p.role, p.supervised) for p in pieces] == [
        ("prefix", False), ("system", False), ("user", False),
        ("assistant", False), ("assistant", True),  # <|assistant|>, then the call
        ("observation", True), ("observation", False),  # <|observation|> ends the call; the result is context
        ("assistant", False), ("assistant", True), ("end", True),
    ]  # fmt: skip
    enc = encode_sample(sample, tok, "glm3", 4096, 256)
    assert sum(p.num_tokens for p in pieces) == len(enc.input_ids)
    assert sum(p.num_tokens for p in pieces if p.supervised) == enc.num_supervised
    assert [p.text for p in pieces if p.role in ("prefix", "end")] == [
        "[gMASK]sop",
        "</s>",
    ]
    assert pieces[3].text == "<|assistant|>" and pieces[5].text == "<|observation|>"
    assert (
        pieces[4].text.startswith("query_part_price")
        and "tool_call(part='火花塞')" in pieces[4].text
    )
    table = format_turns(pieces, width=40).splitlines()
    assert (
        table[0].split() == ["role", "loss", "tokens", "text"]
        and len(table) == len(pieces) + 1
    )
    assert table[5].split()[:3] == ["assistant", "yes", str(pieces[4].num_tokens)]
    # cut to max_len as training cuts
    assert sum(p.num_tokens for p in show_turns(sample, tok, max_len=20)) == 20


# --------------------------------------------------------------------------- bad samples

USER = {"role": "user", "content": "火花塞多少钱？"}
ANSWER = {"role": "assistant", "content": "45元。"}
CALL_MSG = {"role": "assistant", "metadata": "query_part_price", "content": CALL}
OBS_MSG = {"role": "observation", "content": OBSERVATION}
GOOD = {"tools": TOOLS, "conversations": [USER, CALL_MSG, OBS_MSG, ANSWER]}
BAD = {
    "unknown role": (
        {"tools": TOOLS, "conversations": [USER, {"role": "function", "content": "x"}]},
        r"message 1 has role 'function'; expected one of system, user, assistant, observation, tool",
    ),
    "call to an unknown tool": (
        {
            "tools": TOOLS,
            "conversations": [USER, {**CALL_MSG, "metadata": "open_door"}, OBS_MSG],
        },
        r"message 1 calls the tool 'open_door', which is not in the tools list \(query_part_price, lookup_fault_code\)",
    ),
    "call without a tools list": (
        {"conversations": [USER, CALL_MSG, OBS_MSG]},
        r"message 1 calls the tool 'query_part_price', but the sample has no tools list",
    ),
    "observation after a user message": (
        {"tools": TOOLS, "conversations": [USER, OBS_MSG]},
        (
            r"message 1 is an observation but comes after message 0 \(user, not a tool call\); an observation "
            r"must directly follow an assistant tool call"
        ),
    ),
    "observation after a plain answer": (
        {"tools": TOOLS, "conversations": [USER, ANSWER, OBS_MSG]},
        r"message 2 is an observation but comes after message 1 \(assistant, not a tool call\)",
    ),
    "observation first": (
        {"tools": TOOLS, "conversations": [OBS_MSG, USER, ANSWER]},
        r"message 0 is an observation but starts the conversation",
    ),
    "tool without a name": (
        {
            "tools": [TOOLS[0], {"description": "no name"}],
            "conversations": [USER, ANSWER],
        },
        r"the sample's tools entry 1 has no 'name'",
    ),
    "two tools with one name": (
        {"tools": [TOOLS[0], TOOLS[0]], "conversations": [USER, ANSWER]},
        r"the sample's tools entries 0 and 1 are both named 'query_part_price'",
    ),
    "tools not a list": (
        {"tools": {"name": "query_part_price"}, "conversations": [USER, ANSWER]},
        r"the sample's 'tools' must be a non-empty list of tool descriptions",
    ),
    "tools given twice": (
        {
            "tools": TOOLS,
            "conversations": [
                {"role": "system", "content": "s", "tools": TOOLS},
                USER,
                ANSWER,
            ],
        },
        r"message 0 gives a second tools list; give the tools once",
    ),
    "tools on a user message": (
        {"conversations": [{**USER, "tools": TOOLS}, ANSWER]},
        r"message 0 \(user\) has 'tools'; only a system message carries them",
    ),
    "metadata on a user message": (
        {
            "tools": TOOLS,
            "conversations": [{**USER, "metadata": "query_part_price"}, ANSWER],
        },
        r"message 0 \(user\) has 'metadata'; only an assistant tool call has one",
    ),
    "metadata not a string": (
        {
            "tools": TOOLS,
            "conversations": [USER, {**CALL_MSG, "metadata": ["query_part_price"]}],
        },
        r"message 1 field 'metadata' must be a string, got list",
    ),
    "loss not a boolean": (
        {"tools": TOOLS, "conversations": [USER, {**ANSWER, "loss": "no"}]},
        r"message 1 field 'loss' must be true or false, got 'no'",
    ),
    "shorthand call without an observation": (
        {
            "tools": TOOLS,
            "conversations": [
                USER,
                {"role": "tool", "name": "query_part_price", "parameters": {}},
            ],
        },
        r"message 1 is missing the field 'observation'",
    ),
    "shorthand call to an unknown tool": (
        {
            "tools": TOOLS,
            "conversations": [
                USER,
                {"role": "tool", "name": "x", "parameters": {}, "observation": 1},
            ],
        },
        r"message 1 calls the tool 'x', which is not in the tools list",
    ),
    "shorthand parameter that is no Python name": (
        {
            "tools": TOOLS,
            "conversations": [
                USER,
                {
                    "role": "tool",
                    "name": "query_part_price",
                    "parameters": {"part-name": "x"},
                    "observation": 1,
                },
            ],
        },
        r"message 1 parameter 'part-name' is not a Python name",
    ),
    "observation after a shorthand call": (
        {
            "tools": TOOLS,
            "conversations": [
                USER,
                {
                    "role": "tool",
                    "name": "query_part_price",
                    "parameters": {},
                    "observation": 1,
                },
                OBS_MSG,
            ],
        },
        r"message 2 is an observation but comes after message 1, a 'tool' message that holds its own observation",
    ),
    "tools beside an instruction sample": (
        {"tools": TOOLS, "instruction": "a", "input": "b", "output": "c"},
        r"'tools' belongs to a conversation sample",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_tool_sample_names_file_and_line(name, tmp_path):
    sample, message = BAD[name]
    path = tmp_path / "bad.jsonl"
    lines = [
        GOOD,
        GOOD,
        sample,
    ]  # the bad sample is on line 4: a blank line is counted too
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines[:2]) + "\n\n"
                    + json.dumps(lines[2], ensure_ascii=False) + "\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(DataError) as info:
        read_samples(path)
    text = str(info.value)
    assert "\n" not in text
    assert re.match(rf"{re.escape(str(path))}:4: {message}", text), text
    with pytest.raises(
        DataError, match=re.escape(f"{path}:4: ")
    ):  # encode_file validates before encoding
        encode_file(path, None, "glm3", 512, 256)


def test_bad_tool_sample_fails_before_any_model_loads(tiny_model, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(BAD["call to an unknown tool"][0], ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    argv = train_argv(
        tiny_model("glm3"), tmp_path / "out", mode="glm3", train_path=path
    )
    with pytest.raises(
        ArgsError,
        match=rf"^--train_path: {re.escape(str(path))}:1: message 1 calls the tool",
    ):
        parse_args(argv)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the shipped samples


def test_shipped_tool_conversations(tok, tmp_path):
    samples = read_samples(TOOLS_FILE)
    assert len(samples) == 8
    assert (
        sum("tools" in s for s in samples) == 4
    )  # the demo's form; the others carry tools on their system message
    assert sum("tools" in s["conversations"][0] for s in samples) == 4
    calls = [m for s in samples for m in s["conversations"] if m.get("metadata")]
    assert {m["metadata"] for m in calls} == {"query_part_price", "lookup_fault_code"}
    assert all(
        re.fullmatch(r"```python\ntool_call\((part|code)='[^']+'\)\n```", m["content"])
        for m in calls
    )
    enc = encode_file(TOOLS_FILE, tok, "glm3", 1024, 32, verbose=False)
    assert len(enc.samples) == 8 and enc.target_truncated == 0
    # make_samples.py writes this file, deterministically
    spec = importlib.util.spec_from_file_location(
        "make_samples", REPO / "data" / "make_samples.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.make_tool_conversations.__doc__ or "").startswith(
        "Eight conversations"
    )
    module._write(
        tmp_path / "tools.jsonl",
        module.make_tool_conversations(module.random.Random(module.SEED + 3)),
    )
    assert (tmp_path / "tools.jsonl").read_bytes() == TOOLS_FILE.read_bytes()


@pytest.mark.slow
def test_tool_conversations_train_under_the_launcher(tiny_model, tmp_path):
    """Two DeepSpeed processes over the shipped tool conversations, 2 epochs with --save_total_limit 1
    (the two-process path of tests/test_save_limit.py: both ranks write their partition, rank 0 prunes)."""
    out = tmp_path / "out"
    argv = train_argv(tiny_model("glm3"), out, mode="glm3", train_type="lora", train_path=TOOLS_FILE, max_len=1024,
                      lora_dim=4, lora_alpha=8, learning_rate="3e-2", num_train_epochs=2, save_total_limit=1)  # fmt: skip
    result = run_train(argv, out, processes=2)
    assert result.proc.returncode == 0, result.explain()
    assert "the number of skipping data is 0" in result.proc.stdout
    assert "8 samples, 2 process(es)" in result.proc.stdout
    assert len(result.losses) == 4 and all(0 < loss < 20 for loss in result.losses)
    first, newest = result.checkpoints()
    assert (first.name, newest.name) == ("epoch-1-step-2", "epoch-2-step-4")
    assert (
        not (first / "deepspeed").exists()
        and (first / "adapter_model.safetensors").is_file()
    )
    assert (
        len(list((newest / "deepspeed").glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    )
    assert (
        f"pruned the DeepSpeed state of {first} (--save_total_limit 1)"
        in result.proc.stdout
    )

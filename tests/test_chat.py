"""Chat as the official ChatGLM models do it (glmlab.chat), for all three generations.

The prompts are checked id by id against prompts built by hand from the official code's rules
(ChatGLM-6B's ``[Round 0]`` rounds with a bare first question, ChatGLM2's ``[Round 1]`` rounds,
ChatGLM3's role tokens built from the special-token ids and SentencePiece pieces); the answers
against ``generate`` on those prompts; streaming against non-streaming greedy; ChatGLM3 tool calls
through a scripted model (a tiny random model does not write tool calls); the LoRA and P-tuning
outputs of training through ``load_for_inference``; transformers' text-generation pipeline without
its "not supported" complaint; ``python -m glmlab.predict --chat`` on a StringIO stdin; the
notebook chat box with and without ipywidgets.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import shutil
import sys
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import transformers

from glmlab import load_model, load_tokenizer
from glmlab.chat import (
    DEFAULT_TOOL_SYSTEM,
    ToolCallError,
    chat,
    chat_mode,
    chat_prompt_ids,
    clean_response,
    glm3_response,
    parse_tool_call,
    stream_chat,
    system_history,
)
from glmlab.generation import generate_ids
from glmlab.inference import load_for_inference
from glmlab.methods import get_strategy

MODES = ["glm", "glm2", "glm3"]
QUERY = "发动机异响怎么办"
PAIRS = [("你好", "你好！我是助手。"), ("刹车软", "检查刹车油。")]
GREEDY = {"do_sample": False, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def loaded(tiny_model):
    """``loaded(mode) -> (model, tokenizer)`` of the session's tiny model, loaded once per module."""
    cache = {}

    def get(mode):
        if mode not in cache:
            model, tokenizer, _ = load_for_inference(tiny_model(mode))
            cache[mode] = (model, tokenizer)
        return cache[mode]

    return get


def _glm3_history():
    tools = [{"name": "get_weather", "description": "查询天气", "parameters": {"city": {"type": "string"}}}]
    return [
        {"role": "system", "content": "你是助手。", "tools": tools},
        {"role": "user", "content": "北京天气"},
        {"role": "assistant", "metadata": "get_weather", "content": "```python\ntool_call(city='北京')\n```"},
        {"role": "observation", "content": '{"weather": "晴"}'},
        {"role": "assistant", "metadata": "", "content": "北京今天晴。"},
    ]


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("with_history", [False, True])
def test_glm_prompt_is_the_official_one(loaded, with_history):
    _, tok = loaded("glm")
    history = PAIRS if with_history else []
    # ChatGLM-6B: a first question goes alone; rounds count from 0; [gMASK] <sop> close the prompt
    text = QUERY
    if with_history:
        text = f"[Round 0]\n问：你好\n答：你好！我是助手。\n[Round 1]\n问：刹车软\n答：检查刹车油。\n[Round 2]\n问：{QUERY}\n答："
    ids = chat_prompt_ids(tok, QUERY, history, "glm")
    assert ids == tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[-2:]) == ["[gMASK]", "<sop>"]


@pytest.mark.parametrize("with_history", [False, True])
def test_glm2_prompt_is_the_official_one(loaded, with_history):
    _, tok = loaded("glm2")
    history = PAIRS if with_history else []
    text = f"[Round 1]\n\n问：{QUERY}\n\n答："  # rounds count from 1, also for the first question
    if with_history:
        text = (
            "[Round 1]\n\n问：你好\n\n答：你好！我是助手。\n\n[Round 2]\n\n问：刹车软\n\n答：检查刹车油。\n\n"
            f"[Round 3]\n\n问：{QUERY}\n\n答："
        )
    ids = chat_prompt_ids(tok, QUERY, history, "glm2")
    assert ids == tok(text)["input_ids"]
    assert ids[:2] == [tok.get_command("[gMASK]"), tok.get_command("sop")]
    assert tok.build_prompt(QUERY, history) == text


@pytest.mark.parametrize("with_history", [False, True])
def test_glm3_prompt_is_built_from_role_tokens(loaded, with_history):
    _, tok = loaded("glm3")
    sp, cmd = tok.sp_model, tok.get_command

    def message(role, content, metadata=""):
        return [cmd(f"<|{role}|>")] + sp.encode(f"{metadata}\n") + sp.encode(content)

    history = _glm3_history() if with_history else []
    expected = [cmd("[gMASK]"), cmd("sop")]
    if with_history:
        tools = json.dumps(history[0]["tools"], indent=4, ensure_ascii=False)  # the official tokenizer's layout
        expected += message("system", "你是助手。\n" + tools)
        expected += message("user", "北京天气")
        expected += message("assistant", "```python\ntool_call(city='北京')\n```", "get_weather")
        expected += message("observation", '{"weather": "晴"}')
        expected += message("assistant", "北京今天晴。")
    expected += message("user", QUERY) + [cmd("<|assistant|>")]
    assert chat_prompt_ids(tok, QUERY, history, "glm3") == expected
    observation = chat_prompt_ids(tok, "42", history, "glm3", role="observation")
    assert observation == expected[: -len(message("user", QUERY)) - 1] + message("observation", "42") + [
        cmd("<|assistant|>")
    ]


def test_mode_comes_from_the_tokenizer_and_bad_input_is_refused(loaded):
    for mode in MODES:
        model, tok = loaded(mode)
        assert chat_mode(model, tok) == mode
    model, tok = loaded("glm2")
    with pytest.raises(ValueError, match="ChatGLM3 tokenizer"):
        chat(model, tok, QUERY, mode="glm3")
    with pytest.raises(ValueError, match="role"):
        chat(model, tok, QUERY, role="observation")
    with pytest.raises(ValueError, match=r"history\[0\]"):
        chat(model, tok, QUERY, [{"role": "user", "content": "x"}])
    model, tok = loaded("glm3")
    with pytest.raises(ValueError, match=r"history\[0\]"):
        chat(model, tok, QUERY, [("a", "b")])


# --------------------------------------------------------------------------- answers


def test_response_clean_up_is_the_official_one():
    raw = "  你好,世界!abc,def ok,中文 a:b [[训练时间]]?\n"
    assert clean_response(raw, "glm") == "你好，世界！abc,def ok，中文 a:b 2023年？"
    assert clean_response(raw, "glm2") == "你好,世界!abc,def ok,中文 a:b 2023年?"
    assert clean_response("答;好:", "glm") == "答；好："


@pytest.mark.parametrize("mode", MODES)
def test_streamed_text_is_held_back_until_its_clean_up_is_settled(mode):
    from glmlab.chat import _answer, _settled

    raw = " 好a,中文 b!c,[[训练时间]],ok?好 \ufffd"
    raw = ("\n" + raw) if mode == "glm3" else raw  # ChatGLM3 answers start with their (empty) metadata line
    final = _answer(raw.removesuffix("\ufffd"), mode, "q", "user", [])[0]
    seen = []
    for n in range(len(raw) + 1):  # every way the streamed text can have grown so far
        settled = _settled(raw[:n], mode)
        if settled is not None:
            seen.append(_answer(settled, mode, "q", "user", [], final=False)[0])
            assert final.startswith(seen[-1]), (raw[:n], seen[-1], final)
    assert seen[-1] == final and (mode != "glm" or "a，中" in final)


def test_tool_call_code_is_parsed_without_eval():
    fenced = "```python\ntool_call(city='北京', days=3, units=[\"c\"], detail=True, extra={'a': -1.5})\n```"
    assert parse_tool_call(fenced) == {"city": "北京", "days": 3, "units": ["c"], "detail": True, "extra": {"a": -1.5}}
    assert parse_tool_call("tool_call()") == {}
    for bad in ["__import__('os').system('echo hi')", "tool_call(1)", "tool_call(a=open('x'))", "other(a=1)",
                "tool_call(**{'a': 1})", "tool_call(a=", "```python\nprint(1)\n```"]:  # fmt: skip
        with pytest.raises(ToolCallError):
            parse_tool_call(bad)


def test_glm3_answer_text_is_read_as_the_official_process_response():
    tools = system_history(None, [{"name": "get_weather"}])
    code = "```python\ntool_call(city='北京')\n```"
    response, messages = glm3_response("get_weather\n " + code, tools)
    assert response == {"name": "get_weather", "parameters": {"city": "北京"}}
    assert messages == [{"role": "assistant", "metadata": "get_weather", "content": code}]
    # without tools in the history, a named answer comes back as name + content (as officially)
    assert glm3_response("get_weather\n " + code, [])[0] == {"name": "get_weather", "content": code}
    assert glm3_response("get_weather\n not code(", tools)[0] == {"name": "get_weather", "content": "not code("}
    response, messages = glm3_response("\n 今年是[[训练时间]] ", [])
    assert response == "今年是2023年" and messages == [
        {"role": "assistant", "metadata": "", "content": "今年是[[训练时间]]"}
    ]
    response, messages = glm3_response("\n 我查一下<|assistant|>get_weather\n " + code, tools)
    assert response["name"] == "get_weather" and [m["metadata"] for m in messages] == ["", "get_weather"]


class _Scripted(torch.nn.Module):
    """Stands in for a ChatGLM3 model: each ``generate`` returns the next scripted answer (streaming it
    when given a streamer) and records the prompt it was given."""

    def __init__(self, answers):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.answers, self.prompts = list(answers), []

    def generate(self, input_ids, attention_mask, streamer=None, **kwargs):
        self.prompts.append(input_ids[0].tolist())
        new = torch.tensor([self.answers.pop(0)])
        if streamer is not None:
            streamer.put(input_ids)
            for token in new[0]:
                streamer.put(token.view(1))
            streamer.end()
        return torch.cat([input_ids, new], dim=1)


def _tool_script(tok):
    """A tool call then, after the observation, an answer: the ids a ChatGLM3 model would write."""
    sp, cmd = tok.sp_model, tok.get_command
    code = "```python\ntool_call(city='北京', days=3)\n```"
    call = sp.encode("get_weather\n") + sp.encode(code)
    return (
        code,
        call,
        [call + [cmd("<|observation|>")], sp.encode("\n") + sp.encode("北京晴，25度") + [tok.eos_token_id]],
    )


def test_glm3_tool_call_then_observation(loaded):
    _, tok = loaded("glm3")
    sp, cmd = tok.sp_model, tok.get_command
    code, call, script = _tool_script(tok)
    tools = [{"name": "get_weather", "description": "查询天气", "parameters": {"city": {"type": "string"}}}]
    model = _Scripted(script)
    response, history = chat(model, tok, "北京天气怎么样", system_history(None, tools))
    assert response == {"name": "get_weather", "parameters": {"city": "北京", "days": 3}}
    assert history[-1] == {"role": "assistant", "metadata": "get_weather", "content": code}
    result = json.dumps({"weather": "晴", "temperature": 25}, ensure_ascii=False)
    answer, history = chat(model, tok, result, history, role="observation")
    assert answer == "北京晴，25度"
    assert [m["role"] for m in history] == ["system", "user", "assistant", "observation", "assistant"]
    # the second prompt holds the tool call exactly as the model wrote it, then the observation
    system = DEFAULT_TOOL_SYSTEM + "\n" + json.dumps(tools, indent=4, ensure_ascii=False)
    expected = [cmd("[gMASK]"), cmd("sop"), cmd("<|system|>")] + sp.encode("\n") + sp.encode(system)
    expected += [cmd("<|user|>")] + sp.encode("\n") + sp.encode("北京天气怎么样")
    expected += [cmd("<|assistant|>")] + call
    expected += [cmd("<|observation|>")] + sp.encode("\n") + sp.encode(result) + [cmd("<|assistant|>")]
    assert model.prompts[1] == expected
    # streamed: the code grows as text, the last update is the parsed call, as chat returns it
    updates = list(stream_chat(_Scripted(script[:1]), tok, "北京天气怎么样", system_history(None, tools)))
    assert len(updates) > 2 and updates[-2][0] == code  # the stop id <|observation|> is not shown
    assert all(isinstance(r, str) and code.startswith(r) for r, _ in updates[:-1])
    assert updates[-1] == chat(_Scripted(script[:1]), tok, "北京天气怎么样", system_history(None, tools))


# --------------------------------------------------------------------------- generation


def _expected_answer(model, tok, mode, query, history):
    """What the official chat computes: generate on the official prompt, then its clean-up."""
    (new,) = generate_ids(model, tok, [chat_prompt_ids(tok, query, history, mode)], mode, **GREEDY)
    text = tok.decode(new)
    return glm3_response(text, history)[0] if mode == "glm3" else clean_response(text, mode)


def _check_chat(model, tok, mode):
    history = PAIRS if mode != "glm3" else _glm3_history()
    response, new_history = chat(model, tok, QUERY, history, **GREEDY)
    assert response == _expected_answer(model, tok, mode, QUERY, history)
    if mode == "glm3":
        assert new_history[-2:] == [{"role": "user", "content": QUERY}, {"role": "assistant", "metadata": "",
                                                                         "content": response}]  # fmt: skip
    else:
        assert new_history == [*PAIRS, (QUERY, response)]
    assert history == (PAIRS if mode != "glm3" else _glm3_history())  # not modified
    updates = list(stream_chat(model, tok, QUERY, history, **GREEDY))
    assert updates[-1] == (response, new_history)  # streaming ends where greedy chat does
    texts = [r for r, _ in updates]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # each update extends the last
    if mode != "glm3":  # token by token (the tiny ChatGLM3 writes no metadata newline: its answer comes at the end)
        assert len(updates) > 2
    return response


@pytest.mark.parametrize("mode", MODES)
def test_chat_and_stream_chat(loaded, mode):
    model, tok = loaded(mode)
    response = _check_chat(model, tok, mode)
    assert response  # the tiny model says something, so the comparisons above compare text
    # leaving the stream early stops it cleanly; a new turn works
    stream = stream_chat(model, tok, QUERY, max_new_tokens=50, do_sample=False)
    next(stream)
    stream.close()
    assert chat(model, tok, "你好", **GREEDY)[0] == _expected_answer(model, tok, mode, "你好", [])


def _train_output(kind, mode, base, out):
    """A ``kind`` checkpoint saved the way training saves it, its trainable weights set at random."""
    args = SimpleNamespace(pre_seq_len=4, prefix_projection=False, lora_dim=4, lora_alpha=8, lora_dropout=0.0,
                           lora_module_name="query_key_value")  # fmt: skip
    strategy = get_strategy(kind)
    model = strategy.prepare(load_model(base, mode=mode, **strategy.config_overrides(args)), args)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    out.mkdir()
    strategy.save(model, load_tokenizer(base, mode=mode), out)
    meta = {"train_type": kind, "mode": mode, "base_model": str(base)}
    (out / "glmlab_checkpoint.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


@pytest.mark.parametrize("kind,mode", [("lora", "glm3"), ("ptuning", "glm2"), ("lora", "glm")])
def test_chat_on_training_outputs(tiny_model, tmp_path, kind, mode):
    model, tok, got = load_for_inference(_train_output(kind, mode, tiny_model(mode), tmp_path / kind))
    assert got == mode and (hasattr(model, "peft_config") or model.config.pre_seq_len == 4)
    response = _check_chat(model, tok, mode)
    base, base_tok, _ = load_for_inference(tiny_model(mode))
    assert response != chat(base, base_tok, QUERY, PAIRS if mode != "glm3" else _glm3_history(), **GREEDY)[0]


# --------------------------------------------------------------------------- transformers pipeline


@contextmanager
def _transformers_messages():
    """Every message transformers logs (its logger does not propagate) and every Python warning."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield records
        records.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("mode", MODES)
def test_text_generation_pipeline_supports_the_models(loaded, mode):
    model, tok = loaded(mode)
    with _transformers_messages() as messages:
        pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
        text = pipe("你好", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert not [m for m in messages if "not supported" in m], messages
    enc = tok("你好", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    new = tok.decode(out[0, enc["input_ids"].shape[1] :])
    assert new and text == "你好" + new


def test_pipeline_check_would_catch_the_old_registration(loaded, monkeypatch):
    from transformers import AutoModelForCausalLM

    from glmlab.loading import ChatGLMAutoModel
    from glmlab.models.configuration import ChatGLMConfig

    monkeypatch.setitem(AutoModelForCausalLM._model_mapping._extra_content, ChatGLMConfig, ChatGLMAutoModel)
    model, tok = loaded("glm2")
    with _transformers_messages() as messages:
        transformers.pipeline("text-generation", model=model, tokenizer=tok)
    assert any("'ChatGLM2ForConditionalGeneration' is not supported" in m for m in messages)


def test_auto_class_named_in_architectures_still_loads_strictly(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = shutil.copytree(tiny_model("glm"), tmp_path / "glm")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["ChatGLMForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(config))
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__module__ == "glmlab.models.chatglm"
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, load_model(folder)(ids).logits, atol=0, rtol=0)
    (folder / "model.safetensors").rename(folder / "other.safetensors")
    with pytest.raises(Exception, match="no weights"):  # glmlab's loader, not transformers' lenient one
        AutoModelForCausalLM.from_pretrained(folder)


# --------------------------------------------------------------------------- predict --chat


def _answers(output: str) -> list[str]:
    """The answers of a chat_loop transcript (stdin is not echoed: each turn is "用户：ChatGLM：answer")."""
    return [
        turn.removeprefix("ChatGLM：").removesuffix("\n")
        for turn in output.split("用户：")
        if turn.startswith("ChatGLM：")
    ]


@pytest.mark.parametrize("mode", MODES)
def test_chat_loop_clear_exit_and_end_of_input(loaded, mode):
    from glmlab.predict import chat_loop

    model, tok = loaded(mode)
    stdin, out = io.StringIO("你好\n刹车软\n\nclear\n你好\nexit\n不会读到\n"), io.StringIO()
    history = chat_loop(model, tok, stdin, out, **GREEDY)
    assert stdin.read() == "不会读到\n"  # exit stopped reading
    first, h1 = chat(model, tok, "你好", **GREEDY)
    second, _ = chat(model, tok, "刹车软", h1, **GREEDY)
    assert _answers(out.getvalue()) == [first, second, first]  # streamed in full; clear forgot turn one
    assert "(history cleared)" in out.getvalue() and history == h1
    out = io.StringIO()
    assert (
        chat_loop(model, tok, io.StringIO("你好\n刹车软"), out, **GREEDY) == chat(model, tok, "刹车软", h1, **GREEDY)[1]
    )
    assert _answers(out.getvalue()) == [first, second]  # end of input, even without a final newline


def test_chat_loop_tool_session(loaded):
    from glmlab.predict import chat_loop

    _, tok = loaded("glm3")
    _, _, script = _tool_script(tok)
    out = io.StringIO()
    tools = [{"name": "get_weather"}]
    history = chat_loop(_Scripted(script), tok, io.StringIO('北京天气\n{"weather": "晴"}\n'), out, system="你是助手。",
                        tools=tools)  # fmt: skip
    assert '[tool call] {"name": "get_weather", "parameters": {"city": "北京", "days": 3}}' in out.getvalue()
    assert "观察：ChatGLM：北京晴，25度" in out.getvalue()  # the line after a tool call is its result
    assert history[0] == {"role": "system", "content": "你是助手。", "tools": tools}
    assert [m["role"] for m in history[1:]] == ["user", "assistant", "observation", "assistant"]


def test_predict_chat_command_in_process(tiny_model, monkeypatch, capsys):
    from glmlab import predict

    monkeypatch.setattr(sys, "stdin", io.StringIO("你好\nexit\n"))
    assert predict.main(["--checkpoint", str(tiny_model("glm2")), "--chat", "--max_new_tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "(glm2)" in out and len(_answers(out)) == 1 and _answers(out)[0]


@pytest.mark.parametrize(
    "mode,extra,content,message",
    [
        ("glm3", ["--tools", "{tools}"], "[{'name': 1}", "tools.json: not valid JSON"),
        ("glm3", ["--tools", "{tools}"], '{"name": "x"}', "tools.json: expected a JSON list"),
        ("glm3", ["--tools", "{tools}"], '[{"description": "x"}]', 'tools.json: tool 0 is not an object with a "name"'),
        ("glm3", ["--tools", "{missing}"], None, "nothing.json: file not found"),
        ("glm2", ["--system", "你是助手。"], None, "--system and --tools need a ChatGLM3 model"),
    ],
)
def test_predict_chat_flags_fail_before_loading(
    tiny_model, tmp_path, monkeypatch, capsys, mode, extra, content, message
):
    from glmlab import predict

    tools = tmp_path / "tools.json"
    if content is not None:
        tools.write_text(content, encoding="utf-8")
    argv = ["--checkpoint", str(tiny_model(mode)), "--chat"]
    argv += [a.format(tools=tools, missing=tmp_path / "nothing.json") for a in extra]
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    assert predict.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert predict.main(["--checkpoint", str(tiny_model(mode)), "--system", "x", "--test_path", "t", "--output_path",
                         "o"]) == 2  # fmt: skip
    assert "--system and --tools go with --chat" in capsys.readouterr().err


# --------------------------------------------------------------------------- notebook chat box


def test_chat_box_without_ipywidgets_prints_every_answer(loaded, monkeypatch):
    from glmlab.notebooks.widgets import chat_box

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now fails
    models = {"glm2 base": loaded("glm2"), "glm3 base": (*loaded("glm3"), "glm3")}
    box = chat_box(models, example="你好", max_new_tokens=6)
    assert box.widget() is None
    text = repr(box)
    for name, (model, tok, *_) in models.items():
        answer = chat(model, tok, "你好", do_sample=False, max_new_tokens=6)[0]
        assert f"== {name} ==\n用户：你好\nChatGLM：{answer}" in text
    assert box._repr_mimebundle_() == {"text/plain": text}


def test_chat_box_widget_streams_into_columns(loaded):
    pytest.importorskip("ipywidgets")
    from glmlab.notebooks.widgets import chat_box

    model, tok = loaded("glm3")
    box = chat_box({"a": (model, tok), "b": (model, tok)}, example=None, max_new_tokens=6)
    widget = box.widget()
    field, clear = widget.children[0].children
    field.value = "刹车软"  # what pressing Enter does
    answer = chat(model, tok, "刹车软", do_sample=False, max_new_tokens=6)[0]
    assert field.value == "" and all(answer in box._views[n].value and "刹车软" in box._views[n].value for n in "ab")
    assert box.histories["a"] == chat(model, tok, "刹车软", do_sample=False, max_new_tokens=6)[1]
    clear.click()
    assert box.histories == {"a": [], "b": []} and "刹车软" not in box._views["a"].value

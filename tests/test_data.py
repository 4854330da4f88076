"""glmlab.data against the original training formats (tests/fixtures/data_a.json), plus
the reading, validation and batching behaviour around them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from glmlab.data import (
    IGNORE_INDEX,
    DataCollator,
    DataError,
    EncodedDataset,
    encode_file,
    encode_prompt,
    encode_sample,
    read_samples,
)

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "data_a_samples.json"
DATA = Path(__file__).parent.parent / "data"
DATA_FX = json.loads((FIXTURES / "data_a.json").read_text(encoding="utf-8"))
TOK_FX = json.loads((FIXTURES / "tokenizers_a.json").read_text(encoding="utf-8"))
CASES = [(mode, setting) for mode in DATA_FX for setting in DATA_FX[mode]]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The three generations' tokenizers, loaded from official-layout folders."""
    from glmlab.tokenization import (
        ChatGLM2Tokenizer,
        ChatGLM3Tokenizer,
        ChatGLMTokenizer,
    )

    out = {}
    for mode, cls, src, name in [
        ("glm", ChatGLMTokenizer, "sp_v1.model", "ice_text.model"),
        ("glm2", ChatGLM2Tokenizer, "sp_v2.model", "tokenizer.model"),
        ("glm3", ChatGLM3Tokenizer, "sp_v2.model", "tokenizer.model"),
    ]:
        folder = tmp_path_factory.mktemp(mode)
        shutil.copy(FIXTURES / src, folder / name)
        out[mode] = cls.from_pretrained(str(folder))
    return out


def _setting(setting: str) -> tuple[int, int, bool]:
    max_len, max_src_len, skip = setting.split("_")
    return int(max_len), int(max_src_len), skip == "skip"


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("mode,setting", CASES)
def test_encode_file_reproduces_original(tokenizers, mode, setting, capsys):
    max_len, max_src_len, is_skip = _setting(setting)
    expected = DATA_FX[mode][setting]
    enc = encode_file(SAMPLES, tokenizers[mode], mode, max_len, max_src_len, is_skip)
    assert enc.samples == expected["samples"]
    assert enc.skip_message == expected["printed"]
    assert expected["printed"] in capsys.readouterr().out  # the original's wording is printed
    assert enc.num_read == 40 and len(enc.samples) + enc.skipped == 40
    assert enc.empty_outputs == 10
    assert len(enc.source_lengths) == len(enc.target_lengths) == len(enc.lengths) == 40
    assert max(enc.lengths) <= max_len
    if is_skip:  # every skipped sample was cut, every kept one was not
        assert enc.skipped == sum(
            1
            for s, t in zip(enc.source_lengths, enc.target_lengths)
            if s > max_src_len or (mode != "glm3" and t > max_len - 3 - s)
        )


@pytest.mark.parametrize("mode", ["glm", "glm2", "glm3"])
def test_encode_prompt_is_the_training_prefix(tokenizers, mode):
    """The prediction prompt is the training sequence up to where the answer is generated."""
    samples = read_samples(SAMPLES)
    for max_len, max_src_len in [(512, 256), (128, 72)]:
        enc = encode_file(SAMPLES, tokenizers[mode], mode, max_len, max_src_len, verbose=False)
        for sample, row in zip(samples, enc.samples):
            first = next(i for i, x in enumerate(row["labels"]) if x != IGNORE_INDEX)
            # glm: up to and including <sop>; glm2: the source; glm3: up to and including <|assistant|>.
            end = first if mode == "glm2" else first + 1
            assert encode_prompt(sample, tokenizers[mode], mode, max_src_len) == row["input_ids"][:end]
    tok = tokenizers[mode]
    tail = encode_prompt(samples[0], tok, mode, 256)[-2:]
    if mode == "glm":
        assert tail == [tok.gmask_token_id, tok.bos_token_id]
    elif mode == "glm3":
        assert tail[-1] == tok.get_command("<|assistant|>")


def test_glm3_conversation_prompt_matches_build_chat_input(tokenizers):
    history = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！有什么可以帮你？"},
    ]
    conv = {"conversations": history + [{"role": "user", "content": "介绍一下发动机"}]}
    expected = TOK_FX["glm3"]["chat_input"][0]
    assert encode_prompt(conv, tokenizers["glm3"], "glm3", 256) == expected
    # a conversation ending with the reference answer gives the same prompt
    answered = {"conversations": conv["conversations"] + [{"role": "assistant", "content": "发动机是动力来源。"}]}
    assert encode_prompt(answered, tokenizers["glm3"], "glm3", 256) == expected


def test_glm3_multi_turn_supervises_only_assistant_turns(tokenizers):
    tok = tokenizers["glm3"]
    roles = {tok.get_command(f"<|{r}|>"): r for r in ("system", "user", "assistant")}
    conv = [
        {"role": "system", "content": "你是汽车维修技师。"},
        {"role": "user", "content": "发动机有异响怎么办？"},
        {"role": "assistant", "content": "检查轴承和皮带。"},
        {"role": "user", "content": "用什么工具？"},
        {"role": "assistant", "content": "用听诊器。"},
    ]
    enc = encode_sample(conv, tok, "glm3", 512, 256)
    ids, labels = enc.input_ids, enc.labels
    assert ids[:2] == [tok.get_command("[gMASK]"), tok.get_command("sop")] and ids[-1] == tok.eos_token_id
    # Expected, built independently: every position after an <|assistant|> token up to and
    # including the next role token (or the final eos).
    expected = [IGNORE_INDEX] * len(ids)
    assistant = tok.get_command("<|assistant|>")
    for start in [i for i, t in enumerate(ids) if t == assistant]:
        j = start + 1
        while True:
            expected[j] = ids[j]
            if ids[j] in roles or j == len(ids) - 1:
                break
            j += 1
    assert labels == expected
    assert labels[-1] == tok.eos_token_id
    # both answers' text is supervised, no user/system text is
    supervised = [t for t in labels if t != IGNORE_INDEX]
    for msg in conv:
        content = tok.encode(msg["content"], add_special_tokens=False)
        inside = any(supervised[k : k + len(content)] == content for k in range(len(supervised)))
        assert inside == (msg["role"] == "assistant"), msg


def test_conversation_file_forms_and_truncation(tokenizers, tmp_path):
    tok = tokenizers["glm3"]
    conv = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}]
    lines = tmp_path / "chat.jsonl"
    lines.write_text(
        json.dumps(conv, ensure_ascii=False) + "\n" + json.dumps({"conversations": conv}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    enc = encode_file(lines, tok, "glm3", 512, 256, verbose=False)
    assert len(enc.samples) == 2 and enc.samples[0] == enc.samples[1]
    whole = tmp_path / "one.json"  # a file holding a single conversation
    whole.write_text(json.dumps(conv, ensure_ascii=False, indent=2), encoding="utf-8")
    assert encode_file(whole, tok, "glm3", 512, 256, verbose=False).samples == enc.samples[:1]
    # cut to max_len; with is_skip it is dropped; a cut leaving no supervised token is always dropped
    n = len(enc.samples[0]["input_ids"])
    cut = encode_file(lines, tok, "glm3", n - 1, 4, verbose=False)
    assert [len(s["input_ids"]) for s in cut.samples] == [n - 1, n - 1] and cut.target_truncated == 2
    assert encode_file(lines, tok, "glm3", n - 1, 4, is_skip=True, verbose=False).skipped == 2
    long_question = tmp_path / "long.jsonl"
    long_question.write_text(json.dumps([{"role": "user", "content": "发动机有异响" * 10}, conv[1]]), encoding="utf-8")
    dropped = encode_file(long_question, tok, "glm3", 16, 4, verbose=False)
    assert dropped.samples == [] and dropped.skipped == 1
    with pytest.raises(DataError, match=r"chat\.jsonl:1: .*glm3"):
        encode_file(lines, tokenizers["glm2"], "glm2", 512, 256)


def test_json_array_input_equals_json_lines(tokenizers, tmp_path):
    samples = read_samples(SAMPLES)
    array = tmp_path / "array.json"
    array.write_text(json.dumps(samples, ensure_ascii=False, indent=2), encoding="utf-8")
    assert read_samples(array) == samples
    a = encode_file(array, tokenizers["glm2"], "glm2", 200, 110, True, verbose=False)
    b = encode_file(SAMPLES, tokenizers["glm2"], "glm2", 200, 110, True, verbose=False)
    assert a.samples == b.samples and a.skipped == b.skipped


def test_shipped_data_encodes(tokenizers):
    for mode in ("glm", "glm2", "glm3"):
        for name in ("spo_train.jsonl", "spo_test.jsonl"):
            enc = encode_file(DATA / name, tokenizers[mode], mode, 256, 128, verbose=False)
            assert enc.skipped == 0 and enc.source_truncated == enc.target_truncated == 0
    chat = encode_file(DATA / "chat3_train.jsonl", tokenizers["glm3"], "glm3", 512, 256, verbose=False)
    assert len(chat.samples) == 10


# --------------------------------------------------------------------------- reading and validation


def test_read_samples_and_shipped_data():
    samples = read_samples(SAMPLES)
    assert len(samples) == 40 and all(set(s) >= {"instruction", "input", "output"} for s in samples)
    assert len(read_samples(DATA / "spo_train.jsonl")) == 60
    assert len(read_samples(DATA / "spo_test.jsonl")) == 15
    chats = read_samples(DATA / "chat3_train.jsonl")
    assert len(chats) == 10 and all("conversations" in c for c in chats)
    for s in read_samples(DATA / "spo_train.jsonl") + read_samples(DATA / "spo_test.jsonl"):
        assert len(s["input"]) < 60
        for line in filter(None, s["output"].split("\n")):
            head, rel, tail = line.split("_")
            assert rel in {"部件故障", "性能故障", "组成", "检测工具"} and head and tail


def test_make_samples_is_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples", DATA / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("spo_train.jsonl", "spo_test.jsonl", "chat3_train.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


GOOD = {"instruction": "抽取：", "input": "发动机漏油", "output": "发动机_部件故障_漏油"}


@pytest.mark.parametrize(
    "lines,pattern",
    [
        ([GOOD, GOOD, '{"instruction": "x", "input": '], r"bad\.jsonl:3: malformed JSON"),
        ([GOOD, {"instruction": "x", "output": "y"}], r"bad\.jsonl:2: missing the field 'input'"),
        ([{"instruction": "x", "input": 3, "output": "y"}], r"bad\.jsonl:1: field 'input' must be a string"),
        (
            [GOOD, "", {"instruction": "x", "input": "y", "output": None}],  # blank lines are skipped but counted
            r"bad\.jsonl:3: field 'output' must be a string",
        ),
        (['"just a string"'], r"bad\.jsonl:1: a sample must be"),
        ([[{"role": "robot", "content": "hi"}]], r"bad\.jsonl:1: message 0 has role 'robot'"),
        ([{"conversations": [{"role": "user"}]}], r"bad\.jsonl:1: message 0 is missing the field 'content'"),
        ([{"conversations": []}], r"bad\.jsonl:1: 'conversations' must be a non-empty list"),
    ],
)
def test_bad_input_raises_data_error_naming_file_and_line(tmp_path, lines, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=pattern) as info:
        read_samples(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(DataError, match=pattern):  # encode_file validates before encoding anything
        encode_file(path, None, "glm2", 512, 256)


@pytest.mark.parametrize("text", ["", "\n  \n", "[]", "[\n]\n"])
def test_empty_file_raises(tmp_path, text):
    path = tmp_path / "empty.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.json:1: .*(empty|no samples)"):
        read_samples(path)


def test_json_array_errors_name_the_element_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([GOOD, GOOD, {"instruction": "x", "input": "y"}], indent=2), encoding="utf-8")
    # indent=2: "[" on line 1, then 5 lines per element; the third opens on line 12
    with pytest.raises(DataError, match=r"arr\.json:12: missing the field 'output'"):
        read_samples(path)
    path.write_text('[\n  {"instruction": "x", "input": "y", "output": "z"},\n  {"instruction": }\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr\.json:3: malformed JSON"):
        read_samples(path)


def test_missing_file_and_bad_mode(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl"):
        read_samples(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="glm, glm2, glm3"):
        encode_file(SAMPLES, None, "glm4", 512, 256)
    with pytest.raises(ValueError, match="glm, glm2, glm3"):
        encode_prompt(GOOD, None, "chatglm", 256)
    with pytest.raises(ValueError, match="max_len"):
        encode_file(SAMPLES, None, "glm3", 100, 96)


# --------------------------------------------------------------------------- batching


def test_collator_pads_right_with_masks():
    batch = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8, 9, 10, 11, 12], "labels": [-100, -100, 10, 11, 12]},
    ]
    out = DataCollator(pad_token_id=3)(batch)
    assert set(out) == {"input_ids", "labels", "attention_mask"}
    assert all(v.dtype == torch.long and v.shape == (2, 5) for v in out.values())
    assert out["input_ids"].tolist() == [[5, 6, 7, 3, 3], [8, 9, 10, 11, 12]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, -100], [-100, -100, 10, 11, 12]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert DataCollator(0, pad_to_multiple_of=4)(batch)["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError):
        DataCollator(0)([{"input_ids": [1, 2], "labels": [1]}])


def test_dataset_and_dataloader(tokenizers):
    tok = tokenizers["glm2"]
    enc = encode_file(SAMPLES, tok, "glm2", 128, 72, verbose=False)
    ds = EncodedDataset(enc)
    assert len(ds) == 40 and {k: v.tolist() for k, v in ds[3].items()} == enc.samples[3]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, collate_fn=DataCollator(tok.pad_token_id))
    batch = next(iter(loader))
    longest = max(len(s["input_ids"]) for s in enc.samples[:4])
    assert batch["input_ids"].shape == (4, longest)
    assert batch["attention_mask"].sum(1).tolist() == [len(s["input_ids"]) for s in enc.samples[:4]]
    assert len(EncodedDataset.from_file(SAMPLES, tok, "glm2", 128, 72, verbose=False)) == 40


def test_reference_lists_only_in_test_files(tmp_path):
    # Doc-to-question test files hold several acceptable questions per document.
    path = tmp_path / "d2q_test.jsonl"
    sample = {"instruction": "请根据下面文档生成一个问题，文档：", "input": "发动机水温高。", "output": ["为什么水温高？", "水温高怎么办？"]}
    path.write_text(json.dumps(sample, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_samples(path, references=True) == [sample]
    with pytest.raises(DataError, match=r"d2q_test.jsonl:1: field 'output' must be a string, got list"):
        read_samples(path)
    path.write_text(json.dumps({**sample, "output": ["ok", 3]}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d2q_test.jsonl:1: field 'output' must be a string or a non-empty list of strings"):
        read_samples(path, references=True)


def test_cut_warning_counts_cut_sources(tokenizers, capsys):
    """More than 5% of sources cut: one warning line with the count, the share and the longest source."""
    path = DATA / "spo_train.jsonl"
    cut = encode_file(path, tokenizers["glm2"], "glm2", max_len=64, max_src_len=32)
    out = capsys.readouterr().out
    assert cut.source_truncated > 0.05 * cut.num_read
    (line,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert f"{cut.source_truncated} of {cut.num_read} sources" in line and "--max_src_len 32" in line
    assert f"the longest is {max(cut.source_lengths)} tokens" in line
    whole = encode_file(path, tokenizers["glm2"], "glm2", max_len=512, max_src_len=400)
    assert whole.source_truncated == 0 and whole.cut_warning() is None
    assert "warning:" not in capsys.readouterr().out

"""glmlab.inference and glmlab.predict: every training output loads back to the logits it had when
saved; batched left-padded generation equals one-by-one generation; the predict command writes one
line per sample; ChatGLM3 chat keeps its history; bad input fails early with one line.

Checkpoints are written by hand in the layout of docs/CONTRACTS.md (``glmlab_checkpoint.json`` +
tokenizer files + the method's weights), from tiny random models made with ``glmlab.tiny``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from glmlab import load_model, load_tokenizer
from glmlab.data import encode_prompt
from glmlab.chat import chat
from glmlab.checkpoint import describe_checkpoint
from glmlab.generation import generate_batch, generate_ids, stop_token_ids
from glmlab.inference import load_for_inference
from glmlab.loading import CheckpointError
from glmlab.methods import get_strategy
from glmlab.tiny import make_tiny

MODES = ["glm", "glm2", "glm3"]
KINDS = ["all", "freeze", "lora", "ptuning"]
REPO = Path(__file__).resolve().parents[1]

SAMPLES = [
    {"instruction": "抽取三元组：", "input": "故障现象：制动距离过长。", "output": "制动_性能故障_距离过长"},
    {"instruction": "抽取三元组：", "input": "车主称冷却风扇转速过低，经检查是风扇电机损坏，更换后正常。", "output": "冷却风扇_性能故障_转速过低\n风扇电机_部件故障_损坏"},
    {"instruction": "抽取三元组：", "input": "发动机异响。", "output": ""},
]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """One tiny base model folder per generation."""
    root = tmp_path_factory.mktemp("bases")
    return {mode: make_tiny(mode, root / mode, seed=1) for mode in MODES}


def _ids(tokenizer, mode):
    """Two prompts of different lengths, as prediction builds them."""
    return [encode_prompt(s, tokenizer, mode, 128) for s in SAMPLES[:2]]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits


def _write_meta(folder: Path, train_type: str, mode: str, base: Path | None) -> None:
    meta = {"train_type": train_type, "mode": mode}
    if base is not None:
        meta["base_model"] = str(base)
    (folder / "glmlab_checkpoint.json").write_text(json.dumps(meta), encoding="utf-8")


def make_checkpoint(kind: str, mode: str, base: Path, out: Path, record_base: bool = True):
    """Write a ``kind`` checkpoint the way training does (the method strategy's ``prepare`` and ``save``),
    with the trained weights perturbed so the checkpoint differs from its base; return the in-memory model."""
    torch.manual_seed(0)
    args = SimpleNamespace(
        freeze_module_name="layers.1.", pre_seq_len=4, prefix_projection=(mode != "glm2"),
        lora_dim=4, lora_alpha=8, lora_dropout=0.0, lora_module_name="query_key_value",
    )
    strategy = get_strategy(kind)
    tokenizer = load_tokenizer(base, mode=mode)
    model = strategy.prepare(load_model(base, mode=mode, **strategy.config_overrides(args)), args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # what training would change (peft starts lora_B at zero: make it matter)
                if "lora_B" in name or "prefix_encoder" in name:
                    p.normal_(0, 0.2 if "lora_B" in name else 1.0)
                else:
                    p.add_(0.05 * torch.randn_like(p))
    out.mkdir(parents=True)
    strategy.save(model, tokenizer, out)
    _write_meta(out, kind, mode, base if record_base else None)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_load_for_inference_reproduces_saved_logits(bases, tmp_path, mode, kind):
    saved, tokenizer = make_checkpoint(kind, mode, bases[mode], tmp_path / "ckpt")
    ids = _ids(tokenizer, mode)[1]
    expected = _logits(saved, ids)

    model, tok, got_mode = load_for_inference(tmp_path / "ckpt")  # base from glmlab_checkpoint.json
    assert got_mode == mode
    assert tok.encode("制动距离", add_special_tokens=False) == tokenizer.encode("制动距离", add_special_tokens=False)
    torch.testing.assert_close(_logits(model, ids), expected, atol=1e-5, rtol=0)
    # and the checkpoint really differs from its base (the test could fail)
    base_logits = _logits(load_model(bases[mode], mode=mode), ids)
    assert (base_logits - expected).abs().max() > 1e-3


def test_lora_merged_on_load_matches(bases, tmp_path):
    saved, tokenizer = make_checkpoint("lora", "glm2", bases["glm2"], tmp_path / "ckpt")
    ids = _ids(tokenizer, "glm2")[0]
    model, _, _ = load_for_inference(tmp_path / "ckpt", merge_lora=True)
    assert not hasattr(model, "peft_config")
    torch.testing.assert_close(_logits(model, ids), _logits(saved, ids), atol=1e-5, rtol=0)


def test_run_dir_means_its_newest_checkpoint(bases, tmp_path):
    run = tmp_path / "run"
    make_checkpoint("lora", "glm2", bases["glm2"], run / "epoch-1-step-10")
    saved, tokenizer = make_checkpoint("lora", "glm2", bases["glm2"], run / "epoch-2-step-20")
    with torch.no_grad():  # make the two checkpoints differ, so the test can tell which one loaded
        for name, p in saved.named_parameters():
            if "lora_B" in name:
                p.mul_(-1)
    get_strategy("lora").save(saved, tokenizer, run / "epoch-2-step-20")
    info = describe_checkpoint(run)
    assert info.path == run / "epoch-2-step-20"
    ids = _ids(tokenizer, "glm2")[0]
    model, _, _ = load_for_inference(run)
    torch.testing.assert_close(_logits(model, ids), _logits(saved, ids), atol=1e-5, rtol=0)


def test_plain_model_folder(bases):
    info = describe_checkpoint(bases["glm3"])
    assert (info.kind, info.base) == ("model", None)
    model, tokenizer, mode = load_for_inference(bases["glm3"])
    assert mode == "glm3"
    ids = _ids(tokenizer, mode)[0]
    torch.testing.assert_close(_logits(model, ids), _logits(load_model(bases["glm3"]), ids), atol=0, rtol=0)


def test_explicit_base_overrides_recorded(bases, tmp_path):
    make_checkpoint("ptuning", "glm2", bases["glm2"], tmp_path / "ckpt", record_base=False)
    with pytest.raises(CheckpointError, match="records no base model"):
        load_for_inference(tmp_path / "ckpt")
    model, _, mode = load_for_inference(tmp_path / "ckpt", base=bases["glm2"])
    assert mode == "glm2" and model.config.pre_seq_len == 4


def test_checkpoint_errors(bases, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_for_inference(tmp_path / "nowhere")
    make_checkpoint("lora", "glm3", bases["glm3"], tmp_path / "lora")
    with pytest.raises(CheckpointError, match="not a model folder"):
        describe_checkpoint(tmp_path / "lora", base=tmp_path / "no_base")
    with pytest.raises(CheckpointError, match="not glm2"):
        load_for_inference(tmp_path / "lora", mode="glm2")
    make_checkpoint("ptuning", "glm3", bases["glm3"], tmp_path / "pt")
    (tmp_path / "pt" / "prefix_encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing prefix_encoder.safetensors"):
        describe_checkpoint(tmp_path / "pt")
    (tmp_path / "bad").mkdir()
    _write_meta(tmp_path / "bad", "qlora", "glm3", bases["glm3"])
    with pytest.raises(CheckpointError, match="train_type"):
        describe_checkpoint(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model or checkpoint folder"):
        describe_checkpoint(tmp_path / "empty")


def test_prefix_encoder_shape_mismatch_is_caught(bases, tmp_path):
    make_checkpoint("ptuning", "glm2", bases["glm2"], tmp_path / "pt")
    config = json.loads((tmp_path / "pt" / "config.json").read_text())
    config["pre_seq_len"] = 6
    (tmp_path / "pt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_for_inference(tmp_path / "pt")


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("mode", MODES)
def test_left_padded_batch_equals_one_by_one(bases, mode):
    model, tokenizer, _ = load_for_inference(bases[mode])
    prompts = _ids(tokenizer, mode)
    assert len(prompts[0]) != len(prompts[1])  # the batch really needs padding
    batch = generate_ids(model, tokenizer, prompts, mode, max_new_tokens=8)
    single = [generate_ids(model, tokenizer, [p], mode, max_new_tokens=8)[0] for p in prompts]
    assert batch == single
    assert generate_batch(model, tokenizer, prompts, mode, max_new_tokens=8) == [
        generate_batch(model, tokenizer, [p], mode, max_new_tokens=8)[0] for p in prompts
    ]


class _ScriptedModel(torch.nn.Module):
    """Stands in for a model: records what generate got and returns scripted continuations."""

    def __init__(self, continuations):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuations = continuations
        self.seen = None

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        self.seen = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, **kwargs)
        rows = self.continuations[: len(input_ids)]
        width = max(len(c) for c in rows)
        new = torch.tensor([c + [pad_token_id] * (width - len(c)) for c in rows])
        return torch.cat([input_ids, new], dim=1)


def test_generate_batch_pads_left_and_cuts_at_stop(bases):
    tokenizer = load_tokenizer(bases["glm3"])
    eos, user = tokenizer.eos_token_id, tokenizer.get_command("<|user|>")
    assert stop_token_ids(tokenizer, "glm3")[:1] == [eos] and user in stop_token_ids(tokenizer, "glm3")
    nl = tokenizer.encode("\n", add_special_tokens=False)
    a, b = tokenizer.encode("制动", add_special_tokens=False), tokenizer.encode("距离过长", add_special_tokens=False)
    model = _ScriptedModel([nl + a + [eos] + b, b + [user] + a])
    out = generate_batch(model, tokenizer, [[5, 6, 7], [8]], "glm3", max_new_tokens=4)
    assert out == ["制动", "距离过长"]  # glm3's leading metadata newline dropped; nothing after a stop id
    assert model.seen["input_ids"].tolist() == [[5, 6, 7], [tokenizer.pad_token_id] * 2 + [8]]
    assert model.seen["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert model.seen["do_sample"] is False and "top_p" not in model.seen  # the original's greedy default
    generate_batch(model, tokenizer, [[5]], "glm3", do_sample=True)
    assert (model.seen["top_p"], model.seen["temperature"]) == (0.7, 0.95)
    with pytest.raises(ValueError):
        generate_batch(model, tokenizer, [[]], "glm3")


def test_glm_stops_at_eop(bases):
    tokenizer = load_tokenizer(bases["glm"])
    assert tokenizer.eop_token_id in stop_token_ids(tokenizer, "glm")


def test_chat_keeps_history(bases):
    model, tokenizer, _ = load_for_inference(bases["glm3"])
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    r1, h1 = chat(model, tokenizer, "你好", system, do_sample=False, max_new_tokens=6)
    assert system == [{"role": "system", "content": "You are a helpful assistant."}]  # not modified
    assert [m["role"] for m in h1] == ["system", "user", "assistant"]
    assert h1[1]["content"] == "你好" and h1[2]["content"] == r1
    r2, h2 = chat(model, tokenizer, "介绍一下发动机", h1, do_sample=False, max_new_tokens=6)
    assert h2[:3] == h1 and [m["role"] for m in h2[3:]] == ["user", "assistant"] and h2[4]["content"] == r2
    # the second turn saw the first: its prompt is build_chat_input over the whole history
    prompt = tokenizer.build_chat_input("介绍一下发动机", history=h1)["input_ids"][0].tolist()
    (expected,) = generate_ids(model, tokenizer, [prompt], "glm3", max_new_tokens=6)
    text = tokenizer.decode(expected)
    assert r2 == (text.split("\n", 1)[1] if "\n" in text else text).strip()


# --------------------------------------------------------------------------- the command


def _run(*args, stdin=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "glmlab.predict", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, input=stdin, timeout=timeout, check=False,
    )


def _test_file(folder: Path) -> Path:
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in SAMPLES), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode,kind", [("glm", "lora"), ("glm3", "ptuning")])
def test_predict_command_writes_one_line_per_sample(bases, tmp_path, mode, kind):
    saved, tokenizer = make_checkpoint(kind, mode, bases[mode], tmp_path / "ckpt")
    out = tmp_path / "preds" / "out.jsonl"
    proc = _run(
        "--model_name_or_path", bases[mode], "--checkpoint", tmp_path / "ckpt", "--test_path", _test_file(tmp_path),
        "--output_path", out, "--max_len", 160, "--max_src_len", 128, "--max_new_tokens", 6, "--batch_size", 2,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(SAMPLES)
    for row, sample in zip(rows, SAMPLES):
        assert {k: row[k] for k in sample} == sample and isinstance(row["prediction"], str)
    # the same predictions as generating from the in-memory model one sample at a time
    prompts = [encode_prompt(s, tokenizer, mode, 128) for s in SAMPLES]
    assert [r["prediction"] for r in rows] == [generate_batch(saved, tokenizer, [p], mode, max_new_tokens=6)[0] for p in prompts]
    score = json.loads(proc.stdout.strip().splitlines()[-1])  # references are triples: F1 printed
    assert score["metric"] == "triple_f1" and score["n_samples"] == 3


def test_predict_chat_command(bases):
    proc = _run("--checkpoint", bases["glm3"], "--chat", "--max_new_tokens", 4, stdin="你好\n介绍一下发动机\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ChatGLM：") == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--test_path", "MISSING.jsonl"], "--test_path MISSING.jsonl: file not found"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
        (["--max_len", "100", "--max_src_len", "100"], "max_len must be at least"),
        (["--chat"], "--chat reads stdin"),
        (["--mode", "glm2"], "not glm2"),
    ],
)
def test_predict_rejects_bad_input_before_loading(bases, tmp_path, monkeypatch, capsys, extra, message):
    from glmlab import predict

    make_checkpoint("lora", "glm3", bases["glm3"], tmp_path / "ckpt")
    flags = {"--checkpoint": tmp_path / "ckpt", "--test_path": _test_file(tmp_path), "--output_path": tmp_path / "o.jsonl"}
    flags.update(zip(extra[::2], extra[1::2]))
    argv = [str(a) for kv in flags.items() for a in kv] + [a for a in extra if a == "--chat"]
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    assert predict.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o.jsonl").exists()


def test_predict_grounded_writes_the_kept_triples_beside_the_models_text(bases, tmp_path, monkeypatch, capsys):
    from glmlab import predict

    make_checkpoint("lora", "glm", bases["glm"], tmp_path / "ckpt")
    raw = ["制动_性能故障_距离过长\n制动_性能故障_鼓包", "冷却风扇_性能故障_转速过低\n风扇电机_部件故障_不转", "发动机_部件故障_异响"]
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: (None, None, "glm"))
    monkeypatch.setattr(predict, "predict_samples", lambda *a, **k: list(raw))
    out = tmp_path / "o.jsonl"
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--test_path", str(_test_file(tmp_path)), "--output_path", str(out)]
    assert predict.main([*argv, "--grounded", "filter"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["raw_prediction"] for r in rows] == raw
    assert [r["prediction"] for r in rows] == ["制动_性能故障_距离过长", "冷却风扇_性能故障_转速过低", "发动机_部件故障_异响"]
    grounded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert predict.main(argv) == 0  # without the flag: the model's text, as the original scored it
    assert "raw_prediction" not in json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert grounded["recall"] == plain["recall"] and grounded["precision"] > plain["precision"]
    # a test file whose references are not triples: one line, before any model loads
    d2q = tmp_path / "d2q.jsonl"
    d2q.write_text(json.dumps({"instruction": "提问：", "input": "水泵漏水。", "output": ["水泵怎么了？"]}, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    assert predict.main(["--checkpoint", str(tmp_path / "ckpt"), "--test_path", str(d2q), "--output_path",
                         str(tmp_path / "d.jsonl"), "--grounded"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--grounded keeps triples found in the input: it needs a --test_path of triple extraction" in err[0]
    assert f"{d2q} is not one" in err[0] and not (tmp_path / "d.jsonl").exists()


def test_predict_grounded_decode_asks_for_grounded_decoding(bases, tmp_path, monkeypatch, capsys):
    from glmlab import predict

    make_checkpoint("lora", "glm", bases["glm"], tmp_path / "ckpt")
    real_predict_samples, asked = predict.predict_samples, []
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: (None, None, "glm"))
    monkeypatch.setattr(predict, "predict_samples", lambda *a, **k: asked.append(k) or ["制动_性能故障_距离过长"] * 3)
    out = tmp_path / "o.jsonl"
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--test_path", str(_test_file(tmp_path)), "--output_path", str(out)]
    for flags, decoding in ((["--grounded", "decode"], True), (["--grounded", "filter"], False), (["--grounded"], True)):
        assert predict.main([*argv, *flags]) == 0
        assert asked.pop()["grounded_decoding"] is decoding
        assert "raw_prediction" in json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    capsys.readouterr()
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    assert predict.main([*argv, "--grounded", "decode", "--do_sample"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--grounded decode is greedy search: it cannot be combined with --do_sample" in err[0]
    with pytest.raises(ValueError, match="grounded decoding is greedy search"):
        real_predict_samples(None, None, "glm", [], 96, grounded_decoding=True, do_sample=True)
    # a value argparse refuses: one line (glmlab.parsers.OneLineParser), no usage block, before any model loads
    with pytest.raises(SystemExit) as exit_:
        predict.main([*argv, "--grounded", "bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "python -m glmlab.predict: error: argument --grounded: invalid choice: 'bogus'" in err[0]


def test_the_record_grounding_reads_is_the_input_or_the_last_user_message():
    from glmlab.predict import record_of

    assert record_of(SAMPLES[0]) == "故障现象：制动距离过长。"
    talk = {"conversations": [{"role": "system", "content": "抽取三元组"}, {"role": "user", "content": "水泵异响。"},
                              {"role": "assistant", "content": "好的"}, {"role": "user", "content": "发电机漏电。"},
                              {"role": "assistant", "content": "发电机_部件故障_漏电"}]}
    assert record_of(talk) == "发电机漏电。"


def test_predict_uses_the_recorded_training_lengths(bases, tmp_path):
    from glmlab.predict import parse_args

    make_checkpoint("lora", "glm3", bases["glm3"], tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "glmlab_checkpoint.json").read_text())
    meta["args"] = {"max_len": 96, "max_src_len": 40}
    (tmp_path / "ckpt" / "glmlab_checkpoint.json").write_text(json.dumps(meta))
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--test_path", str(_test_file(tmp_path)), "--output_path", str(tmp_path / "o.jsonl")]
    args, info = parse_args(argv)
    assert (args.max_len, args.max_src_len, args.max_new_tokens, info.kind) == (96, 40, 53, "lora")
    args, _ = parse_args(argv + ["--max_src_len", "30", "--max_new_tokens", "5"])
    assert (args.max_src_len, args.max_new_tokens) == (30, 5)


def test_predict_error_is_one_line(bases, tmp_path):
    (tmp_path / "lora").mkdir()
    make_checkpoint("lora", "glm2", bases["glm2"], tmp_path / "lora" / "c", record_base=False)
    proc = _run("--checkpoint", tmp_path / "lora" / "c", "--test_path", _test_file(tmp_path), "--output_path", tmp_path / "o.jsonl")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "records no base model" in lines[0], proc.stderr
    proc = _run("--checkpoint", bases["glm2"], "--chat", "--system", "你是助手。")  # chat works on glm2, a system prompt not
    assert proc.returncode == 2 and "need a ChatGLM3 model" in proc.stderr


@pytest.mark.parametrize("mode", ["glm", "glm3"])
def test_pruned_greedy_equals_batch_generation(mode):
    """Scoring's fast path (rows leave their batch when they end; the rest resume from prompt + answer so far)
    gives each prompt exactly the ids ``generate_ids`` gives it, in the order given, on a pretrained base whose
    answers end at different lengths (some at the budget)."""
    from glmlab.data import encode_prompt
    from glmlab.generation import generate_ids, generate_ids_pruned
    from glmlab.inference import load_for_inference
    from glmlab.notebooks.pretrained import base_model_dir, general_probes

    model, tokenizer, _ = load_for_inference(base_model_dir(mode))
    probes = general_probes()[::12]  # every skill, prompts of many lengths
    prompts = [encode_prompt(p, tokenizer, mode, 64) for p in probes]
    expected = [row for start in range(0, len(prompts), 4)
                for row in generate_ids(model, tokenizer, prompts[start:start + 4], mode, max_new_tokens=12)]
    lengths = {len(row) for row in expected}
    assert len(lengths) > 2 and 12 in lengths, lengths  # ends early, late and at the budget
    assert generate_ids_pruned(model, tokenizer, prompts, mode, max_new_tokens=12, batch_size=5, chunk=3) == expected

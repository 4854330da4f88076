"""Training mixtures (glmlab.mixture): ``--train_path a.jsonl,b.jsonl#N``.

Pure data tests on a tiny tokenizer (counts per file and epoch, determinism by seed, a fresh
draw each epoch, ``#N`` larger than the file, mixed formats, the sampler's redraw), every bad
spec through ``glmlab.train.main`` (one line naming it, nothing written), and one real run of
the loop on a mixture resumed from a checkpoint in the middle of its second epoch.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import REPO, SPO_TRAIN, run_train, train_argv
from safetensors.torch import load_file

from glmlab.data import DataError, encode_file
from glmlab.mixture import Mixture, MixtureDataset, MixtureSampler, parse_spec

GENERAL = REPO / "data" / "synth" / "general_train.jsonl"  # 21 samples of the general corpus
CHAT = REPO / "data" / "chat3_train.jsonl"
TOOLS = REPO / "data" / "tools3_train.jsonl"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """``task``: the first 10 lines of data/spo_train.jsonl; ``general``: 4 general samples."""
    root = tmp_path_factory.mktemp("mix")
    out = {}
    for name, source, n in (("task", SPO_TRAIN, 10), ("general", GENERAL, 4)):
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tok3(tiny_model):
    from glmlab import load_tokenizer

    return load_tokenizer(tiny_model("glm3"), "glm3")


def _mix(spec: str, tok, seed: int = 1234, max_len: int = 512) -> Mixture:
    return Mixture.encode(spec, tok, "glm3", max_len, 256, seed=seed, verbose=False)


def test_counts_per_file_and_epoch(files, tok3, capsys):
    mixture = Mixture.encode(f"{files['task']}#6,{files['general']}", tok3, "glm3", 512, 256, seed=1)
    printed = capsys.readouterr().out
    assert f"{files['task']}: 6 samples per epoch (#6 of 10 kept; read 10, skipped 0, source cut 0" in printed
    assert f"{files['general']}: 4 samples per epoch (all 4 kept; read 4, skipped 0" in printed
    assert "mixture: 10 samples per epoch from 2 files" in printed
    assert len(mixture) == 10 and len(mixture.rows) == 14
    for epoch in range(3):
        rows = mixture.draw(epoch)
        task = [r for r in rows if r < 10]
        assert len(rows) == 10 and len(task) == 6 and len(set(task)) == 6  # 6 distinct task samples
        assert sorted(r for r in rows if r >= 10) == [10, 11, 12, 13]  # the whole general file
    assert [c["per_epoch"] for c in mixture.counts()] == [6, 4]


def test_one_plain_file_is_the_file_in_order(files, tok3):
    mixture = _mix(str(files["task"]), tok3)
    assert mixture.draw(0) == mixture.draw(5) == list(range(10))
    assert mixture.rows == encode_file(files["task"], tok3, "glm3", 512, 256, verbose=False).samples


def test_draws_are_deterministic_by_seed_and_fresh_each_epoch(files, tok3):
    spec = f"{files['task']}#5,{files['general']}#2"
    a, b, c = _mix(spec, tok3, seed=7), _mix(spec, tok3, seed=7), _mix(spec, tok3, seed=8)
    epochs = range(6)
    assert [a.draw(e) for e in epochs] == [b.draw(e) for e in epochs]
    assert [a.draw(e) for e in epochs] != [c.draw(e) for e in epochs]
    assert len({frozenset(a.draw(e)) for e in epochs}) > 1  # another subset of the files each epoch


def test_count_larger_than_the_file_repeats_it(files, tok3):
    mixture = _mix(f"{files['general']}#10", tok3)  # 4 samples: twice each, then 2 more drawn
    for epoch in range(3):
        counts = Counter(mixture.draw(epoch))
        assert sum(counts.values()) == 10 and set(counts) == {0, 1, 2, 3}
        assert sorted(counts.values()) == [2, 2, 3, 3]


def test_mixed_formats_encode_each_file_as_alone(files, tok3):
    mixture = _mix(f"{files['task']},{CHAT},{TOOLS}#3", tok3, max_len=2048)  # tool conversations are long
    alone = [encode_file(p, tok3, "glm3", 2048, 256, verbose=False).samples for p in (files["task"], CHAT, TOOLS)]
    assert mixture.rows == alone[0] + alone[1] + alone[2]
    assert len(alone[2]) == 8 and len(mixture) == 10 + len(alone[1]) + 3


def test_sampler_redraws_and_the_processes_share_the_epoch(files, tok3):
    mixture = _mix(f"{files['task']}#6,{files['general']}#2", tok3)
    seen = []
    for rank in range(2):
        dataset = MixtureDataset(mixture)
        sampler = MixtureSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(4)
        seen += [dataset[i]["input_ids"].tolist() for i in sampler]
    expected = [mixture.rows[r]["input_ids"] for r in mixture.draw(4)]
    assert sorted(seen) == sorted(expected)


def _bad_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BAD_SPECS = {  # name -> (spec from (tmp_path, files), mode, what the line must say)
    "missing_file": (lambda tmp, f: f"{f['task']},{tmp / 'nope.jsonl'}#5", "glm2", "nope.jsonl: no such file"),
    "zero": (lambda tmp, f: f"{f['task']},{f['general']}#0", "glm2", "general.jsonl#0: #N must be a positive"),
    "not_a_number": (lambda tmp, f: f"{f['task']}#x", "glm2", "task.jsonl#x: #N must be a positive"),
    "empty_name": (lambda tmp, f: f"{f['task']},,{f['general']}", "glm2", "an empty file name"),
    "empty_file": (lambda tmp, f: f"{f['task']},{_bad_file(tmp, 'empty.jsonl', '')}#3", "glm2",
                   "empty.jsonl:1: empty file"),
    "bad_line_in_second_file": (lambda tmp, f: f"{f['task']},{_bad_file(tmp, 'bad.jsonl', GENERAL.read_text().splitlines()[0] + chr(10) + '{oops' + chr(10))}",
                                "glm2", "bad.jsonl:2: malformed JSON"),
    "conversations_under_glm2": (lambda tmp, f: f"{f['task']},{CHAT}#4", "glm2",
                                 "chat3_train.jsonl:1: conversation samples need --mode glm3"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_is_one_line_naming_it_and_nothing_is_written(case, files, tiny_model, tmp_path, capsys):
    from glmlab.train import main

    spec, mode, message = BAD_SPECS[case]
    out = tmp_path / "out"
    status = main(train_argv(tiny_model(mode), out, mode=mode, train_path=spec(tmp_path, files)))
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("glmlab.train: error: --train_path") and message in lines[0], lines
    assert not out.exists()


def test_eval_path_takes_the_same_syntax(files, tiny_model, tmp_path, capsys):
    from glmlab.train import main

    out = tmp_path / "out"
    assert main(train_argv(tiny_model("glm2"), out, mode="glm2", eval_path=f"{files['general']}#-1")) == 2
    assert "--eval_path" in capsys.readouterr().err and not out.exists()


def test_parse_spec():
    spec = f"{SPO_TRAIN}, {GENERAL}#300"
    assert [str(s) for s in parse_spec(spec)] == [str(SPO_TRAIN), f"{GENERAL}#300"]
    with pytest.raises(DataError, match="#N must be"):
        parse_spec(f"{SPO_TRAIN}#")


@pytest.mark.slow
def test_resume_in_the_middle_of_a_mixture_epoch_equals_the_uninterrupted_run(files, tiny_model, tmp_path):
    # 8 task + 4 general samples an epoch, micro-batch 2 on 2 processes: 3 steps an epoch, 6 in all;
    # the first run stops at step 4, one micro-batch into epoch 2 (whose draw the resumed run must redo).
    flags = dict(train_path=f"{files['task']}#8,{files['general']}#4", eval_path=f"{files['general']}#3",
                 mode="glm3", train_type="lora", lora_dropout="0.1", learning_rate="2e-2", num_train_epochs=2)
    model = tiny_model("glm3")
    full = run_train(train_argv(model, tmp_path / "full", **flags), tmp_path / "full")
    assert full.proc.returncode == 0, full.explain()
    assert "mixture: 12 samples per epoch from 2 files" in full.proc.stdout
    data = json.loads((full.output_dir / "data.json").read_text())
    assert [(c["source"].rsplit("/", 1)[1], c["per_epoch"], c["kept"]) for c in data["train"]] == [
        ("task.jsonl#8", 8, 10), ("general.jsonl#4", 4, 4)]

    first = run_train(train_argv(model, tmp_path / "first", max_steps=4, **flags), tmp_path / "first")
    assert first.proc.returncode == 0, first.explain()
    assert [c.name for c in first.checkpoints()] == ["epoch-1-step-3", "epoch-2-step-4"]
    resumed = run_train(train_argv(model, tmp_path / "resumed", resume_from=first.checkpoints()[-1], **flags),
                        tmp_path / "resumed")
    assert resumed.proc.returncode == 0, resumed.explain()

    assert len(full.losses) == 6 and first.losses == full.losses[:4]
    assert [m["step"] for m in resumed.metrics if "loss" in m] == [5, 6]
    assert resumed.losses == pytest.approx(full.losses[4:], rel=1e-6, abs=1e-7)
    assert resumed.eval_losses == pytest.approx(full.eval_losses[-1:], rel=1e-6)
    a = load_file(str(full.output_dir / "epoch-2-step-6" / "adapter_model.safetensors"))
    b = load_file(str(resumed.output_dir / "epoch-2-step-6" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)

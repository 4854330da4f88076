"""Pipeline-parallel full fine-tuning (``--pipeline_stages``, :mod:`glmlab.pipeline`) against plain runs.

* In process: the stage layers of every generation hold every official tensor exactly once
  and, chained, compute the model's logits on a padded batch of rows of different lengths.
* Real runs (tiny models, fp32, gloo processes): two stages log the losses of one process
  without a pipeline (same data, seed, order, accumulation) and save the same weights, with
  activation checkpointing (glm2) and without (glm, glm3), and the same eval loss; the first checkpoint (the first
  step runs at learning rate 0) is the base folder bit for bit; resuming from a mid-run
  pipeline checkpoint equals the uninterrupted run; two stages x two replicas (4 processes)
  equal the two-process ZeRO-1 run; the converter turns the bare DeepSpeed checkpoint into
  the saved folder.
* Every refused combination: one line, before any model loads, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SPO_TEST, SPO_TRAIN, run_train, train_argv
from safetensors.torch import load_file

PIPE = {"train_type": "all", "ds_file": "ds_zero1_no_offload.json", "learning_rate": "3e-3"}


def _lines(tmp_path_factory, n: int) -> Path:
    path = tmp_path_factory.mktemp("data") / f"train{n}.jsonl"
    path.write_text("".join(SPO_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return path


def _run(model: Path, mode: str, out: Path, data: Path, processes: int, **flags):
    result = run_train(train_argv(model, out, train_path=data, mode=mode, **PIPE, **flags), out, processes=processes)
    assert result.proc.returncode == 0, result.explain()
    return result


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors files (one file or shards), each key exactly once."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        part = load_file(file)
        assert not set(part) & set(state), f"{file.name} repeats keys"
        state.update(part)
    return state


def _assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    """Same keys; tensors equal (``atol`` 0) or within ``atol``.

    With a tolerance, the attention's ``query_key_value`` bias gets ten times more: its key part
    has an analytically zero gradient (softmax ignores a bias shared by every key), so both runs
    feed AdamW rounding noise of ~1e-10, which it normalises into steps of up to the learning rate
    (measured: 3e-6 between a pipeline and a plain run whose losses agree to the last digit).
    """
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        if atol:
            tolerance = 10 * atol if name.endswith("query_key_value.bias") else atol
            torch.testing.assert_close(wa[name], wb[name], atol=tolerance, rtol=0, msg=name)
        else:
            assert torch.equal(wa[name], wb[name]), name


# =============================================================================== in process
@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_stage_layers_hold_every_key_once_and_compute_the_models_logits(tiny_model, mode):
    from glmlab import load_model, load_tokenizer
    from glmlab.data import DataCollator, encode_file
    from glmlab.loading import build_config
    from glmlab.pipeline import layer_specs

    folder = tiny_model(mode)
    model = load_model(folder, mode)
    config, _ = build_config(folder, mode)
    layers = [spec.build() for spec in layer_specs(config, folder, torch.float32)]
    names = [name for layer in layers for name in layer.state_dict()]
    assert sorted(names) == sorted(model.state_dict())  # every official key, exactly once
    tokenizer = load_tokenizer(folder, mode)
    samples = encode_file(SPO_TRAIN, tokenizer, mode, 64, 32).samples[:3]
    batch = DataCollator(tokenizer.pad_token_id)(samples)
    assert not bool(batch["attention_mask"].all())  # rows of different lengths, padded
    x = (batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        for layer in layers:
            x = layer.eval()(x)
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(x, expected)


REFUSED = {
    "zero2": ({"ds_file": "ds_zero2_no_offload.json"}, "ZeRO stage 0 or 1"),
    "zero3": ({"ds_file": "ds_zero3_no_offload.json"}, "ZeRO stage 0 or 1"),
    "lora": ({"train_type": "lora"}, "--train_type all only"),
    "freeze": ({"train_type": "freeze", "freeze_module_name": "layers.1."}, "--train_type all only"),
    "ptuning": ({"train_type": "ptuning"}, "--train_type all only"),
    "more_stages_than_layers": ({"pipeline_stages": 3}, "more stages than the 2 layers"),
    "world_not_divisible": ({"pipeline_stages": 2}, "does not divide the 3 processes"),
    "offload": ({"ds_file": "OFFLOAD"}, "offloads"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_combinations_are_one_line_before_anything_loads(case, tiny_model, tmp_path, monkeypatch):
    from glmlab.args import ArgsError, parse_args

    flags, message = REFUSED[case]
    flags = {**PIPE, "pipeline_stages": 2, **flags}
    if flags["ds_file"] == "OFFLOAD":
        flags["ds_file"] = tmp_path / "offload.json"
        flags["ds_file"].write_text(json.dumps({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}))
    monkeypatch.setenv("GLMLAB_WORLD_SIZE", "3" if case == "world_not_divisible" else "2")
    out = tmp_path / "out"
    with pytest.raises(ArgsError) as err:
        parse_args(train_argv(tiny_model("glm2"), out, mode="glm2", **flags))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


@pytest.mark.slow
def test_world_size_refused_by_the_launcher(tiny_model, tmp_path):
    out = tmp_path / "out"
    result = run_train(train_argv(tiny_model("glm2"), out, mode="glm2", pipeline_stages=2, **PIPE), out, processes=3)
    lines = result.proc.stderr.strip().splitlines()
    assert result.proc.returncode == 2 and len(lines) == 1, result.explain()
    assert lines[0] == "glmlab.train: error: --pipeline_stages 2 does not divide the 3 processes " \
                       "(stages x data-parallel replicas = processes)"
    assert not out.exists()


# =============================================================================== ChatGLM2: two stages, one process
@pytest.fixture(scope="module")
def glm2_runs(tiny_model, tmp_path_factory):
    """Two stages with checkpointing, saving every step; the same run on one process; a resume from step 2."""
    data = _lines(tmp_path_factory, 16)
    root = tmp_path_factory.mktemp("glm2")
    flags = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, save_model_step=1)
    pipe = _run(tiny_model("glm2"), "glm2", root / "pipe", data, 2, pipeline_stages=2, gradient_checkpointing="true",
                **flags)
    one = _run(tiny_model("glm2"), "glm2", root / "one", data, 0, **flags)
    step2 = pipe.checkpoints()[1]
    resumed = _run(tiny_model("glm2"), "glm2", root / "resumed", data, 2, pipeline_stages=2,
                   gradient_checkpointing="true", resume_from=step2, **flags)
    return pipe, one, resumed


@pytest.mark.slow
def test_two_stages_equal_one_process(glm2_runs):
    pipe, one, _ = glm2_runs
    assert len(pipe.losses) == 4 and pipe.losses[-1] != pipe.losses[0]
    assert pipe.losses == pytest.approx(one.losses, abs=1e-5)
    assert [m["lr"] for m in pipe.metrics] == [m["lr"] for m in one.metrics]
    _assert_same_weights(pipe.checkpoints()[-1], one.checkpoints()[-1], atol=1e-6)


@pytest.mark.slow
def test_saved_folder_is_official_and_bitwise_the_base_at_learning_rate_0(glm2_runs, tiny_model):
    from glmlab import load_model
    from glmlab.inference import load_for_inference

    pipe, _, _ = glm2_runs
    first = pipe.checkpoints()[0]  # step 1 runs at learning rate 0 (DeepSpeed's warmup starts there)
    assert pipe.metrics[0]["lr"] == 0.0
    index = json.loads((first / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    _assert_same_weights(first, tiny_model("glm2"))  # every official key once, bit for bit
    last = pipe.checkpoints()[-1]
    strict = load_model(last)  # strict reload
    model, _, mode = load_for_inference(last)
    assert mode == "glm2" and model.state_dict().keys() == strict.state_dict().keys()


@pytest.mark.slow
def test_resume_from_a_pipeline_checkpoint_equals_the_uninterrupted_run(glm2_runs):
    pipe, _, resumed = glm2_runs
    assert [m["step"] for m in resumed.metrics] == [3, 4]
    assert resumed.losses == pipe.losses[2:]
    _assert_same_weights(resumed.checkpoints()[-1], pipe.checkpoints()[-1])


@pytest.mark.slow
def test_converter_turns_the_deepspeed_checkpoint_into_the_saved_folder(glm2_runs, tiny_model, tmp_path):
    from glmlab.pipeline_convert import main

    pipe, _, _ = glm2_runs
    last = pipe.checkpoints()[-1]
    out = tmp_path / "converted"
    assert main(["--checkpoint", str(last / "deepspeed"), "--model_name_or_path", str(tiny_model("glm2")),
                 "--output_dir", str(out)]) == 0
    _assert_same_weights(out, last)
    assert json.loads((out / "config.json").read_text()) == json.loads((last / "config.json").read_text())
    assert main(["--checkpoint", str(tmp_path), "--model_name_or_path", str(tiny_model("glm2")),
                 "--output_dir", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


# =============================================================================== ChatGLM-6B and ChatGLM3
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["glm", "glm3"])
def test_two_stages_equal_one_process_glm_and_glm3(mode, tiny_model, tmp_path_factory):
    data = _lines(tmp_path_factory, 12)
    root = tmp_path_factory.mktemp(mode)
    flags = dict(per_device_train_batch_size=2, eval_path=SPO_TEST)
    pipe = _run(tiny_model(mode), mode, root / "pipe", data, 2, pipeline_stages=2, **flags)
    one = _run(tiny_model(mode), mode, root / "one", data, 0, **flags)
    assert len(pipe.losses) == 6
    assert pipe.losses == pytest.approx(one.losses, abs=1e-5)
    assert len(pipe.eval_losses) == 1 and pipe.eval_losses == pytest.approx(one.eval_losses, abs=1e-5)
    _assert_same_weights(pipe.checkpoints()[-1], one.checkpoints()[-1], atol=1e-6)


# =============================================================================== data parallel
@pytest.mark.slow
def test_two_stages_by_two_replicas_equal_two_process_zero1(tiny_model, tmp_path_factory):
    data = _lines(tmp_path_factory, 16)
    root = tmp_path_factory.mktemp("dp")
    flags = dict(per_device_train_batch_size=2)
    pipe = _run(tiny_model("glm2"), "glm2", root / "pipe", data, 4, pipeline_stages=2, **flags)
    zero1 = _run(tiny_model("glm2"), "glm2", root / "zero1", data, 2, **flags)
    assert "2 stages x 2 data-parallel replica(s)" in pipe.proc.stdout
    assert len(pipe.losses) == 4
    assert pipe.losses == pytest.approx(zero1.losses, abs=1e-5)
    _assert_same_weights(pipe.checkpoints()[-1], zero1.checkpoints()[-1], atol=1e-6)


# =============================================================================== memory rows
@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_memory_rows_count_each_stages_real_parameters(tiny_model, mode, capsys):
    from glmlab.loading import build_config
    from glmlab.memory import main
    from glmlab.memory.pipeline import bubble_fraction, estimate_pipeline_memory
    from glmlab.pipeline import layer_specs

    folder = tiny_model(mode)
    config, _ = build_config(folder, mode)
    layers = [spec.build() for spec in layer_specs(config, folder, torch.float32)]
    # the run's split of 2 blocks into 2 stages: [embedding, block 0] and [block 1, head]
    real = [sum(p.numel() for layer in layers[:2] for p in layer.parameters()),
            sum(p.numel() for layer in layers[2:] for p in layer.parameters())]
    e = estimate_pipeline_memory(config, 2, num_gpus=4, micro_batches=4, batch_size=2, seq_len=64, precision="fp32")
    assert [s.parameters for s in e.stages] == real
    assert [s.weights for s in e.stages] == [4 * n for n in real] == [s.gradients for s in e.stages]
    assert [s.optimizer for s in e.stages] == [12 * n / 2 for n in real]  # ZeRO-1 over the 2 replicas
    assert [s.in_flight for s in e.stages] == [2, 1]  # 1F1B: p - s micro-batches in flight
    assert e.stages[0].logits == 0 < e.stages[1].logits
    assert e.bubble == bubble_fraction(2, 4) == 1 / 5
    assert main(["--model_name_or_path", str(folder), "--mode", mode, "--train_type", "all", "--pipeline_stages", "2",
                 "--gradient_accumulation_steps", "4", "--precision", "fp32", "--max_len", "64"]) == 0
    assert "bubble (p-1)/(m+p-1) = 20.0%" in capsys.readouterr().out


def test_memory_calculator_has_pipeline_rows():
    from glmlab.notebooks import memory_widget
    from glmlab.memory import preset_config
    from glmlab.memory.pipeline import estimate_pipeline_memory

    calc = memory_widget.calculator("glm2", "all", num_gpus=4, pipeline_stages=4, micro_batches=8, seq_len=1024)
    e = estimate_pipeline_memory(preset_config("glm2"), 4, num_gpus=4, micro_batches=8, batch_size=1, seq_len=1024,
                                 gradient_checkpointing=True)
    assert "bubble (p-1)/(m+p-1) = 27.3%" in calc.text()
    assert f"peak {e.peak / 2**30:.2f} GiB per GPU" in memory_widget.breakdown_html(calc.values)
    assert "do not divide 4 GPUs" in memory_widget.breakdown_html({**calc.values, "pipeline_stages": 3})


@pytest.mark.slow
def test_non_finite_loss_stops_the_pipeline_without_saving(tiny_model, tmp_path_factory):
    data = _lines(tmp_path_factory, 16)
    out = tmp_path_factory.mktemp("nan") / "out"
    # An absurd learning rate overflows the weights once DeepSpeed's two warmup steps at rate 0 are past.
    argv = train_argv(tiny_model("glm2"), out, train_path=data, mode="glm2", **{**PIPE, "learning_rate": "1e30"},
                      pipeline_stages=2, max_grad_norm="0", save_model_step=1, max_steps=8)
    result = run_train(argv, out, processes=2)
    assert result.proc.returncode == 1, result.explain()
    error = [line for line in result.proc.stderr.splitlines() if line.startswith("glmlab.train: error:")]
    assert len(error) == 1 and "stopped without saving (the pipeline engine had applied it)" in error[0], result.explain()
    bad_step = int(error[0].split("at optimizer step ")[1].split()[0])
    assert [int(c.name.rsplit("-", 1)[1]) for c in result.checkpoints()] == list(range(1, bad_step))
    assert f"last good checkpoint: {out / f'epoch-1-step-{bad_step - 1}'}" in error[0]

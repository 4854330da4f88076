"""Method strategies, argument parsing and the DeepSpeed config, without DeepSpeed or a process group."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import REPO, SPO_TRAIN

from glmlab import load_model, load_tokenizer
from glmlab.args import (
    CONFIG_DIR,
    ArgsError,
    TrainArgs,
    build_parser,
    parse_args,
    str2bool,
    to_argv,
)
from glmlab.methods import (
    PREFIX_ENCODER,
    checkpoint_parameter_names,
    count_parameters,
    freeze_patterns,
    get_strategy,
    match_modules,
    match_patterns,
    module_names,
    trainable_names,
)
from glmlab.train import Plan, build_ds_config, param_groups


def _args(model: Path, tmp_path: Path, *extra: str) -> TrainArgs:
    return parse_args(["--train_path", str(SPO_TRAIN), "--model_name_or_path", str(model),
                       "--output_dir", str(tmp_path / "out"), *extra])


# --------------------------------------------------------------------------- booleans
@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
                                        ("false", False), ("False", False), ("0", False), ("no", False), ("OFF", False)])
def test_str2bool(text, value):
    assert str2bool(text) is value


def test_str2bool_rejects_other_text():
    with pytest.raises(ArgsError, match="boolean"):
        str2bool("maybe")


def test_prefix_projection_false_means_false(tiny_model, tmp_path):
    """The original's ``type=bool`` made ``--prefix_projection False`` true."""
    model = tiny_model("glm2")
    assert _args(model, tmp_path, "--prefix_projection", "False").prefix_projection is False
    assert _args(model, tmp_path, "--prefix_projection", "True").prefix_projection is True
    assert _args(model, tmp_path).prefix_projection is True  # the original default
    # store_true flags of the original still work bare, and take an explicit value too
    assert _args(model, tmp_path, "--is_skip", "--gradient_checkpointing").is_skip is True
    assert _args(model, tmp_path, "--is_skip", "false").is_skip is False


# --------------------------------------------------------------------------- arguments
def test_every_field_has_help_and_a_flag():
    parser = build_parser()
    flags = {a.dest for a in parser._actions}
    for f in fields(TrainArgs):
        assert f.metadata.get("help"), f"{f.name} has no help"
        assert f.name in flags


ORIGINAL_COMMAND = """--train_path {train} --model_name_or_path {model} --per_device_train_batch_size 1
--max_len 1560 --max_src_len 1024 --learning_rate 1e-4 --weight_decay 0.1 --num_train_epochs 2
--gradient_accumulation_steps 4 --warmup_ratio 0.1 --mode glm2 --train_type freeze
--freeze_module_name layers.1.,layers.0. --seed 1234 --ds_file ds_zero2_no_offload.json --gradient_checkpointing
--show_loss_step 10 --output_dir {out} --pre_seq_len 16 --prefix_projection True --lora_dim 16 --lora_alpha 64
--lora_dropout 0.1 --lora_module_name query_key_value,dense_h_to_4h,dense_4h_to_h,dense --local_rank=0 --is_skip
--save_model_step 100"""


def test_original_command_parses(tiny_model, tmp_path):
    argv = ORIGINAL_COMMAND.format(train=SPO_TRAIN, model=tiny_model("glm2"), out=tmp_path / "o").split()
    args = parse_args(argv)
    assert (args.max_len, args.max_src_len, args.learning_rate, args.gradient_accumulation_steps) == (1560, 1024, 1e-4, 4)
    assert args.gradient_checkpointing and args.is_skip and args.prefix_projection
    assert args.ds_path == CONFIG_DIR / "ds_zero2_no_offload.json"
    assert args.local_rank == 0 and args.save_model_step == 100 and args.precision is None
    assert parse_args(to_argv(args)) == args
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags,message", [
    (["--mode", "glm4"], "--mode"),
    (["--train_type", "qlora"], "--train_type"),
    (["--warmup_ratio", "1.5"], "--warmup_ratio"),
    (["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
    (["--max_len", "16", "--max_src_len", "32"], "max_len"),
    (["--ds_file", "no_such.json"], "--ds_file"),
    (["--precision", "fp16"], "fp16"),
    (["--resume_from", "/no/such/dir"], "--resume_from"),
    (["--train_type", "freeze", "--freeze_module_name", "layers.9."], "layers.9."),
    (["--train_type", "freeze", "--freeze_module_name", "7"], "layers.7."),
    (["--train_type", "lora", "--lora_module_name", "query_key_value,qkv_proj"], "qkv_proj"),
    (["--mode", "glm"], "not mode='glm'"),
    (["--train_path", str(REPO / "data" / "chat3_train.jsonl")], "need --mode glm3"),
])
def test_bad_arguments_raise_one_line(tiny_model, tmp_path, monkeypatch, flags, message):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    with pytest.raises(ArgsError, match=message.replace(".", r"\.")) as err:
        _args(tiny_model("glm2"), tmp_path, *flags)
    assert "\n" not in str(err.value)


def test_missing_required_flag_is_one_line():
    with pytest.raises(ArgsError, match="required"):
        parse_args(["--train_path", "x"])


# --------------------------------------------------------------------------- pattern matching
def test_freeze_patterns_accept_layer_indices():
    assert freeze_patterns("27,26") == ["layers.27.", "layers.26."]
    assert freeze_patterns(" layers.27., layers.26.,") == ["layers.27.", "layers.26."]
    names = ["transformer.encoder.layers.1.mlp.dense_h_to_4h.weight", "transformer.encoder.layers.11.mlp.weight"]
    assert match_patterns(freeze_patterns("1"), names) == {"layers.1.": names[:1]}


def test_lora_targets_match_module_suffixes():
    modules = module_names(["a.layers.0.self_attention.query_key_value.weight", "a.layers.0.self_attention.dense.weight",
                            "a.layers.0.mlp.dense_h_to_4h.weight"])
    hits = match_modules(["dense", "query_key_value", "h_to_4h"], modules)
    assert hits["dense"] == ["a.layers.0.self_attention.dense"]
    assert hits["query_key_value"] == ["a.layers.0.self_attention.query_key_value"]
    assert hits["h_to_4h"] == []  # a suffix of the last name part is not a module name


@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_checkpoint_names_are_the_model_parameter_names(tiny_model, mode):
    model = load_model(tiny_model(mode), mode)
    assert set(checkpoint_parameter_names(tiny_model(mode))) == set(model.state_dict())


# --------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("mode", ["glm", "glm2", "glm3"])
def test_freeze_trains_matching_parameters_only(tiny_model, tmp_path, mode):
    args = _args(tiny_model(mode), tmp_path, "--mode", mode, "--train_type", "freeze", "--freeze_module_name", "1")
    strategy = get_strategy("freeze")
    model = strategy.prepare(load_model(args.model_name_or_path, mode), args)
    names = trainable_names(model)
    assert names and all("layers.1." in n for n in names)
    expected = sum(p.numel() for n, p in model.named_parameters() if "layers.1." in n)
    trainable, total = count_parameters(model)
    assert trainable == expected and total == sum(p.numel() for p in model.parameters())
    assert f"trainable params: {expected:,}" in strategy.describe(model)


def test_freeze_prepare_rejects_unmatched_pattern(tiny_model, tmp_path):
    args = _args(tiny_model("glm2"), tmp_path)
    args.freeze_module_name = "layers.1.,layers.5."
    with pytest.raises(ValueError, match=r"'layers\.5\.' matches no parameter"):
        get_strategy("freeze").prepare(load_model(args.model_name_or_path, "glm2"), args)


@pytest.mark.parametrize("mode", ["glm", "glm2"])
def test_lora_trains_adapters_only(tiny_model, tmp_path, mode):
    args = _args(tiny_model(mode), tmp_path, "--mode", mode, "--train_type", "lora", "--lora_dim", "4")
    base = load_model(args.model_name_or_path, mode)
    qkv = [m for n, m in base.named_modules() if n.endswith("query_key_value")]
    model = get_strategy("lora").prepare(base, args)
    names = trainable_names(model)
    assert names and all("lora_" in n for n in names)
    expected = sum(4 * (m.in_features + m.out_features) for m in qkv)
    assert count_parameters(model)[0] == expected


@pytest.mark.parametrize("projection", [True, False])
def test_ptuning_trains_prefix_encoder_only(tiny_model, tmp_path, projection):
    args = _args(tiny_model("glm3"), tmp_path, "--mode", "glm3", "--train_type", "ptuning", "--pre_seq_len", "4",
                 "--prefix_projection", str(projection))
    strategy = get_strategy("ptuning")
    assert strategy.config_overrides(args) == {"pre_seq_len": 4, "prefix_projection": projection}
    model = strategy.prepare(load_model(args.model_name_or_path, "glm3", **strategy.config_overrides(args)), args)
    names = trainable_names(model)
    assert names and all(n.startswith(PREFIX_ENCODER) for n in names)
    assert any(n.startswith(PREFIX_ENCODER + "trans.") for n in names) is projection

    strategy.save(model, load_tokenizer(args.model_name_or_path, "glm3"), tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "prefix_encoder.safetensors"), "pt") as fh:
        assert sorted(fh.keys()) == sorted(names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["pre_seq_len"], config["prefix_projection"]) == (4, projection)
    assert not list(tmp_path.glob("model*.safetensors"))


def test_ptuning_needs_a_prefix_encoder(tiny_model, tmp_path):
    args = _args(tiny_model("glm2"), tmp_path, "--train_type", "ptuning")
    with pytest.raises(ValueError, match="prefix_encoder"):
        get_strategy("ptuning").prepare(load_model(args.model_name_or_path, "glm2"), args)


def test_all_trains_everything(tiny_model, tmp_path):
    args = _args(tiny_model("glm"), tmp_path, "--mode", "glm", "--train_type", "all")
    model = load_model(args.model_name_or_path, "glm").requires_grad_(False)
    model = get_strategy("all").prepare(model, args)
    trainable, total = count_parameters(model)
    assert trainable == total > 0


def test_unknown_strategy():
    with pytest.raises(ValueError, match="train_type"):
        get_strategy("prompt")


# --------------------------------------------------------------------------- optimisation setup
def test_no_weight_decay_on_biases_and_norms(tiny_model):
    model = load_model(tiny_model("glm"), "glm")  # ChatGLM-6B has biases and LayerNorms
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_plan_drops_partial_accumulation(tiny_model, tmp_path):
    args = _args(tiny_model("glm2"), tmp_path, "--gradient_accumulation_steps", "4", "--num_train_epochs", "3",
                 "--warmup_ratio", "0.1")
    plan = Plan.build(30, args)
    assert (plan.steps_per_epoch, plan.micro_batches_per_epoch, plan.total_steps, plan.warmup_steps) == (7, 28, 21, 3)
    with pytest.raises(ArgsError, match="gradient_accumulation_steps"):
        Plan.build(3, args)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("ds_*.json")))
def test_shipped_configs_hold_zero_settings_only(tiny_model, tmp_path, name):
    raw = json.loads((CONFIG_DIR / name).read_text())
    assert set(raw) <= {"zero_optimization", "zero_force_ds_cpu_optimizer"}
    offload = "_offload" in name and "no_offload" not in name
    assert raw.get("zero_force_ds_cpu_optimizer") is (True if offload else None)
    args = _args(tiny_model("glm2"), tmp_path, "--ds_file", name, "--per_device_train_batch_size", "2",
                 "--gradient_accumulation_steps", "3", "--learning_rate", "2e-4")
    plan = Plan.build(12, args)
    config = build_ds_config(args, world_size=4, plan=plan, precision="bf16")
    assert config["train_batch_size"] == 2 * 3 * 4 and config["gradient_accumulation_steps"] == 3
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]
    assert config["scheduler"]["params"]["total_num_steps"] == plan.total_steps
    assert config["optimizer"]["params"]["lr"] == config["scheduler"]["params"]["warmup_max_lr"] == 2e-4
    assert config["optimizer"]["params"].get("torch_adam", False) is (not offload)
    assert config["zero_optimization"] == raw["zero_optimization"]


def test_launcher_script_is_the_glmlab_launch_command():
    """The documented ``scripts/launch_ds.py`` and ``glmlab launch`` run the same code (one launcher)."""
    import importlib.util

    import glmlab.launch

    spec = importlib.util.spec_from_file_location("launch_ds", REPO / "scripts" / "launch_ds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is glmlab.launch.main


def test_latest_checkpoint_is_the_highest_step(tmp_path):
    from glmlab.checkpoint import latest_checkpoint

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        latest_checkpoint(tmp_path)
    for name in ("epoch-1-step-9", "epoch-2-step-10", "epoch-1-step-2"):
        (tmp_path / name).mkdir()
    (tmp_path / "epoch-3-step-99").write_text("a file, not a checkpoint")
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-2-step-10"  # by step number, not by name

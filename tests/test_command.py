"""The ``glmlab`` command: every subcommand answers ``--help``, dispatches to its module, and precisions
take their short and long names alike."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env, train_argv

from glmlab.__main__ import COMMANDS, main
from glmlab.args import ArgsError, parse_args
from glmlab.constants import canonical_precision
from glmlab.loading import parse_dtype


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out


def test_the_command_lists_its_subcommands_and_refuses_others(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert main(["fine-tune"]) == 2
    assert capsys.readouterr().err.strip() == (
        "glmlab: error: unknown subcommand 'fine-tune' (choose from " + ", ".join(COMMANDS) + ")")
    assert main([]) == 2


def _status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's error()
        return exit_.code


def test_subcommand_errors_are_the_modules_one_line(capsys, tmp_path):
    assert _status(["memory", "--mode", "glm2", "--pre_seq_len", "0"]) == 2
    assert capsys.readouterr().err.strip() == "glmlab memory: error: --pre_seq_len must be at least 1 (got 0)"
    assert _status(["launch", "--cpu", "0", "--", "--train_path", "x"]) == 2
    assert capsys.readouterr().err.strip() == "glmlab launch: error: --cpu must be at least 1"


def test_python_dash_m_glmlab_is_the_command(tmp_path, tiny_model):
    proc = subprocess.run([sys.executable, "-m", "glmlab", "tiny", "--mode", "glm2", "--output_dir", str(tmp_path / "t")],
                          capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    # what glmlab.tiny.make_tiny writes (deterministic), file for file and byte for byte
    expected = {f.name: f.read_bytes() for f in tiny_model("glm2").iterdir()}
    assert {f.name: f.read_bytes() for f in (tmp_path / "t").iterdir()} == expected and "model.safetensors" in expected


@pytest.mark.parametrize(("name", "short", "dtype"), [("bfloat16", "bf16", torch.bfloat16), ("float16", "fp16", torch.float16),
                                                     ("float32", "fp32", torch.float32), ("BF16", "bf16", torch.bfloat16)])
def test_one_precision_vocabulary(name, short, dtype):
    from glmlab.predict import build_parser as predict_parser

    assert canonical_precision(name) == short
    assert parse_dtype(name) is dtype and parse_dtype(short) is dtype
    assert parse_dtype(predict_parser().parse_args(["--dtype", name]).dtype) is dtype


def test_train_takes_the_long_precision_names(tiny_model, tmp_path):
    args = parse_args(train_argv(tiny_model("glm2"), tmp_path / "out", precision="bfloat16"), check=False)
    assert args.precision == "bf16"
    with pytest.raises(ArgsError, match=r"--precision.*fp8"):
        parse_args(train_argv(tiny_model("glm2"), tmp_path / "out", precision="fp8"), check=False)


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16, fp16 \(or float32"):
        canonical_precision("fp8")

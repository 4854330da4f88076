"""Bad notebook parameters stop the setup cell with one line naming the parameter (issue 16, item 9)."""

from __future__ import annotations

import json
import sys

import pytest

from glmlab.notebooks.parameters import ParameterError, check_parameters


@pytest.mark.parametrize("parameters, message", [
    ({"max_len": 0}, "parameter max_len: must be a positive integer, got 0"),
    ({"nproc": 1.5}, "parameter nproc: must be a positive integer, got 1.5"),
    ({"mode": "glm4"}, "parameter mode: must be one of glm, glm2, glm3, got 'glm4'"),
    ({"max_steps": -1}, "parameter max_steps: must be a positive integer, got -1"),
    ({"replay_shares": [0.1, 1.0]}, "parameter replay_shares: must be a list of shares between 0 and 1"),
    ({"replay_methods": ["lora", "ptuning"]}, "parameter replay_methods: must be a list of distinct methods among "
                                              "freeze, lora, full, got ['lora', 'ptuning']"),
    ({"replay_methods": ["lora", "lora"]}, "parameter replay_methods: must be a list of distinct methods"),
    ({"replay_methods": "lora"}, "parameter replay_methods: must be a list of distinct methods"),
    ({"max_len": 64, "max_src_len": 64}, "parameter max_src_len: must be below max_len (64)"),
    ({"model_dir": "/no/such/base"}, "parameter model_dir: /no/such/base: no such folder"),
])
def test_a_wrong_parameter_is_named(parameters, message):
    with pytest.raises(ParameterError) as err:
        check_parameters(**parameters)
    assert str(err.value).startswith(message)
    assert err.value._render_traceback_() == [f"ParameterError: {err.value}"]  # IPython shows this one line


def test_data_files_are_read_and_good_parameters_pass(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ParameterError, match=rf"^parameter train_path: {empty}:1: empty file, no samples$"):
        check_parameters(train_path=str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "input": "y", "output": "z"}\nnot json\n')
    with pytest.raises(ParameterError, match=rf"^parameter test_path: {bad}:2"):
        check_parameters(test_path=str(bad))
    check_parameters(model_dir=None, mode="glm3", train_path=None, chat_path="data/chat3_train.jsonl", max_len=128,
                     max_src_len=96, max_steps=None, seed=0, replay_shares=[0.1], replay_methods=["full", "freeze"],
                     unknown_name=object())


def test_01_stops_in_its_setup_cell(tmp_path):
    """papermill -p max_len 0: the setup cell raises the one line, nothing after it runs, nothing is written."""
    pm = pytest.importorskip("papermill")
    root = tmp_path / "jupyter"
    (root / "kernels" / "glmlab-tests").mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (root / "kernels" / "glmlab-tests" / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python",
                                                                                "display_name": "glmlab tests"}))
    from glmlab.notebooks.render import NOTEBOOKS, clean_copy

    source = clean_copy(NOTEBOOKS / "01_data.ipynb", tmp_path / "01_clean.ipynb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        with pytest.raises(pm.PapermillExecutionError) as err:
            pm.execute_notebook(str(source), str(tmp_path / "01.ipynb"), kernel_name="glmlab-tests", cwd=str(tmp_path),
                                parameters={"max_len": 0, "output_dir": str(tmp_path / "out")}, progress_bar=False)
    assert err.value.ename == "ParameterError"
    assert err.value.evalue == "parameter max_len: must be a positive integer, got 0"
    assert err.value.traceback == ["ParameterError: parameter max_len: must be a positive integer, got 0"]
    assert not (tmp_path / "out").exists()

"""The notebooks run end to end on tiny settings (papermill), and what they write says training worked.

Each notebook executes in a fresh kernel from a temporary folder (so none relies on the working
directory). The kernel is this interpreter: a kernelspec pointing at ``sys.executable`` is written to a
temporary ``JUPYTER_PATH`` folder, which Jupyter searches before any user or system kernel, so a fresh
clone where only ``bash scripts/setup.sh`` ran needs no ``ipykernel install``.

02-05 train through ``scripts/launch_ds.py --cpu 2`` (the real DeepSpeed launcher) for 15 optimizer
steps on sequences of at most 128 tokens; 06 compares their outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
KERNEL = "glmlab-tests"
TINY = {"nproc": 2, "max_steps": 15, "max_len": 128, "max_src_len": 64, "max_new_tokens": 16}
TRAINING = ("02_freeze", "03_ptuning", "04_lora", "05_full_zero3")
VARIANTS = {"02_freeze": ["freeze"], "03_ptuning": ["projection", "embedding"], "04_lora": ["lora"],
            "05_full_zero3": ["zero3", "zero3_offload"]}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec running this interpreter, found first through ``JUPYTER_PATH``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "glmlab tests", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        mp.setenv("MPLBACKEND", "agg")
        mp.setenv("CUDA_VISIBLE_DEVICES", "")  # the tiny CPU path (--cpu 2) even on a GPU machine
        yield KERNEL


def execute(name: str, workdir: Path, kernel: str, **parameters) -> Path:
    """Run ``notebooks/<name>.ipynb`` with ``parameters`` in ``workdir``; return the executed copy."""
    out = workdir / f"{name}.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name=kernel,
                        cwd=str(workdir), progress_bar=False, log_output=False)
    return out


@pytest.fixture(scope="module")
def trained(kernel, tiny_model, tmp_path_factory) -> dict[str, Path]:
    """02-05 executed on one shared tiny ChatGLM2 checkpoint; notebook name -> its output_dir."""
    workdir = tmp_path_factory.mktemp("notebooks")
    model = tiny_model("glm2")
    outputs = {}
    for name in TRAINING:
        outputs[name] = workdir / name
        execute(name, workdir, kernel, model_dir=str(model), mode="glm2", output_dir=str(outputs[name]), **TINY)
    return outputs


def test_every_notebook_is_tested_and_starts_with_parameters():
    import nbformat

    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_data", *TRAINING, "06_eval"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first_code.metadata.get("tags", []), name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: outputs not cleared"


def test_01_data(kernel, tmp_path):
    # model_dir None: the notebook builds its own tiny checkpoints.
    execute("01_data", tmp_path, kernel, output_dir=str(tmp_path / "out"), mode="glm3", max_len=128, max_src_len=64)
    stats = json.loads((tmp_path / "out" / "data_stats.json").read_text())
    assert stats["mode"] == "glm3" and stats["num_read"] == 60 and stats["kept"] == 60
    assert stats["supervised_tokens"] > 0 and stats["conversations"] == 10
    assert stats["source_truncated"] <= stats["num_read"] and stats["max_source_len"] > 0
    assert all((tmp_path / "out" / f"tiny-{m}" / "config.json").is_file() for m in ("glm", "glm2", "glm3"))


@pytest.mark.parametrize("name", TRAINING)
def test_training_notebook(trained, name):
    summary = json.loads((trained[name] / "results.json").read_text())
    assert summary["notebook"] == name and summary["mode"] == "glm2"
    assert [run["variant"] for run in summary["runs"]] == VARIANTS[name]
    for run in summary["runs"]:
        assert run["final_loss"] < run["first_loss"], run
        assert isinstance(run["f1"], float) and 0.0 <= run["f1"] <= 1.0
        assert run["steps"] == TINY["max_steps"]
        assert Path(run["checkpoint"], "glmlab_checkpoint.json").is_file()
        assert len(Path(run["predictions"]).read_text().splitlines()) == 15  # every test sample
        assert 0 < run["trainable_params"] <= run["total_params"]
    if name == "04_lora":
        (run,) = summary["runs"]
        assert Path(run["merged_dir"], "config.json").is_file()
        assert run["merged_identical"] >= 0.9  # greedy text from the merged model matches the adapter's


def test_trainable_counts_order(trained):
    """On the tiny model: prefix embedding < LoRA r=8 < last layer < everything."""
    counts = {run["variant"]: run["trainable_params"]
              for name in TRAINING for run in json.loads((trained[name] / "results.json").read_text())["runs"]}
    assert counts["embedding"] < counts["lora"] < counts["freeze"] < counts["zero3"] == counts["zero3_offload"]


def test_06_eval(kernel, trained, tmp_path):
    runs = {name: str(folder) for name, folder in trained.items()}
    execute("06_eval", tmp_path, kernel, runs=runs, output_dir=str(tmp_path / "out"), max_new_tokens=8)
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [r["variant"] for r in comparison["runs"]] == [v for name in TRAINING for v in VARIANTS[name]]
    for run in comparison["runs"]:
        assert 0.0 <= run["f1"] <= 1.0
        f = run["forgetting"]
        assert 0.0 <= f["similarity"] <= 1.0 and f["change"] == pytest.approx(1 - f["similarity"])
        assert f["n_prompts"] == len(comparison["general_prompts"])
    assert len(comparison["base_answers"]) == len(comparison["general_prompts"])
    assert {row["method"] for row in comparison["memory"]} == {"freeze", "ptuning", "lora", "all"}

"""The notebooks run end to end with their default parameters (papermill), and show results.

Each notebook executes in a fresh kernel from a temporary folder (so none relies on the working
directory). The kernel is this interpreter: a kernelspec pointing at ``sys.executable`` is written to a
temporary ``JUPYTER_PATH`` folder, which Jupyter searches before any user or system kernel, so a fresh
clone where only ``bash scripts/setup.sh`` ran needs no ``ipykernel install``.

With the defaults, 02-05 fine-tune glmlab's small pretrained ChatGLM-6B base on the synthetic
triple-extraction set through ``scripts/launch_ds.py --cpu 2`` (375 optimizer steps per run); 06 compares
those very runs (they are trained once for the whole module), adds its doc-to-question runs and the
forgetting probes. The assertions are the study's results: every method at or above its floor from the
3-seed benchmark (``tests/published.py``), overall and on the test records said in forms training never
used; every method above the base (P-tuning on the embedding only too, at its own validated rate: the
original project measured 0.0 for it); a forgetting number for every method and skill.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")

from glmlab import synth  # noqa: E402
from glmlab.notebooks.replay import REPLAYED  # noqa: E402
from published import check_forgetting, check_method_floors, check_quickstart, method_floors  # noqa: E402  (issue 15: published figures checked)

REPO = Path(__file__).resolve().parent.parent
TEST_RECORDS = synth.Sizes().n_spo_test  # what the notebooks score: glmlab.synth's whole test split
NOTEBOOKS = REPO / "notebooks"
KERNEL = "glmlab-tests"
TRAINING = ("02_freeze", "03_ptuning", "04_lora", "05_full_zero3")
VARIANTS = {"02_freeze": ["freeze"], "03_ptuning": ["projection", "embedding"], "04_lora": ["lora"],
            "05_full_zero3": ["zero3"]}
REPLAY_SHARES = (0.25,)  # 06's replay runs in the test (its default: 0.1 and 0.25) ...
REPLAY_METHODS = ("freeze", "full")  # ... of these methods (its default: Freeze, LoRA and full)
D2Q_EPOCHS = 1  # 06's doc-to-question runs in the test (its default: 2)
OFFLOAD_STEPS = 40  # 05's short ZeRO-3 + offload run beside its ZeRO-3 run (offload_max_steps)
STEPS = 375  # the notebooks' default step budget: 3 epochs of 125 optimizer steps

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
        mp.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU path (--cpu 2) even on a GPU machine
        yield KERNEL


def execute(name: str, workdir: Path, kernel: str, **parameters) -> Path:
    """Run a clean copy of ``notebooks/<name>.ipynb`` (its committed outputs stripped) with ``parameters`` in
    ``workdir``; return the executed copy."""
    from glmlab.notebooks.render import clean_copy

    out = workdir / f"{name}.ipynb"
    source = clean_copy(NOTEBOOKS / f"{name}.ipynb", workdir / f"{name}.clean.ipynb")  # not the committed outputs
    pm.execute_notebook(str(source), str(out), parameters=parameters, kernel_name=kernel,
                        cwd=str(workdir), progress_bar=False, log_output=False)
    return out


@pytest.fixture(scope="module")
def trained(kernel, tmp_path_factory) -> dict[str, Path]:
    """02-05 executed with their defaults (the pretrained glm base); notebook name -> its output_dir."""
    workdir = tmp_path_factory.mktemp("notebooks")
    outputs = {}
    for name in TRAINING:
        outputs[name] = workdir / name
        execute(name, workdir, kernel, output_dir=str(outputs[name]))
    return outputs


def test_every_notebook_is_tested_and_starts_with_parameters(tmp_path):
    """Committed with their outputs (tests/test_rendered.py checks them), executed here from clean copies."""
    import nbformat

    from glmlab.notebooks.render import clean_copy, code_hash

    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_data", *TRAINING, "06_eval"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first_code.metadata.get("tags", []), name
        clean = nbformat.read(clean_copy(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb"), as_version=4)
        assert code_hash(clean) == code_hash(nb), name
        assert all(not c.outputs and c.execution_count is None for c in clean.cells if c.cell_type == "code"), name


def test_training_notebooks_share_one_step():
    """02-05 call glmlab.notebooks.experiment.run_method; none of them launches or predicts by hand."""
    import nbformat

    for name in TRAINING:
        source = "\n".join(c.source for c in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
                           if c.cell_type == "code")
        assert "run_method(" in source, name
        assert "subprocess" not in source and "launch_ds.py" not in source, name


def test_01_data(kernel, tmp_path):
    execute("01_data", tmp_path, kernel, output_dir=str(tmp_path / "out"), mode="glm3")
    stats = json.loads((tmp_path / "out" / "data_stats.json").read_text())
    assert stats["mode"] == "glm3" and stats["num_read"] == 2000 and stats["kept"] == 2000
    assert stats["source_truncated"] == 0  # the defaults keep every record
    assert stats["supervised_tokens"] > 0 and stats["conversations"] == 10


@pytest.mark.parametrize("name", TRAINING)
def test_training_notebook_learns_the_task(trained, name):
    summary = json.loads((trained[name] / "results.json").read_text())
    assert summary["notebook"] == name and summary["mode"] == "glm"
    assert [run["variant"] for run in summary["runs"]] == VARIANTS[name]
    assert summary["base_f1"] < 0.3  # the base knows the words, not the task (its scoring, shared by 02-06)
    for run in summary["runs"]:
        assert run["final_loss"] < run["first_loss"], run
        assert run["steps"] == STEPS
        assert Path(run["checkpoint"], "glmlab_checkpoint.json").is_file()
        assert len(Path(run["predictions"]).read_text().splitlines()) == TEST_RECORDS  # every test record
        assert 0 < run["trainable_params"] <= run["total_params"]
        assert run["wall_s"] > 0 and run["peak_mem_mb"] > 0
        assert run["f1"] > summary["base_f1"], (run["variant"], run["f1"], summary["base_f1"])
    if name == "05_full_zero3":  # offload computes what ZeRO-3 computes: the same losses step by step
        from glmlab.notebooks.plots import loss_curve

        steps, losses = loss_curve(trained[name] / "zero3_offload")
        zero3 = dict(zip(*loss_curve(run["run_dir"])))
        pairs = [(zero3[step], loss) for step, loss in zip(steps, losses)]
        assert len(pairs) >= OFFLOAD_STEPS // 10 and max(steps) == OFFLOAD_STEPS
        assert all(abs(a - b) <= 1e-3 * max(1.0, abs(a)) for a, b in pairs), pairs
    if name == "04_lora":
        (run,) = summary["runs"]
        assert Path(run["merged_dir"], "config.json").is_file()
        assert run["merged_identical"] >= 0.9  # greedy text from the merged model matches the adapter's
        check_quickstart(summary)  # 04's default LoRA run is the quickstart's: its F1 holds the quickstart's floor
        check_grounding(run)


def check_grounding(run: dict) -> None:
    """04's grounding section: the filter's recall is the model's and its precision no lower; the model's score is the
    run's; every example's filter is the model's grounded triples, and its decoding is grounded too."""
    from glmlab.metrics import grounded_triples

    grounding = run["grounding"]
    model, kept, decoded = (grounding["scores"][k] for k in ("model", "filter", "decode"))
    assert model["f1"] == pytest.approx(run["f1"], abs=1e-12) and grounding["answers"] == TEST_RECORDS
    assert kept["recall"] == model["recall"] and kept["precision"] >= model["precision"] and kept["f1"] >= model["f1"]
    assert 0 < grounding["decoded"] < TEST_RECORDS and 0 <= decoded["f1"] <= 1
    assert 0 < len(grounding["examples"]) <= 4
    for example in grounding["examples"]:
        assert example["filter"] == grounded_triples(example["model"], example["input"]) != example["model"]
        assert grounded_triples(example["decoding"], example["input"]) == example["decoding"]


def test_trainable_counts_order(trained):
    counts = {run["variant"]: run["trainable_params"]
              for name in TRAINING for run in json.loads((trained[name] / "results.json").read_text())["runs"]}
    assert counts["embedding"] < counts["projection"] and counts["embedding"] < counts["lora"]
    assert counts["lora"] < counts["zero3"] and counts["freeze"] < counts["zero3"]


def test_06_eval_reproduces_the_study(kernel, trained, tmp_path):
    runs = {name: str(folder) for name, folder in trained.items()}
    # One replay share instead of the default two, and two of the three methods: what the test checks of the replay
    # runs does not depend on how many there are, and each costs a training run. Freeze's 25% is validation's choice,
    # and the setting that meets the aim on unseen forms; without replay full fine-tuning gives the same figures on both
    # machines, to the last digit. The replay runs' floors come from both machines' seeds (LoRA's rank 16 from the
    # second's alone), and LoRA's replay is the one left to the rendered 06, which shows the defaults.
    # Doc-to-question for one epoch instead of two (five runs of 57 steps instead of 114, about a minute less): the
    # test checks that the methods beat the base there, not by how much; the rendered 06 shows the default.
    execute("06_eval", tmp_path, kernel, runs=runs, output_dir=str(tmp_path / "out"), replay_shares=list(REPLAY_SHARES),
            replay_methods=list(REPLAY_METHODS), d2q_num_train_epochs=D2Q_EPOCHS)
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    check_forgetting(comparison, tmp_path / "06_eval.ipynb")  # drop = before - after, [0, 1], the words hold
    rows = comparison["runs"]
    assert [r["variant"] for r in rows] == [v for name in TRAINING for v in VARIANTS[name]]
    # triple F1: each method holds its floors from the 3-seed benchmark (tests/published.py), overall and on the
    # records in test-only forms; every method beats the base
    check_method_floors(rows)
    check_method_floors(rows, metric="triple_f1_form")
    assert all(r["f1"] > comparison["base_f1"] for r in rows)
    # forgetting: a number for every method and skill, before and after
    skills = comparison["skills"]
    assert len(skills) == 8 and "overall" in skills  # seven skills and the overall accuracy
    assert comparison["base_skills"]["overall"] >= 0.8
    for r in rows:
        for key in ("before", "after", "drop"):
            assert all(isinstance(r["forgetting"][key][s], float) for s in skills), (r["variant"], key)
    assert [t["run"] for t in comparison["forgetting"]] == ["base", *[r["variant"] for r in rows]]
    # doc-to-question: the base and each method of the original table plus full, every metric
    assert [t["run"] for t in comparison["d2q"]] == ["base", "embedding", "projection", "freeze", "lora", "zero3"]
    for t in comparison["d2q"]:
        assert all(0.0 <= t[k] <= 1.0 for k in ("rouge-1", "rouge-2", "rouge-l", "bleu-4")), t
    best_d2q = max(t["rouge-l"] for t in comparison["d2q"][1:])
    assert best_d2q > comparison["d2q"][0]["rouge-l"]
    # replay: Freeze and full again on the task plus each share of the general corpus, each with its
    # F1 and forgetting, the mixture on record in its run folder; the chart's points add the base and no-replay runs
    replay = comparison["replay"]
    assert [(r["replay_of"], r["share"]) for r in replay] == [(m, s) for m in REPLAY_METHODS for s in REPLAY_SHARES]
    for r in replay:
        assert isinstance(r["f1"], float) and r["steps"] > STEPS  # the general samples add to each epoch
        for key in ("before", "after", "drop"):
            assert all(isinstance(r["forgetting"][key][s], float) for s in skills), (r["variant"], key)
        data = json.loads(Path(r["run_dir"], "data.json").read_text())
        assert [Path(c["source"]).name for c in data["train"]] == [
            "spo_train.jsonl", f"general_train.jsonl#{round(r['share'] / (1 - r['share']) * 2000)}"]
    # each replay run holds its floors from bench_forgetting's three seeds of it (the first machine's), overall and on
    # the records in forms training never used (Freeze's is validation's choice, the one that meets the aim there)
    check_method_floors(replay)
    check_method_floors(replay, metric="triple_f1_form")
    floored = set(method_floors()) & set(method_floors(metric="triple_f1_form"))
    assert {r["variant"] for r in replay} <= floored, floored  # a replay run without floors would pass unchecked
    assert [p["run"] for p in comparison["replay_points"]] == ["base", *[REPLAYED[m] for m in REPLAY_METHODS],
                                                               *[r["variant"] for r in replay]]
    assert len(comparison["replay_verdicts"]) == len(REPLAY_METHODS)
    assert {c["run"] for c in comparison["cost"]} == {r["variant"] for r in rows}
    assert {row["method"] for row in comparison["memory"]} == {"freeze", "ptuning", "lora", "all"}

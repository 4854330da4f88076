"""The checks of published figures (``tests/published.py``) hold on consistent figures and fail on wrong
ones, and the quickstart is notebook 04's default LoRA run, so 04's run stands for it in the suite."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import nbformat
import pytest

from glmlab.notebooks import experiment, quickstart
from glmlab.notebooks.replay import replay_verdict
from published import QUICKSTART_F1_FLOOR, check_forgetting, check_quickstart

REPO = Path(__file__).resolve().parent.parent


def notebook_parameters(name: str) -> dict:
    """The values of a notebook's ``parameters`` cell, as papermill's defaults."""
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)  # the cell is assignments of literals
    return values


def test_the_quickstart_is_notebook_04s_default_lora_run():
    params = notebook_parameters("04_lora")
    setup = quickstart.setup("out", "data")
    assert params["model_dir"] is None and setup.model_dir == str(experiment.resolve_base(None, params["mode"]))
    for key in ("mode", "nproc", "max_len", "max_src_len", "per_device_train_batch_size", "num_train_epochs", "max_steps",
                "warmup_ratio", "precision", "seed", "max_new_tokens", "max_test_samples", "ds_file"):
        assert getattr(setup, key) == params[key], key
    assert setup.extra == {} and params["train_path"] is None and params["test_path"] is None
    flags = quickstart.lora_flags()
    assert params["learning_rate"] is None and flags["learning_rate"] == experiment.LEARNING_RATES["lora"]
    assert {k: params[k] for k in ("lora_dim", "lora_alpha", "lora_dropout", "lora_module_name")} == {
        k: v for k, v in flags.items() if k not in ("train_type", "learning_rate")}


def results_04(f1: float) -> dict:
    setup = quickstart.setup("runs/04_lora", "/cache/synth")
    return {"notebook": "04_lora", "setup": setup.__dict__,
            "runs": [{"method": "lora", "variant": "lora", "learning_rate": experiment.LEARNING_RATES["lora"], "f1": f1}]}


def test_check_quickstart_asserts_the_floor_and_the_settings():
    check_quickstart(results_04(QUICKSTART_F1_FLOOR + 0.04))
    with pytest.raises(AssertionError, match="under its floor"):
        check_quickstart(results_04(QUICKSTART_F1_FLOOR - 0.01))
    other = results_04(0.93)
    other["setup"]["seed"] = 1
    with pytest.raises(AssertionError, match="seed"):
        check_quickstart(other)
    other = results_04(0.93)
    other["runs"][0]["learning_rate"] = 3e-3
    with pytest.raises(AssertionError):
        check_quickstart(other)


SKILLS = ["copy", "reverse", "sort", "code", "arithmetic", "knowledge", "translate", "overall"]


def _skills(*seven: float) -> dict[str, float]:
    return {**dict(zip(SKILLS, map(float, seven))), "overall": sum(seven) / 7}


@pytest.fixture()
def study(tmp_path) -> tuple[dict, Path]:
    """A small consistent 06 comparison (two runs, two replay runs of LoRA) and its printed drop line."""
    base = _skills(1, 1, 1, 1, 1, 1, 1)
    after = {"lora": _skills(1, 1, 0.5, 1, 1, 1, 1), "zero3": _skills(0.25, 1, 0.5, 1, 1, 1, 0.5)}

    def forgetting(a: dict) -> dict:
        return {"before": base, "after": a, "drop": {k: base[k] - a[k] for k in SKILLS}}

    runs = [{"variant": v, "f1": f1, "forgetting": forgetting(after[v])} for v, f1 in (("lora", 0.9), ("zero3", 0.85))]
    kept = {0.1: _skills(1, 1, 0.75, 1, 1, 1, 1), 0.25: _skills(1, 1, 1, 1, 1, 1, 1)}
    replay = [{"variant": f"lora-replay{round(100 * s)}", "replay_of": "lora", "share": s, "f1": f1, "skills": kept[s],
               "forgetting": forgetting(kept[s])} for s, f1 in ((0.1, 0.88), (0.25, 0.8))]
    points = [{"run": "base", "method": "base", "share": None, "f1": 0.0, "skills": base["overall"]},
              {"run": "lora", "method": "lora", "share": 0.0, "f1": 0.9, "skills": after["lora"]["overall"]},
              {"run": "zero3", "method": "full", "share": 0.0, "f1": 0.85, "skills": after["zero3"]["overall"]}]
    points += [{"run": r["variant"], "method": "lora", "share": r["share"], "f1": r["f1"], "skills": r["skills"]["overall"]}
               for r in replay]
    comparison = {"skills": SKILLS, "base_skills": base, "runs": runs, "replay": replay, "replay_points": points,
                  "forgetting": [{"run": "base", **base}, *[{"run": r["variant"], **after[r["variant"]]} for r in runs]],
                  "replay_verdicts": [replay_verdict("lora", [p for p in points if p["method"] == "lora"])]}
    return comparison, _executed(tmp_path, "general skills: base 1.000; largest drop zero3 (+0.250), smallest lora (+0.071)")


def _executed(tmp_path: Path, line: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(...)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=line + "\n")])])
    path = tmp_path / "06_eval.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_check_forgetting_passes_consistent_figures(study):
    comparison, executed = study
    assert comparison["replay_verdicts"][0].startswith("lora: 10% replay keeps general skills at 0.96")
    check_forgetting(comparison, executed)


def _break(comparison: dict, how: str) -> dict:
    wrong = copy.deepcopy(comparison)
    lora = wrong["runs"][0]["forgetting"]
    if how == "drop":
        lora["drop"]["sort"] = 0.25  # before 1.0, after 0.5
    elif how == "range":
        lora["after"]["sort"], lora["drop"]["sort"] = 1.5, -0.5
    elif how == "overall":
        lora["after"]["overall"] = lora["drop"]["overall"] = 0.5
    elif how == "verdict":  # names the 25% share, which lost more than 0.05 F1
        wrong["replay_verdicts"][0] = wrong["replay_verdicts"][0].replace("10%", "25%").replace("0.96", "1.00")
    elif how == "target":
        wrong["replay_verdicts"][0] = wrong["replay_verdicts"][0].replace("meets", "misses")
    return wrong


@pytest.mark.parametrize("how", ["drop", "range", "overall", "verdict", "target"])
def test_check_forgetting_fails_on_wrong_figures(study, how):
    comparison, executed = study
    with pytest.raises(AssertionError):
        check_forgetting(_break(comparison, how), executed)


def test_check_forgetting_fails_when_the_words_name_the_wrong_run(study, tmp_path):
    comparison, _ = study
    with pytest.raises(AssertionError):
        check_forgetting(comparison, _executed(tmp_path, "general skills: base 1.000; largest drop lora (+0.071), "
                                                         "smallest zero3 (+0.250)"))


def test_method_floors_come_from_the_committed_benchmark(tmp_path):
    """Each floor is the lowest of three seeds less max(margin, 3 std); a method that learns nothing gets none;
    bench_methods' figures come before bench_forgetting's; a run under its floor fails, naming it."""
    import statistics

    from published import FLOOR_MARGIN, check_method_floors, method_floors, notebooks_trainable, observed_f1

    n = notebooks_trainable()
    methods = {"per_seed": [{"base": {"triple_f1": 0.0}, "freeze": {"triple_f1": g, "trainable_params": n["freeze"]},
                             "embedding": {"triple_f1": 0.0, "trainable_params": n["embedding"]},
                             "lora": {"triple_f1": f, "trainable_params": n["lora"]}}
                            for f, g in ((0.93, 0.75), (0.91, 0.70), (0.92, 0.65))]}
    forgetting = {"rows": [{"bench_method": m, "share": share, "seed": seed, "f1": f, "trainable_params": n[variant]}
                           for m, variant, f in (("lora", "lora", 0.5), ("full", "zero3", 0.9)) for seed in (1, 2, 3)
                           for share in (0.0, 0.1)]}
    (tmp_path / "methods.json").write_text(json.dumps(methods))
    (tmp_path / "forgetting.json").write_text(json.dumps(forgetting))
    observed = observed_f1(tmp_path)
    assert observed["lora"] == [0.93, 0.91, 0.92] and observed["zero3"] == [0.9, 0.9, 0.9]
    floors = method_floors(observed)
    assert floors == {"lora": round(0.91 - FLOOR_MARGIN, 3), "zero3": round(0.9 - FLOOR_MARGIN, 3),
                      "freeze": round(0.65 - 3 * statistics.stdev([0.75, 0.70, 0.65]), 3),
                      "lora-replay10": round(0.5 - FLOOR_MARGIN, 3), "full-replay10": round(0.9 - FLOOR_MARGIN, 3)}
    check_method_floors([{"variant": "lora", "f1": 0.87}, {"variant": "embedding", "f1": 0.0}], floors)
    with pytest.raises(AssertionError, match="lora"):
        check_method_floors([{"variant": "lora", "f1": 0.85}], floors)
    assert method_floors({"lora": [0.9, 0.9]}) == {}  # two seeds are not a distribution
    # another machine's seeds join the distribution: a lower figure lowers the floor
    (tmp_path / "methods_epyc_lora16.json").write_text(json.dumps({"per_seed": [{"lora": {"triple_f1": 0.90, "trainable_params": n["lora"]}}]}))
    assert observed_f1(tmp_path)["lora"] == [0.93, 0.91, 0.92, 0.90]
    assert method_floors(observed_f1(tmp_path))["lora"] == round(0.90 - FLOOR_MARGIN, 3)
    # a run of another shape of the method (Freeze's top layer alone, where the notebooks now train two) sets no floor
    other = {"triple_f1": 0.30, "trainable_params": n["freeze"] // 2}
    (tmp_path / "methods_epyc.json").write_text(json.dumps({"per_seed": [{"freeze": other}, {"freeze": dict(other)}]}))
    assert observed_f1(tmp_path)["freeze"] == [0.75, 0.70, 0.65]


def test_the_notebooks_trainable_counts_are_their_methods():
    """What a benchmark row must have trained to count, read off the shipped base's weights: Freeze its top two
    layers, full fine-tuning every tensor, LoRA rank 16 on the four matrices of each layer."""
    from safetensors import safe_open

    from published import notebooks_trainable

    from glmlab.notebooks import experiment

    base = experiment.resolve_base(None, "glm")
    with safe_open(str(base / "model.safetensors"), "pt") as weights:
        shapes = {name: weights.get_slice(name).get_shape() for name in weights.keys()}
    numel = {name: math.prod(shape) for name, shape in shapes.items() if not name.endswith(".inv_freq")}  # a buffer
    n = notebooks_trainable()
    assert n["freeze"] == sum(v for k, v in numel.items() if ".layers.2." in k or ".layers.3." in k)
    assert n["freeze"] == 2 * sum(v for k, v in numel.items() if ".layers.0." in k)  # two of four equal layers
    matrices = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    lora = sum(16 * sum(shape) for k, shape in shapes.items() if k.endswith(".weight") and k.split(".")[-2] in matrices)
    assert n["lora"] == lora


def test_committed_method_floors_are_real():
    """The committed benchmarks give LoRA, full fine-tuning and Freeze floors, overall and on unseen forms, each
    well above the base's 0."""
    from published import method_floors

    from published import QUICKSTART_F1_FLOOR

    floors = method_floors()
    assert {"lora", "zero3"} <= set(floors), floors
    assert all(0.2 <= f < 1.0 for f in floors.values()), floors
    assert QUICKSTART_F1_FLOOR == floors["lora"]  # the quickstart is 04's LoRA run: one floor, one rule
    forms = method_floors(metric="triple_f1_form")  # on the test records in forms training never used
    assert {"lora", "zero3", "freeze"} <= set(forms) and all(0.2 <= f < 1.0 for f in forms.values()), forms
    # the replay runs the 06 test makes (forgetting.json): without these its floor checks would pass them unchecked
    assert {"freeze-replay25", "full-replay25"} <= set(floors) & set(forms), (floors, forms)


def test_floors_on_held_out_forms_come_from_the_same_benchmark(tmp_path):
    """A floor per kind of novelty (here: records in test-only forms) from bench_methods' per-seed figures;
    forgetting.json rows that record overall F1 only give none; a run's kind figure under it fails."""
    from published import check_method_floors, method_floors, notebooks_trainable, observed_f1

    n = notebooks_trainable()
    methods = {"per_seed": [{"lora": {"triple_f1": 0.9, "triple_f1_form": f, "trainable_params": n["lora"]}} for f in (0.88, 0.86, 0.87)]}
    (tmp_path / "methods.json").write_text(json.dumps(methods))
    (tmp_path / "forgetting.json").write_text(json.dumps({"rows": [
        {"bench_method": "full", "share": 0.0, "seed": s, "f1": 0.9, "trainable_params": n["zero3"]} for s in (1, 2, 3)]}))
    observed = observed_f1(tmp_path, metric="triple_f1_form")
    assert observed == {"lora": [0.88, 0.86, 0.87]}
    floors = method_floors(observed)
    assert floors == {"lora": 0.81}
    row = {"variant": "lora", "f1": 0.95, "f1_by_novelty": {"form": {"f1": 0.80, "n": 130}}}
    check_method_floors([row], floors)  # the overall F1 is not what is checked here ...
    with pytest.raises(AssertionError, match="triple_f1_form"):
        check_method_floors([row], floors, metric="triple_f1_form")  # ... the unseen forms' is


def test_replay_runs_get_floors_from_the_forgetting_benchmark(tmp_path):
    """06's replay runs (freeze-replay25, ...) get floors from bench_forgetting's rows of the same method and share,
    overall and on unseen forms; share 0 is the method's own run in 06; a replay run under its floor fails."""
    from published import FLOOR_MARGIN, check_method_floors, method_floors, notebooks_trainable, observed_f1

    n = notebooks_trainable()

    def row(method, share, seed, f1, form, trainable=None):
        study = {"freeze": "freeze", "full": "zero3", "lora": "lora"}[method]
        variant = study if share == 0 else f"{method}-replay{round(100 * share)}"
        return {"bench_method": method, "share": share, "seed": seed, "variant": variant, "f1": f1,
                "f1_by_novelty": {"form": {"f1": form, "n": 130}}, "trainable_params": trainable or n[study]}

    rows = [row("freeze", 0.25, s, 0.85 + s / 100, 0.86 + s / 100) for s in (1, 2, 3)]
    rows += [row("full", 0.0, s, 0.81, 0.82) for s in (1, 2, 3)] + [row("full", 0.1, s, 0.82, 0.84) for s in (1, 2)]
    # LoRA of another rank (half the notebooks' count), and a row that records no count: neither sets a floor
    rows += [row("lora", 0.25, s, 0.5, 0.5, trainable=n["lora"] // 2) for s in (1, 2, 3)]
    rows += [{k: v for k, v in row("lora", 0.1, s, 0.5, 0.5).items() if k != "trainable_params"} for s in (1, 2, 3)]
    (tmp_path / "forgetting.json").write_text(json.dumps({"rows": rows}))
    assert observed_f1(tmp_path) == {"freeze-replay25": [0.86, 0.87, 0.88], "zero3": [0.81] * 3, "full-replay10": [0.82] * 2}
    assert observed_f1(tmp_path, metric="triple_f1_form")["freeze-replay25"] == [0.87, 0.88, 0.89]
    floors = method_floors(observed_f1(tmp_path, metric="triple_f1_form"))
    assert floors == {"freeze-replay25": round(0.87 - FLOOR_MARGIN, 3), "zero3": round(0.82 - FLOOR_MARGIN, 3)}  # 2 seeds: none
    replayed = {"variant": "freeze-replay25", "f1": 0.9, "f1_by_novelty": {"form": {"f1": 0.83, "n": 130}}}
    check_method_floors([replayed], floors, metric="triple_f1_form")
    with pytest.raises(AssertionError, match="freeze-replay25"):
        check_method_floors([{**replayed, "f1_by_novelty": {"form": {"f1": 0.81, "n": 130}}}], floors, metric="triple_f1_form")


def test_forgetting_rows_that_record_no_count_take_their_benchmarks(tmp_path):
    """A bench_forgetting row written before rows recorded what they trained counts by the count the bench_methods file
    of the same machine and base records for its seed and method: the notebooks' shape counts, another rank does not."""
    from published import method_floors, notebooks_trainable, observed_f1

    n = notebooks_trainable()
    machine = {"cpu_model": "a CPU", "cpu_capability": "AVX512", "torch": "2.13.0+cpu"}
    counts = {"freeze": n["freeze"], "lora": n["lora"] // 2, "zero3": n["zero3"]}  # LoRA of half the notebooks' rank
    methods = {"machine": machine, "base_weights": "w", "seeds": [1, 2, 3],
               "per_seed": [{m: {"trainable_params": c} for m, c in counts.items()} for _ in range(3)]}
    rows = [{"bench_method": m, "share": 0.25, "seed": s, "f1": 0.8, "f1_by_novelty": {}}
            for m in ("freeze", "lora", "full") for s in (1, 2, 3)]
    (tmp_path / "methods.json").write_text(json.dumps(methods))
    (tmp_path / "forgetting.json").write_text(json.dumps({"machine": machine, "base_weights": "w", "rows": rows}))
    assert set(method_floors(observed_f1(tmp_path))) == {"freeze-replay25", "full-replay25"}
    # on another machine's benchmark, or another base's, nothing says what they trained: no floor
    (tmp_path / "forgetting.json").write_text(json.dumps({"machine": {**machine, "cpu_model": "another"},
                                                          "base_weights": "w", "rows": rows}))
    assert method_floors(observed_f1(tmp_path)) == {}

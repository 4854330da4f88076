"""``benchmarks/bench_methods.py`` resumes at the seed it was on, and only while nothing a seed depends on changed."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import papermill
import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_methods", REPO / "benchmarks" / "bench_methods.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_a_finished_seed_is_read_back_and_a_changed_one_runs_again(tmp_path, monkeypatch):
    runs = []

    def fake_execute(notebook, output, cwd, parameters, progress_bar):
        runs.append(parameters)
        if parameters.get("max_steps") == 1:
            raise RuntimeError("killed half-way")
        Path(parameters["output_dir"], "comparison.json").write_text(json.dumps({"seed": parameters["seed"], "n": len(runs)}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    args = argparse.Namespace(mode="glm", nproc=2, max_steps=None, replay_shares=None, threads=None, output_dir=str(tmp_path))
    first, _ = bench.run_seed(1, args)
    again, _ = bench.run_seed(1, args)
    assert len(runs) == 1 and again == first == {"seed": 1, "n": 1}
    args.max_steps = 1  # another setting: run again; stopped half-way, it leaves no key for the old comparison
    with pytest.raises(RuntimeError):
        bench.run_seed(1, args)
    assert not (tmp_path / "seed-1" / bench.KEY_FILE).exists()
    args.max_steps = None
    assert bench.run_seed(1, args)[0] == {"seed": 1, "n": 3} and len(runs) == 3
    monkeypatch.setattr(bench, "machine", lambda: {"cpu_model": "other", "cpu_capability": "AVX2", "torch": "x"})
    assert bench.run_seed(1, args)[0]["n"] == 4  # another machine's seed is not this one's

"""A training folder belongs to one run (glmlab.run_folder): refusal, the lock, run ids, readers.

Real runs of ``python -m glmlab.train`` (one process: the fastest run there is) on the tiny
ChatGLM-6B with LoRA, 30 optimizer steps per epoch, shared by the tests through one module fixture:

* ``race``: two runs (seeds 1 and 2, 3 epochs) started together into one folder: one trains, the
  other is refused within seconds by the lock (or, had the first finished already, by its files);
* ``killed``: the winner's run again, killed with ``kill -9`` once its first checkpoint is saved,
  then ``--resume_from`` its newest checkpoint into the same folder: no stale lock, and the
  folder then equals the uninterrupted winner's (metrics records and final adapter);
* a rerun into ``race`` without a flag (refused, nothing changed), then the notebooks' own step,
  ``glmlab.notebooks.experiment.run_method`` (which passes ``--overwrite_output_dir``), into the same folder
  with 1 epoch instead of 3: the folder, and the row it reports (checkpoint, steps, F1), are the
  new run's only. (The notebook's first run is the 3-epoch ``race`` run, made by the same trainer;
  a papermill run of a notebook twice would cost minutes.)

Plus: a held lock stops both processes of a two-process launcher run at once (the verdict is
broadcast), and folders of two runs of an older glmlab (no run ids) are refused by every reader
with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SPO_TEST, SPO_TRAIN, run_train, subprocess_env, train_argv
from safetensors.torch import load_file

from glmlab.checkpoint import MixedRunsError, latest_checkpoint, one_run, read_info
from glmlab.constants import CHECKPOINT_INFO_NAME as INFO_NAME
from glmlab.notebooks.experiment import Setup, run_method
from glmlab.predict import score
from glmlab.run_folder import LOCK_NAME, FolderLock

FLAGS = {"mode": "glm", "train_type": "lora", "lora_dim": 4, "lora_alpha": 8, "learning_rate": "1e-2",
         "num_train_epochs": 3}  # fmt: skip
ADAPTER = "adapter_model.safetensors"
FINAL = "epoch-3-step-90"


def start(argv: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "glmlab.train", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            cwd=REPO, start_new_session=True)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: relative path -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("run_folder")
    model = tiny_model("glm")
    race = root / "race"
    t0 = time.perf_counter()
    procs = {seed: start(train_argv(model, race, seed=seed, **FLAGS)) for seed in (1, 2)}
    ended = {}
    while len(ended) < len(procs) and time.perf_counter() - t0 < 300:
        now = time.perf_counter() - t0
        ended.update({seed: now for seed, p in procs.items() if seed not in ended and p.poll() is not None})
        time.sleep(0.05)
    done = {}
    for seed, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=10)
        done[seed] = {"code": proc.returncode, "stdout": stdout, "stderr": stderr, "s": ended[seed]}
    print({seed: round(d["s"], 1) for seed, d in done.items()})
    winners = [seed for seed, d in done.items() if d["code"] == 0]
    assert len(winners) == 1, done
    winner = winners[0]
    kept = {"metrics": metrics(race), "adapter": load_file(str(race / FINAL / ADAPTER)),
            "infos": {p.name: read_info(p) for p in race.glob("epoch-*")},
            "events": [p.name for p in (race / "tensorboard").iterdir()], "pids": {s: p.pid for s, p in procs.items()}}

    # The winner's run again, killed with kill -9 once its first checkpoint is in place, then resumed.
    killed = root / "killed"
    proc = start(train_argv(model, killed, seed=winner, **FLAGS))
    while not (killed / "epoch-1-step-30").is_dir() and proc.poll() is None:
        time.sleep(0.01)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    cut = sorted(p.name for p in killed.glob("epoch-*"))
    t1 = time.perf_counter()
    resumed = run_train(train_argv(model, killed, seed=winner, resume_from=latest_checkpoint(killed), **FLAGS),
                        killed, processes=0)  # fmt: skip
    resume_s = time.perf_counter() - t1
    print("kill and resume", round(t1 - t0, 1), round(resume_s, 1))

    one_epoch = {**FLAGS, "num_train_epochs": 1}
    before = snapshot(race)
    refused = run_train(train_argv(model, race, seed=3, **one_epoch), race, processes=0)
    after_refusal = snapshot(race)
    # A notebook's cell run again, with 1 epoch instead of 3: experiment.run_method, as 02-05 call it
    # (through scripts/launch_ds.py --cpu 1, which passes --overwrite_output_dir), into the same folder.
    setup = Setup(model_dir=str(model), mode="glm", train_path=str(SPO_TRAIN), test_path=str(SPO_TEST),
                  output_dir=str(root), nproc=1, max_len=64, max_src_len=32, per_device_train_batch_size=2,
                  num_train_epochs=1, seed=3, precision="fp32", max_new_tokens=8, max_test_samples=4)
    row = run_method("race", {"train_type": "lora", "lora_dim": 4, "lora_alpha": 8, "learning_rate": 1e-2}, setup)
    return {"root": root, "model": model, "race": race, "done": done, "winner": winner, "kept": kept,
            "killed": killed, "alive": alive, "cut": cut, "resumed": resumed, "resume_s": resume_s,
            "before": before, "refused": refused, "after_refusal": after_refusal, "row": row}


@pytest.mark.slow
def test_two_runs_at_once_one_trains_the_other_is_refused(runs):
    done, winner, race, kept = runs["done"], runs["winner"], runs["race"], runs["kept"]
    loser = done[3 - winner]
    assert loser["code"] == 2, loser["stderr"][-3000:]
    lines = [line for line in loser["stderr"].splitlines() if "error" in line]
    assert len(lines) == 1 and f"--output_dir {race}: " in lines[0], loser["stderr"][-3000:]
    # Refused by the lock, naming the process that holds it -- or, had the winner already ended, by its files.
    by_lock = "in use by another training run (pid " in lines[0]
    assert by_lock or "holds another run's" in lines[0], lines[0]
    if by_lock:
        assert loser["s"] < done[winner]["s"]  # while the winner still trained
    # The winner trained to the end, unharmed: three checkpoints and 90 records, all of its seed and id.
    run_id = kept["infos"][FINAL]["run_id"]
    assert sorted(kept["infos"]) == ["epoch-1-step-30", "epoch-2-step-60", FINAL]
    assert {(i["run_id"], i["args"]["seed"]) for i in kept["infos"].values()} == {(run_id, winner)}
    assert [r["step"] for r in kept["metrics"] if "loss" in r] == list(range(1, 91))
    assert {r["run_id"] for r in kept["metrics"]} == {run_id}
    # TensorBoard names its event files after the writing process: only the winner wrote any.
    assert kept["events"] and all(f".{kept['pids'][winner]}." in name for name in kept["events"]), kept["events"]


@pytest.mark.slow
def test_a_killed_run_resumes_at_once_and_equals_the_uninterrupted_one(runs):
    assert runs["alive"], "the run ended before it could be killed"
    assert runs["cut"] and FINAL not in runs["cut"]
    resumed, killed, kept = runs["resumed"], runs["killed"], runs["kept"]
    assert resumed.proc.returncode == 0, resumed.explain()  # no stale lock
    # The same run: the id the killed run started, everywhere; the records the killed run logged past its
    # checkpoint were dropped, so the folder's records are the uninterrupted run's.
    run_id = one_run(killed)
    assert run_id and {read_info(p)["run_id"] for p in resumed.checkpoints()} == {run_id}
    records = metrics(killed)
    assert {r["run_id"] for r in records} == {run_id}
    assert [r["step"] for r in records] == [r["step"] for r in kept["metrics"]] == list(range(1, 91))
    for key in ("loss", "lr"):
        assert [r[key] for r in records] == pytest.approx([r[key] for r in kept["metrics"]], rel=1e-6, abs=1e-7)
    a, b = kept["adapter"], load_file(str(killed / FINAL / ADAPTER))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_refused_rerun_changes_nothing(runs):
    refused, race = runs["refused"], runs["race"]
    assert refused.proc.returncode == 2, refused.explain()
    line = refused.proc.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert f"--output_dir {race}: holds another run's" in line
    assert f"--resume_from {race / FINAL}" in line and "--overwrite_output_dir" in line
    assert "another --output_dir" in line
    assert runs["after_refusal"] == runs["before"]


@pytest.mark.slow
def test_a_notebook_run_again_overwrites_and_reports_the_new_run(runs):
    """--overwrite_output_dir (what run_method passes): the newest checkpoint and every record are the new
    run's, and the row -- checkpoint, steps, F1 -- reports it, not the 3-epoch run the folder held."""
    race, row, kept = runs["race"], runs["row"], runs["kept"]
    newest = latest_checkpoint(race)
    assert sorted(p.name for p in race.glob("epoch-*")) == [newest.name] == ["epoch-1-step-30"]
    info = read_info(newest)
    assert info["args"]["seed"] == 3 and info["run_id"] != kept["infos"][FINAL]["run_id"]
    records = metrics(race)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert {r["run_id"] for r in records} == {info["run_id"]} == {row["run_id"]}
    assert row["checkpoint"] == str(newest) and row["steps"] == 30
    predictions = [json.loads(line) for line in Path(row["predictions"]).read_text().splitlines()]
    assert len(predictions) == 4
    assert row["f1"] == pytest.approx(score(predictions, [p["prediction"] for p in predictions])["f1"])


@pytest.mark.slow
def test_a_held_lock_stops_every_process_at_once(runs, tmp_path):
    """Rank 0 of a two-process launcher run finds the folder locked (by this test); both processes stop."""
    folder = tmp_path / "held"
    folder.mkdir()
    lock = FolderLock(folder)
    assert lock.acquire("test-holder") is None
    try:
        t0 = time.perf_counter()
        result = run_train(train_argv(runs["model"], folder, seed=1, **FLAGS), folder, processes=2, timeout=240)
        seconds = time.perf_counter() - t0
    finally:
        lock.release()
    assert result.proc.returncode != 0, result.explain()
    message = f"--output_dir {folder}: in use by another training run (pid {os.getpid()} on "
    errors = [line for line in result.proc.stderr.splitlines() if line.startswith("glmlab.train: error:")]
    assert len(errors) == 1 and message in errors[0], result.explain()  # one line, from rank 0
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing of the refused run
    assert "run test-holder" in (folder / LOCK_NAME).read_text()
    assert seconds < 120


@pytest.mark.slow
def test_folders_of_two_older_runs_are_refused_by_every_reader(runs, tmp_path):
    """An older glmlab's folder (no run ids) holding two runs: every reader names them in one line."""
    from glmlab.args import ArgsError, parse_args
    from glmlab.inference import load_for_inference
    from glmlab.loading import CheckpointError
    from glmlab.notebooks.plots import read_metrics

    folder = tmp_path / "old"
    folder.mkdir()
    for name, seed in (("epoch-1-step-30", 1), (FINAL, 2)):  # a 1-epoch run over a 3-epoch run's folder
        shutil.copytree(runs["killed"] / name, folder / name)
        info = read_info(folder / name)
        del info["run_id"]
        info["args"]["seed"] = seed
        (folder / name / INFO_NAME).write_text(json.dumps(info))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "run_id"}) + "\n" for r in metrics(runs["killed"])))
    problem = (f"{folder}: holds files of more than one run: a run of an older glmlab without run id (seed 1) "
               f"(epoch-1-step-30), a run of an older glmlab without run id (seed 2) ({FINAL}) and "
               f"metrics.jsonl records without run id;")
    with pytest.raises(MixedRunsError) as err:
        latest_checkpoint(folder)
    assert str(err.value).startswith(problem) and "\n" not in str(err.value)
    with pytest.raises(MixedRunsError, match="more than one run"):
        read_metrics(folder)
    with pytest.raises(CheckpointError, match="more than one run"):
        load_for_inference(folder)
    with pytest.raises(ArgsError, match=r"holds files of more than one run.*--overwrite_output_dir"):
        parse_args(train_argv(runs["model"], folder, **FLAGS))
    # One run of an older glmlab still reads as before.
    shutil.rmtree(folder / FINAL)
    (folder / "metrics.jsonl").unlink()
    assert latest_checkpoint(folder) == folder / "epoch-1-step-30" and one_run(folder) is None


def test_06_reuses_a_run_only_while_its_checkpoint_is_the_newest_of_its_run(tmp_path):
    """experiment.reusable_runs: a results row stands only for the run that scored it."""
    from glmlab.notebooks.experiment import LEARNING_RATES, SHARED_KEYS, reusable_runs, study_methods

    setup = {key: None for key in SHARED_KEYS}
    run_dir = tmp_path / "04_lora" / "lora"

    def checkpoint(name: str, run_id: str) -> Path:
        (run_dir / name).mkdir(parents=True)
        (run_dir / name / INFO_NAME).write_text(json.dumps({"run_id": run_id, "args": {"seed": 1}}))
        return run_dir / name

    methods = study_methods(4)
    row = {"method": "lora", "variant": "lora", "method_flags": methods["lora"], "learning_rate": LEARNING_RATES["lora"], "run_id": "A",
           "checkpoint": str(checkpoint("epoch-1-step-5", "A"))}
    (tmp_path / "04_lora" / "results.json").write_text(json.dumps({"setup": setup, "runs": [row]}))
    assert reusable_runs(["04_lora"], setup, methods, root=tmp_path) == {"04_lora": str(tmp_path / "04_lora")}
    checkpoint("epoch-2-step-10", "A")  # the same run went on: its row no longer shows its newest checkpoint
    assert reusable_runs(["04_lora"], setup, methods, root=tmp_path) == {}
    shutil.rmtree(run_dir)
    checkpoint("epoch-1-step-5", "B")  # another run in its place, at the same step
    assert reusable_runs(["04_lora"], setup, methods, root=tmp_path) == {}


def test_a_run_refused_while_the_holder_writes_its_name_still_reads_the_name(tmp_path):
    """The holder writes its name just after it takes the lock; a run refused in that instant names it."""
    import fcntl
    import threading

    path = tmp_path / LOCK_NAME
    holder = open(path, "a+", encoding="utf-8")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken, name not written yet
    try:
        def write_name():
            time.sleep(0.2)
            holder.write("pid 1 on host, run late-writer, since now\n")
            holder.flush()

        writer = threading.Thread(target=write_name)
        writer.start()
        answer = FolderLock(tmp_path).acquire("second")
        writer.join()
        assert answer == "pid 1 on host, run late-writer, since now"
    finally:
        holder.close()
    # A holder that never writes its name is still refused, with a phrase that says so.
    holder = open(path, "w", encoding="utf-8")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert FolderLock(tmp_path).acquire("third") == "a process that has not written its name yet"
    finally:
        holder.close()
    assert FolderLock(tmp_path).acquire("fourth") is None

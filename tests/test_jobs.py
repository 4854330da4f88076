"""A launched job's failure reads as the job's own error line; its progress bar as its final frame."""

from __future__ import annotations

import pytest

from glmlab.notebooks.experiment import Setup, launch
from glmlab.notebooks.jobs import JobFailed, error_line, final_frames


def test_final_frames_keep_the_last_frame_of_each_bar():
    log = "run 1 in runs/x\n  0%|   | 0/375\r 10%|#  | 38/375\r100%|###| 375/375 [01:02]\nwrote runs/x/results.json\n"
    assert final_frames(log) == "run 1 in runs/x\n100%|###| 375/375 [01:02]\nwrote runs/x/results.json\n"
    assert final_frames("no bar\n") == "no bar\n"


def test_error_line_is_the_last_program_error():
    stderr = "Traceback (most recent call last):\n  ...\nValueError: inner\nglmlab.train: error: --max_len: must be positive\n"
    assert error_line(stderr) == "glmlab.train: error: --max_len: must be positive"
    assert error_line("", "glmlab launch: error: --cpu must be at least 1\n") == "glmlab launch: error: --cpu must be at least 1"
    assert error_line("a plain crash\n") is None
    failed = JobFailed("lora", 1, "step 3\n", "Segmentation fault\n")  # no error line: the status and the tail
    assert str(failed).startswith("lora: training failed (1); its last lines:\nstep 3\nSegmentation fault")


def test_a_failing_job_raises_its_own_error_line(tmp_path):
    """An empty training file: the job stops in its argument checks (seconds), and the exception says why."""
    from glmlab.notebooks.pretrained import base_model_dir

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    setup = Setup(model_dir=str(base_model_dir("glm")), mode="glm", train_path=str(empty), test_path=str(empty),
                  output_dir=str(tmp_path / "out"), nproc=1)
    with pytest.raises(JobFailed) as failed:
        launch({**setup.flags(), "train_type": "lora", "learning_rate": 1e-3}, tmp_path / "out" / "lora", nproc=1)
    assert str(failed.value) == f"lora: glmlab.train: error: --train_path: {empty}:1: empty file, no samples"
    assert failed.value.returncode == 2 and failed.value._render_traceback_() == [f"JobFailed: {failed.value}"]
    assert not (tmp_path / "out" / "lora").exists()  # refused before anything was written

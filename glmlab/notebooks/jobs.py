"""What a notebook shows of a launched training job: its own error line when it fails, its progress as a few lines.

:func:`glmlab.notebooks.experiment.launch` runs a ``glmlab launch`` job (its processes). When that job fails, the
reader needs the job's reason (``glmlab.train: error: --train_path data/x.jsonl:1: empty file, no samples``),
not "training failed (2)" with the reason buried below a traceback: :class:`JobFailed` carries that line
as its message (:func:`error_line` finds it) and IPython shows it as one line. :func:`final_frames` turns
a progress bar's carriage-return frames into the last frame of each bar, so a log reads as a few lines.
"""

from __future__ import annotations

import re

# The lines glmlab's commands write when they stop on a problem: "glmlab.train: error: ...",
# "glmlab launch: error: ...", "launch_ds.py: error: ..." (argparse's own form too).
_ERROR = re.compile(r"^\S[^:\n]{0,40}: error: \S.*$", re.MULTILINE)


def final_frames(text: str) -> str:
    """``text`` with each line cut to what follows its last carriage return: the frame a terminal shows.

    tqdm redraws its bar with ``\\r`` on one line; written to a file or a notebook, every redraw stays.
    Keeping the final frame of each line leaves the bar's last state and every other line as it was."""
    lines = text.split("\n")
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)


def error_line(*outputs: str) -> str | None:
    """The last ``PROGRAM: error: REASON`` line in the job's outputs (stderr first), or ``None``."""
    for output in outputs:
        found = _ERROR.findall(final_frames(output or ""))
        if found:
            return found[-1].strip()
    return None


class JobFailed(RuntimeError):
    """A launched job exited with a non-zero status. The message is the job's own error line (prefixed
    with the run's name) when it wrote one, else its exit status and the end of its output;
    ``returncode`` and ``output`` (the last lines of stdout and stderr) stay on the exception."""

    def __init__(self, run: str, returncode: int, stdout: str, stderr: str, tail_lines: int = 25):
        both = "\n".join(part.rstrip("\n") for part in (stdout, stderr) if part)
        tail = "\n".join(final_frames(both).strip().splitlines()[-tail_lines:])
        reason = error_line(stderr, stdout)
        message = f"{run}: {reason}" if reason else f"{run}: training failed ({returncode}); its last lines:\n{tail}"
        super().__init__(message)
        self.returncode, self.output = returncode, tail

    def _render_traceback_(self) -> list[str]:
        """What IPython shows in place of a traceback: the message alone (the cause is the job's, not this frame's)."""
        return [f"{type(self).__name__}: {self}"]

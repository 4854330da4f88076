"""A notebook's papermill parameters, checked in its setup cell before anything is scored or trained.

``papermill -p max_len 0`` or ``-p train_path empty.jsonl`` should stop the notebook at once with one line naming
the parameter, not minutes later with a ``ZeroDivisionError`` or a failed training job. A setup cell calls::

    from glmlab.notebooks.parameters import check_parameters
    check_parameters(mode=mode, max_len=max_len, max_src_len=max_src_len, train_path=train_path, nproc=nproc)

Each parameter is checked by its name (:data:`RULES`; the names the notebooks share), and pairs that must
agree (``max_src_len < max_len``) together. A wrong one raises :class:`ParameterError`, which IPython shows as
its one line (``ParameterError: parameter max_len: must be a positive integer, got 0``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class ParameterError(ValueError):
    """A notebook parameter is wrong; the message names it, what it must be and what it was."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows in place of a traceback: the one line (the fix is in the parameters, not the code)."""
        return [f"{type(self).__name__}: {self}"]


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else f"must be a positive integer, got {value!r}"


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None else _positive_int(value)


def _int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"


def _non_negative_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else f"must be an integer >= 0, got {value!r}"


def _mode(value: Any) -> str | None:
    from glmlab.constants import MODES

    return None if value in MODES else f"must be one of {', '.join(MODES)}, got {value!r}"


def _folder(value: Any) -> str | None:
    """``None`` (the default base), ``"tiny"`` or an existing folder."""
    if value is None or value == "tiny":
        return None
    if not isinstance(value, (str, Path)):
        return f"must be a folder path, None or 'tiny', got {value!r}"
    from glmlab.notebooks import absolute

    return None if Path(absolute(value)).is_dir() else f"{value}: no such folder"


def _samples(value: Any) -> str | None:
    """``None`` (glmlab's synthetic set) or a sample file (a mixture spec ``a.jsonl,b.jsonl#N`` too)
    whose every line reads as a sample (:func:`glmlab.mixture.validate_spec`, without a tokenizer)."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        return f"must be a file path or None, got {value!r}"
    from glmlab.data import DataError
    from glmlab.mixture import parse_spec
    from glmlab.data import read_samples
    from glmlab.notebooks import absolute

    try:
        spec = ",".join(absolute(part.strip()) for part in str(value).split(","))  # each file from the checkout
        for source in parse_spec(spec):
            read_samples(source.path)
    except (DataError, ValueError, OSError) as err:
        return str(err)
    return None


def _precision(value: Any) -> str | None:
    if value is None:
        return None
    from glmlab.constants import canonical_precision

    try:
        canonical_precision(value)
    except (ValueError, KeyError):
        return f"must be bf16, fp16, fp32 or None, got {value!r}"
    return None


def _shares(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 1 for s in value)
    return None if ok else f"must be a list of shares between 0 and 1 (exclusive), got {value!r}"


def _replay_methods(value: Any) -> str | None:
    """06's ``replay_methods``: labels of :data:`glmlab.notebooks.replay.REPLAYED`, each at most once."""
    from glmlab.notebooks.replay import REPLAYED

    ok = isinstance(value, (list, tuple)) and all(m in REPLAYED for m in value) and len(set(value)) == len(value)
    return None if ok else f"must be a list of distinct methods among {', '.join(REPLAYED)}, got {value!r}"


def _runs(value: Any) -> str | None:
    """06's ``runs``: notebook name -> an output folder holding that notebook's ``results.json``."""
    if not isinstance(value, dict):
        return f"must be a dict of notebook name -> output folder, got {value!r}"
    from glmlab.notebooks import absolute

    for name, folder in value.items():
        if not Path(absolute(folder), "results.json").is_file():
            return f"{name}: {folder} holds no results.json (run {name} with output_dir={folder} first)"
    return None


def _positive_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else f"must be a positive number, got {value!r}"


# The parameters the notebooks share, by name -> their check (a reason, or None when fine).
RULES: dict[str, Callable[[Any], str | None]] = {
    "model_dir": _folder, "mode": _mode, "runs": _runs,
    "train_path": _samples, "test_path": _samples, "chat_path": _samples, "d2q_train_path": _samples,
    "d2q_test_path": _samples,
    "nproc": _positive_int, "max_len": _positive_int, "max_src_len": _positive_int, "d2q_max_len": _positive_int,
    "d2q_max_src_len": _positive_int, "per_device_train_batch_size": _positive_int,
    "num_train_epochs": _positive_int, "d2q_num_train_epochs": _positive_int, "max_steps": _optional_positive_int,
    "max_new_tokens": _positive_int, "num_examples": _positive_int, "sample_index": _non_negative_int,
    "seed": _int, "precision": _precision, "replay_shares": _shares, "replay_methods": _replay_methods,
    "learning_rate": lambda v: None if v is None else _positive_number(v),
}

# Pairs that must agree: (shorter, longer) lengths.
_LENGTHS = (("max_src_len", "max_len"), ("d2q_max_src_len", "d2q_max_len"))


def check_parameters(**parameters: Any) -> None:
    """Check each named parameter by its rule in :data:`RULES` (names without one pass), then the pairs
    of lengths; raise :class:`ParameterError` naming the first wrong one. Reads sample files, loads nothing."""
    for name, value in parameters.items():
        rule = RULES.get(name)
        problem = rule(value) if rule else None
        if problem:
            raise ParameterError(f"parameter {name}: {problem}")
    for short, long in _LENGTHS:
        if short in parameters and long in parameters and parameters[short] >= parameters[long]:
            raise ParameterError(f"parameter {short}: must be below {long} ({parameters[long]}) to leave room for "
                                 f"the answer, got {parameters[short]}")

"""Code only the notebooks use: the shared experiment step, the small pretrained bases, plots and widgets.

* :mod:`~glmlab.notebooks.experiment` -- one fine-tuning run start to finish (train through
  :mod:`glmlab.launch`, predict, score), as notebooks 02-06 run it;
* :mod:`~glmlab.notebooks.params` -- the setup cell of 02-05 in one call, every parameter checked first;
* :mod:`~glmlab.notebooks.by_hand`, :mod:`~glmlab.notebooks.mechanism`, :mod:`~glmlab.notebooks.zero3_probe` --
  the training loop in the notebook's own kernel, each method's mechanism in tensors, a ZeRO-3 partition seen
  from two processes;
* :mod:`~glmlab.notebooks.pretrained` -- the small pretrained bases glmlab ships (``python -m
  glmlab.notebooks.pretrained`` rebuilds or probes one);
* :mod:`~glmlab.notebooks.plots`, :mod:`~glmlab.notebooks.widgets`,
  :mod:`~glmlab.notebooks.memory_widget` -- charts, the chat box, the interactive memory estimate.

No core module imports this package (``tests/test_structure.py`` checks it): the library trains,
loads and generates without it. :func:`absolute` is how a notebook reads its path parameters.
"""

from __future__ import annotations

from pathlib import Path


def checkout() -> Path | None:
    """The glmlab checkout this package was imported from (the folder with ``pyproject.toml`` and
    ``notebooks/``), or ``None`` for an installed package."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def absolute(path: str | Path) -> str:
    """A notebook parameter's path, made absolute so the notebook runs from any folder.

    A relative path starts at the checkout's root when glmlab runs from a checkout (editable install or
    ``PYTHONPATH``); for an installed glmlab it starts at the current folder, or at its parent when the
    file is there (Jupyter and papermill run a notebook in its own folder, ``notebooks/``).
    """
    path = Path(path)
    if path.is_absolute():
        return str(path)
    repo = checkout()
    if repo is not None:
        return str(repo / path)
    here = Path.cwd()
    return str(here.parent / path if not (here / path).exists() and (here.parent / path).exists() else here / path)

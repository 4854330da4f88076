"""JSON files glmlab writes and reads: JSON lines (every data set and prediction file), JSON objects.

JSON lines are written atomically, so a reader (or a resumed notebook) never sees half a file. A JSON
object read from a checkpoint folder that is not one is a :class:`glmlab.loading.CheckpointError`
naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    """Write rows as JSON lines atomically (a temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; :class:`~glmlab.loading.CheckpointError` names the file when it is not one."""
    from glmlab.loading import CheckpointError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data

#!/usr/bin/env bash
# Execute the six notebooks in place, in order, with their default parameters (papermill; the CPU path with
# two DeepSpeed processes, as on a 2-core laptop), so the repository shows their outputs; store each one's
# code hash; write HTML pages into notebooks/html/ (git-ignored) for offline or projector use.
#   bash scripts/render_notebooks.sh                  # all six, then the solutions (16-26 minutes on 2 cores, by machine)
#   bash scripts/render_notebooks.sh --only 01_data   # some of them
#   bash scripts/render_notebooks.sh --check          # only what tests/test_rendered.py checks
# Commit the notebooks it rewrote; tests/test_rendered.py fails on a notebook whose code changed since.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export PATH="$(dirname "$PY"):$PATH"  # deepspeed and papermill of the same environment, by name
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's glmlab, installed or not
exec "$PY" -m glmlab.notebooks.render "$@"

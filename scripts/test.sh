#!/usr/bin/env bash
# Run glmlab's whole test suite (models against the reference fixtures, tokenizers, data formats,
# real multi-process DeepSpeed runs on the CPU, notebooks). Sets up ./.venv first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
# Two test workers (pytest-xdist), whole files each: a training test spends much of its time in one process
# (the launcher chain, loading, scoring) while the other core idles, so two at once use both cores. The
# notebooks go first (tests/conftest.py: the longest file, started at once while the other worker takes the rest);
# --no-loadscope-reorder keeps that order (xdist otherwise sends the files with the most tests first, and the
# notebooks started minutes in, finishing alone). GLMLAB_TEST_WORKERS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -q -n "${GLMLAB_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"

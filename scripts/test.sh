#!/usr/bin/env bash
# Run glmlab's whole test suite (models against the reference fixtures, tokenizers, data formats,
# real multi-process DeepSpeed runs on the CPU, notebooks). Sets up ./.venv first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"

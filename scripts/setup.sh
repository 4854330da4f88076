#!/usr/bin/env bash
# Set up glmlab in ./.venv: torch first (CPU build where there is no GPU, so a laptop or CI
# never downloads the multi-GB CUDA build; an existing torch, e.g. a CUDA one, is kept), then
# glmlab itself with the notebook and test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install "torch==2.13.0"
  else
    # A local CPU wheel where the machine provides one, else PyTorch's CPU wheel index.
    python -m pip install "torch==2.13.0+cpu" 2>/dev/null \
      || python -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
python -m pip install -q -e ".[notebooks,test]"
python -c "import torch, transformers, peft, deepspeed; print(f'glmlab set up: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, deepspeed {deepspeed.__version__}')"

#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the Python packages glmlab needs on a GPU machine that
# reaches nothing (this workplace's device machines: Python 3.12, torch with CUDA, transformers,
# peft's dependencies and sentencepiece already there; no DeepSpeed, no cpm_kernels, an older
# transformers). They land in ./.whl, which git ignores (.git/info/exclude); carry that folder to the
# GPU machine and benchmarks/gpu_check.sh installs it from there before anything runs:
#
#   bash benchmarks/gpu_kit.sh              # here, once (about 22 MB)
#   bash benchmarks/gpu_check.sh OUT        # there, with .whl carried beside the checkout
#
# DeepSpeed is published as a source archive only; it is built here into a pure-Python wheel with
# no pre-compiled ops (DS_BUILD_OPS=0: CPU Adam for offload is compiled there on first use, with
# the machine's nvcc and ninja). Versions: the ones this checkout's .venv runs, so the GPU runs the
# code the tests passed with. PYTHON_VERSION (3.12) names the GPU machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
KIT=.whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf "$KIT" && mkdir -p "$KIT"
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
TRANSFORMERS=$(version transformers) PEFT=$(version peft) DEEPSPEED=$(version deepspeed)
BINARY=(--no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# glmlab's own versions, cpm_kernels, and what DeepSpeed needs that the image lacks (pydantic, hjson).
"$PY" -m pip download -q "${BINARY[@]}" -d "$KIT" "transformers==$TRANSFORMERS" "peft==$PEFT" \
  "cpm_kernels==1.0.11" hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions
"$PY" -m pip download -q --no-deps --no-binary=:all: -d "$KIT/src" "deepspeed==$DEEPSPEED"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation "$KIT"/src/deepspeed-*.tar.gz -w "$KIT"
rm -rf "$KIT/src"
ls -1 "$KIT"
du -sh "$KIT"

#!/usr/bin/env bash
# glmlab's main job, on a CPU in a few minutes:
#   1. set up ./.venv (scripts/setup.sh);
#   2. write the synthetic data (glmlab.synth) and score the small pretrained ChatGLM-6B base that
#      glmlab ships on its held-out general probes: it knows something before it is fine-tuned;
#   3. fine-tune that base with LoRA on triple extraction through glmlab launch (what scripts/launch_ds.py
#      runs): two DeepSpeed processes on the CPU;
#   4. predict the held-out records (unseen part/fault pairs, an unseen sentence form) and print the score.
# Steps 2-4 are one library function, glmlab.notebooks.quickstart.run (notebook 04's LoRA run with its
# default settings), which the test suite checks against the F1 floor in tests/published.py.
# The same commands, with an official checkpoint folder and --gpus instead of --cpu, fine-tune the 6B models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
RUN=${RUN_DIR:-runs/quickstart}
rm -rf "$RUN"
python -m glmlab.notebooks.quickstart --output_dir "$RUN"

#!/usr/bin/env bash
# glmlab's main job, on a CPU in a few minutes:
#   1. set up ./.venv (scripts/setup.sh);
#   2. write the synthetic data (python -m glmlab.synth) and score the small pretrained ChatGLM-6B base that
#      glmlab ships on its held-out general probes: it knows something before it is fine-tuned;
#   3. fine-tune that base with LoRA on triple extraction through scripts/launch_ds.py: two DeepSpeed
#      processes on the CPU;
#   4. predict the held-out records (unseen part/fault pairs, an unseen sentence form) and print the score.
# The same commands, with an official checkpoint folder and --gpus instead of --cpu, fine-tune the 6B models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
RUN=${RUN_DIR:-runs/quickstart}
BASE=glmlab/assets/base/glm
rm -rf "$RUN"
mkdir -p "$RUN"

echo "== 1. data, and what the pretrained base knows"
python -m glmlab.synth --output_dir "$RUN/data"
python -m glmlab.notebooks.pretrained --mode glm --probe
echo "The base before fine-tuning, on the held-out triple-extraction records:"
python -m glmlab.predict --checkpoint "$BASE" --test_path "$RUN/data/spo_test.jsonl" \
  --max_len 128 --max_src_len 96 --output_path "$RUN/base_predictions.jsonl"

echo "== 2. LoRA fine-tune of the pretrained ChatGLM-6B base, two DeepSpeed processes on the CPU"
python scripts/launch_ds.py --cpu 2 -- \
  --train_path "$RUN/data/spo_train.jsonl" --model_name_or_path "$BASE" --mode glm \
  --train_type lora --lora_dim 8 --lora_alpha 32 --lora_dropout 0.0 \
  --lora_module_name query_key_value,dense,dense_h_to_4h,dense_4h_to_h \
  --per_device_train_batch_size 8 --gradient_accumulation_steps 1 --max_len 128 --max_src_len 96 \
  --learning_rate 5e-3 --num_train_epochs 3 --warmup_ratio 0.1 --show_loss_step 10 \
  --ds_file ds_zero2_no_offload.json --seed 1234 --output_dir "$RUN/lora"
python - "$RUN/lora/metrics.jsonl" <<'PY'
import json, sys
losses = [row["loss"] for row in map(json.loads, open(sys.argv[1], encoding="utf-8")) if "loss" in row]
print(f"loss over the run: {losses[0]:.2f} -> {losses[-1]:.3f} ({len(losses)} windows of 10 steps)")
PY

echo "== 3. predictions on the held-out records"
python -m glmlab.predict --checkpoint "$RUN/lora" --test_path "$RUN/data/spo_test.jsonl" \
  --output_path "$RUN/predictions.jsonl"
python - "$RUN/predictions.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
for row in rows[:3]:
    print(f"input:      {row['input']}\nreference:  {row['output']!r}\nprediction: {row['prediction']!r}\n")
print(f"{len(rows)} predictions written to {sys.argv[1]}; the score line above is glmlab.predict's")
PY
echo "Talk to it: .venv/bin/python -m glmlab.predict --checkpoint $RUN/lora --chat" 

#!/usr/bin/env bash
# The checks only a GPU machine can make, in a few minutes, on one GPU:
#   1. benchmarks/bench_gpu.py: the reference fixtures on CUDA (fp32 and bf16), and measured
#      versus estimated memory and tokens/s of the official 6B shapes (random weights);
#   2. the real loop on the GPU through scripts/launch_ds.py: LoRA (ZeRO-2), P-tuning (ZeRO-2)
#      and full-parameter (ZeRO-3) on a tiny ChatGLM2 in bf16, then predict and merge on CUDA;
#   3. full-parameter with ZeRO-3 CPU offload (builds DeepSpeed's CPU Adam on first use).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (WHERE="--cpu 1" DEVICE=cpu: the same on a CPU)
#
# Writes OUT_DIR/log.txt (everything), OUT_DIR/bench_gpu.json and OUT_DIR/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
WHERE=${WHERE:---gpus 0}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUN=$(mktemp -d)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
: > "$OUT/summary.txt"

check() {  # check NAME SECONDS COMMAND...: run, log, and record the exit status in the summary
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name: $*" >> "$OUT/log.txt"
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

train() {  # train NAME SECONDS FLAGS...: a short bf16 run of the tiny ChatGLM2 through the launcher
  local name=$1 limit=$2
  shift 2
  # shellcheck disable=SC2086  # WHERE is several words on purpose
  check "train-$name" "$limit" "$PYTHON" scripts/launch_ds.py $WHERE -- \
    --train_path data/spo_train.jsonl --model_name_or_path "$RUN/tiny-glm2" --mode glm2 \
    --per_device_train_batch_size 4 --max_len 128 --max_src_len 64 --num_train_epochs 1 --max_steps 12 \
    --show_loss_step 4 --seed 1234 --precision bf16 --output_dir "$RUN/$name" "$@"
  grep -h '"loss"' "$RUN/$name/metrics.jsonl" 2>/dev/null | sed "s/^/$name /" >> "$OUT/summary.txt"
}

"$PYTHON" -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', '| transformers', transformers.__version__, '| peft', peft.__version__, '| deepspeed', deepspeed.__version__)" 2>&1 | tail -1 | tee -a "$OUT/summary.txt"
check bench_gpu 150 "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" --out "$OUT/bench_gpu.json" ${BENCH_ARGS:-}
check tiny 60 "$PYTHON" -m glmlab.tiny --mode glm2 --output_dir "$RUN/tiny-glm2"
train lora 90 --train_type lora --lora_dim 8 --lora_alpha 32 --learning_rate 3e-3 --ds_file ds_zero2_no_offload.json
train ptuning 90 --train_type ptuning --pre_seq_len 8 --prefix_projection true --learning_rate 3e-2 --ds_file ds_zero2_no_offload.json
train all 90 --train_type all --learning_rate 1e-3 --ds_file ds_zero3_no_offload.json
lora=$(ls -d "$RUN"/lora/epoch-* 2>/dev/null | sort -V | tail -n 1)
check predict 60 "$PYTHON" -m glmlab.predict --checkpoint "${lora:-missing}" --test_path data/spo_test.jsonl \
  --device "$DEVICE" --dtype bfloat16 --output_path "$RUN/predictions.jsonl"
check merge 60 "$PYTHON" -m glmlab.merge_lora --adapter "${lora:-missing}" --output_dir "$RUN/merged"
train offload 150 --train_type all --learning_rate 1e-3 --ds_file ds_zero3_offload.json
rm -rf "$RUN"
cat "$OUT/summary.txt"

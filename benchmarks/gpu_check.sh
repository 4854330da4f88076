#!/usr/bin/env bash
# The checks only a GPU machine can make, on one GPU, in sections (SECTIONS, default all of them):
#   bench   benchmarks/bench_gpu.py: the reference fixtures on CUDA (fp32 and bf16) and the
#           quantization kernels (cpm_kernels + NVRTC) against the torch path (~1 min);
#   6b      the original project's settings on the official 6B shapes (random weights): batch 1,
#           length 1560, one card, checkpointing off and on; freeze (4 layers), P-tuning (16
#           tokens), LoRA (r 8) on ChatGLM-6B and ChatGLM2-6B, plus int8 and int4 LoRA and
#           P-tuning; measured peak beside glmlab.memory's estimate, tokens/s and MFU (~5-8 min);
#   train   the real loop through scripts/launch_ds.py: LoRA (ZeRO-2), P-tuning (ZeRO-2) and
#           full-parameter (ZeRO-3) on a tiny ChatGLM2 in bf16, then predict and merge on CUDA;
#   quant   the same loop on a quantized base: int4 LoRA and int8 P-tuning, then predict
#           (quantized as trained, and with --quantization_bit) and merge_lora (dequantized copy);
#   offload full-parameter with ZeRO-3 CPU offload (builds DeepSpeed's CPU Adam on first use).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (WHERE="--cpu 1" DEVICE=cpu: the same on a CPU)
#   SECTIONS=bench bash benchmarks/gpu_check.sh OUT    (about 1 min), then SECTIONS=6b (5-8 min):
#       two device runs, each well inside the 10-minute limit of one
#   On a machine without a package registry, run benchmarks/gpu_kit.sh first where there is one
#   and carry the .whl folder it fills (DeepSpeed, cpm_kernels, glmlab's transformers and peft).
#
# Writes OUT_DIR/log.txt (everything), OUT_DIR/bench_gpu.json, OUT_DIR/bench_6b.json and
# OUT_DIR/summary.txt (exit statuses, losses, the 6B table).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
WHERE=${WHERE:---gpus 0}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
SECTIONS=${SECTIONS:-bench 6b train quant offload}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUN=$(mktemp -d)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
: > "$OUT/summary.txt"
# glmlab runs from this checkout; on a machine that reaches no registry, the packages it lacks come
# from ./.whl (benchmarks/gpu_kit.sh fetches them elsewhere): installed beside, not into, its Python.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$RUN/site" .whl/*.whl \
    && export PYTHONPATH="$PWD:$RUN/site${PYTHONPATH#"$PWD"}" \
    && echo "installed $(ls .whl | wc -l) wheels from .whl into $RUN/site" | tee -a "$OUT/summary.txt"
fi

check() {  # check NAME SECONDS COMMAND...: run, log, and record the exit status in the summary
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name: $*" >> "$OUT/log.txt"
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

want() {  # want SECTION: whether SECTIONS names it
  [[ " $SECTIONS " == *" $1 "* ]]
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
if want bench; then
  check bench_gpu 150 "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" --parts fixtures kernels \
    --out "$OUT/bench_gpu.json" ${BENCH_ARGS:-}
  grep -h '"kernels_loaded"' "$OUT/log.txt" | tail -n 1 | cut -c1-400 >> "$OUT/summary.txt"
fi
if want 6b; then
  check bench_6b 560 "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" --parts shapes --batch_size 1 \
    --seq_len 1560 --out "$OUT/bench_6b.json" ${BENCH_6B_ARGS:-}
  "$PYTHON" -c "import json, sys; sys.path.insert(0, 'benchmarks'); from bench_gpu import print_table; \
print_table(json.load(open(sys.argv[1]))['shapes'])" "$OUT/bench_6b.json" >> "$OUT/summary.txt" 2>&1
fi
if want train || want quant || want offload; then
  check tiny 60 "$PYTHON" -m glmlab.tiny --mode glm2 --output_dir "$RUN/tiny-glm2"
fi
if want train; then
  train lora 90 --train_type lora --lora_dim 8 --lora_alpha 32 --learning_rate 3e-3 --ds_file ds_zero2_no_offload.json
  train ptuning 90 --train_type ptuning --pre_seq_len 8 --prefix_projection true --learning_rate 3e-2 --ds_file ds_zero2_no_offload.json
  train all 90 --train_type all --learning_rate 1e-3 --ds_file ds_zero3_no_offload.json
  lora=$(ls -d "$RUN"/lora/epoch-* 2>/dev/null | sort -V | tail -n 1)
  check predict 60 "$PYTHON" -m glmlab.predict --checkpoint "${lora:-missing}" --test_path data/spo_test.jsonl \
    --device "$DEVICE" --dtype bfloat16 --output_path "$RUN/predictions.jsonl"
  check merge 60 "$PYTHON" -m glmlab.merge_lora --adapter "${lora:-missing}" --output_dir "$RUN/merged"
fi
if want quant; then
  train lora_int4 90 --train_type lora --quantization_bit 4 --lora_dim 8 --lora_alpha 32 --learning_rate 3e-3 \
    --ds_file ds_zero2_no_offload.json
  train ptuning_int8 90 --train_type ptuning --quantization_bit 8 --pre_seq_len 8 --prefix_projection true \
    --learning_rate 3e-2 --ds_file ds_zero2_no_offload.json
  lora4=$(ls -d "$RUN"/lora_int4/epoch-* 2>/dev/null | sort -V | tail -n 1)
  pt8=$(ls -d "$RUN"/ptuning_int8/epoch-* 2>/dev/null | sort -V | tail -n 1)
  check predict_int4 60 "$PYTHON" -m glmlab.predict --checkpoint "${lora4:-missing}" --test_path data/spo_test.jsonl \
    --device "$DEVICE" --dtype bfloat16 --output_path "$RUN/predictions_int4.jsonl"
  check predict_int8_flag 60 "$PYTHON" -m glmlab.predict --checkpoint "${pt8:-missing}" --quantization_bit 8 \
    --test_path data/spo_test.jsonl --device "$DEVICE" --dtype float16 --output_path "$RUN/predictions_int8.jsonl"
  check merge_int4 60 "$PYTHON" -m glmlab.merge_lora --adapter "${lora4:-missing}" --output_dir "$RUN/merged_int4"
fi
if want offload; then
  train offload 150 --train_type all --learning_rate 1e-3 --ds_file ds_zero3_offload.json
fi
rm -rf "$RUN"
cat "$OUT/summary.txt"

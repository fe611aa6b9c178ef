#!/usr/bin/env bash
# The GPU checks in one call, for a machine available for a few minutes only; each stage is
# bounded by what is left of BUDGET_S seconds:
#   1. environment (GPU, driver, jax/flax/optax/orbax/torch versions, TF32 settings);
#   2. segan_jax.benchmark against the PyTorch reference in the same process, batch 25: widths 64
#      and 16 in float32, width 64 in bfloat16 (BENCH_SPECS), plus, with the first spec, the input
#      pipeline on the GPU ('device': the uint8 arrays on the GPU, augmented there) and on the host
#      cores ('host'), each in images/s next to the training iteration's, and their ratio
#      (pipeline_ratio_vs_train on the last line); with AUTHORS_DIR (a checkout of the authors'
#      SegAN repository) their own NetS/NetC iteration is timed alongside;
#   3. the paper's recipe (configs/isic2017.py: width 64, batch 25) trained on the real ISIC pairs
#      in DATA (folder layout, held-out ids of experiments/isic2017_heldout_ids.txt never trained
#      on), for as many steps as the measured iteration time fits into what is left;
#   4. that run scored on the held-out ids by the ISIC protocol (segan_jax.evaluate, test-time
#      flips, final k, threshold 0.4).
# Logs and results (not the checkpoints) are packed into OUT/gpu_results.tar.gz after each stage,
# so a stage cut short still leaves the earlier ones; the last lines printed summarise them.
#
#   OUT=/tmp/out DATA=local_data/isic2017 BUDGET_S=520 bash experiments/gpu_checks.sh
#
# A dry run on CPU at tiny sizes: BENCH_SPECS="4:float32" BENCH_STEPS=1 BENCH_WARMUP=0 \
#   TRAIN_WIDTH=4 MAX_STEPS=8 OUT=/tmp/out bash experiments/gpu_checks.sh
set -u
OUT=${OUT:?set OUT to the folder for results}
DATA=${DATA:-local_data/isic2017}
BUDGET_S=${BUDGET_S:-520}
BENCH_SPECS=${BENCH_SPECS:-"64:float32 16:float32 64:bfloat16"}
BENCH_STEPS=${BENCH_STEPS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-5}
TRAIN_WIDTH=${TRAIN_WIDTH:-64}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-100}
MAX_STEPS=${MAX_STEPS:-100000}
TRAIN=${TRAIN:-1}  # 0: benchmarks only
AUTHORS_DIR=${AUTHORS_DIR:-}  # e.g. ../shared/reference/segan_authors
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/segan_gpu_checks}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
pack() { tar -czf "$OUT/gpu_results.tar.gz" -C "$WORK" --exclude='checkpoints' . ; }
mkdir -p "$WORK" "$OUT"

echo "== 1. environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "torch", "ml_collections"):
  try:
    m = importlib.import_module(name)
    print(name, getattr(m, "__version__", "?"))
  except Exception as e:  # report, do not stop
    print(name, "MISSING", type(e).__name__, e)
import jax
print("jax devices", jax.devices(), "default_matmul_precision", jax.config.jax_default_matmul_precision)
try:
  import torch
  print("torch cuda", torch.cuda.is_available(), torch.version.cuda,
        "cudnn.allow_tf32", torch.backends.cudnn.allow_tf32,
        "matmul.allow_tf32", torch.backends.cuda.matmul.allow_tf32)
except Exception as e:
  print("torch", e)
EOF
} 2>&1 | tee "$WORK/env.txt"
pack

echo "== 2. benchmarks against PyTorch ($(left) s left)"
first=1
for spec in $BENCH_SPECS; do
  width=${spec%%:*}; dtype=${spec##*:}
  budget=$(( $(left) - (TRAIN ? 300 : 10) ))
  (( budget > 150 )) && budget=150
  if (( budget < 40 )); then echo "skipping width $width $dtype: too little time left"; continue; fi
  extra="--nopipeline"
  (( first )) && extra="--pipeline --pipeline_batches=50"  # the input pipeline once, first spec
  first=0
  [ -n "$AUTHORS_DIR" ] && extra="$extra --authors_dir=$AUTHORS_DIR"
  name="bench_w${width}_${dtype}"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout "$budget" "$PY" -m segan_jax.benchmark \
      --width="$width" --batch_size=25 --dtype="$dtype" --torch --steps="$BENCH_STEPS" \
      --warmup="$BENCH_WARMUP" $extra --json="$WORK/$name.json" > "$WORK/$name.log" 2>&1
  echo "$name: exit $?"; tail -n 24 "$WORK/$name.log"
  pack
done

echo "== 3. training the paper's recipe on $DATA ($(left) s left)"
RUN="$WORK/isic2017_w${TRAIN_WIDTH}"
train_budget=$(( TRAIN ? $(left) - EVAL_RESERVE_S : 0 ))
steps=$("$PY" - "$WORK" "$train_budget" "$TRAIN_WIDTH" "$MAX_STEPS" <<'EOF'
import glob, json, sys
work, budget, width, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# Seconds per iteration from the float32 benchmark at this width, else a guess of 1 s.
iter_s, pipe, compile_s = 1.0, float("inf"), 120.0
for path in glob.glob(f"{work}/bench_w{width}_float32.json"):
  r = json.load(open(path))
  iter_s = r["segan_jax_train_s"]
  compile_s = r["train_lower_s"] + r["train_compile_s"] + r.get("infer_compile_s", 0.0)
  pipe = r.get("pipeline_images_per_s", pipe)
# A full-width run on one H200 (2026-11-26, the former numpy input pipeline) trained at 16-23
# steps/s against a benchmark bound of 29.6 (pipeline) and took 105 s to its first validation:
# hence the margins below.
per_step = max(iter_s, 25.0 / pipe) * 1.8 + 0.002
# start-up: data scan and decode, compiling, four validation passes (about 10 s each), checkpoints
steps = int((budget - 60 - 2.0 * compile_s) / per_step)
print(max(min(steps, cap) // 4 * 4, 0))
EOF
)
echo "training budget ${train_budget}s: ${steps} steps"
if (( steps >= 8 )); then
  q=$(( steps / 4 ))
  timeout "$train_budget" "$PY" -m segan_jax.main --workdir="$RUN" \
      --config=segan_jax/configs/isic2017.py --config.model.width="$TRAIN_WIDTH" \
      --config.data.source=folder --config.data.dir="$DATA" \
      --config.data.val_ids_file=experiments/isic2017_heldout_ids.txt \
      --config.train.num_steps="$steps" --config.train.eval_every="$q" \
      --config.train.checkpoint_every="$q" --config.train.log_every=25 > "$WORK/train.log" 2>&1
  echo "training: exit $? after $(( $(date +%s) - START )) s"
  grep -E "step|Jaccard|jaccard" "$WORK/train.log" | tail -n 12
  pack
else
  echo "skipping training: too little time left"
fi

echo "== 4. scoring on the held-out ids ($(left) s left)"
if [ -d "$RUN/checkpoints" ] && (( $(left) > 20 )); then
  timeout $(( $(left) - 10 )) "$PY" -m segan_jax.evaluate --workdir="$RUN" --split=validation \
      --tta --nouse_selection --threshold=0.4 > "$WORK/evaluate.log" 2>&1
  echo "evaluate: exit $?"; tail -n 15 "$WORK/evaluate.log"
  pack
fi

echo "== summary ($(( $(date +%s) - START )) s)"
for f in "$WORK"/bench_*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(tail -n 1 "$f")"; done
grep -h "input pipeline, " "$WORK"/bench_*.log 2>/dev/null  # images/s on the GPU and the host, vs training
ls "$OUT"

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
#   3. a recipe (CONFIG, a config of segan_jax/configs: isic2017_plus unless set; isic2017 is the
#      paper's) at width TRAIN_WIDTH (64), batch TRAIN_BATCH (25), trained on the real ISIC pairs
#      in DATA (folder layout; the held-out ids of VAL_IDS, by default
#      experiments/isic2017_heldout_ids.txt, never trained on):
#      by default for as many steps as the measured iteration time fits into what is left (the
#      run's length, and so its rate schedule, set to those steps); with FULL=1 for the config's
#      own length (300 epochs), resumed from WORK's run when a previous call left one there (a
#      warm machine keeps /tmp between calls), and stopped by SIGTERM when the time is up, which
#      saves the step reached so that the next call continues (validation and a checkpoint every
#      FULL_EVAL_EVERY steps, 720 = 10 epochs unless set); in the compute dtype TRAIN_DTYPE
#      (float32 unless set; bfloat16 is mixed precision: parameters and statistics stay float32),
#      with any further flags of segan_jax.main in TRAIN_FLAGS;
#   4. (unless SCORE=0) that run scored on the held-out ids by the ISIC protocol
#      (segan_jax.evaluate, test-time flips, final k, threshold 0.4, the config's post-processing).
# Logs and results (not the checkpoints) are packed into OUT/gpu_results.tar.gz after each stage,
# so a stage cut short still leaves the earlier ones; the last lines printed summarise them.
#
#   OUT=/tmp/out DATA=local_data/isic2017 BUDGET_S=520 bash experiments/gpu_checks.sh
#   OUT=/tmp/out DATA=local_data/isic2017 BUDGET_S=560 BENCH_SPECS= FULL=1 \
#       bash experiments/gpu_checks.sh      # the full isic2017_plus run, continued on each call
#   (isic2017_plus in bfloat16 on one H200, 2026-12-04: 25.7 steps/s in a fresh machine's first
#   call after about 4 minutes of start-up, 40.9 in the second; 15 minutes of GPU time in two
#   calls, the first with SCORE=0, reached step 12207 of 21600: see experiments/RESULTS.md)
#
# A dry run on CPU at tiny sizes: BENCH_SPECS="4:float32" BENCH_STEPS=1 BENCH_WARMUP=0 \
#   TRAIN_WIDTH=4 MAX_STEPS=8 OUT=/tmp/out bash experiments/gpu_checks.sh
# (tests/test_gpu_checks.py runs stages 3 and 4 so on a small folder, with TRAIN_BATCH and VAL_IDS).
set -u
OUT=${OUT:?set OUT to the folder for results}
DATA=${DATA:-local_data/isic2017}
BUDGET_S=${BUDGET_S:-520}
BENCH_SPECS=${BENCH_SPECS-"64:float32 16:float32 64:bfloat16"}  # "": none
BENCH_STEPS=${BENCH_STEPS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-5}
TRAIN_WIDTH=${TRAIN_WIDTH:-64}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-100}
MAX_STEPS=${MAX_STEPS:-100000}
TRAIN=${TRAIN:-1}  # 0: benchmarks only
CONFIG=${CONFIG:-isic2017_plus}
TRAIN_BATCH=${TRAIN_BATCH:-25}
VAL_IDS=${VAL_IDS:-experiments/isic2017_heldout_ids.txt}  # never trained on; scored in stage 4
FULL=${FULL:-0}  # 1: the config's own length, resumed across calls
FULL_EVAL_EVERY=${FULL_EVAL_EVERY:-720}  # with FULL=1: steps between validations and checkpoints
TRAIN_DTYPE=${TRAIN_DTYPE:-float32}  # float32 | bfloat16
SCORE=${SCORE:-1}  # 0: no stage 4 (a FULL run to be continued by the next call)
TRAIN_FLAGS=${TRAIN_FLAGS:-}  # more flags for segan_jax.main, e.g. --config.data.rot90=True
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

echo "== 3. training $CONFIG on $DATA ($(left) s left)"
RUN="$WORK/${CONFIG}_w${TRAIN_WIDTH}"
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
common=(--workdir="$RUN" --config="segan_jax/configs/$CONFIG.py" --config.model.width="$TRAIN_WIDTH"
        --config.data.source=folder --config.data.dir="$DATA" --config.data.val_ids_file="$VAL_IDS"
        --config.train.batch_size="$TRAIN_BATCH" --config.train.log_every=25
        --config.dtype="$TRAIN_DTYPE" $TRAIN_FLAGS)
if (( FULL )); then
  # The config's length; validation and a checkpoint every FULL_EVAL_EVERY steps.
  latest=$(ls "$RUN/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1)
  echo "training budget ${train_budget}s: the config's own length, from step ${latest:-0}"
  length=(--config.train.eval_every="$FULL_EVAL_EVERY"
          --config.train.checkpoint_every="$FULL_EVAL_EVERY")
  go=$(( train_budget >= 60 ))
else
  echo "training budget ${train_budget}s: ${steps} steps"
  q=$(( steps / 4 > 0 ? steps / 4 : 1 ))
  length=(--config.train.num_epochs=0 --config.train.num_steps="$steps"
          --config.train.eval_every="$q" --config.train.checkpoint_every="$q")
  go=$(( steps >= 8 ))
fi
if (( go )); then
  # SIGTERM at the limit: the run saves the step it reached (exit 143); KILL a minute later.
  timeout --kill-after=60 "$train_budget" "$PY" -m segan_jax.main "${common[@]}" "${length[@]}" \
      >> "$WORK/train.log" 2>&1
  echo "training: exit $? after $(( $(date +%s) - START )) s"
  grep -E "step|Jaccard|jaccard" "$WORK/train.log" | tail -n 12
  pack
else
  echo "skipping training: too little time left"
fi

echo "== 4. scoring on the held-out ids ($(left) s left)"
if (( SCORE )) && [ -d "$RUN/checkpoints" ] && (( $(left) > 20 )); then
  timeout $(( $(left) - 10 )) "$PY" -m segan_jax.evaluate --workdir="$RUN" --split=validation \
      --tta --nouse_selection --threshold=0.4 > "$WORK/evaluate.log" 2>&1
  echo "evaluate: exit $?"; tail -n 15 "$WORK/evaluate.log"
  pack
fi

echo "== summary ($(( $(date +%s) - START )) s)"
for f in "$WORK"/bench_*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(tail -n 1 "$f")"; done
grep -h "input pipeline, " "$WORK"/bench_*.log 2>/dev/null  # images/s on the GPU and the host, vs training
ls "$OUT"

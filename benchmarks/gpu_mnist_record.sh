#!/usr/bin/env bash
# Issue #19's MNIST record, a device call of its own: the mnist_trades_gpu recipe (TRADES, linf eps 0.3)
# trained on one GPU and evaluated under the standard suite on all 10,000 test points; the run directory
# (results.json, report, checkpoint) and the exact command come back in $OUT.
#   here:  bash benchmarks/gpu_wheels.sh                       (wheels into .whl/, once)
#   there: run(command="bash benchmarks/gpu_mnist_record.sh", carry=[".whl"], timeout_s=600)
#          EPOCHS=N overrides the recipe's epochs (time one epoch first where the 8-minute limit is in doubt);
#          RESUME=DIR continues a run a timed-out call brought back (carry DIR too)
#   CPU:   GPU_RUN_SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_mnist_record.sh   (tiny sizes, tests/test_gpu_run.py)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_mnist_record.log"
source benchmarks/gpu_env.sh
RUN="$OUT/mnist_trades_gpu"
ARGS=(-m advlab --quiet run mnist_trades_gpu --out "$RUN")
if [ "${GPU_RUN_SMOKE:-0}" = 1 ]; then
  ARGS+=(--device cpu --set data.train_samples=256 --set data.val_samples=64 --set train.epochs=1
         --set train.batch_size=64 --set "train.objective_args={beta=6.0, steps=2, step_size=0.1}"
         --set eval.samples=16 --set eval.curve_samples=0 --set "eval.attacks=[]")
  LIMIT=300
else
  ARGS+=(--device cuda)
  LIMIT="${LIMIT:-580}"
fi
[ -n "${EPOCHS:-}" ] && ARGS+=(--set "train.epochs=$EPOCHS")
if [ -n "${RESUME:-}" ] && [ -d "$RESUME" ]; then
  cp -r "$RESUME" "$RUN" && ARGS+=(--resume)
fi
echo "python ${ARGS[*]}" > "$OUT/command.txt"
echo "== record (limit ${LIMIT}s): $(cat "$OUT/command.txt")" | tee -a "$LOG"
t0=$SECONDS
timeout "$LIMIT" python "${ARGS[@]}" >>"$LOG" 2>&1
rc=$?
echo "== record: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
python - "$RUN" <<'PY' | tee "$OUT/record.json"
import json, sys, pathlib
import torch
run = pathlib.Path(sys.argv[1])
res = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
print(json.dumps({"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "torch": torch.__version__, "finished": bool(res), "train_seconds": res.get("train_seconds"),
                  "clean_accuracy": res.get("clean_accuracy"), "n_eval": res.get("n_eval"),
                  "robust_accuracy": res.get("worst_case", {}).get("robust_accuracy")}))
PY
exit $rc

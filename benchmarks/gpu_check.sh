#!/usr/bin/env bash
# make gpu-check: the GPU check, self-contained for the lent GPU machine (device tool; no internet there).
# Prepared here first with `make gpu-check-prepare` (wheels in .whl/, the CIFAR-10 subset in .gpudata/),
# then, on the device, from the repository root, carrying .whl and .gpudata:
#   bash benchmarks/gpu_check.sh        # results (gpu_check.md, gpu_check.json, logs, profiles) in $OUT
# Exits non-zero when a test fails or a measurement crashes; a missed speed target is reported, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then  # what the GPU machine lacks (hydra-core, omegaconf, antlr4, kornia)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$PYTHON" - <<'PY'
import hydra, kornia, lightning, omegaconf, tensorboard, timm, torch, torchmetrics  # noqa: F401  (fail fast, by name)
print(f"torch {torch.__version__}, lightning {lightning.__version__}, hydra {hydra.__version__}, "
      f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
status=0
# 1. correctness on CUDA (tests/test_gpu.py)
timeout 240 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" || status=1
# 2. speed (benchmarks/gpu_check.py), at most ~5 minutes on one H100
timeout 330 "$PYTHON" benchmarks/gpu_check.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log" || status=1
exit $status

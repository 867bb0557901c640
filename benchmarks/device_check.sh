#!/usr/bin/env bash
# One script for the CUDA machine: runs the CUDA-only tests and the GPU benchmarks, then prints a short
# table. Each part is a separate block; a failing block is reported and the script goes on.
# Usage: bash benchmarks/device_check.sh   (from the repository root; PYTHON overrides the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/pgdm_device_check}
mkdir -p "$OUT"
SUMMARY=()
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# ==== issue 3: JPEG / spectral-filter kernels (Triton) ==================================================
echo "== issue 3: CUDA kernel tests =="
if $PYTHON -m pytest -q -m cuda tests/kernels tests/operators/test_jpeg.py tests/operators/test_quantize.py 2>&1 | tee "$OUT/issue3_tests.txt" | tail -5; then
    SUMMARY+=("issue3 CUDA tests: $(tail -1 "$OUT/issue3_tests.txt")")
else
    SUMMARY+=("issue3 CUDA tests: FAILED ($(tail -1 "$OUT/issue3_tests.txt"))")
fi
echo "== issue 3: all kernel tests on CUDA tensors (Triton vs reference, every shape) =="
if $PYTHON -m pytest -q tests/kernels 2>&1 | tee "$OUT/issue3_kernels.txt" | tail -3; then
    SUMMARY+=("issue3 kernel tests: $(tail -1 "$OUT/issue3_kernels.txt")")
else
    SUMMARY+=("issue3 kernel tests: FAILED ($(tail -1 "$OUT/issue3_kernels.txt"))")
fi
echo "== issue 3: GPU benchmarks (JPEG h†∘h, blur pinv filter) =="
if $PYTHON benchmarks/bench_ops.py --device cuda --csv "$OUT/issue3_bench.csv" 2>&1 | tee "$OUT/issue3_bench.md"; then
    BEST=$(grep "Triton (fused" "$OUT/issue3_bench.md" | awk -F'|' '{gsub(/ /,"",$10); print $4 "→" $10 "%"}' | tr '\n' ' ')
    SUMMARY+=("issue3 fused JPEG round trip, batch→% of peak HBM (target ≥ 70): $BEST")
else
    SUMMARY+=("issue3 benchmarks: FAILED")
fi
# ==== end issue 3 =======================================================================================

echo
echo "==================== device check summary ===================="
for line in "${SUMMARY[@]}"; do echo "  $line"; done

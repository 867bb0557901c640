#!/usr/bin/env bash
# One script for the lent CUDA machine: the CUDA tests and the GPU benchmarks in under 8 minutes, then a
# short summary table (also written to $OUT/summary.txt, and printed even if the script is cut short).
# Each block has its own time limit; a failing block is reported and the script goes on.
# Usage, from the repository root: bash benchmarks/device_check.sh   (PYTHON overrides the interpreter)
# torch.compile artifacts of the ADM-256 steps are read from and written to .device_cache/ (git-ignored) and
# returned as $OUT/compile_cache.tgz: unpack that into .device_cache/ and carry it to the next lent machine to
# skip most of the compile time there (same GPU model, torch and triton).
# BLOCKS="engine_tests adm256_b1" runs only the named blocks (adm256_b16 engine_tests adm256_b1 adm256_eager
# kernel_tests kernel_bench), e.g. to redo one with the device minutes left; BUDGET overrides the 470 s.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}          # the device image's python3 holds torch + triton
OUT=${OUT:-/tmp/pgdm_device_check}
BUDGET=${BUDGET:-470}              # seconds for the whole script
mkdir -p "$OUT" && rm -f "$OUT"/*.txt "$OUT"/*.md "$OUT"/*.csv "$OUT"/*.tgz
export PYTHONUNBUFFERED=1
SUMMARY=()
summary() {
    { echo; echo "==================== device check summary (${SECONDS}s) ===================="
      for line in "${SUMMARY[@]}"; do echo "  $line"; done; } | tee "$OUT/summary.txt"
}
trap summary EXIT
left() { echo $((BUDGET - SECONDS)); }
want() { [ -z "${BLOCKS:-}" ] || [[ " $BLOCKS " == *" $1 "* ]]; }
# run LIMIT LOG CMD...: run CMD with a time limit, output appended to $OUT/LOG; a failure or time-out goes in the summary
run() {
    local limit=$1 log=$2; shift 2
    [ "$limit" -gt "$(left)" ] && limit=$(left)   # the whole script stays inside BUDGET
    [ "$limit" -lt 10 ] && { SUMMARY+=("$log: skipped, ${SECONDS}s used of ${BUDGET}"); return 1; }
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$log" | grep -v '^ '
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ]; then SUMMARY+=("$log: TIMED OUT after ${limit}s ($*)")
    elif [ "$rc" -ne 0 ]; then SUMMARY+=("$log: FAILED, exit $rc: $(grep -E 'Error|error' "$OUT/$log" | tail -1)"); fi
    return "$rc"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# pgdm.engine / pgdm.kernels live in top-level folders (setup.py package_dir): an editable install maps them;
# where pip cannot write, link them into the package folder of this (throw-away) copy of the tree.
# (An old setuptools "succeeds" with a legacy egg-link that ignores package_dir: the import is checked again.)
importable() { $PYTHON -c 'import pgdm.engine, pgdm.kernels, pgdm.export' 2>/dev/null; }
if ! importable; then
    $PYTHON -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1
    if ! importable; then
        for d in engine kernels export; do ln -sfn "../$d" "pgdm/$d"; done
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
if VERSIONS=$($PYTHON -c 'import torch, triton, pgdm.engine, pgdm.kernels; print(f"torch {torch.__version__}, triton {triton.__version__}, CUDA: {torch.cuda.is_available() and torch.cuda.get_device_name()}")'); then
    SUMMARY+=("$VERSIONS")
else
    SUMMARY+=("pgdm does not import: every block below will fail")
fi

# Order: what has not been measured yet first (the first run, an H200 on 2026-11-28, ran out of its 470 s while
# compiling the ADM-256 step, its last block); every block is skipped once the budget is spent.

# ---- issue 6: engine — CUDA graph around the whole step, bf16, batching --------------------------------------
# ADM-256 (random weights), bf16, noiseless centre inpainting. Compiled step (Inductor) in a CUDA graph at batch 16
# (throughput, the MFU target; its compile time is the unknown, so it goes first and may take 230 s), the engine's
# CUDA tests, the compiled step at batch 1 with 20-step restores (latency), then the captured eager step.
rm -f "$OUT/engine_bench.csv" "$OUT/engine_bench.md"
BENCH=($PYTHON benchmarks/bench_step.py --device cuda --config adm256 --backends cudagraph --precisions bf16
       --op inpaint-center --reps 20 --no-baseline --csv "$OUT/engine_bench.csv")
mkdir -p .device_cache
want adm256_b16 && echo "== ADM-256 bf16, compiled step in a CUDA graph, batch 16 (forward alone not compiled: saves its compile) ==" &&
run 230 engine_bench.md "${BENCH[@]}" --batch 16 --restore-steps 0 --profile 12 --no-forward --compile-cache .device_cache/adm256_b16.bin

if want engine_tests; then
    echo "== engine tests (CUDA) =="
    run 130 engine_tests.txt $PYTHON -m pytest -q -p no:cacheprovider -m cuda tests/engine
    SUMMARY+=("engine CUDA tests: $(tail -1 "$OUT/engine_tests.txt" 2>/dev/null)")
fi

want adm256_b1 && echo "== ADM-256 bf16, compiled step in a CUDA graph, batch 1 + 20-step restore ==" &&
run 150 engine_bench.md "${BENCH[@]}" --batch 1 --restore-steps 20 --restore-reps 3 --no-forward --compile-cache .device_cache/adm256_b1.bin
if [ -n "$(ls -A .device_cache)" ] && tar czf "$OUT/compile_cache.tgz" -C .device_cache . 2>/dev/null; then  # files back from $OUT: 16 MiB each at most
    SIZE=$(du -m "$OUT/compile_cache.tgz" | cut -f1)
    if [ "$SIZE" -gt 15 ]; then rm -f "$OUT/compile_cache.tgz"; SUMMARY+=("compile cache: ${SIZE} MiB compressed, too large to return")
    else SUMMARY+=("compile cache: ${SIZE} MiB in \$OUT/compile_cache.tgz"); fi
fi
want adm256_eager && echo "== ADM-256 bf16, graph of the eager step, batch 16 ==" &&
run 60 engine_bench.md "${BENCH[@]}" --no-compile --batch 16 --restore-steps 0 --profile 12

# ---- issue 3: Triton kernels (JPEG, blur filter) against their torch references, on CUDA tensors -------------
if want kernel_tests; then
    echo "== kernel tests (CUDA) =="
    run 100 kernels_tests.txt $PYTHON -m pytest -q -p no:cacheprovider tests/kernels
    SUMMARY+=("kernel tests: $(tail -1 "$OUT/kernels_tests.txt" 2>/dev/null)")
fi

want kernel_bench && echo "== kernel benchmarks (JPEG h†∘h, blur pinv filter) ==" &&
if run 60 ops_bench.md $PYTHON benchmarks/bench_ops.py --device cuda --csv "$OUT/ops_bench.csv"; then
    BEST=$(grep "Triton (fused, 1 launch)" "$OUT/ops_bench.md" | awk -F'|' '{gsub(/ /,"",$4); gsub(/ /,"",$10); print "b" $4 ":" $10 "%"}' | tr '\n' ' ')
    SUMMARY+=("fused JPEG round trip, % of peak HBM by batch (target >= 70): $BEST")
fi

while IFS= read -r line; do SUMMARY+=("$line"); done < <(grep -h "| FAILED" "$OUT/engine_bench.md" 2>/dev/null)
if [ -s "$OUT/engine_bench.csv" ]; then
    while IFS= read -r line; do SUMMARY+=("$line"); done < <($PYTHON - "$OUT/engine_bench.csv" <<'PYEOF'
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    f = lambda k: float(r[k]) if r.get(k) not in (None, "") else float("nan")  # noqa: E731
    b = int(r["batch"])
    ratio = f" = {f('ratio'):.2f}x fwd" if f("ratio") == f("ratio") else ""  # nan when the forward was skipped
    line = (f"{r['config']} {r['backend']} {r['precision']} b{b}: step {f('step_ms'):.1f} ms{ratio}, "
            f"{f('img_s'):.1f} img/s, {f('tflops'):.0f} TFLOP/s, MFU {f('mfu_pct'):.0f}% (target >=50 at b16), "
            f"non-network {f('other_pct'):.1f}% (target <=3), mem {f('mem_gib'):.1f} GiB, compile+capture {f('compile_s'):.0f} s")
    if r.get("restore_s"):
        line += f", 20-step restore {f('restore_s'):.3f} s (target <=0.3 at b1)"
    print(line)
PYEOF
)
fi

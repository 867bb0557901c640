#!/usr/bin/env bash
# One script for the lent CUDA machine: the CUDA tests and the GPU benchmarks in under 8 minutes, then a
# short summary table (also written to $OUT/summary.txt, and printed even if the script is cut short).
# Each block has its own time limit; a failing block is reported and the script goes on.
# Usage, from the repository root: bash benchmarks/device_check.sh   (PYTHON overrides the interpreter)
#
# The compiled ADM-256 steps take minutes of CPU to compile (the first H200 run ran out of time compiling), so they
# start first, in the background, while the tests and the short benchmarks use the GPU. No two timed sections
# overlap: foreground blocks hold $OUT/gpu.lock (flock) and the background benchmarks take the same lock for their
# timed sections only (bench_step.py --device-lock). Outside the lock the background processes still load the CPU
# and briefly the GPU (Inductor tries kernel configs, graph capture warm-ups), which may perturb the foreground's
# short timings (eager ADM-256 step, kernel benchmarks). A foreground block's time limit includes its wait for the lock.
# torch.compile artifacts of the ADM-256 steps are read from and written to .device_cache/ (git-ignored) and
# returned as $OUT/compile_cache.tgz: unpack that into .device_cache/ and carry it to the next lent machine to
# skip most of the compile time there (same GPU model, torch and triton).
# BLOCKS="engine_tests adm256_b1" runs only the named blocks (adm256_b16 adm256_b1 engine_tests kernel_tests
# interop_cupy adm256_eager kernel_bench torchrun), e.g. to redo one with the device minutes left; BUDGET overrides the 470 s;
# BENCH_ARGS adds bench_step.py arguments to the ADM-256 blocks, e.g. BENCH_ARGS="--inductor conv_1x1_as_mm=True".
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}          # the device image's python3 holds torch + triton
OUT=${OUT:-/tmp/pgdm_device_check}
BUDGET=${BUDGET:-470}              # seconds for the whole script
mkdir -p "$OUT" && rm -f "$OUT"/*.txt "$OUT"/*.md "$OUT"/*.csv "$OUT"/*.tgz
export PYTHONUNBUFFERED=1
LOCK="$OUT/gpu.lock"
SUMFILE="$OUT/summary_lines.txt"    # appended to by foreground and background blocks alike
PIDS="$OUT/background.pids"         # process groups of the background blocks (timeout leads its own group)
: > "$SUMFILE"
: > "$LOCK"
: > "$PIDS"
note() { echo "$*" >> "$SUMFILE"; }
summary() {
    while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null; done < "$PIDS"   # none outlives the script
    { echo; echo "==================== device check summary (${SECONDS}s) ===================="
      sed 's/^/  /' "$SUMFILE"; } | tee "$OUT/summary.txt"
}
trap summary EXIT
left() { echo $((BUDGET - SECONDS)); }
want() { [ -z "${BLOCKS:-}" ] || [[ " $BLOCKS " == *" $1 "* ]]; }
if command -v flock >/dev/null; then LOCKED=(flock "$LOCK"); else LOCKED=(); note "no flock command: foreground blocks may overlap background timings"; fi
# cap LIMIT: LIMIT, or less so that the script stays inside BUDGET; fails (nothing printed) under 10 s
cap() { local lim=$1; [ "$lim" -gt "$(left)" ] && lim=$(left); [ "$lim" -ge 10 ] && echo "$lim"; }
# report LOG RC LIMIT CMD...: a failure or time-out of CMD goes in the summary
report() {
    local log=$1 rc=$2 lim=$3; shift 3
    if [ "$rc" -eq 124 ]; then note "$log: TIMED OUT after ${lim}s ($*)"
    elif [ "$rc" -ne 0 ]; then note "$log: FAILED, exit $rc: $(grep -E 'Error|error' "$OUT/$log" | tail -1)"; fi
}
# run LIMIT LOG CMD...: CMD in the foreground, holding the GPU lock, with a time limit; output appended to $OUT/LOG
run() {
    local lim log=$2
    lim=$(cap "$1") || { note "$log: skipped, ${SECONDS}s used of ${BUDGET}"; return 1; }
    shift 2
    timeout -k 10 "$lim" "${LOCKED[@]}" "$@" 2>&1 | tee -a "$OUT/$log" | grep -v '^ '
    local rc=${PIPESTATUS[0]}
    report "$log" "$rc" "$lim" "$@"
    return "$rc"
}
# spawn LIMIT LOG CMD...: CMD in the background with a time limit, output to $OUT/LOG only; `wait` collects it
spawn() {
    local lim log=$2
    lim=$(cap "$1") || { note "$log: skipped, ${SECONDS}s used of ${BUDGET}"; return 1; }
    shift 2
    echo "   (in the background, ${lim} s at most, output in $OUT/$log)"
    ( timeout -k 10 "$lim" "$@" >> "$OUT/$log" 2>&1 &
      echo $! >> "$PIDS"
      wait $!
      report "$log" $? "$lim" "$@" ) &
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
$PYTHON -c 'import torch, triton, pgdm.engine, pgdm.kernels; print(f"torch {torch.__version__}, triton {triton.__version__}, CUDA: {torch.cuda.is_available() and torch.cuda.get_device_name()}")' >> "$SUMFILE" 2>/dev/null ||
    note "pgdm does not import: every block below will fail"

# ---- issue 6: engine — CUDA graph around the whole step, bf16, batching --------------------------------------
# ADM-256 (random weights), bf16, noiseless centre inpainting. In the background: the compiled step (Inductor) in a
# CUDA graph at batch 16 (throughput, the MFU target) and at batch 1 with 20-step restores (latency). Then, in the
# foreground: the engine's and the kernels' CUDA tests, the captured eager step at batch 16, the kernel benchmarks.
BENCH=($PYTHON benchmarks/bench_step.py --device cuda --config adm256 --backends cudagraph --precisions bf16
       --op inpaint-center --reps 20 --no-baseline --device-lock "$LOCK" ${BENCH_ARGS:-})
mkdir -p .device_cache
want adm256_b16 && echo "== ADM-256 bf16, compiled step in a CUDA graph, batch 16 (the forward alone not compiled: saves its compile) ==" &&
spawn $(($(left) - 30)) engine_b16.md "${BENCH[@]}" --csv "$OUT/engine_b16.csv" --batch 16 --restore-steps 0 --profile 12 \
    --no-forward --compile-cache .device_cache/adm256_b16.bin
want adm256_b1 && echo "== ADM-256 bf16, compiled step in a CUDA graph, batch 1 + 20-step restores ==" &&
spawn $(($(left) - 30)) engine_b1.md "${BENCH[@]}" --csv "$OUT/engine_b1.csv" --batch 1 --restore-steps 20 --restore-reps 3 \
    --no-forward --compile-cache .device_cache/adm256_b1.bin

if want engine_tests; then
    echo "== engine tests (CUDA) =="
    run 150 engine_tests.txt $PYTHON -m pytest -q -p no:cacheprovider -m cuda tests/engine
    note "engine CUDA tests: $(tail -1 "$OUT/engine_tests.txt" 2>/dev/null)"
fi

# ---- issue 3: Triton kernels (JPEG, blur filter) against their torch references, on CUDA tensors -------------
if want kernel_tests; then
    echo "== kernel tests (CUDA) =="
    run 100 kernels_tests.txt $PYTHON -m pytest -q -p no:cacheprovider tests/kernels
    note "kernel tests: $(tail -1 "$OUT/kernels_tests.txt" 2>/dev/null)"
fi

# ---- pgdm.interop: CuPy arrays in and out of Restorer / Engine on the GPU, without copies ---------------------
if want interop_cupy; then
    echo "== CuPy interop (pgdm.interop) =="
    if $PYTHON -c 'import cupy' 2>/dev/null; then
        run 60 interop_cupy.txt $PYTHON - <<'PYEOF'
import cupy, torch
import pgdm
from pgdm.engine import restorer
from pgdm.interop import like, to_tensor

a = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
t = to_tensor(a)
assert t.is_cuda and t.data_ptr() == a.data.ptr, "to_tensor copied the CuPy array"
back = like(t, a)
assert isinstance(back, cupy.ndarray) and back.data.ptr == t.data_ptr(), "like copied the tensor"
den = pgdm.load_model("default", device="cuda")
op = pgdm.ops.SuperResolution(2).cuda()
y = op(torch.rand(2, 1, 32, 32, device="cuda") * 2 - 1)
for r in (pgdm.Restorer(den, steps=5), restorer(den, steps=5)):
    ref = r.restore(y, op, seed=3)
    got = r.restore(cupy.from_dlpack(y), op, seed=3)
    assert isinstance(got, cupy.ndarray) and got.device.id == y.device.index
    assert torch.equal(torch.from_dlpack(got), ref), f"{type(r).__name__}: CuPy result differs from the torch one"
print("CuPy interop: zero-copy in and out, Restorer and Engine results equal the torch ones: OK")
PYEOF
        note "CuPy interop: $(tail -1 "$OUT/interop_cupy.txt" 2>/dev/null)"
    else
        note "CuPy interop: skipped (cupy is not installed; pip install 'pgdm[cupy]')"
    fi
fi

want adm256_eager && echo "== ADM-256 bf16, graph of the eager step, batch 16 ==" &&
run 60 engine_eager.md "${BENCH[@]}" --csv "$OUT/engine_eager.csv" --no-compile --batch 16 --restore-steps 0 --profile 12

want kernel_bench && echo "== kernel benchmarks (JPEG h†∘h, blur pinv filter) ==" &&
if run 60 ops_bench.md $PYTHON benchmarks/bench_ops.py --device cuda --csv "$OUT/ops_bench.csv"; then
    BEST=$(grep "Triton (fused, 1 launch)" "$OUT/ops_bench.md" | awk -F'|' '{gsub(/ /,"",$4); gsub(/ /,"",$10); print "b" $4 ":" $10 "%"}' | tr '\n' ' ')
    note "fused JPEG round trip, % of peak HBM by batch (target >= 70): $BEST"
fi

# ---- torchrun: one restore job over several processes on the GPU(s) -------------------------------------------
# A functional check: 2 ranks on one GPU (both on cuda:0), or one rank per GPU on a multi-GPU machine; the outputs
# are compared with the single-process run's, file by file.
if want torchrun; then
    NGPU=$($PYTHON -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
    NPROC=$(( NGPU > 2 ? NGPU : 2 ))
    DIST="$OUT/torchrun"; rm -rf "$DIST"
    RESTORE=(restore sr4 pgdm/assets/demo --simulate --steps 20 --device cuda --batch-size 2 --quiet)
    echo "== torchrun: pgdm restore over $NPROC processes on $NGPU GPU(s) =="
    if run 90 torchrun.txt $PYTHON -m torch.distributed.run --nproc-per-node "$NPROC" -m pgdm "${RESTORE[@]}" -o "$DIST/ranks" &&
       run 60 torchrun.txt $PYTHON -m pgdm "${RESTORE[@]}" -o "$DIST/single"; then
        SAME=0; ALL=0
        for f in "$DIST"/single/*.png; do ALL=$((ALL + 1)); cmp -s "$f" "$DIST/ranks/$(basename "$f")" && SAME=$((SAME + 1)); done
        note "torchrun, $NPROC ranks on $NGPU GPU(s): $(grep 'img/s together' "$OUT/torchrun.txt" | tail -1); $SAME of $ALL PNGs identical to one process"
    fi
fi

echo "== waiting for the background blocks (${SECONDS}s used of ${BUDGET}) =="
wait
if [ -n "$(ls -A .device_cache)" ] && tar czf "$OUT/compile_cache.tgz" -C .device_cache . 2>/dev/null; then  # files back from $OUT: 16 MiB each at most
    SIZE=$(du -m "$OUT/compile_cache.tgz" | cut -f1)
    if [ "$SIZE" -gt 15 ]; then rm -f "$OUT/compile_cache.tgz"; note "compile cache: ${SIZE} MiB compressed, too large to return"
    else note "compile cache: ${SIZE} MiB in \$OUT/compile_cache.tgz"; fi
fi
grep -h "compiled/captured in\|^# profile" "$OUT"/engine_*.md 2>/dev/null | while IFS= read -r line; do note "$line"; done
grep -h "| FAILED" "$OUT"/engine_*.md 2>/dev/null | while IFS= read -r line; do note "$line"; done
CSVS=("$OUT"/engine_*.csv)
[ -e "${CSVS[0]}" ] || exit 0
$PYTHON - "${CSVS[@]}" >> "$SUMFILE" <<'PYEOF'
import csv, sys
for path in sys.argv[1:]:
    for r in csv.DictReader(open(path)):
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

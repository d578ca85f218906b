#!/usr/bin/env bash
# The GPU check, as one prepared script: run from the repository root on a machine with a GPU,
# its own torch and no network. Builds the extension with the CUDA kernels, checks every CUDA
# kernel against the CPU ones, runs the CUDA tests, times one pass against the device's ceilings,
# runs the end-to-end benchmarks, the sanitizers and the tracking-overhead bench, and prints a
# short table last. GPU time is scarce, so the steps run in order of value under one deadline
# (SUITE_SECONDS, default 420): a step that would not fit is skipped and says so.
# Full logs and JSON go to $UINFO_GPU_OUT, else $OUT, else bench/out/gpu.
#
#   bash bench/gpu_suite.sh
#   SUITE_SECONDS=900 bash bench/gpu_suite.sh     # a longer lease
#   SKIP_BASELINES=1 bash bench/gpu_suite.sh      # uinfo_fast only in the end-to-end bench
#   STEPS="build smoke tests bench_fp32" bash bench/gpu_suite.sh   # only the steps named
set -uo pipefail
OUTDIR="${UINFO_GPU_OUT:-${OUT:-bench/out/gpu}}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DEADLINE=$(( $(date +%s) + ${SUITE_SECONDS:-420} ))
declare -A RC

# step NAME MAX_SECONDS COMMAND...: runs COMMAND with stdout+stderr in $OUTDIR/NAME.log, for at
# most MAX_SECONDS and never past the deadline (15 s kept for the summary).
step() {
  local name=$1 max=$2; shift 2
  if [[ -n "${STEPS:-}" && " $STEPS " != *" $name "* ]]; then RC[$name]=unselected; return; fi
  local left=$(( DEADLINE - $(date +%s) - 15 ))
  if (( left < 20 )); then echo "== $name: skipped (deadline)"; RC[$name]=skipped; return; fi
  (( max > left )) && max=$left
  echo "== $name (at most ${max} s)"
  local t0=$(date +%s)
  timeout "$max" "$@" > "$OUTDIR/$name.log" 2>&1
  RC[$name]=$?
  echo "   exit ${RC[$name]} after $(( $(date +%s) - t0 )) s"
}

{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUTDIR/machine.txt" 2>&1
tail -1 "$OUTDIR/machine.txt"

step build 300 env UINFO_FAST_CUDA=1 UINFO_FAST_PTXAS_VERBOSE=1 MAX_JOBS="${MAX_JOBS:-16}" \
  TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" $PY -m pip install -v --no-build-isolation --no-deps -e .
if [[ "${RC[build]}" != 0 && "${RC[build]}" != unselected ]]; then grep -E "error|Error" "$OUTDIR/build.log" | head -30; tail -20 "$OUTDIR/build.log"; echo "BUILD FAILED"; exit 1; fi
grep -E "Compiling entry|registers|spill" "$OUTDIR/build.log" | grep -B1 -E "registers|spill" | grep -vE "^--" | head -40 \
  > "$OUTDIR/ptxas.txt"; grep -cE "registers" "$OUTDIR/ptxas.txt"

step smoke 60 $PY bench/cuda_smoke.py
grep -E "FAIL|cuda_smoke|Error" "$OUTDIR/smoke.log" | head -20
step tests 150 env UINFO_FAST_CUDA=1 $PY -m pytest -q -p no:cacheprovider tests -k "cuda or build"
tail -2 "$OUTDIR/tests.log"; grep -E "^(FAILED|ERROR)" "$OUTDIR/tests.log" | head -20
step roofline 90 $PY bench/pass_roofline.py --json "$OUTDIR/pass_roofline.json"
METHODS="uinfo_fast,torch_lbfgs"
[ -n "${SKIP_BASELINES:-}" ] && METHODS="uinfo_fast"
step bench_fp32 150 $PY bench/bench_probes.py --size full --device cuda --methods "$METHODS" --json "$OUTDIR/bench_fp32.json"
step bench_bf16 60 $PY bench/bench_probes.py --size full --device cuda --dtype bfloat16 --methods uinfo_fast \
  --json "$OUTDIR/bench_bf16.json"
# Variants of uinfo_fast on the same workload: with CUDA graphs, and with all penalties batched.
step bench_graphs 60 env UINFO_FAST_CUDA_GRAPHS=1 $PY bench/bench_probes.py --size full --device cuda \
  --methods uinfo_fast --json "$OUTDIR/bench_graphs.json"
step bench_batched 60 $PY bench/bench_probes.py --size full --device cuda --methods uinfo_fast --schedule batched \
  --json "$OUTDIR/bench_batched.json"
step profile 60 $PY bench/profile_fit.py --device cuda --rows 40000 --dim 512 --rows-shown 25
# The sanitizers instrument only this extension's kernels (kernel-name substring "uinfo_fast").
SAN_FILTER="--kernel-name kns=uinfo_fast"
compute-sanitizer --help 2>/dev/null | grep -q -- "--kernel-name" || SAN_FILTER="--filter kns=uinfo_fast"
step memcheck 90 compute-sanitizer --tool memcheck $SAN_FILTER --error-exitcode 9 $PY bench/cuda_smoke.py
step racecheck 120 compute-sanitizer --tool racecheck $SAN_FILTER --error-exitcode 9 $PY bench/cuda_smoke.py
step tracking 300 $PY bench/bench_tracking.py --size gpu --json "$OUTDIR/tracking_gpu.json"
step syncs 60 $PY bench/sync_count.py
step dense 300 $PY bench/bench_dense.py runs --size gpu --pairs 1 --modes untracked,every10-amortised,every1-amortised

{
echo
echo "================ summary ================"
tail -1 "$OUTDIR/machine.txt"
for s in build smoke tests roofline bench_fp32 bench_bf16 bench_graphs bench_batched profile memcheck racecheck tracking syncs dense; do
  printf "%s=%s " "$s" "${RC[$s]:-?}"; done; echo
echo "tests: $(tail -1 "$OUTDIR/tests.log" 2>/dev/null)"
echo "smoke: $(grep cuda_smoke: "$OUTDIR/smoke.log" 2>/dev/null)"
for s in memcheck racecheck; do echo "$s: $(grep -E "ERROR SUMMARY|cuda_smoke:" "$OUTDIR/$s.log" 2>/dev/null | tr '\n' ' ')"; done
echo "-- pass roofline"; sed -n '/^## one probe_objective pass/,$p' "$OUTDIR/roofline.log" 2>/dev/null | grep -vE "^$" | head -20
for s in bench_fp32 bench_bf16 bench_graphs bench_batched tracking syncs dense; do
  echo "-- $s"; grep -E "^(#|\||max)" "$OUTDIR/$s.log" 2>/dev/null | cut -c1-400 || tail -4 "$OUTDIR/$s.log" 2>/dev/null
done
echo "-- profile"; grep -E "^probe-iterations|Self CUDA time total|Self CPU time total" "$OUTDIR/profile.log" 2>/dev/null
} 2>&1 | tee "$OUTDIR/summary.txt"
# Everything in one archive as well (a lease returns only a few files).
tar czf "$OUTDIR.tar.gz" -C "$(dirname "$OUTDIR")" "$(basename "$OUTDIR")" && mv "$OUTDIR.tar.gz" "$OUTDIR/all_logs.tar.gz"

#!/usr/bin/env bash
# The GPU check, as one prepared script: run from the repository root on a machine with a GPU,
# its own torch and no network. Builds the extension with the CUDA kernels, runs the tests
# (the CUDA-parametrised ones included) and the benchmarks, and prints a short table last.
# Full logs and JSON go to $UINFO_GPU_OUT, else $OUT, else bench/out/gpu.
#
#   bash bench/gpu_suite.sh            # everything
#   SKIP_BASELINES=1 bash bench/gpu_suite.sh   # uinfo_fast only (shorter)
set -uo pipefail
OUTDIR="${UINFO_GPU_OUT:-${OUT:-bench/out/gpu}}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUTDIR/machine.txt" 2>&1
cat "$OUTDIR/machine.txt" | tail -1

echo "== build (UINFO_FAST_CUDA=1)"
if ! UINFO_FAST_CUDA=1 MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    $PY -m pip install --no-build-isolation --no-deps -e . > "$OUTDIR/build.log" 2>&1; then
  tail -40 "$OUTDIR/build.log"; echo "BUILD FAILED"; exit 1
fi

echo "== tests"
UINFO_FAST_CUDA=1 timeout 600 $PY -m pytest -q tests > "$OUTDIR/pytest.log" 2>&1
TEST_RC=$?
tail -3 "$OUTDIR/pytest.log"
grep -E "^(FAILED|ERROR)" "$OUTDIR/pytest.log" | head -20

METHODS="uinfo_fast,torch_lbfgs"
[ -n "${SKIP_BASELINES:-}" ] && METHODS="uinfo_fast"
echo "== bench full size, float32 ($METHODS)"
timeout 900 $PY bench/bench_probes.py --size full --device cuda --methods "$METHODS" \
  --json "$OUTDIR/bench_full_fp32.json" > "$OUTDIR/bench_full_fp32.txt" 2> "$OUTDIR/bench_full_fp32.err"
echo "== bench full size, bfloat16 (uinfo_fast)"
timeout 600 $PY bench/bench_probes.py --size full --device cuda --dtype bfloat16 --methods uinfo_fast \
  --json "$OUTDIR/bench_full_bf16.json" > "$OUTDIR/bench_full_bf16.txt" 2> "$OUTDIR/bench_full_bf16.err"
echo "== tracking overhead, ResNet-18 (width 64) on 50,000 synthetic images"
timeout 600 $PY bench/bench_tracking.py --size gpu --json "$OUTDIR/tracking_gpu.json" \
  > "$OUTDIR/tracking_gpu.txt" 2> "$OUTDIR/tracking_gpu.err"

echo
echo "================ summary ================"
head -1 "$OUTDIR/machine.txt" >/dev/null
tail -1 "$OUTDIR/machine.txt"
echo "tests: $(tail -1 "$OUTDIR/pytest.log") (exit $TEST_RC)"
for f in bench_full_fp32 bench_full_bf16 tracking_gpu; do
  echo "-- $f"; grep -E "^(#|\||max)" "$OUTDIR/$f.txt" || tail -5 "$OUTDIR/$f.err"
done

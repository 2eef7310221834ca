#!/usr/bin/env bash
# The GPU checks of a change, in one call to the lent GPU machine (its kit: ../shared/device):
#     bash scripts/device_check.sh [SECONDS]     (the call's budget, default 560)
# run there as: source .device/env.sh && COMMIT=$(short hash) bash scripts/device_check.sh 560
# It writes at most 5 files under $OUT (a call brings back 8): the GPU suite (pytest -m gpu,
# with -n 8 when pytest-xdist is importable), the two tests that must run alone, and as many
# `gpu_fuzz` models (of indices FUZZ_START..999) as the time left allows, each log headed with the GPU and $COMMIT (the
# machine's own git metadata can lag behind the files it was sent).
set -o pipefail
BUDGET=${1:-560}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
OUT=${OUT:?set OUT to the folder that comes back}
HEAD_LINE="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1), commit ${COMMIT:-unknown}, $(date -u +%FT%TZ)"
echo "$HEAD_LINE" | tee "$OUT/gpu.txt"
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 8"
{ echo "$HEAD_LINE"; echo "command: python3 -m pytest -m gpu -q $XDIST -p no:cacheprovider"
  timeout $(( $(left) - 120 )) python3 -m pytest -m gpu -q $XDIST -p no:cacheprovider 2>&1 \
    | grep -v PytestBenchmarkWarning | grep -v "warner(" | tail -40; } | tee "$OUT/gpu-tests.log"
{ echo "$HEAD_LINE"; echo "command: python3 -m pytest -m gpu -q tests/test_gpu.py -k 'frees or leaks'"
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py -k "frees or leaks" 2>&1 \
    | tail -5; } | tee "$OUT/gpu-tests-alone.log"
FUZZ=$(( $(left) - 20 ))
if [ "$FUZZ" -gt 60 ]; then
  echo "$HEAD_LINE; gpu_fuzz for ${FUZZ} s (cut by the budget: count the ok lines)" > "$OUT/gpu-fuzz.log"
  timeout "$FUZZ" python3 scripts/gpu_fuzz.py --models $(( 1000 - ${FUZZ_START:-0} )) --start "${FUZZ_START:-0}" --jobs 16 \
    2>&1 | tee -a "$OUT/gpu-fuzz.log" | tail -3
  echo "fuzz: $(grep -c ': ok' "$OUT/gpu-fuzz.log") models ok, $(grep -c ': FAIL\|: error' "$OUT/gpu-fuzz.log") failed" | tee -a "$OUT/gpu.txt"
fi
echo "done with $(left) s of $BUDGET left" | tee -a "$OUT/gpu.txt"

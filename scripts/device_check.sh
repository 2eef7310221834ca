#!/usr/bin/env bash
# The GPU checks of a change, in one call to the lent GPU machine (its kit: ../shared/device):
#     source .device/env.sh && COMMIT=$(short hash) bash scripts/device_check.sh [SECONDS]
# SECONDS is the call's budget (default 570). In order, as long as the budget lasts:
#   1. the GPU suite (pytest -m gpu, -n 8 when pytest-xdist is importable) and the two tests
#      that must run alone;
#   2. on an H200 only, the tuning run the shipped database needs (squeezeseg fp32 at batch
#      1/32/128, fp16 at 1/32) and its choices (tuning_cache.json: ship them here with
#      `python3 scripts/ship_tuning.py --gpu "NVIDIA H200" --from tuning_cache.json`);
#   3. torchvision's convnext_tiny through scripts/torchvision_check.py (opset 17);
#   4. with FUZZ=1, gpu_fuzz models FUZZ_START..999 for the time left; else the segment bench
#      (segment's defaults against --resize-on cpu --no-overlap, IMAGES JPEGs, default 4,000).
# SUITE=0 skips step 1 (for a call that follows one which ran it at the same commit);
# TORCHVISION=0 skips step 3; PROBE=1 first runs scripts/nvjpeg_probe.py (nvJPEG's hardware
# decoder against Pillow on 1,000 of segment_bench's JPEGs: pixels and img/s; at most 80 s).
# It writes at most 8 files under $OUT (a call brings back 8), each log headed with the GPU and
# $COMMIT (the machine's own git metadata can lag behind the files it was sent).
set -o pipefail
BUDGET=${1:-570}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
OUT=${OUT:?set OUT to the folder that comes back}
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
HEAD_LINE="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1), commit ${COMMIT:-unknown}, $(date -u +%FT%TZ)"
echo "$HEAD_LINE" | tee "$OUT/gpu.txt"
if [ -n "${PROBE:-}" ]; then
  echo "command: python3 scripts/nvjpeg_probe.py --images 1000" >> "$OUT/gpu.txt"
  timeout 80 python3 scripts/nvjpeg_probe.py --images 1000 --out "$OUT/nvjpeg_probe.json" \
    2>&1 | tail -12 | tee -a "$OUT/gpu.txt"
fi
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 8"
if [ "${SUITE:-1}" != 0 ]; then
{ echo "$HEAD_LINE"; echo "command: python3 -m pytest -m gpu -q $XDIST -p no:cacheprovider"
  timeout $(( $(left) > 400 ? 280 : $(left) - 120 )) python3 -m pytest -m gpu -q $XDIST \
    -p no:cacheprovider 2>&1 | grep -v PytestBenchmarkWarning | grep -v "warner(" | tail -80
  echo "command: python3 -m pytest -m gpu -q tests/test_gpu.py -k 'frees or leaks'"
  timeout 45 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py \
    -k "frees or leaks" 2>&1 | tail -4; } > "$OUT/gpu-tests.log"
tail -5 "$OUT/gpu-tests.log" | tee -a "$OUT/gpu.txt"
fi
if [[ "$GPU" == *H200* ]] && [ "$(left)" -gt 200 ]; then
  { echo "$HEAD_LINE"
    echo "command: squeezegen bench models/squeezeseg.yaml --batch 1,32,128 --compare graph"
    timeout $(( $(left) - 100 )) python3 -m squeezegen bench models/squeezeseg.yaml \
      --batch 1,32,128 --compare graph --json "$OUT/tune_fp32.json" 2>&1 | tail -30
    echo "command: squeezegen bench models/squeezeseg.yaml --batch 1,32 --precision fp16"
    timeout $(( $(left) - 40 )) python3 -m squeezegen bench models/squeezeseg.yaml \
      --batch 1,32 --precision fp16 --compare fp16 2>&1 | tail -30
    python3 scripts/ship_tuning.py --gpu "$GPU" --cache-out "$OUT/tuning_cache.json" 2>&1
  } > "$OUT/tune.log"
  tail -3 "$OUT/tune.log" | tee -a "$OUT/gpu.txt"
fi
T=$(( $(left) - 20 )); [ "$T" -gt 150 ] && T=150
if [ "$T" -gt 40 ] && [ "${TORCHVISION:-1}" != 0 ]; then
  echo "command: python3 scripts/torchvision_check.py convnext_tiny --opsets 17" >> "$OUT/gpu.txt"
  timeout "$T" python3 scripts/torchvision_check.py convnext_tiny --opsets 17 \
    --out "$OUT/torchvision_convnext.json" 2>&1 | grep -v Warn | tail -12 | tee -a "$OUT/gpu.txt"
fi
T=$(( $(left) - 15 ))
if [ "$T" -gt 60 ] && [ -n "${FUZZ:-}" ]; then
  echo "$HEAD_LINE; gpu_fuzz for ${T} s (cut by the budget: count the ok lines)" > "$OUT/gpu-fuzz.log"
  timeout "$T" python3 scripts/gpu_fuzz.py --models $(( 1000 - ${FUZZ_START:-0} )) \
    --start "${FUZZ_START:-0}" --jobs 16 2>&1 | tee -a "$OUT/gpu-fuzz.log" | tail -3
  echo "fuzz: $(grep -c ': ok' "$OUT/gpu-fuzz.log") models ok, $(grep -c ': FAIL\|: error' "$OUT/gpu-fuzz.log") failed" | tee -a "$OUT/gpu.txt"
elif [ "$T" -gt 60 ]; then
  { echo "$HEAD_LINE"; echo "command: python3 scripts/segment_bench.py --images ${IMAGES:-4000} --batch 32 --baseline"
    timeout "$T" python3 scripts/segment_bench.py --images "${IMAGES:-4000}" --batch 32 \
      --baseline --out "$OUT/segment.json" 2>&1 | tail -40; } > "$OUT/segment.log"
  tail -8 "$OUT/segment.log" | tee -a "$OUT/gpu.txt"
fi
echo "done with $(left) s of $BUDGET left" | tee -a "$OUT/gpu.txt"

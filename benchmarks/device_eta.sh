#!/usr/bin/env bash
# Issue 24 item 5 on one H200 (device tool, one call): the run's ETA re-estimated after every batch against what
# the run then took (benchmarks/eta_error.py), on
#   1. the organism's gpu tier: pytest -m "claims and gpu" (every claim; sequential looks on: the tier's auto);
#   2. the A14B-shaped full case of benchmarks/scaling.sh (information_flow + step_vs_frame on a random-weight
#      A14B-shaped model, 240x416x21, 8 steps, maze) at A14B_INSTANCES instances (default 4; scaling.sh: 8, which
#      needs a call of its own: ORG_S=0 WRITE_S=120 A14B_S=460 A14B_INSTANCES=8).
# Run from the repository root on the device machine with the wheels carried in .whl (diffusers); $OUT set.
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
nproc >> "$OUT/gpu.txt"
git rev-parse HEAD >> "$OUT/gpu.txt" 2>/dev/null
t0=$(date +%s)
PYT=(python3 -m pytest -p cos.pytest_plugin -p no:cacheprovider -p no:xdist claims/test_claims.py -q)
if [ "${ORG_S:-240}" != 0 ]; then   # ORG_S=0: the A14B-shaped case alone (it needs most of a call's 10 minutes)
  timeout "${ORG_S:-240}" "${PYT[@]}" -m "claims and gpu" --cos-out /tmp/og > "$OUT/organism-gpu.log" 2>&1
  echo "organism rc $? at $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  cp /tmp/og/claims-status.json "$OUT/organism-gpu-claims-status.json" 2>/dev/null
  python3 benchmarks/eta_error.py /tmp/og/claims-status.json --log "$OUT/organism-gpu.log" \
    --json "$OUT/organism-gpu-eta.json" 2>&1 | tee -a "$OUT/summary.txt"
fi
timeout "${WRITE_S:-150}" python3 benchmarks/write_random_wan.py --shape a14b --out /tmp/a14b --device cuda 2>&1 \
  | tail -1 | tee -a "$OUT/summary.txt"
echo "model written at $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
timeout "${A14B_S:-200}" "${PYT[@]}" -m "claims and full_model" -k "information_flow or step_vs_frame" \
  --cos-model /tmp/a14b --cos-size 240x416x21 --cos-steps 8 --cos-instances "${A14B_INSTANCES:-4}" --cos-tasks maze \
  --cos-out /tmp/a14b-run > "$OUT/a14b.log" 2>&1
echo "a14b rc $? at $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
cp /tmp/a14b-run/claims-status.json "$OUT/a14b-claims-status.json" 2>/dev/null
python3 benchmarks/eta_error.py /tmp/a14b-run/claims-status.json --log "$OUT/a14b.log" \
  --json "$OUT/a14b-eta.json" 2>&1 | tee -a "$OUT/summary.txt"

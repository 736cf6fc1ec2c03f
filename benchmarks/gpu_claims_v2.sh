#!/usr/bin/env bash
# The organism's GPU claims tier with the current claims (v2), one device call. Results land in $OUT.
set -u
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
( time timeout 520 python3 -m pytest -p cos.pytest_plugin -m "claims and gpu" -p no:cacheprovider claims/test_claims.py \
    --cos-out /tmp/organism-gpu -q ) > "$OUT/organism-gpu.log" 2>&1
tail -60 "$OUT/organism-gpu.log"
cp /tmp/organism-gpu/claims-status.json /tmp/organism-gpu/claims-status.md "$OUT/" 2>/dev/null

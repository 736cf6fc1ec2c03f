#!/usr/bin/env bash
# Issue 26 on one GPU (device tool, one call): the organism's gpu tier inside pytest with the readouts beside the
# sampling (--cos-overlap on) against the serial loop (off), cold (empty out dir, no store) each, the serial run
# first (the order favours the overlapped run less than it costs it: the first run pays the cold caches); their tables compared row by row. COS_FORWARD_TIMING gives the
# GPU busy fraction and each claim's host seconds (benchmarks/gpu_speed.py).
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git rev-parse HEAD; } > "$OUT/gpu.txt"
# RUNS: label:mode:seconds items (a run's pytest needs ~160 s plus ~25 s to start and write the report)
for run in ${RUNS:-serial:off:240 overlap:on:240}; do
  IFS=: read -r label mode limit <<< "$run"
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$label" --phases cold --tier-timeout "$limit" \
    --pytest-arg=--cos-overlap="$mode" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
done
for b in ${COMPARE:-overlap}; do
  python3 benchmarks/compare_tables.py "$OUT/serial-claims-status.json" "$OUT/$b-claims-status.json" 2>&1 \
    | tee -a "$OUT/compare.txt" | tail -3
done

#!/usr/bin/env bash
# Issue 26 on one GPU (device tool, one call): the organism's gpu tier inside pytest with the readouts beside the
# sampling (--cos-overlap on) against the serial loop (off), cold (empty out dir, no store) each, the overlapped run
# first (the first run pays the machine's cold caches: the order is against it); their tables compared row by row.
# COS_FORWARD_TIMING gives the GPU busy fraction and each claim's host seconds (benchmarks/gpu_speed.py).
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git rev-parse HEAD; } > "$OUT/gpu.txt"
# RUNS: label:mode:seconds items (a run's pytest needs ~160 s plus ~25 s to start and write the report)
for run in ${RUNS:-overlap:on:230 serial:off:230}; do
  IFS=: read -r label mode limit <<< "$run"
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$label" --phases cold --tier-timeout "$limit" \
    --pytest-arg=--cos-overlap="$mode" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
done
for b in ${COMPARE:-overlap}; do
  python3 benchmarks/compare_tables.py "$OUT/serial-claims-status.json" "$OUT/$b-claims-status.json" 2>&1 \
    | tee -a "$OUT/compare.txt" | tail -3
done

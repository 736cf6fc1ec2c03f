#!/usr/bin/env bash
# Issue 26 on one GPU (device tool, one call): the organism's gpu tier inside pytest cold (empty out dir and an
# empty result store) and warm (the same store: runs and records served from it), with COS_FORWARD_TIMING for the
# GPU busy fraction and each claim's host seconds (benchmarks/gpu_speed.py tier --store). The warm run is what a
# user's rerun of an unchanged model costs: host work only where nothing is stored.
. benchmarks/device_setup.sh
python3 benchmarks/gpu_speed.py tier --out "$OUT" --store --phases cold,warm \
  --tier-timeout "${COLD_S:-300}" --warm-timeout "${WARM_S:-220}" 2>&1 | tee "$OUT/tier.log" | grep -v "^ "
# the same code without a store, cold, in the same call (NOSTORE_S=0 leaves it out)
[ "${NOSTORE_S:-0}" -gt 0 ] && python3 benchmarks/gpu_speed.py tier --out "$OUT" --label nostore --phases cold \
  --tier-timeout "$NOSTORE_S" 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
exit 0

#!/usr/bin/env bash
# Issue 26 on one GPU (device tool, one call): the organism's gpu tier cold, no store, at several batch sizes
# (BATCHES, rows per forward; the tier's default first), each inside pytest with COS_FORWARD_TIMING
# (benchmarks/gpu_speed.py tier --label bsN). The organism's forwards are launch-bound (~20 ms whatever the batch),
# so rows per forward decide the sampling time; the tables say what the batch changes in the rows.
. benchmarks/device_setup.sh
warm_machine
for bs in ${BATCHES:-64 264}; do
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "bs$bs" --phases cold --tier-timeout "${COLD_S:-240}" \
    --pytest-arg=--cos-batch-size=$bs 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
done
exit 0

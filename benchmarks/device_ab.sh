#!/usr/bin/env bash
# One device call: the organism's gpu tier cold, no store, at this tree ("new") and at this tree with PATCH
# reversed ("old": PATCH is `git diff OLD_COMMIT HEAD -- cos/`, since the device's copy of .git may not hold this
# session's commits), in the order RUNS (default: new old new: the repeat of new is the spread on one machine;
# new64: this tree at 64 rows a batch).
# COS_FORWARD_TIMING on (benchmarks/gpu_speed.py tier); matplotlib's font cache and the CUDA context are built
# before the first timed run.
. benchmarks/device_setup.sh
mkdir -p /tmp/old && cp -r cos claims fixtures tests conftest.py pyproject.toml /tmp/old/ \
  && patch -s -R -p1 -d /tmp/old < "${PATCH:?PATCH: a git diff of cos/ from the old commit to this tree}" \
  || { echo "could not build the old tree"; exit 1; }
echo "patch: $PATCH" >> "$OUT/gpu.txt"
warm_machine
i=0
for which in ${RUNS:-new old new}; do
  i=$((i + 1)); root=$PWD; [ "$which" = old ] && root=/tmp/old
  extra=(); [ "$which" = new64 ] && extra=(--pytest-arg=--cos-batch-size=64)    # this tree at the old batch size
  PYTHONPATH=/tmp/site:$root python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$i-$which" --root "$root" \
    --phases cold --tier-timeout "${COLD_S:-200}" "${extra[@]}" 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
  # at most 8 files come back: the tables of the first two runs, every run's timings
  rm -f "$OUT"/tier-"$i-$which"-cold.log "$OUT/$i-$which-claims-status.md"
  [ "$i" -gt 2 ] && rm -f "$OUT/$i-$which-claims-status.json"
done
exit 0

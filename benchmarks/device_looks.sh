#!/usr/bin/env bash
# One device call: the organism's gpu tier cold, no store, sequential looks on (the tier's default), at this tree
# with the default 3 looks and with --cos-looks 5 (order: RUNS, default "3 5"); the two tables compared row by row
# (benchmarks/compare_tables.py) into tier.log. COS_FORWARD_TIMING on (benchmarks/gpu_speed.py tier).
. benchmarks/device_setup.sh
warm_machine
i=0
for k in ${RUNS:-3 5}; do
  i=$((i + 1))
  PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$i-looks$k" --root "$PWD" \
    --phases cold --tier-timeout "${COLD_S:-150}" --pytest-arg=--cos-looks=$k 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
  rm -f "$OUT"/tier-"$i-looks$k"-cold.log "$OUT/$i-looks$k-claims-status.md"
done
python3 benchmarks/compare_tables.py "$OUT"/1-*-claims-status.json "$OUT"/2-*-claims-status.json | tee -a "$OUT/tier.log"
python3 - "$OUT" <<'PY' | tee -a "$OUT/tier.log"
import json, sys, glob
for f in sorted(glob.glob(sys.argv[1] + "/*-claims-status.json")):
    print(f.split("/")[-1])
    for r in json.load(open(f))["claims"]:
        sq = (r.get("details") or {}).get("sequential") or {}
        print(f"  {r['id']:26s} {r['status']:13s} n={r['n']} batches {sq.get('batches_used')}/{sq.get('batches_max')}"
              f" looks {[lk.get('stop') for lk in sq.get('looks', [])]}")
PY
exit 0

#!/usr/bin/env bash
# The organism's cpu claims tier on this machine, one process against `-n N --dist loadgroup` (default N=2), in one
# run: wall times inside pytest (provenance wall_s) and the tables compared. Results under OUT (default
# runs/cpu-xdist). Run it on an otherwise idle machine: the two runs take ~7 min each on the 2-core CI VM.
set -u
N=${N:-2}; OUT=${OUT:-runs/cpu-xdist}; rm -rf "$OUT"; mkdir -p "$OUT"
python -m pytest -m claims -p no:cacheprovider --cos-out "$OUT/serial" -q > "$OUT/serial.log" 2>&1
python -m pytest -m claims -p no:cacheprovider -n "$N" --dist loadgroup --cos-out "$OUT/xdist$N" -q > "$OUT/xdist$N.log" 2>&1
for d in serial "xdist$N"; do
  python -c "import json,sys; p=json.load(open(sys.argv[1]))['provenance']; print(sys.argv[2], 'wall_s', p['wall_s'])" \
    "$OUT/$d/claims-status.json" "$d"
done | tee "$OUT/walls.txt"
python benchmarks/compare_tables.py "$OUT/serial/claims-status.json" "$OUT/xdist$N/claims-status.json" | tail -3 \
  | tee -a "$OUT/walls.txt"

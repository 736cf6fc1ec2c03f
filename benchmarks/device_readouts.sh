#!/usr/bin/env bash
# Issue 26, one device call: the records claims' host-side readouts before and after a change of readout code, on
# one machine. OLD (default devold/): a copy of the earlier tree (`git archive <commit> | tar -x -C devold`, with
# benchmarks/readout_speed.py copied in; untracked, for the call only). In order:
#   1) the organism's gpu tier cold on each tree (gpu_speed.py tier: per-claim host seconds, forwards' CUDA-event
#      time), RUNS (default new then old), the tables compared row by row with the first;
#   2) benchmarks/readout_speed.py on each tree: CLAIMS' first unit (126 rows, every phase), sampled once, then
#      its readouts timed alone (median of 3); the records' hashes must agree between the trees.
. benchmarks/device_setup.sh
warm_machine
OLD=${OLD:-devold}
[ -e "$OLD/fixtures" ] || ln -s "$PWD/fixtures" "$OLD/fixtures"
C=${CLAIMS:-cos.superposition,cos.not_frames,selfcorrection.rate,perception.before_action,bench.table1,memory.persistence,noise.step_vs_frame,frames.count,layers.swap_flip,noise.information_flow,ensemble.mid_layers}
for run in ${RUNS:-new old}; do       # a label starting with "old" (old, old2) runs the OLD tree
  root=$PWD; case "$run" in old*) root=$(cd "$OLD" && pwd);; esac
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$run" --phases cold --tier-timeout "${COLD_S:-150}" \
    --root "$root" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
  tail -n 3 "$OUT/tier-$run-cold.log" | sed "s/^/  [$run] /" >> "$OUT/tier.log"
  rm -f "$OUT/$run-claims-status.md" "$OUT/tier-$run-cold.log" "$OUT/util-$run-cold.txt"
done
for side in ${READ_SIDES-new old}; do      # READ_SIDES= (empty): no readouts part
  root=$PWD; [ "$side" = old ] && root=$(cd "$OLD" && pwd)
  echo "== readouts, $side tree ($root)" | tee -a "$OUT/readouts.log"
  (cd "$root" && PYTHONPATH=/tmp/site:$root timeout "${READ_S:-150}" python3 benchmarks/readout_speed.py --device cuda \
    --claims "$C" --json "$OUT/readouts-$side.json") 2>&1 | grep -v Warning | tee -a "$OUT/readouts.log"
done
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$OUT/readouts.log"
import json, sys
import os
a, b = (json.load(open(p))["claims"] if os.path.exists(p := f"{sys.argv[1]}/readouts-{s}.json") else {}
        for s in ("old", "new"))
for k in a:
    if k in b:
        print(f"{k:28s} old {a[k]['readout_s']:7.3f} s  new {b[k]['readout_s']:7.3f} s  "
              f"x{a[k]['readout_s'] / max(b[k]['readout_s'], 1e-9):5.2f}  records {'same' if a[k]['records'] == b[k]['records'] else 'DIFFER'}")
PY
compare_with_new "" "$OUT"/old-claims-status.json "$OUT"/old2-claims-status.json "$OUT"/new2-claims-status.json
exit 0

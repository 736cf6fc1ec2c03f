#!/usr/bin/env bash
# Issue 26, one device call: the organism's gpu tier cold on ONE GPU, one process against pytest-xdist workers
# sharing the GPU (the claims shared out, not their units: one claim's host readouts run while another samples).
# Labels in RUNS (default "new x2 x2load x3 new2"): new* one process; xN N workers with --dist loadgroup (the
# claims that read a shared run kept in one worker, `shared_run_groups`); xNload N workers with --dist load.
# Tables are compared with "new".
. benchmarks/device_setup.sh
warm_machine
for run in ${RUNS:-new x2 x2load x3 new2}; do
  split=()
  case "$run" in
    x*load) n=${run#x}; split=(--xdist "${n%load}" --dist load);; x*) split=(--xdist "${run#x}" --dist loadgroup);;
  esac
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$run" --phases cold --tier-timeout "${COLD_S:-170}" \
    "${split[@]}" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
  tail -n 3 "$OUT/tier-$run-cold.log" | sed "s/^/  [$run] /" >> "$OUT/tier.log"
  rm -f "$OUT/$run-claims-status.md" "$OUT/tier-$run-cold.log" "$OUT/util-$run-cold.txt"
done
compare_with_new "x2" "$OUT"/*-claims-status.json
exit 0

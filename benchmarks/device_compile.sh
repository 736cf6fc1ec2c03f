#!/usr/bin/env bash
# Issue 26, one device call: the organism's gpu tier cold, eager on this tree, then with --cos-compile (diffusers'
# compile_repeated_blocks on every expert) twice: first with an empty inductor cache (what a fresh machine pays),
# then with the cache the first filled (a second run on the same machine). Labels in RUNS (default "new compile
# compile2"): new* this tree eager, compile* compiled, overlap* with --cos-overlap on, old* eager on OLD (default
# devold/: an earlier tree, `git archive <commit> | tar -x -C devold`, untracked, for the call only). Tables are
# compared with "new".
. benchmarks/device_setup.sh
warm_machine
OLD=${OLD:-devold}
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
rm -rf "$TORCHINDUCTOR_CACHE_DIR"
for run in ${RUNS:-new compile compile2}; do
  root=$PWD; extra=()
  case "$run" in
    old*) root=$(cd "$OLD" && pwd);; compile*) extra=(--pytest-arg=--cos-compile);;
    overlap*) extra=(--pytest-arg=--cos-overlap=on);;
  esac
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$run" --phases cold --tier-timeout "${COLD_S:-170}" \
    --root "$root" "${extra[@]}" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
  tail -n 3 "$OUT/tier-$run-cold.log" | sed "s/^/  [$run] /" >> "$OUT/tier.log"
  grep -h -i -E "recompil|cache_size_limit|graph break|error" "$OUT/tier-$run-cold.log" | sort | uniq -c | sort -rn \
    | head -n 8 | sed "s/^/  [$run] /" >> "$OUT/tier.log"
  rm -f "$OUT/$run-claims-status.md" "$OUT/tier-$run-cold.log" "$OUT/util-$run-cold.txt"
done
du -sh "$TORCHINDUCTOR_CACHE_DIR" 2>/dev/null | sed 's/^/inductor cache: /' >> "$OUT/tier.log"
compare_with_new "compile" "$OUT"/*-claims-status.json
exit 0

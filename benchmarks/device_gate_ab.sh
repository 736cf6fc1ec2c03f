#!/usr/bin/env bash
# One device call on one GPU host (16 cores), two independent jobs side by side:
#   cores 4-15: `cos validate --kind gate --tier gpu` (issue 25: the gate's power at the MDE and FPR on unchanged
#               models at the gpu tier's 4x instances), DRAWS draws per pair, JOBS workers, stopped after VAL_S s and
#               then summarized from what finished (draw-major, so every claim has about as many draws; resumable
#               from runs/gatecarry-gpu/draws.jsonl when carried);
#   cores 0-3 + the GPU: benchmarks/device_ab.sh's before/after of the organism's gpu tier (PATCH, RUNS).
# AB=0: the gate's calibration alone, on every core (CORES=0-15 JOBS=16), to finish the draws of an earlier call.
# At most 8 files come back: gate/{draws.jsonl, gate-calibration.json, gate-calibration.md, validate.log} and the
# A/B's tier.log (gpu.txt folded in), tier-*.json of two runs and the first run's claims-status.json; the two runs'
# tables are compared on the device (`benchmarks/compare_tables.py`) into tier.log.
. benchmarks/device_setup.sh
cosm() { python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
mkdir -p "$OUT/gate"
[ -f runs/gatecarry-gpu/draws.jsonl ] && cp runs/gatecarry-gpu/draws.jsonl "$OUT/gate/"
( t0=$(date +%s)
  timeout "${VAL_S:-480}" taskset -c ${CORES:-4-15} bash -c "$(declare -f cosm); cosm validate --kind gate --tier gpu \
      --out $OUT/gate --draws ${DRAWS:-20} --jobs ${JOBS:-12}" > "$OUT/gate/validate.log" 2>&1
  echo "validate exit $? after $(( $(date +%s) - t0 )) s" >> "$OUT/gate/validate.log"
  cosm validate --kind gate --out "$OUT/gate" --draws "${DRAWS:-20}" --summarize-only >> "$OUT/gate/validate.log" 2>&1
) &
VAL=$!
if [ "${AB:-1}" != 0 ]; then
  taskset -c 0-3 bash benchmarks/device_ab.sh
  python3 benchmarks/compare_tables.py "$OUT"/1-*-claims-status.json "$OUT"/2-*-claims-status.json | tee -a "$OUT/tier.log"
  cat "$OUT/gpu.txt" >> "$OUT/tier.log"
fi
rm -f "$OUT/gpu.txt" "$OUT"/2-*-claims-status.json
wait $VAL; tail -3 "$OUT/gate/validate.log"; head -24 "$OUT/gate/gate-calibration.md" 2>/dev/null

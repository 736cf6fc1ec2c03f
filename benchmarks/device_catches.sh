#!/usr/bin/env bash
# One device call on one H200 (16 cores), two independent jobs side by side:
#   cores 4-15: `cos validate --kind gate --tier gpu` continuing the committed gpu-tier gate calibration
#               (benchmarks/results/calibration/gate-gpu-tier-h200host/draws.jsonl, or runs/catchcarry/draws.jsonl
#               where a previous call's is carried): the pilots' grids and the regression planted at what the gate
#               says it catches (`@catches`); the draws already there are not run again. Packed into cal.tgz.
#   cores 0-3 + the GPU: benchmarks/device_looks.sh (the organism's gpu tier at 3 and at 5 looks, cold).
. benchmarks/device_setup.sh
cos() { python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
mkdir -p /tmp/cal
src=benchmarks/results/calibration/gate-gpu-tier-h200host/draws.jsonl
[ -f runs/catchcarry/draws.jsonl ] && src=runs/catchcarry/draws.jsonl
cp "$src" /tmp/cal/
( timeout "${VAL_S:-560}" taskset -c 4-15 bash -c "$(declare -f cos); cos validate --kind gate --out /tmp/cal \
    --tier gpu --draws ${DRAWS:-20} --jobs 12" > /tmp/cal/validate.log 2>&1; echo "validate exit $?" >> /tmp/cal/validate.log
  tar -C /tmp -czf "$OUT/cal.tgz" cal ) &
VAL=$!
if [ "${LOOKS:-1}" = 1 ]; then taskset -c 0-3 bash benchmarks/device_looks.sh; fi
wait $VAL; tail -4 /tmp/cal/validate.log; ls -la "$OUT"
exit 0

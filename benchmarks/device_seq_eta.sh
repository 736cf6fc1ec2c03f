#!/usr/bin/env bash
# One device call on one H200 (16 cores), two independent jobs side by side:
#   cores 4-15: `cos validate --sequential on --tier gpu` (each control's power/FPR with the looks counted, and the
#               share of the batches used; resumable: runs/calcarry-seq/draws.jsonl is continued when carried);
#   cores 0-3 + the GPU: benchmarks/device_eta.sh's A14B-shaped full case at 8 instances (the ETA re-estimated
#               after every batch against the run's end).
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
cos() { python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
mkdir -p "$OUT/seq"
[ -f runs/calcarry-seq/draws.jsonl ] && cp runs/calcarry-seq/draws.jsonl "$OUT/seq/"
( timeout "${VAL_S:-520}" taskset -c 4-15 bash -c "$(declare -f cos); cos validate --out $OUT/seq --tier gpu \
    --sequential on --draws ${DRAWS:-20} --jobs 12" > "$OUT/validate.log" 2>&1; echo "validate exit $?" >> "$OUT/validate.log" ) &
VAL=$!
ORG_S=0 WRITE_S=${WRITE_S:-80} A14B_S=${A14B_S:-440} A14B_INSTANCES=8 taskset -c 0-3 bash benchmarks/device_eta.sh
wait $VAL; tail -25 "$OUT/validate.log"

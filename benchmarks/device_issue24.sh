#!/usr/bin/env bash
# One device call on one H200 (16 cores): `cos validate` on the CPU tier (50 draws, cores 4-15, resumable: a
# previous call's draws.jsonl in runs/calcarry/ is continued), and on the GPU (cores 0-3) the organism's GPU tier
# with sequential decisions on, then `cos plan` of the organism's GPU tier (pilot: that run) and of an
# A14B-shaped random-weight Wan at the full tier (timed warm forward; pilot: the organism's GPU-tier run).
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
cos() { python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
mkdir -p "$OUT/cal"
[ -f runs/calcarry/draws.jsonl ] && cp runs/calcarry/draws.jsonl "$OUT/cal/"
VAL_S=${VAL_S:-540}
( timeout "$VAL_S" taskset -c 4-15 bash -c "$(declare -f cos); cos validate --out $OUT/cal --draws 50 --jobs 12" \
    > "$OUT/validate.log" 2>&1; echo "validate exit $?" >> "$OUT/validate.log" ) &
VAL=$!
t0=$(date +%s)
( time timeout 300 taskset -c 0-3 python3 -m pytest -p cos.pytest_plugin -m "claims and gpu" -p no:cacheprovider \
    claims/test_claims.py --cos-out /tmp/og --cos-sequential on -q ) > "$OUT/organism-gpu-seq.log" 2>&1
cp /tmp/og/claims-status.json "$OUT/organism-gpu-seq.json" 2>/dev/null
echo "organism gpu tier done at $(( $(date +%s) - t0 )) s"
taskset -c 0-3 bash -c "$(declare -f cos); cos plan --tier gpu --device cuda --pilot /tmp/og/claims-status.json \
    --json $OUT/plan-organism-gpu.json" > "$OUT/plans.log" 2>&1
timeout 200 taskset -c 0-3 python3 benchmarks/write_random_wan.py --shape a14b --out /tmp/a14b --device cuda 2>&1 | tail -1
# the fixed-n plan is this one's max columns (same row-forwards; expected = max): one load of the model suffices
timeout 240 taskset -c 0-3 bash -c "$(declare -f cos); cos plan --model /tmp/a14b --tier full --device cuda \
    --sequential on --pilot /tmp/og/claims-status.json --json $OUT/plan-a14b.json" >> "$OUT/plans.log" 2>&1
echo "plans done at $(( $(date +%s) - t0 )) s"
cat "$OUT/plans.log"
wait $VAL; tail -5 "$OUT/validate.log"

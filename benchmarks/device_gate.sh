#!/usr/bin/env bash
# One device call on the 16-core host of one H200 (the GPU unused): `cos validate --kind gate` on the CPU tier
# (issue 25's gate goals), DRAWS draws per pair after the 5 pilot draws, JOBS worker processes of one torch
# thread each, stopped after VAL_S seconds (draws.jsonl keeps every finished draw: a later call given it in
# runs/gatecarry/ continues, and `cos validate --kind gate --summarize-only` summarizes what is there).
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
mkdir -p "$OUT/gate"
[ -f runs/gatecarry/draws.jsonl ] && cp runs/gatecarry/draws.jsonl "$OUT/gate/"
{ echo "cpus $(nproc)"; lscpu | grep -m1 "Model name"; nvidia-smi --query-gpu=name --format=csv,noheader
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
t0=$(date +%s)
timeout "${VAL_S:-380}" python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" validate \
    --kind gate --out "$OUT/gate" --draws "${DRAWS:-20}" --jobs "${JOBS:-15}" > "$OUT/validate.log" 2>&1
echo "validate exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/validate.log"
cat "$OUT/machine.txt"
head -22 "$OUT/gate/gate-calibration.md" 2>/dev/null || tail -5 "$OUT/validate.log"

#!/usr/bin/env bash
# One device call on a 4-GPU host: the A14B-shaped T1 of the full-tier scaling case (GPU 0, cores 0-15), the
# --cos-compile case (GPU 1, cores 16-31), and `cos validate` on the CPU and GPU tiers (cores 32-63), at once.
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
SCR=/tmp/cos-scaling; mkdir -p "$SCR" "$OUT"
( taskset -c 32-63 python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" validate \
    --out "$OUT/calibration-cpu" --draws 20 --jobs 30 > "$OUT/validate-cpu.log" 2>&1
  taskset -c 32-63 python3 -c "import sys; from cos.cli import main; sys.exit(main(sys.argv[1:]))" validate \
    --out "$OUT/calibration-gpu" --draws 20 --tier gpu --jobs 30 > "$OUT/validate-gpu.log" 2>&1 ) &
VAL=$!
t0=$(date +%s)
timeout 200 python3 benchmarks/write_random_wan.py --shape a14b --out "$SCR/a14b" --device cuda 2>&1 | tail -1
echo "model written in $(( $(date +%s) - t0 )) s"
( CUDA_VISIBLE_DEVICES=0 OUT=$OUT/a14b CASE_TIMEOUT=360 taskset -c 0-15 bash benchmarks/scaling.sh " " full > "$OUT/a14b.log" 2>&1 ) &
T1=$!
( CUDA_VISIBLE_DEVICES=1 OUT=$OUT/compile CASE_TIMEOUT=300 taskset -c 16-31 bash benchmarks/scaling.sh " " compile > "$OUT/compile.log" 2>&1 ) &
CMP=$!
wait $VAL; echo "validate done at $(( $(date +%s) - t0 )) s"; tail -22 "$OUT/calibration-cpu/calibration.md" 2>/dev/null | head -20
wait $CMP; echo "compile done at $(( $(date +%s) - t0 )) s"; grep -aE "wall|row-forwards|same|DIFF" "$OUT/compile.log" | tail -8
wait $T1; echo "T1 done at $(( $(date +%s) - t0 )) s"; grep -aE "wall|ETA|passed|failed" "$OUT/a14b.log" | tail -4
python3 -c "
import json; p=json.load(open('$OUT/a14b/a14b-1/claims-status.json'))['provenance']; print('a14b T1 inside pytest', p['wall_s'], 'ETA', p['eta_s'], p.get('eta_parts_s'))" 2>&1 | tail -1

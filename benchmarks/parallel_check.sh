#!/usr/bin/env bash
# Data-parallel claims check: the same claims on 1 process and on N processes (accelerate launch, one process
# per device; on a CPU-only machine the processes share the cores) must give the same table, row by row; then a
# run of N processes is interrupted halfway and relaunched: it resumes from the store and gives the table again.
#
#   bash benchmarks/parallel_check.sh [N] [extra pytest args, e.g. --cos-instances 2 -k energy_profile]
#
# Env: PYTHON (python), ACCELERATE (accelerate), COS_CHECK_K (claims subset), COS_CHECK_INSTANCES (2),
# COS_CHECK_BATCH (2 rows a batch: the CPU tier's 64 would make one batch per claim, nothing to split), WORK (tmp).
# Prints T1, TN and the efficiency T1 / (N * TN). On a machine with fewer cores than N x (threads a process
# wants) the processes compete for the CPU: efficiency there says nothing about GPUs.
set -uo pipefail
N=${1:-2}; shift || true
PY=${PYTHON:-python}
ACCEL=${ACCELERATE:-accelerate}
K=${COS_CHECK_K:-energy_profile or not_frames or memory or step_vs_frame or superposition}
WORK=${WORK:-$(mktemp -d)}; mkdir -p "$WORK"
export PYTHONUNBUFFERED=1
args=(-p no:xdist -p no:cacheprovider -m claims claims/test_claims.py -q -k "$K"
      --cos-instances "${COS_CHECK_INSTANCES:-2}" --cos-batch-size "${COS_CHECK_BATCH:-2}" "$@")
# --multi_gpu is accelerate's multi-process launcher (torchrun); it also starts N processes on a CPU-only
# machine (accelerate's --cpu starts one). The ranks meet over gloo whatever the device (cos.parallel).
launch=("$ACCEL" launch --multi_gpu --num_processes "$N" --num_machines 1 --mixed_precision no --dynamo_backend no
        --main_process_port "${COS_CHECK_PORT:-29517}" -m pytest)
ms() { date +%s%3N; }
fail=0

t0=$(ms); "$PY" -m pytest "${args[@]}" --cos-out "$WORK/p1" --cos-store "$WORK/s1" > "$WORK/p1.log" 2>&1; T1=$(( $(ms) - t0 ))
grep -E "^\[cos\]|passed|failed|error" "$WORK/p1.log" | tail -4; [ -s "$WORK/p1/claims-status.json" ] || { tail -30 "$WORK/p1.log"; exit 1; }
t0=$(ms); "${launch[@]}" "${args[@]}" --cos-out "$WORK/pN" --cos-store "$WORK/sN" > "$WORK/pN.log" 2>&1; TN=$(( $(ms) - t0 ))
grep -E "^\[cos\]|passed|failed|error" "$WORK/pN.log" | tail -4; [ -s "$WORK/pN/claims-status.json" ] || { tail -40 "$WORK/pN.log"; exit 1; }
echo "== 1 process vs $N processes"
"$PY" benchmarks/compare_tables.py "$WORK/p1/claims-status.json" "$WORK/pN/claims-status.json" || fail=1
"$PY" - "$T1" "$TN" "$N" <<'PY'
import sys
t1, tn, n = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3, int(sys.argv[3])
print(f"T1 = {t1:.1f} s   T{n} = {tn:.1f} s   speedup {t1 / tn:.2f}   efficiency T1/(N*TN) = {t1 / (n * tn):.2f}")
PY

echo "== $N processes interrupted after $(( TN / 2000 )) s, then relaunched"
timeout -s TERM $(( TN / 2000 + 1 )) "${launch[@]}" "${args[@]}" --cos-out "$WORK/pR" --cos-store "$WORK/sR" \
    > "$WORK/pR1.log" 2>&1
sleep 3
echo "store after the interruption: $(find "$WORK/sR" -name '*.safetensors' 2>/dev/null | wc -l) runs" \
     "(complete run: $(find "$WORK/sN" -name '*.safetensors' | wc -l))"
"${launch[@]}" "${args[@]}" --cos-out "$WORK/pR" --cos-store "$WORK/sR" > "$WORK/pR2.log" 2>&1
"$PY" benchmarks/compare_tables.py "$WORK/p1/claims-status.json" "$WORK/pR/claims-status.json" || fail=1
echo "logs and tables in $WORK"
exit $fail

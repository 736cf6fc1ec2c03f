#!/usr/bin/env bash
# Data-parallel scaling on one machine: the same claims on 1 process and on N processes (one GPU each), wall
# times T1 and TN, efficiency T1 / (N * TN), the tables compared row by row, and the ETA printed before each run
# against the actual wall time. Run from the repository root with PYTHONPATH set to it:
#
#   bash benchmarks/scaling.sh "N [N2 ...]" [all|organism|full|compile]
#
#   compile:  one cheap claim (layers.energy_profile, one step-0 forward per row) on the A14B-shaped model at
#             480x832x81 on 4 grounding instances (a task with background cells; maze has none, and the claim
#             skipped), eager and with --cos-compile: the ETA lines' warm seconds per row-forward and the tables
#             (identical, or within 1% of each row's interval width: compiled kernels round differently)
#
#   organism: the organism's GPU tier, pytest -m "claims and gpu" (every claim)
#   full:     a full-tier claim pair reading the noise sweep (information_flow, step_vs_frame) on an A14B-shaped
#             random-weight model written to disk by benchmarks/write_random_wan.py, at a reduced size
#             (FULL_SIZE=240x416x21, FULL_STEPS=8, FULL_INSTANCES=8 of FULL_TASKS=maze: batches of one row,
#             so N processes split 8 batches; 8 steps rather than 10 so that T1, T2 and T4 fit one 10-minute call)
# Env: PYTHON (python3), OUT (runs/scaling: tables and logs), SCRATCH (/tmp/cos-scaling: stores, the model),
#      CASE_TIMEOUT (540 s per run). Launcher: accelerate launch when accelerate is installed, else torchrun.
set -uo pipefail
NS=(${1:-2}); PART=${2:-all}
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=${COS_CACHE_DIR:-/tmp/coscache}
PY=${PYTHON:-python3}
OUT=${OUT:-runs/scaling}; SCR=${SCRATCH:-/tmp/cos-scaling}
mkdir -p "$OUT" "$SCR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpus.txt"
# LCMD: the command that starts n processes of pytest
if "$PY" -c "import accelerate" 2>/dev/null; then
  launcher="accelerate launch"
  launch_cmd() { LCMD=("$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$1" --num_machines 1
                       --mixed_precision no --dynamo_backend no --main_process_port 29531 -m pytest); }
else
  launcher="torchrun"
  launch_cmd() { LCMD=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$1" -m pytest); }
fi
echo "launcher: $launcher; N=${NS[*]}; part=$PART"
ms() { date +%s%3N; }
SUMMARY="$OUT/summary.txt"; : > "$SUMMARY"

# case NAME N pytest-args...: one run into $OUT/NAME-N (table, log) with a fresh store of its own
case_run() {
  local name=$1 n=$2; shift 2
  local dir="$OUT/$name-$n" store="$SCR/$name-$n-store"
  rm -rf "$dir" "$store"; mkdir -p "$dir"
  local t0; t0=$(ms)
  if [ "$n" = 1 ]; then
    timeout "${CASE_TIMEOUT:-540}" "$PY" -m pytest "$@" --cos-out "$dir" --cos-store "$store" > "$dir/log.txt" 2>&1
  else
    launch_cmd "$n"
    timeout "${CASE_TIMEOUT:-540}" "${LCMD[@]}" "$@" --cos-out "$dir" --cos-store "$store" > "$dir/log.txt" 2>&1
  fi
  local rc=$? t=$(( $(ms) - t0 ))
  echo "$t" > "$dir/wall_ms"
  echo "-- $name, $n process(es): rc=$rc, wall $(( t / 1000 )).$(( t % 1000 / 100 )) s (launcher and model load included)"
  grep -aE "^\[cos\].*(ETA|wall time)|passed|failed|[0-9]+ error" "$dir/log.txt" | tail -4
  [ -s "$dir/claims-status.json" ] || { echo "   no table; last lines:"; tail -25 "$dir/log.txt"; }
}

# compare NAME N: efficiency and the tables of 1 and N processes
compare() {
  local name=$1 N=$2
  "$PY" - "$OUT/$name-1" "$OUT/$name-$N" "$N" "$name" <<'PY' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
a, b, n, name = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t1, tn = (float((d / "wall_ms").read_text()) / 1e3 for d in (a, b))
def prov(d):
    try:
        return json.load(open(d / "claims-status.json"))["provenance"]
    except Exception:
        return {}
p1, pn = prov(a), prov(b)
print(f"{name}: T1 = {t1:.1f} s, T{n} = {tn:.1f} s (end to end), speedup {t1 / tn:.2f}, "
      f"efficiency T1/(N*TN) = {t1 / (n * tn):.2f}")
w1, wn = p1.get("wall_s"), pn.get("wall_s")
if w1 and wn:
    print(f"{name}: inside pytest (no launcher, no interpreter start): T1 = {w1:.1f} s, T{n} = {wn:.1f} s, "
          f"efficiency {w1 / (n * wn):.2f}")
for k, p in (("1", p1), (str(n), pn)):
    eta, wall, at = p.get("eta_s"), p.get("wall_s"), p.get("eta_at_s")
    after = f"; from the ETA line on {wall - at:.1f} s ({(eta - (wall - at)) / (wall - at):+.0%})" if None not in (eta, wall, at) else ""
    whole = f" ({(eta - wall) / wall:+.0%})" if None not in (eta, wall) else ""
    print(f"{name}, {k} process(es): ETA {eta} s vs actual {wall} s{whole}{after}; world_size "
          f"{p.get('world_size')}; per-rank store hits/misses {p.get('rank_store')}")
PY
  "$PY" benchmarks/compare_tables.py "$OUT/$name-1/claims-status.json" "$OUT/$name-$N/claims-status.json" \
      | tee -a "$SUMMARY" | tail -25
}

# all3 NAME: every process count's table side by side, every row at full precision, and per rank and claim the
# seconds in its share, at the looks' gathers and concluding (what bounds the run)
all3() {
  local name=$1 files=("$OUT/$1-1/claims-status.json")
  for N in "${NS[@]}"; do files+=("$OUT/$name-$N/claims-status.json"); done
  "$PY" benchmarks/compare_tables.py "${files[@]}" | tail -3 | tee -a "$SUMMARY"
  for N in "${NS[@]}"; do
    "$PY" - "$OUT/$name-$N/claims-status.json" <<'PY' | tee -a "$SUMMARY"
import json, sys
p = json.load(open(sys.argv[1]))["provenance"]
for r, ph in enumerate(p.get("rank_phases_s") or []):
    tot = {k: round(sum(v.get(k, 0) for v in ph.values()), 1) for k in ("share", "gather", "conclude")}
    print(f"{sys.argv[1]}: rank {r} seconds in its share / at the gathers / concluding: {tot}")
PY
  done
}

if [ "$PART" = all ] || [ "$PART" = organism ]; then
  args=(-p cos.pytest_plugin -p no:cacheprovider -p no:xdist -m "claims and gpu" claims/test_claims.py -q)
  case_run organism 1 "${args[@]}"
  for N in "${NS[@]}"; do case_run organism "$N" "${args[@]}"; compare organism "$N"; done
  all3 "organism"
fi
if [ "$PART" = compile ]; then
  [ -f "$SCR/a14b/transformer/config.json" ] || \
    timeout 300 "$PY" benchmarks/write_random_wan.py --shape a14b --out "$SCR/a14b" --device cuda 2>&1 | tail -2
  args=(-p cos.pytest_plugin -p no:cacheprovider -p no:xdist -m "claims and full_model" claims/test_claims.py -q
        -k energy_profile --cos-model "$SCR/a14b" --cos-size 480x832x81 --cos-instances 4 --cos-tasks grounding)
  case_run eager 1 "${args[@]}"
  case_run compiled 1 "${args[@]}" --cos-compile
  "$PY" benchmarks/compare_tables.py --within 0.01 "$OUT/eager-1/claims-status.json" \
      "$OUT/compiled-1/claims-status.json" | tee -a "$SUMMARY"
  for c in eager compiled; do grep -a "row-forwards planned" "$OUT/$c-1/log.txt" | sed "s/^/$c: /" | tee -a "$SUMMARY"; done
fi
if [ "$PART" = all ] || [ "$PART" = full ]; then
  [ -f "$SCR/a14b/transformer/config.json" ] || \
    timeout 300 "$PY" benchmarks/write_random_wan.py --shape a14b --out "$SCR/a14b" --device cuda 2>&1 | tail -2
  args=(-p cos.pytest_plugin -p no:cacheprovider -p no:xdist -m "claims and full_model" claims/test_claims.py -q
        -k "${FULL_K:-information_flow or step_vs_frame}" --cos-model "$SCR/a14b" --cos-size "${FULL_SIZE:-240x416x21}"
        --cos-steps "${FULL_STEPS:-8}" --cos-instances "${FULL_INSTANCES:-8}" --cos-tasks "${FULL_TASKS:-maze}")
  case_run a14b 1 "${args[@]}"
  for N in "${NS[@]}"; do case_run a14b "$N" "${args[@]}"; compare a14b "$N"; done
  all3 "a14b"
fi
echo "== summary ($OUT/summary.txt)"; cat "$SUMMARY"

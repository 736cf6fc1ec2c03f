#!/usr/bin/env bash
# One GPU, the organism's GPU tier twice: serially, and with two xdist workers sharing the GPU through a faked
# one-entry CUDA_VISIBLE_DEVICES list, so both workers are assigned GPU 0 (what one GPU allows of issue 8;
# a list repeating an ordinal, "0,0", is rejected by CUDA itself). Prints both wall times and whether the tables
# agree. SERIAL=dir reuses a serial run made earlier on the same machine kind.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
P="-p cos.pytest_plugin"; python3 -c "import importlib.metadata as m; exit(0 if m.entry_points(group='pytest11', name='cos') else 1)" && P=""
if [ -n "${SERIAL:-}" ]; then mkdir -p "$OUT/serial" && cp "$SERIAL/claims-status.json" "$OUT/serial/"; else
S=$(date +%s); timeout 250 python3 -m pytest $P -m "claims and gpu" -p no:cacheprovider --cos-out "$OUT/serial" -q > "$OUT/serial.log" 2>&1
echo "serial wall $(( $(date +%s) - S )) s"; fi
S=$(date +%s); CUDA_VISIBLE_DEVICES=0 timeout 250 python3 -m pytest $P -n 2 -m "claims and gpu" -p no:cacheprovider --cos-out "$OUT/xdist" -q > "$OUT/xdist.log" 2>&1
echo "xdist -n 2 (one GPU, CUDA_VISIBLE_DEVICES=0: both workers on GPU 0) wall $(( $(date +%s) - S )) s"
tail -4 "$OUT/xdist.log"
python3 - "$OUT" <<'PY'
import json, sys
a = {c["id"]: c for c in json.load(open(f"{sys.argv[1]}/serial/claims-status.json"))["claims"]}
b = {c["id"]: c for c in json.load(open(f"{sys.argv[1]}/xdist/claims-status.json"))["claims"]}
same = [k for k in a if k in b and (a[k]["status"], a[k]["measured"], a[k]["ci_low"], a[k]["ci_high"]) == (b[k]["status"], b[k]["measured"], b[k]["ci_low"], b[k]["ci_high"])]
print(f"identical rows: {len(same)}/{len(a)}; differ: {sorted(set(a) - set(same))}")
for k in sorted(set(a) - set(same)):
    print(k, a[k]["status"], a[k]["measured"], "|", b.get(k, {}).get("status"), b.get(k, {}).get("measured"))
PY

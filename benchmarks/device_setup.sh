# Sourced by the device_*.sh scripts (device tool, one call each): diffusers from the carried wheels (.whl) on
# PYTHONPATH, unbuffered output, a cache folder, and the machine and tree named in $OUT/gpu.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
# once per call: a script sourced again by another (device_gate_ab.sh runs device_ab.sh beside a job already
# importing from /tmp/site) must not reinstall under it
if [ -z "${COS_DEVICE_SETUP:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  # PYC=1: bytecode for the installed wheels, as pip leaves them on a user's machine (import 19.9 s -> 12 s on an
  # H200 host, benchmarks/results/gpu/graphs-h200); earlier calls ran without
  if [ -n "${PYC:-}" ]; then python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1; fi
  # TORCH_PYC=1: bytecode for the machine's torch too (pip writes it on a user's machine; this one's torch has none:
  # a profiled tier compiled 3189 sources, 5.7 s, benchmarks/results/gpu/compile-h100/)
  if [ -n "${TORCH_PYC:-}" ]; then
    python3 -m compileall -q -j 0 "$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
      > /dev/null 2>&1 || echo "torch bytecode: compileall failed (read-only?)" >> "$OUT/gpu.txt"
  fi
  export COS_DEVICE_SETUP=1
fi
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git rev-parse HEAD;
  git status --short | head -20; } > "$OUT/gpu.txt"
# the machine's one-off costs (matplotlib's font cache, the CUDA context) before a first timed run, not inside it
warm_machine() {
  python3 -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; plt.figure(); import torch; torch.ones(1).cuda()"
}
# the tables of a call's tier runs against "new" (benchmarks/compare_tables.py, into tier.log), then only "new"'s
# and KEEP's tables left in $OUT (the device returns 8 files), and the machine's line appended to tier.log
compare_with_new() {   # compare_with_new "KEEP..." STATUS_FILE...
  local keep=$1 f; shift
  for f in "$@"; do
    [ -f "$f" ] && [ "$f" != "$OUT/new-claims-status.json" ] || continue
    echo "== new vs $(basename "$f")" | tee -a "$OUT/tier.log"
    python3 benchmarks/compare_tables.py "$OUT/new-claims-status.json" "$f" 2>&1 | grep -v "^      reason" \
      | tee -a "$OUT/tier.log" | tail -4
    case " $keep " in *" $(basename "$f" -claims-status.json) "*) ;; *) rm -f "$f";; esac
  done
  cat "$OUT/gpu.txt" >> "$OUT/tier.log" && rm -f "$OUT/gpu.txt"
}

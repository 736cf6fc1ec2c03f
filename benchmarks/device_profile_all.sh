#!/usr/bin/env bash
# One device call (issue 26): the organism's gpu tier at this tree, cold, no store, timed as gpu_speed.py times it
# (COS_FORWARD_TIMING), first with diffusers installed without bytecode (--no-compile, as every earlier device call
# measured it), then again after `compileall` of the installed packages (what `pip install` leaves on a user's
# machine), then the whole tier under cProfile with bytecode (top entries to $OUT).
. benchmarks/device_setup.sh
warm_machine
PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_speed.py tier --out "$OUT" --label 1-nopyc --phases cold \
  --tier-timeout "${COLD_S:-180}" 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
rm -f "$OUT"/tier-1-nopyc-cold.log "$OUT"/1-nopyc-claims-status.md
python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1; echo "compileall rc=$?" | tee -a "$OUT/tier.log"
PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_speed.py tier --out "$OUT" --label 2-pyc --phases cold \
  --tier-timeout "${COLD_S:-180}" 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
rm -f "$OUT"/tier-2-pyc-cold.log "$OUT"/2-pyc-claims-status.md "$OUT"/2-pyc-claims-status.json
timeout "${LIMIT:-250}" python3 -m cProfile -o /tmp/gpu.prof -m pytest -p cos.pytest_plugin -m "claims and gpu" \
  -p no:cacheprovider -p no:xdist claims/test_claims.py -q --durations=0 --cos-out /tmp/prof-out 2>&1 \
  | tail -22 > "$OUT/pytest-profiled.txt"
python3 - "$OUT" <<'PY'
import io, os, pstats, sys
out = sys.argv[1]
if os.path.exists("/tmp/gpu.prof"):
    s = io.StringIO()
    st = pstats.Stats("/tmp/gpu.prof", stream=s)
    st.sort_stats("cumulative").print_stats(90)
    st.sort_stats("tottime").print_stats(50)
    st.sort_stats("cumulative").print_stats("/cos/", 90)
    open(f"{out}/profile.txt", "w").write(s.getvalue())
PY
exit 0

#!/usr/bin/env bash
# One device call (issue 26): where the organism's forward spends its GPU time (benchmarks/organism_kernels.py),
# then, if PROFILE is set, the organism's gpu tier under cProfile, top entries to $OUT. Measured with PYC=1 (bytecode).
. benchmarks/device_setup.sh
python3 benchmarks/organism_kernels.py --out "$OUT" 2>&1 | tee "$OUT/kernels.log" | tail -40
[ -n "${PROFILE:-}" ] || exit 0
timeout "${LIMIT:-250}" python3 -m cProfile -o /tmp/gpu.prof -m pytest -m "claims and gpu" -p no:cacheprovider \
  -p no:xdist -p cos.pytest_plugin claims/test_claims.py -q --durations=0 --cos-out /tmp/prof-out ${PYTEST_ARGS:-} 2>&1 | tail -22 \
  > "$OUT/pytest-profiled.txt"
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

#!/usr/bin/env bash
# One device call: cProfile of the organism's gpu tier for the claims K (default information_flow and perception,
# two of the largest host spenders; K=test_claim: all), no store; the top entries by cumulative and internal time,
# and the cos functions alone by cumulative time, go to $OUT.
. benchmarks/device_setup.sh
warm_machine
timeout "${LIMIT:-240}" python3 -m cProfile -o /tmp/gpu.prof -m pytest -p cos.pytest_plugin -m "claims and gpu" \
  -p no:cacheprovider -p no:xdist claims/test_claims.py -q --durations=0 --cos-out /tmp/prof-out \
  -k "${K:-information_flow or perception}" 2>&1 | tail -6 | tee "$OUT/pytest.txt"
python3 - "$OUT" <<'PY'
import io, pstats, sys
out = sys.argv[1]
for key, n, only in (("cumulative", 70, ()), ("tottime", 40, ()), ("cumulative", 80, ("/cos/",))):
    s = io.StringIO()
    pstats.Stats("/tmp/gpu.prof", stream=s).sort_stats(key).print_stats(*only, n)
    open(f"{out}/profile-{key}{'-cos' if only else ''}.txt", "w").write(s.getvalue())
print(open(f"{out}/profile-tottime.txt").read()[:6000])
PY
# the whole profile too (pstats' marshal format, written by this call), for reading it again here
cp /tmp/gpu.prof "$OUT/gpu.prof"
# the CUDA case of the store's placement test (a stored run comes back where a computed one is), when asked
[ -n "${DEVICE_TEST:-}" ] && python3 -m pytest -p no:cacheprovider -p no:xdist -q tests/test_store.py \
  -k "placed_as_without_a_store" 2>&1 | tail -3 | tee "$OUT/device-test.txt"
exit 0

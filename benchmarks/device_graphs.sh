#!/usr/bin/env bash
# One device call (issue 26): --cos-cuda-graphs on one GPU. Bytecode for the carried diffusers first (what pip
# leaves on a user's machine; import time before and after is printed), the CUDA tests of tests/test_cuda_graphs.py,
# the organism's sampling at the gpu tier's shape eager vs graphed (gpu_speed.py forward), then the organism's gpu
# tier cold, no store, with --cos-cuda-graphs off and then auto (on), tables compared; then, if time is left,
# the graphed tier under cProfile.
. benchmarks/device_setup.sh
imp() { python3 -c "import time; t = time.time(); import cos.runner, diffusers.models.transformers.transformer_wan; print(round(time.time() - t, 2), \"s\")"; }
echo "import without bytecode: $(imp)" | tee -a "$OUT/tier.log"
python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1
echo "import with bytecode: $(imp); again: $(imp)" | tee -a "$OUT/tier.log"
warm_machine
python3 -m pytest -p no:cacheprovider -p no:xdist -q tests/test_cuda_graphs.py 2>&1 | tail -15 > "$OUT/graphs-test.txt"
cat "$OUT/graphs-test.txt"
python3 benchmarks/gpu_speed.py forward --out "$OUT" 2>&1 | tee -a "$OUT/tier.log"
i=0
for mode in ${MODES:-off auto}; do
  i=$((i + 1))
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$i-$mode" --phases cold --tier-timeout "${COLD_S:-180}" \
    --pytest-arg=--cos-cuda-graphs=$mode 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
  rm -f "$OUT"/tier-"$i-$mode"-cold.log "$OUT/$i-$mode-claims-status.md"
done
python3 benchmarks/compare_tables.py "$OUT/1-off-claims-status.json" "$OUT/2-auto-claims-status.json" 2>&1 \
  | tee -a "$OUT/tier.log" | tail -20
grep -o '"cuda_graphs": {[^}]*}' /tmp/cos-gpu-speed/organism-gpu-2-auto/claims-status.json | tee -a "$OUT/tier.log"
[ -n "${PROFILE:-}" ] && timeout "${LIMIT:-200}" python3 -m cProfile -o /tmp/gpu.prof -m pytest -p cos.pytest_plugin \
  -m "claims and gpu" -p no:cacheprovider -p no:xdist claims/test_claims.py -q --durations=0 --cos-out /tmp/prof-out \
  2>&1 | tail -22 > "$OUT/pytest-profiled.txt" && python3 - "$OUT" <<'PY'
import io, os, pstats, sys
out = sys.argv[1]
s = io.StringIO()
st = pstats.Stats("/tmp/gpu.prof", stream=s)
st.sort_stats("cumulative").print_stats(90)
st.sort_stats("tottime").print_stats(50)
st.sort_stats("cumulative").print_stats("/cos/", 90)
open(f"{out}/profile.txt", "w").write(s.getvalue())
PY
exit 0

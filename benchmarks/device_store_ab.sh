#!/usr/bin/env bash
# One device call: does a result store slow the organism's gpu tier, and does handing stored runs out on the
# model's device (7efb75d) fix it? Same machine, same call: the claims K (default swap_flip and information_flow,
# the two whose host seconds grew most with a store) cold with a store at this commit ("new-store", first: the
# order is against it), cold with a store at the commit before the fix ("old-store", a git worktree), and cold
# without a store at this commit ("new-nostore"). Then the CUDA case of the store's device test.
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the code before the fix: this tree with benchmarks/store-fix.patch (git diff 7efb75d~1 7efb75d -- cos/runner.py)
# reversed (the device's copy of .git may not hold this session's commits)
mkdir -p /tmp/old && cp -r cos claims fixtures tests conftest.py pyproject.toml /tmp/old/ \
  && patch -s -R -p1 -d /tmp/old < benchmarks/store-fix.patch || { echo "could not build the old tree"; exit 1; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git rev-parse HEAD;
  grep -c "device" /tmp/old/cos/runner.py; } > "$OUT/gpu.txt"
K=${K:-swap_flip or information_flow}
run() {   # label root store(yes/no)
  local st=(); [ "$3" = yes ] && st=(--store)
  PYTHONPATH=/tmp/site:$2 python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$1" --root "$2" "${st[@]}" \
    --phases cold --tier-timeout "${LIMIT:-200}" "--pytest-arg=-k$K" 2>&1 | tee -a "$OUT/tier.log" | grep -v "^ "
}
run new-store "$PWD" yes
run old-store /tmp/old yes
run new-nostore "$PWD" no
PYTHONPATH=/tmp/site:$PWD python3 -m pytest -q -p no:cacheprovider -p no:xdist tests/test_store.py -k device -rs 2>&1 \
  | tail -3 | tee "$OUT/device-test.txt"

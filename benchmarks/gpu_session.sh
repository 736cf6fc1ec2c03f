#!/usr/bin/env bash
# The GPU measurements of the README, in one device call (H100): the organism's GPU claims tier, the sweep cost
# at A14B shape, and one full_model claim end to end on an A14B-shaped random model. Results land in $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
PART=${1:-all}
if [ "$PART" != a14b ]; then
# 1. organism, GPU tier (full statistics), table + report
( time timeout 330 python3 -m pytest -p cos.pytest_plugin -m "claims and gpu" -p no:cacheprovider --cos-out "$OUT/organism-gpu" -q ) \
  > "$OUT/organism-gpu.log" 2>&1
tail -25 "$OUT/organism-gpu.log"
# 2. sweep cost at A14B shape: prefix reuse and batched ensemble seeds
timeout 150 python3 benchmarks/sweep_cost.py --config a14b --device cuda --size 240x416x21 --steps 20 \
  --json "$OUT/sweep_cost_a14b.json" > "$OUT/sweep_cost.log" 2>&1; tail -22 "$OUT/sweep_cost.log"
fi
if [ "$PART" != organism ]; then
# 3. one full_model claim end to end on an A14B-shaped random model written to disk
timeout 200 python3 benchmarks/write_random_wan.py --shape a14b --out /tmp/a14b --device cuda 2>&1 | tail -2
( time timeout 300 python3 -m pytest -p cos.pytest_plugin -m "claims and full_model" -p no:cacheprovider --cos-model /tmp/a14b \
  -k energy_profile --cos-instances 2 --cos-tasks grounding --cos-out "$OUT/a14b-full" -q ) > "$OUT/a14b-full.log" 2>&1
tail -15 "$OUT/a14b-full.log"
python3 -c "import json;d=json.load(open('$OUT/a14b-full/claims-status.json'));print({k: d['provenance'].get(k) for k in ('peak_gpu_memory_gb','wall_s','device_name')})" 2>&1
fi

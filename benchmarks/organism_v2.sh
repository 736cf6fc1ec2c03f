#!/usr/bin/env bash
# Organism v2 on one GPU (the device tool's nvidia-h200), in stages that each fit one ten-minute call:
#   smoke    installs, timings (task pool, steps/s per frame count, teacher and LoRA steps), v1 held out at 2/5/9/17 frames
#   train    v2: fine-tune of v1 at 2, 5, 9 and 17 frames (fixtures/organism_train.json, --init fixtures/organism-v1)
#   distill  the 4-step LoRA of the model in $MODEL (default fixtures/organism), installed there; held-out scores
# Everything lands in $W (a work folder) and comes back as one $OUT/<stage>.tgz; logs are printed as they go.
# Env: STEPS (train's cosine length), BUDGET (train's seconds), DSTEPS / DBUDGET (distillation), N (held-out n).
set -uo pipefail
stage=$1
W=${W:-/tmp/v2}; mkdir -p "$W"; OUT=${OUT:-$W/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
N=${N:-48}
finish() { cp -r fixtures/organism_train.json "$W/" 2>/dev/null; tar czf "$OUT/$stage.tgz" -C "$W" . ; ls -la "$OUT"; }
trap finish EXIT

evaluate() {   # name, then cos.evaluate arguments: one process, one torch thread, in the background
  local name=$1; shift
  OMP_NUM_THREADS=1 python3 -m cos.evaluate --n "$N" --device cuda --json "$W/eval-$name.json" "$@" \
    > "$W/eval-$name.log" 2>&1 &
}

case $stage in
smoke)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, diffusers, peft; print(torch.__version__, diffusers.__version__, peft.__version__, torch.cuda.get_device_name())"
  for f in 2 5 9 17; do evaluate v1-f$f --model fixtures/organism-v1 --frames $f; done
  python3 - <<'EOF' 2>&1 | grep -v "task pool"
import json, time
from cos.train import build_pools
cfg = json.load(open("fixtures/organism_train.json"))
d = {**cfg["data"], "pool_per_task": 300}
t = time.time(); pools, prompts = build_pools(d, 12); print("render 2400 seeds x [2,5,9,17] with 12 workers:", round(time.time() - t, 1), "s", {f: tuple(v.shape) for f, v in pools.items()})
EOF
  python3 - <<'EOF'
import json
cfg = json.load(open("fixtures/organism_train.json"))
for b in (512, 1024):
    c = json.loads(json.dumps(cfg)); c["data"]["pool_per_task"] = 64; c["train"]["batch"] = b
    c["train"]["ckpt_every"] = 10 ** 6
    json.dump(c, open(f"/tmp/smoke{b}.json", "w"))
EOF
  for b in 512 1024; do
    python3 -m cos.train --config /tmp/smoke$b.json --out "$W/smoke-train-$b" --init fixtures/organism-v1 --steps 80 \
      --workers 12 2>&1 | grep -v "task pool\|^train:" | tail -3
  done
  python3 -m cos.distill_train --model fixtures/organism-v1 --out "$W/smoke-distill" --pairs-per-task 128 --steps 60 \
    --workers 12 2>&1 | grep -v "task pool\|teacher samples\|^distill:" | tail -3
  wait
  grep -h "all/\|wall" "$W"/eval-*.log
  find "$W" -name ckpt.pt -delete; find "$W"/smoke-* -name "diffusion_pytorch_model.safetensors" -delete
  ;;
train)
  python3 -m cos.train --config fixtures/organism_train.json --out "$W/organism" --init fixtures/organism-v1 \
    --workers 15 --steps "${STEPS:-2000}" --time-budget "${BUDGET:-420}" 2>&1 | grep -v "task pool" | tr '\r' '\n' | grep -v "^train: .*it/s\]$" | tail -5
  cp "$W/organism/model/cos_model.json" "$W/"
  for f in 2 5 9 17; do evaluate v2-f$f --model "$W/organism/model" --frames $f; done
  wait
  grep -h "all/\|wall" "$W"/eval-*.log
  rm -f "$W/organism/ckpt.pt"
  ;;
distill)
  MODEL=${MODEL:-fixtures/organism}
  python3 -m cos.distill_train --model "$MODEL" --out "$W/distill" --pairs-per-task "${PAIRS:-2000}" \
    --steps "${DSTEPS:-2000}" --time-budget "${DBUDGET:-240}" --workers 15 --install 2>&1 \
    | grep -v "task pool\|teacher samples\|^distill:" | tail -3
  cp -r "$MODEL/distill" "$MODEL/cos_model.json" "$W/"
  evaluate lora4 --model "$MODEL" --distilled
  evaluate base4 --model "$MODEL" --steps 4
  evaluate base12 --model "$MODEL"
  wait
  grep -h "all/\|wall" "$W"/eval-*.log
  ;;
esac

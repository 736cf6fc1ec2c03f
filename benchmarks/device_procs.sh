#!/usr/bin/env bash
# Issue 26, one device call: the organism's gpu tier cold (no store, the tier's defaults) on ONE GPU as N processes
# (torchrun --nproc_per_node N: every local rank is given the one visible GPU and takes every claim's units
# k = rank mod N and 16/N host cores), so each process's host work (readouts, scores, statistics) runs beside the
# other processes' sampling. RUNS: label:N:mps items in order (mps=1: under NVIDIA's Multi-Process Service, whose
# server runs the processes' kernels side by side instead of time-slicing the GPU between their contexts; the
# daemon is started before the first such run and quit after the last; the card's settings are not touched);
# label:N:mps:go runs a copy of the tree with benchmarks/graphs-overlap.patch applied (the reverted
# --cos-cuda-graphs of 13e8276) with --cos-cuda-graphs=on --cos-overlap=on: a block's launches replayed from a
# graph leave the sampling thread waiting on the GPU without the GIL, which the readout thread can then take.
# Busy fraction from nvidia-smi's utilisation (benchmarks/gpu_speed.py GpuBusy) and, for 1 process, CUDA events.
# Every table is compared row by row with the first 1-process one (benchmarks/compare_tables.py).
. benchmarks/device_setup.sh
warm_machine
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
mps=0
for run in ${RUNS:-p1:1:0 p1go:1:0:go p3mps:3:1 p4mps:4:1}; do
  IFS=: read -r label n want variant <<< "$run"
  args=()
  if [ "${variant:-}" = go ]; then
    [ -d /tmp/go ] || { cp -a . /tmp/go && git -C /tmp/go apply benchmarks/graphs-overlap.patch; } || continue
    args=(--root /tmp/go --pytest-arg=--cos-cuda-graphs=on --pytest-arg=--cos-overlap=on)
  fi
  if [ "$want" = 1 ] && [ "$mps" = 0 ]; then
    nvidia-cuda-mps-control -d && mps=1 && echo "== MPS daemon started" | tee -a "$OUT/tier.log" \
      || { echo "== MPS daemon did not start: $label skipped" | tee -a "$OUT/tier.log"; continue; }
  elif [ "$want" = 0 ] && [ "$mps" = 1 ]; then
    echo quit | nvidia-cuda-mps-control; sleep 2; mps=0; echo "== MPS daemon quit" | tee -a "$OUT/tier.log"
  fi
  python3 benchmarks/gpu_speed.py tier --out "$OUT" --label "$label" --procs "$n" --phases cold \
    --tier-timeout "${COLD_S:-170}" "${args[@]}" 2>&1 | tee -a "$OUT/tier.log" | grep "^== "
  [ "$mps" = 1 ] && { echo "MPS servers: $(echo get_server_list | nvidia-cuda-mps-control 2>&1)" | tee -a "$OUT/tier.log"; }
  tail -n 4 "$OUT/tier-$label-cold.log" | sed "s/^/  [$label] /" >> "$OUT/tier.log"
  rm -f "$OUT/$label-claims-status.md" "$OUT/tier-$label-cold.log" "$OUT/util-$label-cold.txt"
done
[ "$mps" = 1 ] && echo quit | nvidia-cuda-mps-control
first=$(ls "$OUT"/p1-claims-status.json 2>/dev/null)
for f in "$OUT"/*-claims-status.json; do
  [ "$f" = "$first" ] && continue
  echo "== p1 vs $(basename "$f")" | tee -a "$OUT/tier.log"
  python3 benchmarks/compare_tables.py "$first" "$f" 2>&1 | grep -v "^      reason" | tee -a "$OUT/tier.log" | tail -2
  rm -f "$f"     # the device returns 8 files: the tables' provenance (rank phases, ETA) is in tier-LABEL.json
done
exit 0

# Sourced by the device_*.sh scripts (device tool, one call each): diffusers from the carried wheels (.whl) on
# PYTHONPATH, unbuffered output, a cache folder, and the machine and tree named in $OUT/gpu.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 COS_CACHE_DIR=/tmp/coscache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git rev-parse HEAD;
  git status --short | head -20; } > "$OUT/gpu.txt"
# the machine's one-off costs (matplotlib's font cache, the CUDA context) before a first timed run, not inside it
warm_machine() {
  python3 -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; plt.figure(); import torch; torch.ones(1).cuda()"
}

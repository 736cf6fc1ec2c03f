"""Where the organism's gpu tier spends its time before the first claim samples (issue 26), phase by phase in one
process on one GPU: imports, CUDA's first context, loading the model, the tier's instances, the ETA's timed
forward (cold and warm). Prints one line per phase and writes startup-phases.json under --out.

    python benchmarks/startup_phases.py --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/startup-phases")
    a = ap.parse_args()
    phases: dict[str, float] = {}
    last = [T0]

    def mark(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - last[0], 3)
        last[0] = now
        print(f"{name:44s} {phases[name]:7.3f} s", flush=True)

    import torch
    mark("import torch")
    import cos.pytest_plugin  # noqa: F401
    import cos.runner  # noqa: F401
    mark("import cos.runner, cos.pytest_plugin")
    from diffusers import WanTransformer3DModel  # noqa: F401
    mark("import diffusers' Wan transformer")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.ones(1, device=device)
        torch.cuda.synchronize()
    mark(f"first {device} tensor (CUDA context)")
    from cos.models import load_system
    from cos.models.loading import run_dtype
    from cos.pytest_plugin import DEFAULT_MODEL
    system = load_system(DEFAULT_MODEL, device=device, dtype=run_dtype(DEFAULT_MODEL, device))
    mark("load_system (the organism)")
    from cos.settings import instances, settings_for
    s = settings_for(system, "gpu" if device == "cuda" else "cpu")
    insts = instances(s)
    mark(f"the tier's instances ({len(insts)})")
    from cos.runner import time_forward
    t = time_forward(system, s, warmup=0)
    mark("one step, cold (the ETA's warm-up)")
    t = time_forward(system, s, warmup=0)
    mark("one step, warm (what the ETA prices)")
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "phases_s": phases, "seconds_per_row_forward": t["seconds_per_row_forward"]}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "startup-phases.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

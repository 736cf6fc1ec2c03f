"""One VBVR-Bench sample generated end to end at its real size (first frame 1024×1024, the ground truth's frame
count, guidance 5, flow shift 5, seed 1, Wan2.2's negative prompt) by a model directory, through the same path as
`--cos-vbvr` (`cos.vbvr_run.generate`: RunContext.run, decode, mp4 at the ground truth's fps). Prints wall time,
time per step and peak GPU memory as JSON.

    python benchmarks/vbvr_a14b.py --model /tmp/a14b --data fixtures/vbvr-sample --out runs/vbvr --steps 10
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from cos.models import load_system
from cos.runner import RunContext
from cos.settings import TIERS
from cos.vbvr_run import VBVRConfig, generate, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="fixtures/vbvr-sample")
    ap.add_argument("--out", default="runs/vbvr")
    ap.add_argument("--steps", type=int, default=50, help="denoising steps (50 is VBVR-Wan2.2's setting)")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    t0 = time.time()
    system = load_system(a.model, device=a.device, dtype=torch.bfloat16 if a.device.startswith("cuda") else torch.float32)
    t_load = time.time() - t0
    cfg = VBVRConfig(data=a.data, out=a.out, steps=a.steps)
    its = items(cfg)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t1 = time.time()
    root = generate(RunContext(progress=False), system, TIERS["full"], cfg)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.time() - t1
    print(json.dumps({
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "samples": [{"id": i.id, "height": i.height, "width": i.width, "frames": i.num_frames, "fps": float(i.fps)}
                    for i in its],
        "steps": a.steps, "guidance": cfg.guidance_scale, "load_s": round(t_load, 1), "generate_s": round(dt, 1),
        "s_per_step_incl_cfg": round(dt / a.steps, 2), "extrapolated_50_steps_s": round(dt / a.steps * 50, 1),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "videos": sorted(str(p) for p in root.rglob("*.mp4"))}, indent=1))


if __name__ == "__main__":
    main()

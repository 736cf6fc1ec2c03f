"""Cost of the sweeps the claims run, measured in one process: prefix reuse of a noise-at-step sweep (forwards
counted and timed against the naive way: every branch from noise), and the ensemble's seeds batched vs one by
one. Wan2.2-A14B-shaped transformer with random bf16 weights on a GPU; the tiny model on a CPU.

    python benchmarks/sweep_cost.py --config a14b --device cuda --size 240x416x21 --steps 20
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_overhead import build, sync  # noqa: E402

from cos.interventions import EnsembleAverage, NoiseAtStep  # noqa: E402
from cos.sampler import Conditioning, Sampler  # noqa: E402


def resize(cond: Conditioning, h: int, w: int, f: int) -> Conditioning:
    img = torch.nn.functional.interpolate(cond.image, size=(h, w), mode="bilinear")
    return Conditioning(image=img, prompt_embeds=cond.prompt_embeds, num_frames=f,
                        negative_prompt_embeds=cond.negative_prompt_embeds)


def timed(device, fn):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["tiny", "a14b"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default=None, help="HxWxF (default: the config's own)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--points", type=int, default=10, help="injection steps of the sweep")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    system, cond = build(args.config, args.device)
    if args.size:
        h, w, f = (int(x) for x in args.size.split("x"))
        cond = resize(cond, h, w, f)
    S, gs = args.steps, 1.0          # one forward per step: the ratio is the same with CFG's two
    # injection points spread over (0, 1] of the schedule (step 0 would only redraw the seed)
    pts = sorted({min(S - 1, max(1, round(i * S / args.points))) for i in range(1, args.points + 1)})
    branches = {f"step{s}": [NoiseAtStep(s)] for s in pts}
    sampler = Sampler(system)
    sampler.sample(cond, [0], 2, guidance_scale=gs)                     # warm-up
    sampler.forward_count = 0
    _, t_sweep = timed(args.device, lambda: sampler.sweep(cond, [0], S, branches, guidance_scale=gs))
    f_sweep = sampler.forward_count
    sampler.forward_count = 0

    def naive():
        sampler.sample(cond, [0], S, guidance_scale=gs)
        for ivs in branches.values():
            sampler.sample(cond, [0], S, guidance_scale=gs, interventions=ivs)
    _, t_naive = timed(args.device, naive)
    f_naive = sampler.forward_count

    # ensemble: 3 seeds averaged at step 0 over the middle window, batched (one forward of 3) vs one by one
    L = system.num_layers
    mid = list(range(L // 2, (3 * L) // 4))
    one_step = lambda seeds, ivs: sampler.sample(cond, seeds, S, guidance_scale=gs, interventions=ivs, until=1)
    timed(args.device, lambda: one_step([0, 1, 2], [EnsembleAverage(mid, steps=[0], groups=[0, 0, 0])]))
    _, t_batched = timed(args.device, lambda: one_step([0, 1, 2], [EnsembleAverage(mid, steps=[0], groups=[0, 0, 0])]))
    _, t_serial = timed(args.device, lambda: [one_step([s], []) for s in (0, 1, 2)])
    res = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "config": args.config, "size": args.size, "steps": S, "injection_steps": pts,
           "sweep_forwards": f_sweep, "naive_forwards": f_naive, "forward_ratio": round(f_sweep / f_naive, 4),
           "sweep_s": round(t_sweep, 2), "naive_s": round(t_naive, 2), "time_ratio": round(t_sweep / t_naive, 4),
           "ensemble_step0_batched_s": round(t_batched, 3), "three_single_step0_s": round(t_serial, 3),
           "batched_ratio": round(t_batched / t_serial, 4),
           "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if args.device.startswith("cuda") else None}
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

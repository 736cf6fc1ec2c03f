"""Wall time of sampling 64 task instances (8 per task) with the organism at its default settings through the
shared sampler, on this machine's CPU. Issue bar: ≤ 60 s on the 2-core CI machine.

    python benchmarks/organism_cpu.py [--model fixtures/organism] [--repeats 2]
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import torch

from cos.runner import RunContext
from cos.settings import instances, settings_for
from cos.models import load_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fixtures/organism")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    system = load_system(args.model, device="cpu")
    s = replace(settings_for(system, "cpu"), instances=8, batch_size=64)
    insts = instances(s)
    ctx = RunContext(progress=False)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for batch in ctx.batches(s, insts):
            ctx.run(system, s, batch)
        times.append(time.perf_counter() - t0)
    print(f"{len(insts)} instances × {s.steps} steps, {s.num_frames}×{s.height}×{s.width}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("wall s per run:", " ".join(f"{t:.1f}" for t in times), f"| best {min(times):.1f}s (bar 60s)")


if __name__ == "__main__":
    main()

"""Benchmark: the shared sampler's overhead over a bare diffusers loop, and compile_repeated_blocks.

Prints per-step medians and ratios measured in one run (interleaved repeats so drift hits every arm):
  bare      a hand-written loop calling the transformer and scheduler directly (no hooks, no records)
  sampler   cos.Sampler, nothing recorded
  sampler+  cos.Sampler recording x̂0 every step and the token energy of every block (cond pass)
  compiled  sampler+ after `compile_repeated_blocks(fullgraph=True)` (with --compile)

  python benchmarks/sampler_overhead.py --config tiny                    # CPU
  python benchmarks/sampler_overhead.py --config a14b --device cuda      # Wan2.2-A14B-shaped, random bf16
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cos.interventions import CaptureBlocks
from cos.models.system import IdentityVAE, WanSystem
from cos.models.tiny import tiny_system, unipc
from cos.sampler import Conditioning, Sampler

A14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)


class LatentVAE(IdentityVAE):
    """Timing stand-in for the Wan VAE: latent-sized condition without running a VAE (not what is measured)."""

    def __init__(self):
        super().__init__(16)
        self.scale_temporal, self.scale_spatial = 4, 8

    def encode(self, video):
        b, _, f, h, w = video.shape
        return torch.zeros(b, 16, (f - 1) // 4 + 1, h // 8, w // 8, device=video.device)


def build(config: str, device: str) -> tuple[WanSystem, Conditioning]:
    if config == "tiny":
        system = tiny_system(two_experts=False, num_layers=4).to(device)
        h, w, f, text = 64, 64, 17, (8, 32)
    else:
        from diffusers import WanTransformer3DModel

        torch.manual_seed(0)
        with torch.device(device):
            prev = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            t = WanTransformer3DModel(**A14B).eval()
            torch.set_default_dtype(prev)
        system = WanSystem(transformer=t, scheduler=unipc(5.0), vae=LatentVAE(), name="a14b-shaped-random")
        h, w, f, text = 480, 832, 81, (512, 4096)
    g = torch.Generator().manual_seed(0)
    cond = Conditioning(image=torch.rand(1, 3, h, w, generator=g) * 2 - 1,
                        prompt_embeds=torch.randn(1, *text, generator=g), num_frames=f,
                        negative_prompt_embeds=torch.randn(1, *text, generator=g))
    return system, cond


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bare_loop(system: WanSystem, state, gs: float, device: str) -> list[float]:
    """What a user would write without cos: the pipeline's loop body, nothing else."""
    model, sched, times = system.transformer, state.scheduler, []
    pe = state.cond.prompt_embeds.to(device, system.dtype)
    npe = state.cond.negative_prompt_embeds.to(device, system.dtype)
    latents = state.latents
    for t in sched.timesteps:
        sync(device)
        t0 = time.perf_counter()
        x = torch.cat([latents, state.condition], dim=1).to(system.dtype)
        ts = t.expand(x.shape[0])
        v = model(hidden_states=x, timestep=ts, encoder_hidden_states=pe, return_dict=False)[0]
        if gs > 1:
            u = model(hidden_states=x, timestep=ts, encoder_hidden_states=npe, return_dict=False)[0]
            v = u + gs * (v - u)
        latents = sched.step(v, t, latents, return_dict=False)[0]
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


class StepTimer:
    """Per-step wall time of a sampler run, from the sampler's own tqdm-free loop (hooks on the scheduler)."""

    def __init__(self, scheduler, device: str):
        self.times, self.device, self._orig = [], device, scheduler.step
        self.t0 = None

        def step(*a, **k):
            out = self._orig(*a, **k)
            sync(device)
            now = time.perf_counter()
            self.times.append(now - self.t0)
            self.t0 = now
            return out
        scheduler.step = step


def sampler_run(system, cond, seeds, steps, gs, device, record: bool) -> list[float]:
    sampler = Sampler(system, check_finite=True)
    state = sampler.prepare(cond, seeds, steps)
    timer = StepTimer(state.scheduler, device)
    ivs = [CaptureBlocks(blocks="all", cfg_pass="cond", reduce="energy")] if record else []
    sync(device)
    timer.t0 = time.perf_counter()
    sampler.run(state, guidance_scale=gs, interventions=ivs, record=("x0",) if record else ())
    return timer.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["tiny", "a14b"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=1.0, help="1 = one forward per step (cheaper to time)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    system, cond = build(args.config, args.device)
    seeds = [0]
    arms = {"bare": [], "sampler": [], "sampler+": []}
    # warm-up (allocator, kernels) outside the measurement
    sampler_run(system, cond, seeds, 2, args.guidance, args.device, True)
    for r in range(args.repeats):
        state = Sampler(system).prepare(cond, seeds, args.steps)
        arms["bare"] += bare_loop(system, state, args.guidance, args.device)[1:]
        arms["sampler"] += sampler_run(system, cond, seeds, args.steps, args.guidance, args.device, False)[1:]
        arms["sampler+"] += sampler_run(system, cond, seeds, args.steps, args.guidance, args.device, True)[1:]
    report(arms, args)
    if args.compile:
        system.transformer.compile_repeated_blocks(fullgraph=True)
        sampler_run(system, cond, seeds, 2, args.guidance, args.device, True)  # compile outside timing
        arms["compiled"] = []
        for r in range(args.repeats):
            arms["compiled"] += sampler_run(system, cond, seeds, args.steps, args.guidance, args.device, True)[1:]
    report(arms, args)


def report(arms: dict, args) -> None:
    med = {k: statistics.median(v) for k, v in arms.items()}
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"config={args.config} device={dev} torch={torch.__version__} steps={args.steps} repeats={args.repeats} "
          f"guidance={args.guidance} threads={torch.get_num_threads()}")
    for k, v in med.items():
        print(f"{k:10s} median step {v * 1e3:10.2f} ms  (n={len(arms[k])})  ratio to bare {v / med['bare']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "device": dev, "median_step_s": med, "all": arms}, f, indent=1)


if __name__ == "__main__":
    main()

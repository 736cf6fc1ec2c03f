"""Sec. 5.1: layer-wise token energy. layers.energy_profile: later/middle blocks concentrate on the foreground
more than the first quarter does; token sparsity peaks at middle depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cos import claimkit as ck
from cos.interventions import CaptureBlocks
from cos.stats import bootstrap_ci
from cos.tasks import render

FIRST, MIDDLE = (0.0, 0.25), (0.25, 0.75)
SPARSITY_PEAK = (0.25, 0.75)
MIN_RATIO_GAIN = 0.05   # fg/bg ratio units; an untrained organism-shaped model measured 0.0025 [0.0008, 0.0046]


def token_masks(inst, height, width, grid, scale_temporal: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground (target ∪ distractors) and background masks on the (f, h, w) token grid."""
    fg = (inst.masks["target"] | inst.masks["distractors"]).float()
    bg = inst.masks["background"].float()
    pool = lambda m: torch.nn.functional.adaptive_avg_pool2d(render(m[:, None].expand(-1, 3, -1, -1), height, width)[:, 0],
                                                             grid[1:])
    # latent frame k stands for pixel frame k·st (the first one alone): the frames the VAE compresses together
    frames = [min(k * scale_temporal, inst.num_frames - 1) for k in range(grid[0])]
    return pool(fg)[frames] > 0.5, pool(bg)[frames] > 0.5


def gini(x: torch.Tensor) -> float:
    """Sparsity of token energies (0: uniform, → 1: concentrated in few tokens)."""
    v = torch.sort(x.flatten().double()).values
    n = v.numel()
    return float(1 - 2 * ((n - torch.arange(n, dtype=torch.float64) - 0.5) * v).sum() / (n * v.sum()))


def measure_energy_profile(system, settings, shuffle_masks: bool = False):
    L = system.num_layers
    ratios, sparsity, energy = {}, [], []
    for batch in ck.batches(settings, ck.instances(settings)):
        cap = CaptureBlocks(blocks="all", steps=[0], reduce="energy", cfg_pass="cond")
        ck.run(system, settings, batch, interventions=[cap], until=1)   # step 0 is all it reads
        for row, inst in enumerate(batch.instances):
            e0 = cap[0, 0][row]
            fg, bg = token_masks(inst, settings.height, settings.width, tuple(e0.shape), system.vae.scale_temporal)
            if shuffle_masks:   # negative control: masks unrelated to the objects
                g = torch.Generator().manual_seed(inst.seed)
                fg = fg.flatten()[torch.randperm(fg.numel(), generator=g)].view_as(fg)
                bg = ~fg
            if not fg.any() or not bg.any():
                continue
            r = [float(cap[0, b][row][fg].mean() / cap[0, b][row][bg].mean()) for b in range(L)]
            ratios.setdefault(inst.id, []).append(r)
            sparsity.append([gini(cap[0, b][row]) for b in range(L)])
            energy.append([cap[0, b][row].mean(dim=(1, 2)).tolist() for b in range(L)])     # block × frame
    if len(ratios) < 2:
        return ck.skipped("layers.energy_profile", f"the token grid {tuple(e0.shape)} is too coarse to separate "
                          "foreground from background tokens (use a larger --cos-size)", system, settings)
    blocks = lambda span: list(range(int(span[0] * L), max(int(span[0] * L) + 1, int(span[1] * L))))
    diff = [np.mean([np.mean([r[b] for b in blocks(MIDDLE)]) - np.mean([r[b] for b in blocks(FIRST)]) for r in rs])
            for rs in ratios.values()]
    est = bootstrap_ci(diff)
    prof = np.mean(sparsity, axis=0)
    peak = float(np.argmax(prof) / max(1, L - 1))
    res = ck.result("layers.energy_profile", est, MIN_RATIO_GAIN, ">", system, settings, {
        "fg_bg_ratio_per_block": np.mean([r for rs in ratios.values() for r in rs], axis=0).round(4).tolist(),
        "sparsity_per_block": prof.round(4).tolist(), "sparsity_peak_depth": peak,
        "energy_block_frame": np.mean(energy, axis=0).round(4).tolist() if energy else None,
        "measured": "fg/bg energy ratio, middle half minus first quarter of blocks (step 0, cond pass)"})
    return ck.also_requires(res, SPARSITY_PEAK[0] <= peak <= SPARSITY_PEAK[1],
                            f"fg/bg part holds but the sparsity peak is at depth {peak:.2f}")


@pytest.mark.claims
@pytest.mark.claim("layers.energy_profile")
def test_energy_profile(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_energy_profile(cos_system, cos_settings))


# ---------------------------------------------------------------- layers.swap_flip (Sec. 5.2, Fig. 6b)
MIDDLE_SWAP, OUTER = (0.35, 0.65), 0.2
MIN_FLIP_GAIN = 0.0


def outcome(inst, video) -> int:
    """Which object the video marks: the argmax of its candidate mixture (candidate k marks object k)."""
    return int(torch.argmax(inst.candidate_weights(video)))


def measure_swap_flip(system, settings, identity: bool = False):
    """At step 0, replace block k's vision tokens with those of the alternative configuration (the answer on
    another object) and see whether the final outcome flips. `identity=True` swaps in the run's own tokens
    (negative control: nothing can flip)."""
    from dataclasses import replace

    from cos.interventions import SwapBlock

    L = system.num_layers
    blocks = list(range(0, L, settings.swap_stride))
    s = replace(settings, tasks=("grounding",), instances=settings.swap_instances)
    flips = {b: {} for b in blocks}
    for batch in ck.batches(s, ck.instances(s)):
        src_batch = batch if identity else ck.make_batch([i.alternative for i in batch.instances], [0], s.height,
                                                         s.width)
        src_batch.seeds = list(batch.seeds)
        cap = CaptureBlocks(blocks=blocks, steps=[0], cfg_pass="cond")
        ck.run(system, s, src_batch, interventions=[cap], until=1)
        base = [outcome(i, v) for i, v in zip(batch.instances, ck.videos(system, ck.run(system, s, batch).latents))]
        for b in blocks:
            res = ck.run(system, s, batch, interventions=[SwapBlock(b, cap[0, b], steps=[0])])
            for row, (inst, v) in enumerate(zip(batch.instances, ck.videos(system, res.latents))):
                flips[b].setdefault(inst.id, []).append(float(outcome(inst, v) != base[row]))
    depth = {b: b / max(1, L - 1) for b in blocks}
    mid = [b for b in blocks if MIDDLE_SWAP[0] <= depth[b] <= MIDDLE_SWAP[1]]
    outer = [b for b in blocks if depth[b] < OUTER or depth[b] > 1 - OUTER]
    if not mid or not outer:
        from cos.errors import InputError
        raise InputError(f"layers.swap_flip: blocks {blocks} of {L} give no middle-depth {MIDDLE_SWAP} or outer "
                         f"block; use a deeper model or swap_stride=1")
    ids = sorted(flips[blocks[0]])
    rate = lambda bs, i: np.mean([np.mean(flips[b][i]) for b in bs])
    est = bootstrap_ci([rate(mid, i) - rate(outer, i) for i in ids])
    per_block = {b: float(np.mean([np.mean(flips[b][i]) for i in ids])) for b in blocks}
    peak = max(per_block, key=per_block.get)
    res = ck.result("layers.swap_flip", est, MIN_FLIP_GAIN, ">", system, s, {
        "flip_rate_per_block": {str(b): v for b, v in per_block.items()}, "middle_blocks": mid, "outer_blocks": outer,
        "peak_block": peak, "peak_depth": depth[peak],
        "measured": "flip rate of the grounding outcome, middle-depth swaps minus outer swaps (step 0, cond pass)"})
    return ck.also_requires(res, MIDDLE_SWAP[0] <= depth[peak] <= MIDDLE_SWAP[1],
                            f"middle swaps flip more than outer ones but the peak is at depth {depth[peak]:.2f}")


@pytest.mark.claims
@pytest.mark.claim("layers.swap_flip")
def test_swap_flip(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_swap_flip(cos_system, cos_settings))

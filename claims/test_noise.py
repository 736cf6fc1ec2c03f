"""Sec. 3.2: noise perturbation. noise.step_vs_frame: noise at a step hurts more than noise at a frame.
noise.information_flow: a perturbation early in the schedule propagates to the end (1 − CKA between perturbed
and clean x̂0 stays high). Both read one sweep per batch that shares the clean prefix (`Sampler.sweep`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cos import claimkit as ck
from cos.interventions import NoiseAtFrame, NoiseAtStep
from cos.metrics import cka_dissimilarity
from cos.stats import bootstrap_ci, interval

MIN_DIFFERENCE = 0.02   # score points: smaller differences in drop are not a difference
MIN_DISSIMILARITY = 0.05   # final-step 1 − CKA after the earliest injection: below this the run recovered
SENSITIVITY_PEAK = (0.3, 0.7)   # paper: steps 20-30 of 50; checked only with ≥ 5 injection points


def injection_points(settings):
    return ck.noise_injection_steps(settings), list(settings.noise_frames)


def noise_settings(settings):
    """Both noise claims read the same sweep; on the CPU tier it runs on half the instances (a sweep costs
    about five clean runs)."""
    from dataclasses import replace

    return replace(settings, instances=max(2, settings.instances // 2)) if settings.instances <= 4 else settings


def noise_sweep(system, settings, batch):
    """Clean run plus every noise branch of the tier, x̂0 recorded, computed once per batch."""
    steps, frames = injection_points(settings)
    branches = {**{f"step{s}": [NoiseAtStep(s)] for s in steps}, **{f"frame{f}": [NoiseAtFrame(f)] for f in frames}}
    return ck.memo("noise-sweep", system, settings, batch, lambda: ck.sweep(system, settings, batch, branches,
                                                                           record=("x0",)))


def measure_step_vs_frame(system, settings):
    steps, frames = injection_points(settings)
    diffs, clean_scores, step_scores, frame_scores = {}, [], {s: [] for s in steps}, {f: [] for f in frames}
    for batch in ck.batches(settings, ck.instances(settings)):
        res = noise_sweep(system, settings, batch)
        score = {k: [i.score(v) for i, v in zip(batch.instances, ck.videos(system, r.latents))] for k, r in res.items()}
        for row, inst in enumerate(batch.instances):
            clean = score["clean"][row]
            sd = clean - np.mean([score[f"step{s}"][row] for s in steps])
            fd = clean - np.mean([score[f"frame{f}"][row] for f in frames])
            diffs.setdefault(inst.id, []).append(sd - fd)
            clean_scores.append(clean)
            for s in steps:
                step_scores[s].append(score[f"step{s}"][row])
            for f in frames:
                frame_scores[f].append(score[f"frame{f}"][row])
    est = bootstrap_ci([np.mean(v) for v in diffs.values()])
    return ck.result("noise.step_vs_frame", est, MIN_DIFFERENCE, ">", system, settings, {
        "clean_score": float(np.mean(clean_scores)),
        "score_noise_at_step": {str(s): float(np.mean(v)) for s, v in step_scores.items()},
        "score_noise_at_frame": {str(f): float(np.mean(v)) for f, v in frame_scores.items()},
        "ci": {k: interval(v) for k, v in [("clean", clean_scores), *[(f"step{s}", v) for s, v in step_scores.items()],
                                       *[(f"frame{f}", v) for f, v in frame_scores.items()]]},
        "num_steps": settings.steps,
        "min_score_step_noise": float(min(np.mean(v) for v in step_scores.values())),
        "measured": "mean score drop under step noise minus under frame noise (paired per instance)"})


def tokens(x0: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """One sample's x̂0 (C, F, H, W) as (tokens, C·p·p) patches: the rows CKA compares."""
    c, f, h, w = x0.shape
    t = x0.reshape(c, f, h // patch, patch, w // patch, patch).permute(1, 2, 4, 0, 3, 5)
    return t.reshape(f * (h // patch) * (w // patch), c * patch * patch)


def measure_information_flow(system, settings):
    steps, _ = injection_points(settings)
    final, curves = {s: {} for s in steps}, {s: [] for s in steps}
    for batch in ck.batches(settings, ck.instances(settings)):
        res = noise_sweep(system, settings, batch)
        clean = res["clean"]["x0"]
        for s in steps:
            pert = res[f"step{s}"]["x0"]
            for row, inst in enumerate(batch.instances):
                curve = [cka_dissimilarity(tokens(clean[t][row]), tokens(pert[t][row]))
                         for t in range(s + 1, clean.shape[0])]
                if curve:
                    final[s].setdefault(inst.id, []).append(curve[-1])
                    curves[s].append(curve)
    first = next(s for s in steps if final[s])
    est = bootstrap_ci([np.mean(v) for v in final[first].values()])
    sens = {s: float(np.mean([c[-1] for c in curves[s]])) for s in steps if curves[s]}
    peak = max(sens, key=sens.get) / settings.steps
    res = ck.result("noise.information_flow", est, MIN_DISSIMILARITY, ">", system, settings, {
        "injection_step": first, "final_dissimilarity_per_injection_step": {str(k): v for k, v in sens.items()},
        "dissimilarity_curves": {str(s): np.mean([c for c in curves[s]], axis=0).round(4).tolist()
                                 for s in steps if curves[s]},
        "sensitivity_peak_fraction": peak,
        "measured": f"final-step 1 − CKA (x̂0 patch tokens) between clean and step-{first}-noised runs"})
    return ck.also_requires(res, len(sens) < 5 or SENSITIVITY_PEAK[0] <= peak <= SENSITIVITY_PEAK[1],
                            f"early noise propagates but sensitivity peaks at {peak:.2f} of the schedule")


@pytest.mark.claims
@pytest.mark.claim("noise.information_flow")
def test_information_flow(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_information_flow(cos_system, noise_settings(cos_settings)))


@pytest.mark.claims
@pytest.mark.claim("noise.step_vs_frame")
def test_step_vs_frame(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_step_vs_frame(cos_system, noise_settings(cos_settings)))

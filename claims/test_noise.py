"""Sec. 3.2: noise perturbation. noise.step_vs_frame: noise at a step hurts more than noise at a frame."""
from __future__ import annotations

import numpy as np
import pytest

from cos import claimkit as ck
from cos.interventions import NoiseAtFrame, NoiseAtStep
from cos.stats import bootstrap_ci

MIN_DIFFERENCE = 0.02   # score points: smaller differences in drop are not a difference


def measure_step_vs_frame(system, settings):
    steps = sorted({min(settings.steps - 1, int(f * settings.steps)) for f in settings.noise_step_fractions})
    frames = [f for f in settings.noise_frames]
    branches = {**{f"step{s}": [NoiseAtStep(s)] for s in steps}, **{f"frame{f}": [NoiseAtFrame(f)] for f in frames}}
    diffs, clean_scores, step_scores, frame_scores = {}, [], {s: [] for s in steps}, {f: [] for f in frames}
    for batch in ck.batches(settings, ck.instances(settings)):
        res = ck.sweep(system, settings, batch, branches)
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
        "min_score_step_noise": float(min(np.mean(v) for v in step_scores.values())),
        "measured": "mean score drop under step noise minus under frame noise (paired per instance)"})


@pytest.mark.claims
@pytest.mark.claim("noise.step_vs_frame")
def test_step_vs_frame(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_step_vs_frame(cos_system, cos_settings))

"""App. B, Table 3: frames.count. More frames help up to a point; a single generated frame (ChronoEdit-style:
the answer with no intermediate frames) is worst."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from cos import claimkit as ck
from cos.stats import bootstrap_ci

MIN_GAIN = 0.0   # multi-frame minus single-frame score


def scores_at(system, settings, frames: int) -> dict[str, float]:
    s = replace(settings, num_frames=frames)
    out = {}
    for batch in ck.batches(s, ck.instances(s)):
        vids = ck.videos(system, ck.run(system, s, batch).latents)
        for inst, v in zip(batch.instances, vids):
            out.setdefault(inst.id, []).append(inst.score(v))
    return {k: float(np.mean(v)) for k, v in out.items()}


def measure_frames(system, settings):
    counts = sorted(set(settings.frame_counts))
    per = {c: scores_at(system, settings, c) for c in [settings.single_frame, *counts]}
    ids = sorted(per[settings.single_frame])
    multi = [np.mean([per[c][i] for c in counts]) for i in ids]
    est = bootstrap_ci(np.array(multi) - np.array([per[settings.single_frame][i] for i in ids]))
    means = {c: float(np.mean(list(per[c].values()))) for c in per}
    rise = [c for c in counts if c <= 17]
    rho = spearmanr(rise, [means[c] for c in rise]).statistic if len(rise) >= 3 else None
    res = ck.result("frames.count", est, MIN_GAIN, ">", system, settings, {
        "score_per_frame_count": {str(c): v for c, v in means.items()}, "single_frame": settings.single_frame,
        "spearman_rise_to_17": None if rho is None or np.isnan(rho) else float(rho),
        "measured": f"mean score over {counts} frames minus the {settings.single_frame}-frame score (paired)"})
    worse = [c for c in counts if means[c] <= means[settings.single_frame]]
    return ck.also_requires(res, not worse, f"single frame is not worst: {worse} frames score no higher")


@pytest.mark.claims
@pytest.mark.claim("frames.count")
def test_frame_count(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_frames(cos_system, replace(cos_settings, instances=max(2, cos_settings.instances // 2))))

"""App. C: distill.four_step. A 4-step distilled model (reasoning LoRA + distillation LoRA at 0.5 each) scores
lower than the full schedule but still shows reasoning activity (several candidates) at its first step."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cos import claimkit as ck
from cos.stats import bootstrap_ci
from cos.tasks import entropy

FAST_STEPS = 4
MIN_DROP = 0.0
MIN_FIRST_ENTROPY = 0.05   # nats, as cos.superposition


def measure_four_step(full, fast, settings, fast_steps: int = FAST_STEPS):
    """Paired per (instance, seed): full-schedule score of `full` minus the `fast_steps` score of `fast`."""
    fs = replace(settings, steps=fast_steps)
    drop, first_h = {}, []
    for batch in ck.batches(settings, ck.instances(settings)):
        a = ck.videos(full, ck.clean_run(full, settings, batch).latents)
        rb = ck.run(fast, fs, batch, record=("x0",))
        b = ck.videos(fast, rb.latents)
        for row, inst in enumerate(batch.instances):
            drop.setdefault(inst.id, []).append(inst.score(a[row]) - inst.score(b[row]))
            first_h.append(entropy(inst.candidate_weights(ck.step_videos(fast, rb, row)[0])))
    est = bootstrap_ci([np.mean(v) for v in drop.values()])
    res = ck.result("distill.four_step", est, MIN_DROP, ">", full, settings, {
        "fast_model": fast.name, "fast_steps": fast_steps, "first_step_entropy": float(np.mean(first_h)),
        "measured": f"full-schedule score minus {fast_steps}-step distilled score (paired)"})
    return ck.also_requires(res, np.mean(first_h) > MIN_FIRST_ENTROPY,
                            f"scores lower but first-step entropy {np.mean(first_h):.3f} shows no reasoning")


@pytest.mark.claims
@pytest.mark.claim("distill.four_step")
def test_four_step(cos_claim, cos_system, cos_settings, cos_distilled_system):
    if cos_distilled_system is None:
        cos_claim.report(ck.skipped("distill.four_step", "no 4-step distilled model: pass --cos-lora "
                                    "REASONING:0.5 --cos-lora DISTILL:0.5 (LoRA pair of App. C)",
                                    cos_system, cos_settings))
    cos_claim.report(measure_four_step(cos_system, cos_distilled_system, cos_settings))

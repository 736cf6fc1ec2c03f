"""Sec. 4: emergent behaviours read off the clean x̂0 trajectory (one shared run per batch, `ck.clean_run`).

memory.persistence: the anchor (start cell, occluded object) is kept through the steps and restored at the end.
selfcorrection.rate: trajectories that commit to a wrong answer mid-way and end on the right one.
perception.before_action: the target is singled out (grounding) before it moves (action) along the steps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cos import claimkit as ck
from cos.stats import bootstrap_ci
from cos.tasks.base import deciding_frames
from claims.test_chain_of_steps import commit_step, shows_answer

ANCHOR_TASKS = ("return_to_origin", "occlusion")
KEEP_FIDELITY = 0.7      # anchor-cell fidelity (1 − mean |error| in [0, 1]) counted as "kept"
KEEP_FROM = 0.2          # ...from this fraction of the schedule on (x̂0 at σ≈1 is the blurred mean)
MIN_SHARE_KEPT = 0.5     # the "stated share" of anchor instances
WRONG_COMMIT = 0.5       # a step commits to a wrong answer when a wrong candidate holds more than this mass
SIMULTANEOUS = 0.8       # share of corrections whose frames all switch within one step
MOTION_TASKS = ("object_to_target", "maze", "return_to_origin")


def rows(system, settings, tasks=None):
    """(instance, per-step decoded x̂0 (S, F, 3, H, W), final video) for every row of the claim's batches."""
    for batch in ck.batches(settings, ck.instances(settings)):
        res = ck.clean_run(system, settings, batch)
        final = ck.videos(system, res.latents)
        for row, inst in enumerate(batch.instances):
            if tasks is None or inst.task in tasks:
                yield inst, batch.seeds[row], ck.step_videos(system, res, row), final[row]


def anchor_fidelity(inst, video) -> float:
    """1 − mean |cell colour − ground truth| over the anchor cells of the frames that hold them."""
    cells = inst._cells(video.clamp(0, 1))                     # (F, 3, G, G)
    m = inst.masks["anchor"]                                   # (F, G, G)
    err = (cells - inst.video).abs().mean(1)[m]
    return float(1 - err.mean())


def measure_memory(system, settings):
    kept, per_step = {}, []
    for inst, _, steps, final in rows(system, settings, ANCHOR_TASKS):
        fid = [anchor_fidelity(inst, v) for v in steps]
        start = int(KEEP_FROM * len(fid))
        ok = min(fid[start:]) >= KEEP_FIDELITY and anchor_fidelity(inst, final) >= KEEP_FIDELITY
        kept.setdefault(inst.id, []).append(float(ok))
        per_step.append(fid)
    if len(kept) < 2:
        return ck.skipped("memory.persistence", f"needs ≥ 2 instances of {ANCHOR_TASKS}; settings give {len(kept)}",
                          system, settings)
    est = bootstrap_ci([np.mean(v) for v in kept.values()])
    return ck.result("memory.persistence", est, MIN_SHARE_KEPT, ">", system, settings, {
        "anchor_fidelity_per_step": np.mean(per_step, axis=0).round(4).tolist(), "tasks": list(ANCHOR_TASKS),
        "measured": f"share of anchor instances whose anchor fidelity stays ≥ {KEEP_FIDELITY} from "
                    f"{KEEP_FROM:.0%} of the schedule on and in the final video"})


def measure_selfcorrection(system, settings):
    corrected, simultaneous = {}, []
    for inst, _, steps, final in rows(system, settings):
        w = [inst.candidate_weights(v) for v in steps]
        right_end = inst.passed(final) and int(torch.argmax(w[-1])) == inst.answer
        wrong_mid = any(int(torch.argmax(x)) != inst.answer and float(x.max()) > WRONG_COMMIT for x in w)
        hit = right_end and wrong_mid
        corrected.setdefault(inst.id, []).append(float(hit))
        frames = [f for f in deciding_frames(inst) if f > 0]
        if hit and len(frames) >= 2:
            # per frame: the step from which it shows the answer (candidates that look alike in a frame count as
            # one), the same reading cos.not_frames uses
            sw = [commit_step([shows_answer(inst, inst.candidate_weights(v, [f]), f, inst.answer) for v in steps])
                  for f in frames]
            simultaneous.append(float(max(sw) - min(sw) <= 1))
    est = bootstrap_ci([np.mean(v) for v in corrected.values()])
    share = float(np.mean(simultaneous)) if simultaneous else None
    res = ck.result("selfcorrection.rate", est, 0.0, ">", system, settings, {
        "simultaneous_share": share,
        "corrections": int(sum(sum(v) for v in corrected.values())),
        "measured": f"share of trajectories committed (> {WRONG_COMMIT}) to a wrong answer mid-way that end right"})
    # no correction with two deciding frames: nothing to say about simultaneity
    return ck.also_requires(res, share is None or share >= SIMULTANEOUS,
                            f"corrections occur but only {share or 0.0:.0%} switch in all frames within one step "
                            f"(needs {SIMULTANEOUS:.0%})")


def half_rise(curve: np.ndarray) -> float | None:
    """First step (as a fraction of the schedule) where the curve has covered half of its rise; None if flat."""
    lo, hi = curve[0], curve[-1]
    if hi - lo <= 1e-6:
        return None
    return float(np.argmax(curve >= lo + 0.5 * (hi - lo)) / len(curve))


def grounding_and_motion(inst, steps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per step: share of x̂0's departure from the static first frame that lies on the target (grounding), and
    how much the target cells change across frames (action)."""
    tgt = inst.masks["target"]                                            # (F, G, G)
    static = inst.video[:1]
    g, m = [], []
    for v in steps:
        cells = inst._cells(v.clamp(0, 1))
        dev = (cells - static).abs().sum(1)                               # (F, G, G)
        g.append(float(dev[tgt].sum() / dev.sum().clamp_min(1e-8)))
        m.append(float((cells[1:] - cells[:1]).abs().sum(1)[tgt[1:]].mean()))
    return np.array(g), np.array(m)


def measure_perception(system, settings):
    diffs, curves = {}, []
    for inst, _, steps, _ in rows(system, settings, MOTION_TASKS):
        g, m = grounding_and_motion(inst, steps)
        hg, hm = half_rise(g), half_rise(m)
        if hg is None or hm is None:
            continue
        diffs.setdefault(inst.id, []).append(hm - hg)
        curves.append((g, m))
    if len(diffs) < 2:
        return ck.skipped("perception.before_action", f"fewer than 2 instances of {MOTION_TASKS} with rising "
                          "grounding and motion curves", system, settings)
    est = bootstrap_ci([np.mean(v) for v in diffs.values()])
    return ck.result("perception.before_action", est, 0.0, ">", system, settings, {
        "grounding_per_step": np.mean([c[0] for c in curves], axis=0).round(4).tolist(),
        "motion_per_step": np.mean([c[1] for c in curves], axis=0).round(4).tolist(), "tasks": list(MOTION_TASKS),
        "measured": "half-rise step of motion minus of grounding, fraction of the schedule (paired per row)"})


@pytest.mark.claims
@pytest.mark.claim("memory.persistence")
def test_memory_persistence(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_memory(cos_system, cos_settings))


@pytest.mark.claims
@pytest.mark.claim("selfcorrection.rate")
def test_selfcorrection_rate(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_selfcorrection(cos_system, cos_settings))


@pytest.mark.claims
@pytest.mark.claim("perception.before_action")
def test_perception_before_action(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_perception(cos_system, cos_settings))

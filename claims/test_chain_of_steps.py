"""Sec. 3.1: reasoning along the steps. cos.superposition (several candidates early, one late) and
cos.not_frames (the answer commits in all frames at once)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cos import claimkit as ck
from cos.stats import bootstrap_ci, interval
from cos.tasks import entropy, live_candidates
from cos.tasks.base import deciding_frames

EARLY, LATE = 0.2, 0.2          # fractions of the schedule compared by cos.superposition
MIN_ENTROPY_DROP = 0.05         # nats: smaller differences are float noise, not superposition
COMMIT_WINDOW = 0.25
TRACE_TASKS = ("maze", "grounding", "object_to_target", "return_to_origin")            # cos.not_frames: all frames commit within this fraction of the schedule


def _weights_per_step(system, settings, batch, frames=None):
    """Candidate distributions of the decoded x̂0 at every step, from one sampling run: a list over rows of
    lists over steps of (K,) whole-video weights, and, when `frames(inst)` is given, of {frame: (K,)} too."""
    res = ck.clean_run(system, settings, batch)
    whole, per_frame = [], []
    for row, inst in enumerate(batch.instances):
        w, pf = [], []
        for video in ck.step_videos(system, res, row):
            w.append(inst.candidate_weights(video))
            if frames is not None:
                pf.append({f: inst.candidate_weights(video, [f]) for f in frames(inst)})
        whole.append(w)
        per_frame.append(pf)
    return whole, per_frame


def measure_superposition(system, settings):
    diffs, early_live, curves, traced = {}, [], [], set()
    for batch in ck.batches(settings, ck.instances(settings)):
        for row, (inst, steps) in enumerate(zip(batch.instances, _weights_per_step(system, settings, batch)[0])):
            n = len(steps)
            k_early, k_late = max(1, round(EARLY * n)), max(1, round(LATE * n))
            h = [entropy(w) for w in steps]
            curves.append(h)
            if inst.task not in traced and inst.task in TRACE_TASKS:    # the report's filmstrips, one per task
                traced.add(inst.task)
                ck.save_trace(f"trace-{inst.id}-s{batch.seeds[row]}", inst,
                              ck.step_videos(system, ck.clean_run(system, settings, batch), row), steps,
                              ck.clean_run(system, settings, batch).sigmas)
            diffs.setdefault(inst.id, []).append(np.mean(h[:k_early]) - np.mean(h[-k_late:]))
            early_live.append(max(live_candidates(w) for w in steps[:k_early]) >= 2)
    est = bootstrap_ci([np.mean(v) for v in diffs.values()])
    return ck.result("cos.superposition", est, MIN_ENTROPY_DROP, ">", system, settings,
                     {"share_two_live_early": float(np.mean(early_live)), "unit": "instance (seeds averaged)",
                      "entropy_per_step": np.mean(curves, axis=0).round(4).tolist(),
                      "entropy_per_step_ci": [interval(c) for c in np.array(curves).T],
                      "measured": "mean candidate entropy (nats), first 20% minus last 20% of steps"})


def commit_step(shows: list[bool]) -> int:
    """First step from which a frame shows the video's final answer and keeps showing it; len(shows) when
    the frame does not end on it (a frame that decided on its own counts as never committing)."""
    n = len(shows)
    if not shows[-1]:
        return n
    s = n - 1
    while s > 0 and shows[s - 1]:
        s -= 1
    return s


def shows_answer(inst, weights, frame: int, answer: int) -> bool:
    """Most of the frame's candidate mass lies on candidates that look like `answer` in this frame
    (candidates sharing a frame, e.g. a common maze prefix, cannot be told apart there)."""
    c = inst.candidates[:, frame]
    same = [k for k in range(c.shape[0]) if (c[k] - c[answer]).abs().amax() <= 1e-6]
    return float(weights[same].sum()) > 0.5


def measure_not_frames(system, settings):
    spreads, pairs = {}, []
    for batch in ck.batches(settings, ck.instances(settings)):
        frames = lambda inst: [f for f in deciding_frames(inst) if f > 0]
        whole, per_frame = _weights_per_step(system, settings, batch, frames)
        for inst, steps, w in zip(batch.instances, per_frame, whole):
            fs = frames(inst)
            if len(fs) < 2:
                continue
            answer = int(torch.argmax(w[-1]))
            commits = {f: commit_step([shows_answer(inst, st[f], f, answer) for st in steps]) for f in fs}
            n = len(steps)
            spreads.setdefault(inst.id, []).append((max(commits.values()) - min(commits.values())) / n)
            pairs += [(f, c / n) for f, c in commits.items()]
    est = bootstrap_ci([np.mean(v) for v in spreads.values()])
    from scipy.stats import spearmanr
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
    return ck.result("cos.not_frames", est, COMMIT_WINDOW, "<", system, settings,
                     {"spearman_frame_vs_commit": None if np.isnan(rho) else float(rho),
                      "measured": "spread of per-frame commitment steps, fraction of the schedule"})


@pytest.mark.claims
@pytest.mark.claim("cos.superposition")
def test_superposition(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_superposition(cos_system, cos_settings))


@pytest.mark.claims
@pytest.mark.claim("cos.not_frames")
def test_not_frames(cos_claim, cos_system, cos_settings):
    cos_claim.report(measure_not_frames(cos_system, cos_settings))

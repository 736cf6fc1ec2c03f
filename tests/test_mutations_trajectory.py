"""Breakages of the trajectory claims' measurements that their positive controls cannot see, caught by a noisy
null: `selfcorrection.rate` and `cos.not_frames`.

Each test runs a negative control (a null whose effect is zero in expectation, not identically) as written (it
does not hold) and with one part of the measurement broken by monkeypatching (it then holds, or its measurement
collapses): the positive control holds either way, so without the null the breakage would go unseen."""
from __future__ import annotations

import pytest
import torch

from cos.registry import get_claim


def control(claim_id: str, name: str):
    claim = get_claim(claim_id)
    return claim, next(c for c in claim.controls() if c.name == name)


# ---------------------------------------------------------------- selfcorrection.rate
def test_selfcorrection_not_requiring_the_right_ending_is_caught_by_the_random_null(monkeypatch):
    """"Ends right" dropped (every trajectory committed wrong mid-way counts as corrected, as if the ending were
    not read): the wrong-then-random null, which ends right only by chance, then holds."""
    import cos.claims.selfcorrection as mod

    claim, null = control("selfcorrection.rate", "wrong-then-random")
    r = null.run(claim)
    assert r.status in null.expect and null.check(r), (r.status, r.measured, r.details.get("endings"))
    monkeypatch.setattr(mod, "ends_right", lambda inst, final, w_last: True)
    r = null.run(claim)
    assert r.status == "holds", (r.status, r.measured, r.ci_low, r.details.get("endings"))


def test_selfcorrection_not_seeing_other_wrong_endings_is_caught_by_the_random_null(monkeypatch):
    """The chance term lost: an ending on another wrong candidate is not recognised (only the answer's is), so
    the measurement is the raw rate of ending right, which a chance wanderer has above 0: the null then holds."""
    import cos.claims.selfcorrection as mod

    claim, null = control("selfcorrection.rate", "wrong-then-random")
    r = null.run(claim)
    assert r.status in null.expect and null.check(r), (r.status, r.measured, r.details.get("endings"))
    real = mod.ending
    monkeypatch.setattr(mod, "ending", lambda inst, final, w_last: inst.answer
                        if real(inst, final, w_last) == inst.answer else None)
    r = null.run(claim)
    # the difference's interval now lies above 0 (the row itself may stay undecided on simultaneity, with only
    # the few chance corrections to judge it on): the control's check, that the difference does not hold, fails
    assert r.details["endings"]["other"] == 0 and r.ci_low > 0, (r.status, r.measured, r.ci_low)
    assert not null.check(r)


# ---------------------------------------------------------------- cos.not_frames
def test_not_frames_reading_the_whole_video_weights_for_every_frame_collapses_the_frames_apart_null(monkeypatch):
    """Every frame read through the whole video's candidate mixture: all frames then commit at the same step on
    every model, so the global reference still looks global, and the frames-apart null (frames switching at
    independent steps, spread ≈ 0.7 as written) reads a spread of 0 and no longer fails."""
    import cos.claims.not_frames as mod

    claim, null = control("cos.not_frames", "frames-apart")
    r = null.run(claim)
    assert r.status == "fails" and null.check(r) and r.measured > 0.5, (r.status, r.measured)
    real = mod.weights_per_step

    def whole_for_every_frame(ctx, system, settings, batch, frames=None):
        whole, _ = real(ctx, system, settings, batch, None)
        return whole, [[{f: w for f in frames(inst)} for w in ws] for inst, ws in zip(batch.instances, whole)]

    monkeypatch.setattr(mod, "weights_per_step", whole_for_every_frame)
    r = null.run(claim)
    assert r.status != "fails" and r.measured == pytest.approx(0, abs=1e-9), (r.status, r.measured)
    assert not null.check(r)          # the control's test fails: the null's interval has no width


def test_not_frames_leaving_out_frames_that_never_commit_is_caught_by_the_stray_frame_null(monkeypatch):
    """A row's spread read over the frames that committed only (version 2 left such rows out altogether): a
    frame that never shows the final answer stops counting against the claim, and the stray-frame null, whose
    committed frames commit together but half of whose rows have a frame that never commits, then holds."""
    import cos.claims.not_frames as mod

    claim, null = control("cos.not_frames", "stray-frame")
    r = null.run(claim)
    assert r.status in null.expect and null.check(r), (r.status, r.measured, r.details.get("censored_rows"))
    monkeypatch.setattr(mod, "spread_of", lambda commits, n: (max(c for c in commits.values() if c < n) -
                                                              min(commits.values())) / n)
    r = null.run(claim)
    assert r.status == "holds", (r.status, r.measured, r.ci_low, r.ci_high)


# ---------------------------------------------------------------- cos.superposition
def _superposition_null_holds_when(monkeypatch, name: str, attr: str, broken) -> None:
    """The committed-but-blurred noisy null as written (its raw drop holds by the readout's bias alone, the
    difference to its null does not), then with `attr` of the claim's module replaced by `broken`: the difference
    holds (the row itself may stay undecided on the live-candidates condition) and the control's check fails."""
    import cos.claims.superposition as mod

    claim, null = control("cos.superposition", name)
    r = null.run(claim)
    assert r.status in null.expect and null.check(r), (r.status, r.measured, r.details.get("raw_drop"))
    monkeypatch.setattr(mod, attr, broken)
    r = null.run(claim)
    assert r.ci_low > claim.spec.threshold, (r.status, r.measured, r.ci_low, r.ci_high)
    assert not null.check(r)


def test_superposition_with_its_null_set_to_zero_is_caught_by_the_blurred_null(monkeypatch):
    """The null's drop set to 0 (its x̂0 the final at every step): the claim decides on the raw drop again, and a
    model committed from step 0 whose early x̂0 is only faded holds."""
    _superposition_null_holds_when(monkeypatch, "committed-blurred", "committed_blur",
                                   lambda inst, cells, final: final.expand_as(cells).clone())


def test_superposition_null_built_from_another_rows_final_is_caught_by_the_blurred_null(monkeypatch):
    """The null built from the final x̂0 of another row (the previous row of the batch of the same shape, another
    instance or seed): it no longer explains the row's x̂0, its early entropy is the misfit's, and the blurred
    null holds."""
    def other(rows, row):
        prev = next((r for r in rows[row - 1::-1] + rows[:row:-1] if r.shape == rows[row].shape and r is not rows[row]),
                    rows[row])
        return prev[-1]
    _superposition_null_holds_when(monkeypatch, "committed-blurred", "final_of", other)


def test_superposition_null_fitted_on_the_noisy_final_is_caught_by_the_blurred_null(monkeypatch):
    """The final x̂0 not projected onto span{candidates, static, 𝟙} before the fit: its noise dilutes a_s, the late
    null is shrunk towards the still frame, its drop is too small, and the blurred null reads above it."""
    _superposition_null_holds_when(monkeypatch, "committed-blurred", "span_basis",
                                   lambda inst: torch.eye(inst.candidates[0].numel(), dtype=torch.float64))


# ---------------------------------------------------------------- perception.before_action
def test_perception_with_its_null_set_to_zero_is_caught_by_the_blurred_null(monkeypatch):
    """The null's statistic set to 0: the claim decides on the raw half-rise difference again, in which the
    scale-free grounding share runs ahead of the motion amplitude for any x̂0 that fades in, and the committed,
    faded, noisy null (no grounding before motion) holds."""
    import cos.claims.perception as mod

    claim, null = control("perception.before_action", "committed-blurred")
    r = null.run(claim)
    assert r.status in null.expect and null.check(r), (r.status, r.measured, r.details.get("raw"))
    monkeypatch.setattr(mod, "null_statistic", lambda g, m: 0.0 if mod.statistic(g, m) is not None else None)
    r = null.run(claim)
    assert r.ci_low > claim.spec.threshold and not null.check(r), (r.status, r.measured, r.ci_low, r.ci_high)

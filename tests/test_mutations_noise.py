"""Breakages of the noise claims' measurements that no control caught before version 3 (issue: specific claims).

Each test breaks one part of the measurement by monkeypatching and runs a planted control that must then change
outcome. That the control holds as written is asserted by its own test (claims/test_controls.py); here only the
broken run is made (each run is tens of seconds on 2 CPU cores)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from cos.interventions import NoiseAtFrame, NoiseAtStep
from cos.registry import get_claim


def control(claim_id: str, name: str):
    claim = get_claim(claim_id)
    return claim, next(c for c in claim.controls() if c.name == name)


@dataclass
class NoOpFrame(NoiseAtFrame):
    """Frame noise scheduled but not applied, in either reading."""

    def before_forward(self, ctx, latents):
        return latents

    def model_input(self, ctx, latents):
        return latents


def test_frame_noise_made_a_no_op_is_caught_by_the_applied_check(monkeypatch):
    """A no-op frame noise makes frame drops 0, so "step hurts more than frame" would hold more easily: the check
    that the frame noise was applied (the recorded x̂0 at the noised frame changed) must make the row `error`."""
    import cos.readouts

    monkeypatch.setitem(cos.readouts.FRAME_READINGS, "frame", lambda f: NoOpFrame(f))
    claim, ctl = control("noise.step_vs_frame", "decides-at-step-0")
    r = ctl.run(claim)
    assert r.status == "error" and r.reason.startswith("frame noise was not applied"), (r.status, r.reason)


def test_late_injections_let_decide_make_the_recovering_null_hold(monkeypatch):
    """Version 2 averaged the step drop over every injection step: a model that recovers from early step noise and
    collapses under late literal noise (which any model does) then holds. Every step counted early must make the
    recovering null hold, so the early stratum is what keeps it from holding."""
    import cos.claims.step_vs_frame as mod

    monkeypatch.setattr(mod, "EARLY", 1.01)
    claim, ctl = control("noise.step_vs_frame", "recovers-early")
    r = ctl.run(claim)
    assert r.status == "holds", (r.status, r.measured, r.ci_low, r.reason)


def test_restart_of_the_solver_history_removed_breaks_the_unipc_control(monkeypatch):
    """Without the restart UniPC's corrector rebuilds x_s from the clean prefix: the injected noise barely
    enters, the planted commitment survives step noise, and the UniPC-sampled positive must not hold."""
    import cos.sampler

    monkeypatch.setattr(cos.sampler, "restart_history", lambda scheduler: None)
    claim, ctl = control("noise.step_vs_frame", "decides-at-step-0-unipc")
    r = ctl.run(claim)
    assert r.status != "holds", (r.status, r.measured, r.details["readings"])


@dataclass
class ReseedInstead(NoiseAtStep):
    """The injection at step s replaced by a reseed (x_0 redrawn, with the reseed's own noise)."""

    @property
    def first_step(self) -> int:  # type: ignore[override]
        return 0

    def before_forward(self, ctx, latents):
        return NoiseAtStep(0).before_forward(ctx, latents)


def test_information_flow_with_the_injection_replaced_by_a_reseed_does_not_hold(monkeypatch):
    """Version 2 held on its positive with the injection replaced by a reseed (it decided on the raw 1 − CKA):
    decided against the reseed, the difference is exactly 0."""
    import cos.readouts

    monkeypatch.setitem(cos.readouts.STEP_READINGS, "step", ReseedInstead)
    claim, ctl = control("noise.information_flow", "decides-at-step-0")
    r = ctl.run(claim)
    assert r.status != "holds" and r.measured == pytest.approx(0, abs=1e-6), (r.status, r.measured)


@dataclass
class NoReseed(NoiseAtStep):
    """The reseed branch left as the clean run (NoiseAtStep(0) scheduled but not applied)."""

    def before_forward(self, ctx, latents):
        return latents


def test_information_flow_with_the_reseed_left_clean_makes_the_seed_null_hold(monkeypatch):
    """Decided against a reseed that is really the clean run, the claim falls back to version 2's raw 1 − CKA:
    the null whose answer is drawn by its seed must then hold (the reseed is what keeps it from holding)."""
    import cos.readouts

    monkeypatch.setattr(cos.readouts, "NoiseAtStep", NoReseed)     # only the reseed branch: STEP_READINGS holds its own
    claim, ctl = control("noise.information_flow", "answer-set-by-seed")
    r = ctl.run(claim)
    assert r.status == "holds", (r.status, r.measured, r.ci_low, r.ci_high)


def test_renoise_keeps_x0_and_replaces_only_the_noise():
    """RenoiseAtStep writes (1 − σ_s)·x̂0_{s−1} + σ_s·ε into the state, ε the sample's own (seed, step) noise:
    checked against the clean run's previous x̂0, σ of the step and the noise drawn again here."""
    import torch

    from cos.context import StepContext
    from cos.controls import TINY, ref
    from cos.interventions import RenoiseAtStep
    from cos.runner import RunContext

    ctx = RunContext(progress=False)
    batch = next(iter(ctx.batches(TINY)))
    runs = ctx.sweep(ref(), TINY, batch, {"re": [RenoiseAtStep(2)], "lit": [NoiseAtStep(2)]}, record=("x0", "latents"))
    x0_prev, sigma = runs["clean"]["x0"][1], runs["clean"].sigmas[2]
    state = runs["re"]["latents"][2]
    eps = StepContext(2, TINY.steps, torch.tensor(0.0), sigma, 0, list(batch.seeds)).sample_noise(
        ("renoise_at_step", 2), tuple(state.shape[1:]), "cpu")
    torch.testing.assert_close(state, (1 - sigma) * x0_prev + sigma * eps, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(runs["lit"]["latents"][2], state, atol=1e-3)     # the literal reading differs
    assert not torch.allclose(runs["clean"]["latents"][2], state, atol=1e-3)   # and the injection did something
    with pytest.raises(ValueError, match="step >= 1"):
        RenoiseAtStep(0)

"""Breakages of the layer claims' step-0 readings that a control must catch (issue 23, item 5).

`layers.swap_flip` and `ensemble.mid_layers` decide on a step-0 intervention and first check, on the model under
test, that the same intervention at its maximum (the leverage ceiling) can move the outcome at all. Each test
runs a control as written (it passes) and with one part of the measurement broken by monkeypatching (the
control must then no longer pass): (a) the intervention applied at every step instead of step 0; (b) the
leverage check made a no-op. The control that catches both is `decides-after-step-0`, a planted DiT whose blocks
write the answer at every step but the first: no step-0 intervention can move it (its row must say "no
leverage" and measure exactly 0), the same intervention at every step can."""
from __future__ import annotations

import functools

import pytest

from cos.registry import get_claim

CLAIMS = ("layers.swap_flip", "ensemble.mid_layers")


def control(claim_id: str, name: str):
    claim = get_claim(claim_id)
    return claim, next(c for c in claim.controls() if c.name == name)


def passes(ctl, r) -> bool:
    return r.status in ctl.expect and (ctl.check is None or bool(ctl.check(r)))


@functools.cache
def as_written(claim_id: str, name: str):
    """The control's row with the measurement as written (computed once per session: every test's first half)."""
    claim, ctl = control(claim_id, name)
    return ctl.run(claim)


def assert_caught(monkeypatch, claim_id: str, name: str, *patches):
    """The control passes as written and fails once `patches` ((object, attribute, replacement) each) are applied."""
    claim, ctl = control(claim_id, name)
    r = as_written(claim_id, name)
    assert passes(ctl, r), ("the control must pass as written", r.status, r.measured, r.reason)
    for obj, attr, new in patches:
        monkeypatch.setattr(obj, attr, new)
    broken = ctl.run(claim)
    assert not passes(ctl, broken), ("the breakage went unseen", broken.status, broken.measured, broken.reason)
    return broken


# ---------------------------------------------------------------- (a) every step instead of step 0
def test_swap_applied_at_every_step_instead_of_step0_is_caught(monkeypatch):
    """Each swap acts at every step its source holds (the alternative's updates are captured along its whole run
    for the every-step reading, so this breakage is silent: no missing capture, no error). The ceiling's source
    holds step 0 only, so the leverage check still says "no leverage", but the step-0 reading is no longer 0."""
    import cos.claims.swap_flip as mod
    from cos.interventions import CaptureBlocks, SwapBlock

    class EveryStepSwap(SwapBlock):
        def __post_init__(self):
            if isinstance(self.source, CaptureBlocks):
                self.steps = sorted({s for s, _, _ in self.source.store})
            super().__post_init__()

    r = assert_caught(monkeypatch, "layers.swap_flip", "decides-after-step-0", (mod, "SwapBlock", EveryStepSwap))
    assert r.measured > 0, (r.measured, r.details["flip_rate_per_block"])


@pytest.mark.parametrize("which", ["windows", "windows-and-ceiling"])
def test_ensemble_applied_at_every_step_instead_of_step0_is_caught(monkeypatch, which):
    """The step-0 windows' update averaging acts at every step ("windows"; the ceiling stays at step 0 and says "no
    leverage", the step-0 gain is no longer 0), or every averaging does, the ceiling included (leverage is then
    shown and the row decides on a window that acts where the model decides)."""
    import cos.claims.ensemble as mod
    from cos.interventions import EnsembleAverage

    class EveryStepAverage(EnsembleAverage):
        def __post_init__(self):
            if which == "windows-and-ceiling" or self.what == "update":
                self.steps = range(10_000)
            super().__post_init__()

    r = assert_caught(monkeypatch, "ensemble.mid_layers", "decides-after-step-0",
                      (mod, "EnsembleAverage", EveryStepAverage))
    assert r.measured != 0 or r.status != "inconclusive", (r.status, r.measured, r.reason)


# ---------------------------------------------------------------- (b) the leverage check made a no-op
@pytest.mark.parametrize("claim_id", CLAIMS)
@pytest.mark.parametrize("how", ["gate", "ceiling-always-shown"])
def test_the_leverage_check_made_a_noop_is_caught(monkeypatch, claim_id, how):
    """The gate returns the row as decided ("gate"), or the ceiling is measured but always read as leverage
    ("ceiling-always-shown"): the model that step 0 cannot move is no longer reported as "no leverage"."""
    import importlib

    mod = importlib.import_module({"layers.swap_flip": "cos.claims.swap_flip",
                                   "ensemble.mid_layers": "cos.claims.ensemble"}[claim_id])
    real = mod.leverage
    patch = ((mod, "gate_on_leverage", lambda res, lev, note="": res) if how == "gate" else
             (mod, "leverage", lambda *a, **k: {**real(*a, **k), "shown": True}))
    r = assert_caught(monkeypatch, claim_id, "decides-after-step-0", patch)
    assert not r.reason.startswith("no leverage"), r.reason


def test_the_ensemble_gate_is_what_keeps_identical_seeds_from_failing(monkeypatch):
    """Three identical seeds: without the leverage gate the row would say `fails` (a gain of ~1e-9, its interval
    below the 0.005 threshold) on a model the ensemble cannot move at all."""
    import cos.claims.ensemble as mod

    r = assert_caught(monkeypatch, "ensemble.mid_layers", "identical-seeds",
                      (mod, "gate_on_leverage", lambda res, lev, note="": res))
    assert r.status == "fails", (r.status, r.measured, r.reason)


# ---------------------------------------------------------------- the ceiling made inert
@pytest.mark.parametrize("claim_id,positive", [("layers.swap_flip", "answer-at-middle"),
                                               ("ensemble.mid_layers", "seed-noise-at-mid")])
def test_an_inert_ceiling_is_caught_by_the_positive(monkeypatch, claim_id, positive):
    """The ceiling run without its intervention (leverage never shown): every row would read "no leverage"; the
    planted positive, whose ceiling moves every instance, must then not pass."""
    import cos.claims.ensemble as ens
    import cos.claims.swap_flip as swap
    from cos.interventions import EnsembleAverage, SwapBlock

    if claim_id == "layers.swap_flip":
        class InertOutputSwap(SwapBlock):
            def on_block(self, ctx, block, hidden):
                return None if self.what == "output" else super().on_block(ctx, block, hidden)
        patch = (swap, "SwapBlock", InertOutputSwap)
    else:
        class InertOutputAverage(EnsembleAverage):
            def on_block(self, ctx, block, hidden):
                return None if self.what == "output" else super().on_block(ctx, block, hidden)
        patch = (ens, "EnsembleAverage", InertOutputAverage)
    r = assert_caught(monkeypatch, claim_id, positive, patch)
    assert r.reason.startswith("no leverage"), r.reason

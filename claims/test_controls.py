"""Negative controls (and the matching positive checks) of the claims, on closed-form reference denoisers.

A claim whose control does not come out `fails`/`inconclusive` is a bug in the claim. These run in the
default test tier: the reference denoisers need no weights.
"""
from dataclasses import replace

import pytest

from claims.test_chain_of_steps import measure_not_frames, measure_superposition
from claims.test_noise import measure_step_vs_frame
from cos.claimkit import ClaimSettings
from cos.models.reference import reference_system

SMALL = ClaimSettings(tasks=("maze", "pattern", "rotation", "tictactoe"), instances=3, seeds=(0, 1), steps=10,
                      num_frames=9, noise_step_fractions=(0.0, 0.5), noise_frames=(1, 8))


def ref(per_frame=False, prior="uniform"):
    s = reference_system(per_frame=per_frame)
    s.extra["prior"] = prior
    return s


def test_superposition_holds_for_the_reference_and_fails_for_a_committed_oracle():
    assert measure_superposition(ref(), SMALL).status == "holds"
    control = measure_superposition(ref(prior="oracle"), SMALL)
    assert control.status == "fails" and control.measured == pytest.approx(0.0, abs=1e-6)


def test_not_frames_holds_for_the_global_reference_and_not_for_the_per_frame_one():
    settings = replace(SMALL, seeds=(0, 1, 2, 3))
    assert measure_not_frames(ref(), settings).status == "holds"
    control = measure_not_frames(ref(per_frame=True), settings)
    assert control.status in ("fails", "inconclusive"), control


def test_step_vs_frame_fails_for_an_oracle_that_ignores_its_input():
    control = measure_step_vs_frame(ref(prior="oracle"), SMALL)
    assert control.status in ("fails", "inconclusive") and control.measured == pytest.approx(0.0, abs=1e-6)

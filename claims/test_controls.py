"""Negative controls (and the matching positive checks) of the claims, on closed-form reference denoisers.

A claim whose control does not come out `fails`/`inconclusive` is a bug in the claim. These run in the
default test tier: the reference denoisers need no weights.
"""
from dataclasses import replace

import pytest
import torch

from claims.test_chain_of_steps import measure_not_frames, measure_superposition
from claims.test_ensemble import measure_ensemble
from claims.test_layers import measure_energy_profile
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


def random_organism(seed=0, num_layers=12):
    """An untrained model of the organism's architecture (random weights, random prompt table)."""
    import json

    from diffusers import WanTransformer3DModel

    from cos.models.prompt import TokenPromptEncoder
    from cos.models.system import IdentityVAE, WanSystem
    from cos.models.tiny import unipc

    cfg = json.loads(open("fixtures/organism_train.json").read())["model"]
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**cfg, "num_layers": num_layers}).eval()
    enc = TokenPromptEncoder(["mark", "the", "object"], cfg["text_dim"])
    return WanSystem(transformer=model, scheduler=unipc(), vae=IdentityVAE(3), name="random-organism",
                     encode_prompt=lambda p: enc(p).detach())


TINY = ClaimSettings(tasks=("grounding", "pattern"), instances=2, seeds=(0,), steps=3, num_frames=5)


def test_ensemble_with_identical_seeds_is_a_no_op_and_fails():
    control = measure_ensemble(random_organism(num_layers=4), TINY, seeds=(7, 7, 7))
    assert control.status == "fails" and control.measured == pytest.approx(0.0, abs=1e-6)


def test_energy_profile_with_shuffled_masks_does_not_hold():
    system = random_organism(num_layers=8)
    control = measure_energy_profile(system, replace(TINY, instances=4), shuffle_masks=True)
    assert control.status in ("fails", "inconclusive"), control

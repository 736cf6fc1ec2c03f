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


# ---------------------------------------------------------------- the claims of the second batch
from claims.test_behaviours import ANCHOR_TASKS, measure_memory, measure_perception, measure_selfcorrection  # noqa: E402
from claims.test_bench import measure_bench  # noqa: E402
from claims.test_distill import measure_four_step  # noqa: E402
from claims.test_frames import measure_frames  # noqa: E402
from claims.test_layers import measure_swap_flip  # noqa: E402
from claims.test_noise import measure_information_flow  # noqa: E402


def test_information_flow_fails_for_an_oracle_and_holds_for_the_reference():
    control = measure_information_flow(ref(prior="oracle"), SMALL)
    assert control.status == "fails" and control.measured == pytest.approx(0.0, abs=1e-6)
    assert measure_information_flow(ref(), SMALL).status == "holds"


def test_memory_holds_for_the_oracle_and_fails_for_an_untrained_model():
    s = replace(SMALL, tasks=ANCHOR_TASKS)
    assert measure_memory(ref(prior="oracle"), s).status == "holds"
    control = measure_memory(random_organism(num_layers=2), replace(TINY, tasks=ANCHOR_TASKS, instances=3))
    assert control.status == "fails", control


def test_selfcorrection_fails_for_a_committed_oracle():
    control = measure_selfcorrection(ref(prior="oracle"), SMALL)
    assert control.status == "fails" and control.measured == 0.0


def test_perception_before_action_does_not_hold_for_the_reference():
    # the reference's grounding and motion are one posterior weight: they rise together, never in order
    control = measure_perception(ref(), replace(SMALL, tasks=("object_to_target", "maze", "return_to_origin")))
    assert control.status in ("fails", "inconclusive", "skipped"), control


def test_swap_flip_with_an_identity_swap_cannot_flip():
    control = measure_swap_flip(random_organism(num_layers=8), replace(TINY, swap_instances=3), identity=True)
    assert control.status == "fails" and control.measured == 0.0


def test_frames_count_fails_for_the_reference_which_is_exact_at_every_length():
    control = measure_frames(ref(), replace(SMALL, instances=2, frame_counts=(5, 9), single_frame=2))
    assert control.status in ("fails", "inconclusive"), control


def test_four_step_fails_when_the_fast_model_is_as_good_as_the_full_one():
    control = measure_four_step(ref(), ref(), replace(SMALL, instances=2))
    assert control.status in ("fails", "inconclusive"), control


def test_bench_fails_for_an_untrained_model():
    control = measure_bench(random_organism(num_layers=2), replace(TINY, instances=3))
    assert control.status in ("fails", "inconclusive") and control.measured < 0.05, control

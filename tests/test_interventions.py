"""Each intervention changes exactly what it should, nothing else, and is gone after its context."""
import pytest
import torch

from cos.errors import NonFiniteTrajectoryError
from cos.interventions import CaptureBlocks, EnsembleAverage, Intervention, NoiseAtFrame, NoiseAtStep, SwapBlock
from cos.models import tiny_system
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning

STEPS = 5


@pytest.fixture(scope="module")
def system():
    return tiny_system(two_experts=True, num_layers=3)


@pytest.fixture(scope="module")
def cond():
    return tiny_conditioning(num_frames=9)


def run(system, cond, seeds=(0, 1), **kw):
    kw.setdefault("guidance_scale", 4.0)
    return Sampler(system).sample(cond, list(seeds), STEPS, record=("latents", "x0"), **kw)


def no_hooks(system):
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    return all(type(b) is WanTransformerBlock and not b._forward_hooks for e in system.experts for b in e.blocks) \
        and all(not e.patch_embedding._forward_hooks for e in system.experts)


def test_noise_at_step_replaces_all_frames_at_that_step_only(system, cond):
    clean = run(system, cond)
    pert = run(system, cond, interventions=[NoiseAtStep(2)])
    assert torch.equal(pert["latents"][:2], clean["latents"][:2])          # before: untouched
    x2 = pert["latents"][2]
    assert not torch.allclose(x2, clean["latents"][2])
    assert abs(x2.mean()) < 0.2 and abs(x2.std() - 1) < 0.2                  # fresh N(0, I)
    assert not torch.allclose(pert.latents, clean.latents)
    assert torch.equal(run(system, cond, interventions=[NoiseAtStep(2)]).latents, pert.latents)  # seeded
    assert no_hooks(system)


def test_noise_at_frame_touches_one_frame_of_the_model_input_at_each_step(system, cond):
    clean = run(system, cond)
    pert = Sampler(system).sample(cond, [0, 1], STEPS, guidance_scale=4.0, record=("latents", "model_input"),
                                  interventions=[NoiseAtFrame(1)])
    assert torch.equal(pert["latents"][0], clean["latents"][0])                  # the state is not written
    d = (pert["model_input"][0] - clean["latents"][0]).abs().amax(dim=(0, 1, 3, 4))  # per latent frame, step 0
    assert d[1] > 0 and d[0] == 0 and d[2] == 0
    assert not torch.equal(pert["model_input"][3][:, :, 1], pert["model_input"][2][:, :, 1])  # fresh noise per step
    with pytest.raises(ValueError, match="frames"):
        run(system, cond, interventions=[NoiseAtFrame(17)])


def test_capture_is_pure_observation_with_grid_shape(system, cond):
    clean = run(system, cond)
    cap = CaptureBlocks(blocks="all", steps=[0, 3])
    en = CaptureBlocks(blocks=[1], reduce="energy", cfg_pass="both")
    out = run(system, cond, interventions=[cap, en])
    assert torch.equal(out.latents, clean.latents)
    f, h, w = 3, 2, 2  # 9 frames → 3 latent frames; 32 px / 8 (VAE) / 2 (patch)
    x = cap[0, 1]
    assert x.shape == (2, f, h, w, 24) and x.device.type == "cpu"
    assert {k[0] for k in cap.captured()} == {0, 3}
    assert en.get(0, 1, "cond").shape == (2, f, h, w)
    assert torch.allclose(en.get(0, 1, "cond"), x.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(en.get(0, 1, "cond"), en.get(0, 1, "uncond"))
    assert no_hooks(system)


def test_swap_with_own_update_is_identity_and_with_other_update_changes(system, cond):
    cap = CaptureBlocks(blocks=[1], steps=[0], what="update")
    base = run(system, cond, interventions=[cap])
    same = run(system, cond, interventions=[SwapBlock(1, cap[0, 1])])
    assert torch.equal(same.latents, base.latents)
    other_cap = CaptureBlocks(blocks=[1], steps=[0], what="update")
    run(system, tiny_conditioning(seed=5), interventions=[other_cap])
    swapped = run(system, cond, interventions=[SwapBlock(1, other_cap[0, 1])])
    assert torch.equal(swapped["latents"][0], base["latents"][0])       # x_0 input unchanged
    assert not torch.allclose(swapped["x0"][0], base["x0"][0])          # the step-0 prediction changed
    with pytest.raises(ValueError, match="does not fit"):
        run(system, cond, interventions=[SwapBlock(1, torch.zeros(1, 5, 24))])
    assert no_hooks(system)


def test_ensemble_averages_updates_and_output_mode_makes_rows_equal(system, cond):
    cap = CaptureBlocks(blocks=[2], steps=[0])
    ens = EnsembleAverage(blocks=[1, 2], steps=[0], groups=[0, 0, 1, 1], what="output")
    run(system, cond, seeds=(0, 1, 2, 3), interventions=[ens, cap])
    x = cap[0, 2]
    assert torch.allclose(x[0], x[1]) and torch.allclose(x[2], x[3]) and not torch.allclose(x[0], x[2])
    cap2 = CaptureBlocks(blocks=[2], steps=[0])
    run(system, cond, seeds=(0, 1, 2, 3), interventions=[cap2, EnsembleAverage(blocks=[1, 2], steps=[0])])
    assert not torch.allclose(cap2[0, 2][0], cap2[0, 2][1])   # averaging updates: each seed keeps its own stream
    same = run(system, cond, seeds=(5, 5))
    same_ens = run(system, cond, seeds=(5, 5), interventions=[EnsembleAverage(blocks="all", steps=[0])])
    assert torch.allclose(same.latents, same_ens.latents, atol=1e-6)  # identical seeds: averaging is a no-op
    assert no_hooks(system)


def test_batched_cfg_hooks_see_both_passes(system, cond):
    a, b = CaptureBlocks(blocks=[0], cfg_pass="both"), CaptureBlocks(blocks=[0], cfg_pass="both")
    Sampler(system).sample(cond, [0], 3, guidance_scale=4.0, interventions=[a])
    Sampler(system, batch_cfg=True).sample(cond, [0], 3, guidance_scale=4.0, interventions=[b])
    for key in a.captured():
        assert torch.allclose(a.store[key], b.store[key], atol=1e-5), key


def test_hooks_removed_after_an_exception(system, cond):
    class Boom(Intervention):
        def hooked_blocks(self, n):
            return [0]

        def on_block(self, ctx, block, hidden):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        run(system, cond, interventions=[Boom()])
    assert no_hooks(system)


def test_nan_is_reported_with_its_step(system, cond):
    class NaNAt(Intervention):
        def hooked_blocks(self, n):
            return [0]

        def on_block(self, ctx, block, hidden):
            if ctx.step == 3 and "cond" in ctx.passes:
                h = hidden.clone()
                h[1] = float("nan")
                return h
    with pytest.raises(NonFiniteTrajectoryError, match="step 3, samples \\[1\\]"):
        run(system, cond, interventions=[NaNAt()])


def test_prefix_sweep_equals_independent_runs_with_fewer_forwards(system, cond):
    sampler = Sampler(system)
    branches = {f"step{s}": [NoiseAtStep(s)] for s in (1, 3)}
    branches["frame0"] = [NoiseAtFrame(0)]
    res = sampler.sweep(cond, [0, 1], STEPS, branches, guidance_scale=4.0, record=("x0",))
    naive = 0
    for name, ivs in list(branches.items()) + [("clean", [])]:
        ref = run(system, cond, interventions=ivs)
        naive += 2 * STEPS
        assert torch.equal(res[name].latents, ref.latents), name
        assert torch.equal(res[name]["x0"], ref["x0"]), name
        assert res[name].steps == list(range(STEPS))
    used = sum(r.forwards for r in res.values())
    assert sampler.forward_count < naive
    assert sampler.forward_count == 2 * (STEPS + (STEPS - 1) + (STEPS - 3) + STEPS)

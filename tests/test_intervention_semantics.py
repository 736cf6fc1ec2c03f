"""What each intervention means (issue 13): noise at step restarts the solver, noise at frame stays out of the
trajectory state, a layer swap depends on its block, ensemble windows differ.

Each "differs" test here fails on the implementation before issue 13 (numbers in the commit message): UniPC
kept the prefix after "x_s ← N(0, I)", a whole-output swap gave the same x̂0 at every block, and averaging
outputs collapsed every window to its first block.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import DEISMultistepScheduler, DPMSolverMultistepScheduler

from cos.context import mix_seed
from cos.errors import InputError
from cos.interventions import CaptureBlocks, EnsembleAverage, NoiseAtFrame, NoiseAtStep, SwapBlock
from cos.models import tiny_system
from cos.sampler import Conditioning, Sampler, restart_history
from tests.helpers import tiny_conditioning

STEPS = 5
GS = 4.0


def dpm():
    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


@pytest.fixture(scope="module", params=["unipc", "euler", "dpm"])
def noise_system(request):
    if request.param == "dpm":
        return dataclasses.replace(tiny_system(num_layers=2), scheduler=dpm())
    return tiny_system(num_layers=2, scheduler=request.param)


@pytest.fixture(scope="module")
def cond():
    return tiny_conditioning(num_frames=9)


def sample(system, cond, seeds=(0, 1), **kw):
    return Sampler(system).sample(cond, list(seeds), STEPS, guidance_scale=GS, **kw)


def step0(system, cond, ivs=(), seeds=(0, 1), record=("x0", "velocity")):
    """Only step 0 (all the swap and ensemble tests need)."""
    s = Sampler(system)
    return s.run(s.prepare(cond, list(seeds), STEPS), interventions=ivs, guidance_scale=GS, record=record, until=1)


def sigmas(system):
    sched = system.scheduler.__class__.from_config(system.scheduler.config)
    sched.set_timesteps(STEPS)
    return sched.sigmas


# ------------------------------------------------------------------ noise at step
def test_noise_at_step_erases_the_prefix(noise_system, cond):
    # Old sampler, UniPC: the two runs ended 9.3e-2 apart (the corrector rebuilt x_3 from the prefix).
    a = sample(noise_system, cond, interventions=[NoiseAtStep(1), NoiseAtStep(3)])
    b = sample(noise_system, cond, interventions=[NoiseAtStep(3)])
    assert torch.equal(a.latents, b.latents)
    assert not torch.allclose(b.latents, sample(noise_system, cond).latents)


def test_state_after_noise_at_step_is_a_first_order_step_from_the_injected_x(noise_system, cond):
    # Old sampler, UniPC: 1.76 away from the first-order step from the injected x_3.
    b = sample(noise_system, cond, interventions=[NoiseAtStep(3)], record=("latents", "velocity"))
    sig = sigmas(noise_system)
    manual = b["latents"][3] + (sig[4] - sig[3]) * b["velocity"][3]     # flow Euler = UniPC/DPM order 1 = DDIM
    assert torch.allclose(b["latents"][4], manual, atol=1e-5)
    z = torch.stack([torch.randn(b.latents.shape[1:], generator=torch.Generator().manual_seed(
        mix_seed(s, "noise_at_step", 3))) for s in (0, 1)])
    assert torch.equal(b["latents"][3], z)                               # x_3 is the noise itself


def test_restart_history_knows_its_schedulers():
    for sched in (tiny_system(num_layers=1).scheduler, dpm()):
        sched = sched.__class__.from_config(sched.config)
        sched.set_timesteps(STEPS)
        x = torch.randn(1, 4, 2, 2)
        for i in range(2):
            x = sched.step(torch.randn_like(x), sched.timesteps[i], x, return_dict=False)[0]
        old = list(sched.model_outputs)
        restart_history(sched)
        assert all(m is None for m in sched.model_outputs) and sched.lower_order_nums == 0
        assert old[-1] is not None                                     # new lists: copies keep their history
        assert getattr(sched, "last_sample", None) is None
    with pytest.raises(InputError, match="cannot restart"):
        restart_history(DEISMultistepScheduler())


def test_forks_keep_their_own_scheduler_history(cond):
    system = tiny_system(num_layers=2)
    branches = {"a": [NoiseAtStep(1), NoiseAtStep(3)], "b": [NoiseAtStep(3)], "c": [NoiseAtStep(2)]}
    res = Sampler(system).sweep(cond, [0, 1], STEPS, branches, guidance_scale=GS)
    assert torch.equal(res["a"].latents, res["b"].latents)
    for name, ivs in [*branches.items(), ("clean", [])]:
        assert torch.equal(res[name].latents, sample(system, cond, interventions=ivs).latents), name


# ------------------------------------------------------------------ noise at frame
@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_noise_at_frame_corrupts_the_models_view_not_the_state(scheduler, cond):
    system = tiny_system(num_layers=2, scheduler=scheduler)
    clean = sample(system, cond, record=("latents",))
    pert = sample(system, cond, interventions=[NoiseAtFrame(1)], record=("latents", "model_input", "velocity"))
    assert torch.equal(pert["latents"][0], clean["latents"][0])            # the state is not written
    d = (pert["model_input"][0] - pert["latents"][0]).abs().amax(dim=(0, 1, 3, 4))
    assert d[1] > 0 and d[0] == 0 and d[2] == 0                             # the model saw frame 1 replaced
    assert not torch.equal(pert["model_input"][3][:, :, 1], pert["model_input"][2][:, :, 1])  # fresh each step
    # the scheduler stepped the un-noised state with an uninterrupted history: replaying the recorded
    # velocities from x_0 through a fresh scheduler reproduces the run
    sched = system.scheduler.__class__.from_config(system.scheduler.config)
    sched.set_timesteps(STEPS)
    x = pert["latents"][0]
    for i in range(STEPS):
        x = sched.step(pert["velocity"][i], sched.timesteps[i], x, return_dict=False)[0]
    assert torch.equal(x, pert.latents)
    assert not torch.allclose(pert.latents, clean.latents)


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
@pytest.mark.parametrize("frame", [1, 2])
def test_noise_at_frame_is_not_written_into_the_video(scheduler, frame, cond):
    # Old sampler: the returned latent frame correlated 0.95 (UniPC) / 1.00 (Euler) with the last step's noise.
    system = tiny_system(num_layers=2, scheduler=scheduler)
    out = sample(system, cond, interventions=[NoiseAtFrame(frame)]).latents
    shape = (out.shape[1],) + tuple(out.shape[3:])
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(
        mix_seed(s, "noise_at_frame", frame, STEPS - 1))) for s in (0, 1)])
    corr = torch.corrcoef(torch.stack([out[:, :, frame].flatten(), z.flatten()]))[0, 1]
    assert abs(corr) < 0.3, corr


# ------------------------------------------------------------------ layer swap
@pytest.fixture(scope="module")
def system4():
    return tiny_system(num_layers=4)


@pytest.fixture(scope="module")
def alt(cond):
    """The alternative configuration: another first frame, the same prompt (as in the paper's pair task)."""
    return Conditioning(tiny_conditioning(seed=5).image, cond.prompt_embeds, cond.num_frames,
                        cond.negative_prompt_embeds)


def test_swap_depends_on_the_block(system4, cond, alt):
    # Old SwapBlock (whole output): |x̂0(swap@1) − x̂0(swap@3)| = 0 exactly.
    cap = CaptureBlocks(blocks=[1, 3], steps=[0], what="update")
    step0(system4, alt, [cap])
    base = step0(system4, cond)["x0"][0]
    x1 = step0(system4, cond, [SwapBlock(1, cap[0, 1], steps=[0])])["x0"][0]
    x3 = step0(system4, cond, [SwapBlock(3, cap, steps=[0])])["x0"][0]     # a capture works as source too
    assert (x1 - x3).abs().max() > 1e-2
    assert (x1 - base).abs().max() > 1e-2 and (x3 - base).abs().max() > 1e-2


def test_swapping_the_runs_own_update_is_a_no_op(system4, cond):
    cap = CaptureBlocks(blocks=[2], steps=[0], what="update", cfg_pass="both")
    base = sample(system4, cond, interventions=[cap])
    same = sample(system4, cond, interventions=[SwapBlock(2, cap, steps=[0], cfg_pass="both")])
    assert torch.equal(same.latents, base.latents)


def test_swap_token_mask(system4, cond, alt):
    cap = CaptureBlocks(blocks=[1], steps=[0], what="update")
    step0(system4, alt, [cap])
    base, full = step0(system4, cond)["x0"][0], step0(system4, cond, [SwapBlock(1, cap)])["x0"][0]
    f, h, w = 3, 2, 2
    none = torch.zeros(f, h, w, dtype=torch.bool)
    every = torch.ones(f * h * w, dtype=torch.bool)
    some = none.clone()
    some[1:, 0, 0] = True
    assert torch.equal(step0(system4, cond, [SwapBlock(1, cap, tokens=none)])["x0"][0], base)
    assert torch.equal(step0(system4, cond, [SwapBlock(1, cap, tokens=every)])["x0"][0], full)
    part = step0(system4, cond, [SwapBlock(1, cap, tokens=some.expand(2, f, h, w))])["x0"][0]
    assert not torch.allclose(part, base) and not torch.allclose(part, full)
    with pytest.raises(ValueError, match="token mask"):
        step0(system4, cond, [SwapBlock(1, cap, tokens=torch.ones(5, dtype=torch.bool))])


def test_swap_refuses_an_output_where_it_needs_an_update(system4, cond):
    out_cap = CaptureBlocks(blocks=[1], steps=[0])          # what="output"
    step0(system4, cond, [out_cap])
    with pytest.raises(ValueError, match="what='update'"):
        SwapBlock(1, out_cap)
    with pytest.raises(ValueError, match="captured block output"):
        step0(system4, cond, [SwapBlock(1, out_cap[0, 1])])


def test_whole_output_swap_is_the_alternatives_forward_at_every_block(system4, cond, alt):
    """Why the default swaps updates: swapping whole outputs (both CFG passes) gives the alternative's x̂0."""
    cap = CaptureBlocks(blocks=[0, 2, 3], steps=[0], cfg_pass="both")
    ref = step0(system4, alt, [cap])["x0"][0]
    for k in (0, 2, 3):
        x = step0(system4, cond, [SwapBlock(k, cap, what="output", cfg_pass="both")])["x0"][0]
        assert torch.allclose(x, ref, atol=1e-6), k


# ------------------------------------------------------------------ ensemble
@pytest.fixture(scope="module")
def system12():
    return tiny_system(num_layers=12)


def test_ensemble_windows_differ(system12, cond):
    # Old EnsembleAverage (averaged outputs): windows 0-2 and 0-11 differed by 2.9e-6 (float noise).
    v = {n: step0(system12, cond, [EnsembleAverage(blocks=list(r), steps=[0], groups=[0, 0, 0])],
                  seeds=(0, 1, 2))["velocity"][0] for n, r in {"0-2": range(3), "0-11": range(12)}.items()}
    assert (v["0-2"] - v["0-11"]).abs().max() > 1e-2


def test_ensemble_of_identical_seeds_is_a_no_op(system12, cond):
    same = sample(system12, cond, seeds=(5, 5))
    ens = sample(system12, cond, seeds=(5, 5), interventions=[EnsembleAverage(blocks="all", steps=[0])])
    # rows of one batch can differ in the last bit, so the mean of "identical" seeds moves them by ~1e-7
    assert torch.allclose(same.latents, ens.latents, atol=1e-6)
    three = step0(system12, cond, seeds=(5, 5, 5))["velocity"][0]
    three_ens = step0(system12, cond, [EnsembleAverage(blocks="all", steps=[0])], seeds=(5, 5, 5))["velocity"][0]
    assert torch.allclose(three, three_ens, atol=1e-5)     # (a + a + a) / 3 is a only up to rounding


def test_ensemble_keeps_groups_apart_and_seeds_distinct(system12, cond):
    cap = CaptureBlocks(blocks=[5], steps=[0], what="output")
    ens = EnsembleAverage(blocks=range(2, 6), steps=[0], groups=[0, 0, 1, 1])
    v4 = step0(system12, cond, [ens, cap], seeds=(0, 1, 2, 3))["velocity"][0]
    v2 = step0(system12, cond, [EnsembleAverage(blocks=range(2, 6), steps=[0])], seeds=(2, 3))["velocity"][0]
    assert torch.allclose(v4[2:], v2, atol=1e-5)           # group 1 saw only its own seeds
    x = cap[0, 5]
    assert not torch.allclose(x[0], x[1])                  # each seed keeps its own residual stream


def test_update_patching_sees_the_right_rows_under_batched_cfg(system4, cond, alt):
    """With cond and uncond in one forward, block inputs, updates and group means are taken per pass."""
    def both(batch_cfg, ivs):
        s = Sampler(system4, batch_cfg=batch_cfg)
        return s.run(s.prepare(cond, [0, 1, 2], STEPS), interventions=ivs, guidance_scale=GS, record=("velocity",),
                     until=1)["velocity"][0]
    caps = {b: CaptureBlocks(blocks=[1], steps=[0], what="update", cfg_pass="both") for b in (False, True)}
    for b, cap in caps.items():
        s = Sampler(system4, batch_cfg=b)
        s.run(s.prepare(alt, [0, 1, 2], STEPS), interventions=[cap], guidance_scale=GS, until=1)
    for key in caps[False].captured():
        assert torch.allclose(caps[False].store[key], caps[True].store[key], atol=1e-5), key
    for ivs in ([SwapBlock(1, caps[False], cfg_pass="both")], [EnsembleAverage(blocks=[1, 2], steps=[0])]):
        assert torch.allclose(both(False, ivs), both(True, ivs), atol=1e-5)


def test_noise_at_frame_never_reaches_the_returned_video_of_a_model_that_ignores_its_input():
    # the oracle's x̂0 is fixed; a noised frame in its input at the last step would return x̂0 + (x_s − x'), the
    # noise itself. Spared at the last step, the returned video is exactly the oracle's answer.
    from cos.controls import ref
    from cos.runner import RunContext
    from cos.settings import ClaimSettings

    s = ClaimSettings(tasks=("pattern",), instances=2, seeds=(0,), steps=6, num_frames=9)
    ctx, system = RunContext(progress=False), ref(prior="oracle")
    batch = next(ctx.batches(s))
    clean = ctx.run(system, s, batch).latents
    noised = ctx.run(system, s, batch, interventions=[NoiseAtFrame(4)]).latents
    assert (clean - noised).abs().max() < 1e-5

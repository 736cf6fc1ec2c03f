"""The planted DiTs of the layers/noise/frames controls do what their docstrings say, through the real hooks."""
import pytest
import torch

from cos.claims.energy_profile import RISE_FALL, token_masks
from cos.controls import answer_after_step0, answer_at, foreground_energy, random_organism
from cos.interventions import CaptureBlocks, EnsembleAverage, SwapBlock
from cos.models.planted import CODE, DIM, K_MAX, SCENE, TASK, BlockInputs, CodeBlock
from cos.runner import RunContext, videos
from cos.settings import ClaimSettings
from cos.taskrun import make_batch
from cos.tasks import make_instance

S = ClaimSettings(tasks=("grounding",), instances=6, seeds=(0,), steps=3, num_frames=5)


def grounding_batch(n: int = 6, seeds=(0,)):
    return make_batch([make_instance("grounding", i, 5) for i in range(n)], list(seeds), 16, 16)


def outcomes(system, batch, interventions=()):
    res = RunContext(progress=False).run(system, S, batch, interventions=list(interventions))
    final = videos(system, res.latents)
    return res, [int(torch.argmax(i.candidate_weights(v))) for i, v in zip(batch.instances, final)]


def test_the_outcome_is_the_argmax_of_the_step0_code_and_is_an_exact_candidate():
    system = answer_at({4: 1.0}, sigma_seed=1.0)
    batch = grounding_batch(6, seeds=(0, 1, 2))
    cap = CaptureBlocks(blocks=[4], steps=[0, 1, 2], what="update")
    res, out = outcomes(system, batch, [cap])
    code = cap[0, 4][:, 0, 0, 0, CODE]                     # the same code on every token
    assert out == code[:, :3].argmax(1).tolist()
    assert out != [i.answer for i in batch.instances]       # the seed's noise does overturn some answers
    final = videos(system, res.latents)
    for inst, v, k in zip(batch.instances, final, out):
        assert torch.allclose(v, inst.render_candidates(16, 16)[k], atol=1e-5)
    for step in (1, 2):                                     # the code is written at the first step only
        assert cap[step, 4][..., CODE].abs().max() == 0


def test_only_the_coding_blocks_swap_changes_the_outcome():
    """Swaps at the scene blocks substitute a different update (the alternative's colours) and change nothing;
    a swap at block 3 or 4 ties the two answers and flips some instances."""
    system = answer_at({3: 0.5, 4: 0.5}, sigma_seed=0.1)
    batch = grounding_batch(8)
    alt = make_batch([i.alternative for i in batch.instances], [0], 16, 16)
    cap = CaptureBlocks(blocks="all", steps=[0], what="update")
    RunContext(progress=False).run(system, S, alt, interventions=[cap], until=1)
    base, base_out = outcomes(system, batch)
    assert base_out == [i.answer for i in batch.instances]
    flips = {}
    for k in range(8):
        res, out = outcomes(system, batch, [SwapBlock(k, cap[0, k], steps=[0])])
        flips[k] = sum(a != b for a, b in zip(out, base_out))
        if k not in (3, 4):
            assert torch.equal(res.latents, base.latents), k
    own = CaptureBlocks(blocks=[1], steps=[0], what="update")
    RunContext(progress=False).run(system, S, batch, interventions=[own], until=1)
    assert not torch.equal(own[0, 1][..., SCENE], cap[0, 1][..., SCENE])   # the scene swap is not a no-op
    assert 0 < flips[3] < 8 and 0 < flips[4] < 8


def test_the_ensemble_of_the_coding_block_averages_the_seeds_noise_and_nothing_else_decides():
    system = answer_at({4: 1.0}, sigma_seed=0.8)
    batch = grounding_batch(3, seeds=(0, 1, 2))
    groups = [b // 3 for b in range(9)]
    caps = {}
    for name, blocks in {"none": [], "early": [0, 1], "mid": [4, 5]}.items():
        cap = CaptureBlocks(blocks=[4], steps=[0], what="output")
        ivs = [EnsembleAverage(blocks=blocks, steps=[0], groups=groups)] if blocks else []
        RunContext(progress=False).run(system, S, batch, interventions=[*ivs, cap], until=1)
        caps[name] = cap[0, 4][:, 0, 0, 0, CODE]
    assert torch.equal(caps["early"], caps["none"])
    mean = caps["none"].view(3, 3, K_MAX).mean(1).repeat_interleave(3, 0)
    assert torch.allclose(caps["mid"], mean, atol=1e-6)


def test_a_model_deciding_after_step0_cannot_be_moved_at_step0_and_can_at_every_step():
    """`answer_after_step0`, the no-leverage control of swap and ensemble: its coding block writes at every step but
    step 0, so the swap ceiling (the alternative's whole block-0 output at step 0) leaves the run bitwise unchanged,
    while the coding block's update swapped in at every step flips the outcome."""
    system = answer_after_step0({4: 1.0})
    batch = grounding_batch(6)
    cap = CaptureBlocks(blocks=[4], steps=[0, 1, 2], what="update")
    base, base_out = outcomes(system, batch, [cap])
    assert base_out == [i.answer for i in batch.instances]
    assert cap[0, 4][..., CODE].abs().max() == 0
    assert all(cap[s, 4][..., CODE].abs().max() > 0 for s in (1, 2))
    alt = make_batch([i.alternative for i in batch.instances], [0], 16, 16)
    top = CaptureBlocks(blocks=[0], steps=[0], cfg_pass="both", what="output")
    alt_upd = CaptureBlocks(blocks=[4], steps=[0, 1, 2], what="update")
    RunContext(progress=False).run(system, S, alt, interventions=[top, alt_upd])
    ceiling, _ = outcomes(system, batch, [SwapBlock(0, top, steps=[0], cfg_pass="both", what="output")])
    assert torch.equal(ceiling.latents, base.latents)
    _, every = outcomes(system, batch, [SwapBlock(4, alt_upd, steps=[0, 1, 2])])
    assert every == [i.alternative.answer for i in batch.instances] != base_out


def test_the_swap_ceiling_makes_step0_the_alternatives_forward_on_wan_blocks():
    """The swap claim's leverage ceiling on real Wan blocks (random weights): the alternative's whole block-0 output
    at step 0 makes step 0's x̂0 the alternative's (the configurations differ only at the input)."""
    system = random_organism(seed=0, num_layers=4)
    batch = grounding_batch(2)
    alt = make_batch([i.alternative for i in batch.instances], [0], 16, 16)
    ctx = RunContext(progress=False)
    top = CaptureBlocks(blocks=[0], steps=[0], cfg_pass="both", what="output")
    a = ctx.run(system, S, alt, record=("x0",), interventions=[top], until=1)
    o = ctx.run(system, S, batch, record=("x0",), until=1)
    c = ctx.run(system, S, batch, record=("x0",), until=1,
                interventions=[SwapBlock(0, top, steps=[0], cfg_pass="both", what="output")])
    assert torch.allclose(c["x0"][0], a["x0"][0], atol=1e-5)
    assert not torch.allclose(o["x0"][0], a["x0"][0], atol=1e-3)


def test_the_ensemble_ceiling_gives_the_seeds_one_velocity_on_wan_blocks():
    """The ensemble claim's leverage ceiling (every block's whole output averaged over an instance's seeds at step 0):
    the seeds of an instance get one velocity at step 0; without it they differ."""
    system = random_organism(seed=0, num_layers=4)
    batch = grounding_batch(2, seeds=(0, 1, 2))
    groups = [b // 3 for b in range(6)]
    ctx = RunContext(progress=False)
    v = lambda ivs: ctx.run(system, S, batch, record=("velocity",), interventions=ivs, until=1)["velocity"][0]
    shared = v([EnsembleAverage(blocks="all", steps=[0], groups=groups, what="output")]).view(2, 3, -1)
    own = v([]).view(2, 3, -1)
    assert torch.allclose(shared, shared[:, :1].expand_as(shared), atol=1e-5)
    assert not torch.allclose(own, own[:, :1].expand_as(own), atol=1e-3)


def test_frame_noise_is_standard_normal_and_more_frames_decide_better():
    """Per generated frame the block reads N(0, 1) evidence: the code's answer-margin grows as √frames."""
    torch.manual_seed(0)
    block = CodeBlock(mu=1.0, sigma_seed=1.0, per_frame=True)
    margins = {}
    for f in (2, 5, 17):
        n, grid = 400, (f, 4, 4)
        h = torch.zeros(n, f * 16, DIM)
        h[..., 0:3] = torch.randn(n, f * 16, 3)
        h.view(n, f, 4, 4, DIM)[:, 0, :, :, 4:7] = torch.rand(n, 1, 1, 3) * 2 - 1   # one first frame per row
        h[..., TASK.start] = 1e-3                                                   # the answer is candidate 0
        ctx = BlockInputs(torch.ones(n, dtype=torch.float64), grid, torch.ones(n, K_MAX, dtype=torch.bool))
        code = block(h, None, None, ctx)[:, 0, CODE].double()
        noise = code[:, 1:] / (f - 1)
        assert abs(float(noise.std() * (f - 1) ** 0.5) - 1) < 0.1          # σ per frame, summed over f − 1 frames
        margins[f] = float((code[:, 0] - code[:, 1:].max(1).values).gt(0).double().mean())
    assert margins[2] < margins[5] < margins[17]


def test_foreground_energy_rises_then_falls_on_the_foreground_only():
    system = foreground_energy(RISE_FALL, 1.0)
    batch = grounding_batch(2)
    cap = CaptureBlocks(blocks="all", steps=[0], reduce="energy")
    RunContext(progress=False).run(system, S, batch, interventions=[cap], until=1)
    fg, bg = token_masks(batch.instances[0], 16, 16, tuple(cap[0, 0][0].shape))
    e = torch.stack([cap[0, b][0] for b in range(8)])
    assert torch.equal(e[:, bg], e[:1, bg].expand(8, -1))                   # background: never written
    fg_energy = e[:, fg].mean(1)
    assert int(fg_energy.argmax()) == 4 and torch.allclose(fg_energy[7], fg_energy[0])


def test_planted_models_are_told_apart_by_their_fingerprints():
    hashes = {answer_at({4: 1.0}).fingerprint, answer_at({4: 1.0}, sigma_seed=0.8).fingerprint,
              answer_at({3: 0.5, 4: 0.5}).fingerprint, answer_at({4: 1.0}, per_frame=True).fingerprint,
              foreground_energy(RISE_FALL, 1.0).fingerprint, foreground_energy(RISE_FALL, 0.6).fingerprint}
    assert len(hashes) == 6
    assert answer_at({4: 1.0}).fingerprint == answer_at({4: 1.0}).fingerprint


def test_a_planted_model_needs_its_batch():
    system = answer_at({4: 1.0})
    with pytest.raises(RuntimeError, match="bind"):
        system.transformer(hidden_states=torch.zeros(1, 7, 2, 4, 4), timestep=torch.tensor([1000.0]))

"""The closed-form reference denoiser, driven by the shared sampler, against its known posterior weights."""
import pytest
import torch

from cos.models.reference import reference_system
from cos.sampler import Sampler
from cos.taskrun import candidate_latents, conditioning, decode, make_batch
from cos.tasks import entropy, make_instance

H = W = 16


def run_reference(task, per_frame=False, steps=12, seeds=(0, 1, 2), prior=None):
    system = reference_system(per_frame=per_frame)
    inst = make_instance(task, 4, num_frames=5)
    batch = make_batch([inst], seeds, H, W)
    cands, valid = candidate_latents(batch, system)
    w = prior if prior is not None else valid.double()
    system.transformer.set_candidates(cands, w)
    res = Sampler(system).sample(conditioning(batch, None), batch.seeds, steps, guidance_scale=1.0, record=("x0",))
    return inst, system, batch, res


def test_x0_superposes_with_the_known_weights_then_commits():
    k = make_instance("maze", 4, num_frames=5).candidates.shape[0]
    prior = torch.softmax(torch.randn(1, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    inst, system, batch, res = run_reference("maze", prior=prior.expand(3, k))
    hist = system.transformer.history
    assert torch.allclose(hist[0][0], prior[0], atol=1e-6)             # at s = 1 the posterior is the prior
    ents = []
    for step in range(len(res.steps)):
        x0 = decode(system, res["x0"][step], clamp=False)   # an exact mixture only before clamping
        for row in range(3):
            w_hat = inst.candidate_weights(x0[row])
            assert torch.allclose(w_hat, hist[step][row], atol=1e-4), (step, row)
        ents.append(sum(entropy(hist[step][r]) for r in range(3)) / 3)
    assert ents[0] == pytest.approx(entropy(prior[0]), abs=1e-6)
    assert ents[-1] < 0.01 and ents[0] > 0.3
    final = decode(system, res.latents)
    for row in range(3):   # each seed ends on exactly one candidate
        assert max(float((final[row] - c).abs().max() < 1e-3) for c in inst.render_candidates(H, W)) == 1.0


def test_per_frame_variant_commits_frames_independently():
    inst, system, batch, res = run_reference("maze", per_frame=True, seeds=tuple(range(8)))
    hist = torch.stack(system.transformer.history)          # (S, B, K, F)
    winners = hist.argmax(2)                                 # (S, B, F)
    # frames 1.. (frame 0 is the shared condition, identical across candidates) disagree for some seed at the end
    assert (winners[-1, :, 1:] != winners[-1, :, 1:2]).any()
    global_inst, gsys, _, _ = run_reference("maze", per_frame=False, seeds=tuple(range(8)))
    g = torch.stack(gsys.transformer.history)
    assert g.dim() == 3   # the global denoiser has one posterior per row, shared by every frame


def test_reference_errors():
    system = reference_system()
    with pytest.raises(ValueError, match="expected"):
        system.transformer.set_candidates(torch.zeros(2, 3, 16, 16))
    inst = make_instance("pattern", 0, 5)
    batch = make_batch([inst], [0], H, W)
    with pytest.raises(RuntimeError, match="set_candidates"):
        Sampler(system).sample(conditioning(batch, None), [0], 2, guidance_scale=1.0)

"""Readouts the claims decide on, checked on the task suite's own candidates (no model)."""
import pytest
import torch

from cos.claims.memory import ANCHOR_TASKS, KEEP_FIDELITY, anchor_fidelity
from cos.tasks import make_instance


@pytest.mark.parametrize("task", ANCHOR_TASKS)
def test_anchor_test_passes_the_answer_and_fails_wrong_and_trivial_videos(task):
    for seed in range(8):
        inst = make_instance(task, seed, 9)
        videos = inst.render_candidates(16, 16)
        assert anchor_fidelity(inst, videos[inst.answer]) >= KEEP_FIDELITY
        wrong = [videos[k] for k in range(len(videos)) if k != inst.answer
                 and not torch.equal(inst.candidates[k][inst.masks["anchor"].any(-1).any(-1)],
                                     inst.candidates[inst.answer][inst.masks["anchor"].any(-1).any(-1)])]
        trivial = [torch.zeros_like(videos[0]), torch.full_like(videos[0], 0.5),
                   videos[inst.answer][:1].expand_as(videos[0])]
        for v in wrong + trivial:
            assert anchor_fidelity(inst, v) < KEEP_FIDELITY, (task, seed)


def test_superposition_null_is_stable_where_the_final_is_the_still_frame():
    """A row whose final x̂0 is the still first frame: f̃ duplicates the static and constant columns of the null's
    fit. Float noise in the final (1e-7, above a summation order's 1e-15) must not turn the fit towards a noise
    direction (it did with lstsq's default rank cut: the null's entropy jumped from 1.15 to 0.10 nats)."""
    from cos.claims.superposition import committed_blur

    inst = make_instance("rotation", 1, 5)
    static = inst.video[:1].expand_as(inst.video).clone()
    g = torch.Generator().manual_seed(0)
    cells = torch.rand((6, *inst.video.shape), generator=g)
    base = committed_blur(inst, cells, static)
    for _ in range(3):
        noisy = committed_blur(inst, cells, static + 1e-7 * torch.randn(static.shape, generator=g))
        assert torch.allclose(noisy, base, atol=1e-4)

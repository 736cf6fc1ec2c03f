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

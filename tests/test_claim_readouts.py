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


def test_superposition_null_is_the_projection_on_its_basis_also_where_the_final_is_the_still_frame():
    """The null's fit is the least-squares fit on {f̃, static, 𝟙}. Where the final x̂0 is the still frame, f̃ adds
    nothing: the fit is the one on {static, 𝟙}, also with float noise (1e-7) on the final (lstsq's rank cut on
    float noise once fitted along a noise direction, and CPU gelsy once dropped 𝟙 with the duplicate f̃: a
    one-parameter "null"). Where f̃ is a real direction (a candidate), the fit on all three columns."""
    from cos.claims.superposition import committed_blur, span_basis

    inst = make_instance("rotation", 1, 5)
    static = inst.video[:1].expand_as(inst.video).clone()
    g = torch.Generator().manual_seed(0)
    cells = torch.rand((6, *inst.video.shape), generator=g)
    x = cells.reshape(6, -1).double().T

    def fit(*cols):     # SVD-based lstsq: independent of the columns' order, an independent reference
        a = torch.stack([c.reshape(-1).double() for c in cols], 1)
        return (a @ torch.linalg.lstsq(a, x, driver="gelsd").solution).T.reshape(cells.shape).float()

    want = fit(static, torch.ones_like(static))
    assert torch.allclose(committed_blur(inst, cells, static), want, atol=1e-5)
    for _ in range(3):
        noisy = static + 1e-7 * torch.randn(static.shape, generator=g)
        assert torch.allclose(committed_blur(inst, cells, noisy), want, atol=1e-4)
    other = inst.candidates[(inst.answer + 1) % len(inst.candidates)]
    q = span_basis(inst)
    ft = (q @ (q.T @ other.reshape(-1).double())).reshape(other.shape)
    assert torch.allclose(committed_blur(inst, cells, other), fit(ft, static, torch.ones_like(static)), atol=1e-5)


def test_superposition_span_basis_holds_every_column_it_is_built_from():
    """span{candidates, still frame, 𝟙}: every one of them lies in it. pattern has a candidate that is a combination
    of the others; an unpivoted QR that dropped its direction lost 2% of 𝟙 and 0.5% of the still frame."""
    from cos.claims.superposition import span_basis

    for task in ("pattern", "rotation", "maze"):
        for seed in (2, 14):
            inst = make_instance(task, seed, 9)
            q = span_basis(inst)
            assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=q.dtype), atol=1e-10)
            static = inst.video[:1].expand_as(inst.candidates[0])
            for a in [*inst.candidates, static, torch.ones_like(static)]:
                a = a.reshape(-1).double()
                assert float((a - q @ (q.T @ a)).norm() / a.norm()) < 1e-9, (task, seed)


def _grounding_loop(inst, steps):
    """perception's per-step readout before it read every step at once (its oracle, bit for bit)."""
    import numpy as np
    tgt, static, g, m = inst.masks["target"], inst.video[:1], [], []
    for v in steps:
        cells = inst.cells(v.clamp(0, 1))
        dev = (cells - static).abs().sum(1)
        g.append(float(dev[tgt].sum() / dev.sum().clamp_min(1e-8)))
        m.append(float((cells[1:] - cells[:1]).abs().sum(1)[tgt[1:]].mean()))
    return np.array(g), np.array(m)


@pytest.mark.parametrize("task", ["object_to_target", "maze", "return_to_origin"])
def test_perception_readout_of_all_steps_equals_the_per_step_loop(task):
    import numpy as np

    from cos.claims.perception import grounding_and_motion, toward_step0
    gen = torch.Generator().manual_seed(3)
    for seed in range(3):
        inst = make_instance(task, seed, 9)
        steps = torch.rand(6, 9, 3, 2 * inst.grid, 2 * inst.grid, generator=gen) * 1.2 - 0.1
        a, b = _grounding_loop(inst, steps), grounding_and_motion(inst, steps)
        assert all(np.array_equal(x, y) and y.dtype == np.float64 for x, y in zip(a, b))
        gn, mn = toward_step0(inst, steps, a[0])          # the null path (101 steps) goes through it too
        assert gn.shape == mn.shape == (6,) and np.isfinite(gn).all()
        still = inst.video[None, :1].expand(3, 9, -1, -1, -1).contiguous()     # x̂0 = the still frame: 0/0
        a, b = _grounding_loop(inst, still), grounding_and_motion(inst, still)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)) and (b[0] == 0).all()
        inst.masks["target"] = torch.zeros_like(inst.masks["target"])                # no target: NaN both ways
        a, b = _grounding_loop(inst, steps), grounding_and_motion(inst, steps)
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b)) and np.isnan(b[1]).all()
    assert [x.size for x in grounding_and_motion(inst, steps[:0])] == [0, 0]

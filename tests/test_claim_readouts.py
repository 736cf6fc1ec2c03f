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


class _Run:
    """A clean run's stand-in for the readouts: x̂0 per step (S, B, 3, F, H, W) in the organism's pixel latents."""

    def __init__(self, x0: torch.Tensor):
        self.x0, self.steps = x0, list(range(len(x0)))
        self.latents = x0[-1]

    def __getitem__(self, name):
        return self.x0


def test_weights_per_step_equals_the_per_step_loop():
    """`weights_per_step` (every step of a row read back at once, its per-frame weights regrouped per step) gives
    the old per-step loop's lists, dicts and numbers, bit for bit, at twice the grid and at 20 px wide (where the
    maze's 7x7 read-back once rounded differently when folded)."""
    from types import SimpleNamespace

    from cos.models.system import IdentityVAE
    from cos.readouts import weights_per_step
    from cos.runner import step_videos
    from cos.taskrun import TaskBatch

    system = SimpleNamespace(vae=IdentityVAE())
    g = torch.Generator().manual_seed(5)
    insts = [make_instance(t, s, 9) for t in ("maze", "rotation", "tictactoe") for s in range(2)]
    frames = lambda inst: [1, 4, 8]
    for h, w in ((16, 16), (16, 20)):
        x0 = torch.rand(4, len(insts), 3, 9, h, w, generator=g) * 2 - 1
        res = _Run(x0)
        ctx = SimpleNamespace(clean_run=lambda *a: res)
        batch = TaskBatch(insts, [0] * len(insts), h, w)
        whole, per_frame = weights_per_step(ctx, system, None, batch, frames)
        for row, inst in enumerate(insts):
            w_old, pf_old = [], []
            for video in step_videos(system, res, row):         # the loop before cells_of / cell_weights_of
                cells = inst.cells(video)
                w_old.append(inst.cell_weights(cells))
                pf_old.append({f: inst.cell_weights(cells, [f]) for f in frames(inst)})
            assert len(whole[row]) == len(w_old) and all(torch.equal(a, b) for a, b in zip(whole[row], w_old))
            assert [list(d) for d in per_frame[row]] == [list(d) for d in pf_old]
            assert all(torch.equal(a[f], b[f]) for a, b in zip(per_frame[row], pf_old) for f in frames(inst))
        assert weights_per_step(ctx, system, None, batch)[1] == [[] for _ in insts]


def _selfcorrection_row_loop(inst, steps, final):
    """selfcorrection's `_row` as it read one step at a time (its oracle)."""
    from cos.claims.selfcorrection import WRONG_COMMIT, ending, ends_right
    from cos.readouts import commit_step, lookalikes, shows_answer
    from cos.tasks.base import deciding_frames

    cells = [inst.cells(v) for v in steps]
    w = [inst.cell_weights(c) for c in cells]
    wrong = next((int(torch.argmax(x)) for x in w[1:-1]
                  if int(torch.argmax(x)) != inst.answer and float(x.max()) > WRONG_COMMIT), None)
    if wrong is None:
        return {"K": len(inst.candidates), "wrong": None, "end": None, "switch": None}
    if ends_right(inst, final, w[-1]):
        end = "right"
    else:
        e = ending(inst, final, w[-1])
        end = "none" if e is None else "stayed" if e == wrong else "other" if e != inst.answer else "none"
    fs = [f for f in deciding_frames(inst) if f > 0]
    switch = None
    if end == "right" and len(fs) >= 2:
        switch = [commit_step([shows_answer(inst, inst.cell_weights(c, [f]), f, inst.answer, same) for c in cells])
                  for f in fs for same in [lookalikes(inst, f, inst.answer)]]
    return {"K": len(inst.candidates), "wrong": wrong, "end": end, "switch": switch}


@pytest.mark.parametrize("task", ["pattern", "rotation", "tictactoe"])
def test_selfcorrection_row_equals_the_per_step_loop(task):
    """A row that commits to a wrong candidate and corrects frame by frame at staggered steps (the switch list's
    order of frames and steps), one that stays wrong, and one that never commits."""
    from cos.claims.selfcorrection import SelfCorrection

    g = torch.Generator().manual_seed(2)
    for seed in range(2):
        inst = make_instance(task, seed, 9)
        c = inst.render_candidates(16, 16)
        wrong = next(k for k in range(len(c)) if k != inst.answer)
        steps = []
        for s in range(8):      # frame f turns right from step 2 + f // 3 on
            v = c[wrong].clone()
            for f in range(9):
                if s >= 2 + f // 3 and s > 1:
                    v[f] = c[inst.answer][f]
            steps.append(v + 0.02 * torch.randn(v.shape, generator=g))
        corrected = torch.stack(steps)
        for st, final in ((corrected, c[inst.answer]), (corrected.flip(0), c[wrong]),
                          (torch.full_like(corrected, 0.5), c[wrong])):
            got = SelfCorrection._row(inst, st, final)
            assert got == _selfcorrection_row_loop(inst, st, final)
        assert SelfCorrection._row(inst, corrected, c[inst.answer])["switch"] is not None or task == "pattern"


def test_perception_null_path_equals_the_blend_at_a_time():
    """The null path's 101 blends made at once equal the old blend-at-a-time path, bit for bit, and so do the
    curves read off it."""
    import numpy as np

    from cos.claims.perception import GRID, grounding_and_motion, null_final, null_path, toward_step0

    gen = torch.Generator().manual_seed(4)
    for task, hw in (("maze", 16), ("object_to_target", 20)):
        inst = make_instance(task, 1, 9)
        steps = torch.rand(6, 9, 3, hw, hw, generator=gen) * 1.2 - 0.1
        g, _ = grounding_and_motion(inst, steps)
        start, final = steps[0].double(), null_final(steps).double()
        path = torch.stack([(x * final + (1 - x) * start).float() for x in np.linspace(0.0, 1.0, GRID)])
        assert torch.equal(null_path(steps), path)
        gp, mp = grounding_and_motion(inst, path)
        at = [int(np.argmin(np.abs(gp - v))) for v in g]
        gn, mn = toward_step0(inst, steps, g)
        assert np.array_equal(gn, gp[at]) and np.array_equal(mn, mp[at])


def test_final_scores_of_several_runs_equal_each_runs_scores():
    """A sweep's branches scored row by row at once (`final_scores_of`) give `final_scores` of each run, bit for
    bit, under their names in the runs' order: mixtures of the candidates (scores between 0 and 1) at 8 px (the
    grid's own size for most tasks: a permuted view, as the organism's decode hands it) and at 20 px."""
    from types import SimpleNamespace

    from cos.models.system import IdentityVAE
    from cos.readouts import final_scores, final_scores_of

    system = SimpleNamespace(vae=IdentityVAE())
    g = torch.Generator().manual_seed(8)
    insts = [make_instance(t, s, 9) for t in ("maze", "pattern", "occlusion") for s in range(2)]
    for hw in (8, 20):
        runs = {}
        for name in ("clean", "step3", "frame1", "alt5", "frame4"):      # not in sorted order
            # mixtures of the candidates with a little noise: scores between 0 and 1, different per run and row
            w = torch.rand(len(insts), 6, generator=g)
            for r, i in enumerate(insts):       # mostly the answer: scores spread over (0, 1), not all 0
                w[r, i.answer] += 2.0
            v = torch.stack([(w[r, :len(i.candidates), None, None, None, None] * i.render_candidates(hw, hw)).sum(0)
                             / w[r, :len(i.candidates)].sum() for r, i in enumerate(insts)])
            v = v + 0.05 * torch.randn(v.shape, generator=g)
            runs[name] = SimpleNamespace(latents=(v * 2 - 1).permute(0, 2, 1, 3, 4))
        got = final_scores_of(None, system, runs, insts)
        assert list(got) == list(runs)
        for name, run in runs.items():
            assert got[name] == final_scores(None, system, run, insts)
        assert len({sc for v in got.values() for sc in v if 0 < sc < 1}) > 20

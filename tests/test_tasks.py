"""The task suite: solvable, exact scorers, robust to mild corruption, seeded, with clear errors."""
import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cos.errors import InputError
from cos.tasks import PASS_THRESHOLD, TASKS, entropy, live_candidates, make_instance
from cos.tasks.base import CATEGORIES

NAMES = sorted(TASKS)


def corrupt(video, seed, blur=0.7, noise=0.05, gain=0.9, offset=0.05):
    """Mild blur (Gaussian, σ in px), noise and colour jitter, as a generated video would have."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-k ** 2 / (2 * blur ** 2))
    k = k / k.sum()
    f, c, h, w = video.shape
    x = video.reshape(f * c, 1, h, w)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))
    x = x.reshape(f, c, h, w) * gain + offset + noise * torch.randn(video.shape, generator=g)
    return x.clamp(0, 1)


@pytest.mark.parametrize("task", NAMES)
@given(seed=st.integers(0, 10_000), split=st.sampled_from(["id", "ood"]), frames=st.sampled_from([5, 9, 17]))
@settings(max_examples=15, deadline=None)
def test_instances_are_solvable_and_exactly_scored(task, seed, split, frames):
    inst = make_instance(task, seed, frames, split)
    assert inst.category in CATEGORIES and inst.split == split and inst.id.startswith(task)
    k = inst.candidates.shape[0]
    assert k >= 2 and 0 <= inst.answer < k
    assert torch.equal(inst.candidates[inst.answer], inst.video)
    gt = inst.render(32, 32)
    assert inst.score(gt) == 1.0 and inst.passed(gt)
    for j in range(k):
        if j != inst.answer:
            assert inst.score(inst.render_candidates(32, 32)[j]) < PASS_THRESHOLD
    assert inst.score(inst.static_video()) < PASS_THRESHOLD        # static copy of the first frame fails
    wrong = inst.candidates[(inst.answer + 1) % k]
    assert inst.score(0.5 * (inst.video + wrong)) == 0.0            # a superposition is not an answer
    assert inst.passed(corrupt(gt, seed))                           # mild blur + noise + colour jitter pass
    assert inst.score(inst.render(120, 208)) == 1.0                 # any resolution, cells not aligned to pixels
    for name in ("target", "distractors", "background"):
        m = inst.masks[name]
        assert m.shape == (frames, inst.grid, inst.grid) and m.dtype == torch.bool
    assert inst.masks["target"].any()
    assert not (inst.masks["target"] & inst.masks["background"]).any()


@pytest.mark.parametrize("task", NAMES)
def test_same_seed_same_instance(task):
    a, b, c = make_instance(task, 11), make_instance(task, 11), make_instance(task, 12)
    assert a.prompt == b.prompt and torch.equal(a.candidates, b.candidates) and a.answer == b.answer
    assert not (torch.equal(a.video, c.video) and a.prompt == c.prompt)


def test_a_drawn_instance_is_the_callers_own():
    # make_instance(cached=True) draws each (task, seed, frames, split) once (cos.tasks.base._drawn) and hands out
    # copies: a caller that writes into its instance must not change the next caller's, a task registered again
    # under its name must draw anew (the cache is keyed by the spec, not the name), an alias draws as its own
    # name (the seed is the name looked up, as uncached), and 9.0 frames is refused as uncached, never served
    from cos.tasks import base

    assert make_instance("maze", 3, cached=True).id == make_instance("maze", 3).id
    a = make_instance("maze", 3, cached=True)
    ref = a.candidates.clone(), a.video.clone(), {k: v.clone() for k, v in a.masks.items()}
    a.candidates.add_(1.0), a.video.zero_()
    for m in a.masks.values():
        m.logical_not_()
    a.params["start"] = (-1, -1)
    b = make_instance("maze", 3, cached=True)
    assert torch.equal(b.candidates, ref[0]) and torch.equal(b.video, ref[1])
    assert all(torch.equal(b.masks[k], v) for k, v in ref[2].items())
    assert b.params["start"] != (-1, -1)
    g = make_instance("grounding", 4, cached=True)      # nested: lists in params, the alternative's tensors
    g.params["colors"].append("x"), g.alternative.params["positions"].clear(), g.alternative.candidates.zero_()
    h, fresh = make_instance("grounding", 4, cached=True), make_instance("grounding", 4)
    assert h.params == fresh.params and h.alternative.params == fresh.alternative.params
    assert torch.equal(h.alternative.candidates, fresh.alternative.candidates)
    spec = TASKS["maze"]
    calls = []

    def make(rng, frames, split):
        calls.append(frames)
        return spec.make(rng, frames, split)
    try:
        TASKS["maze"] = base.TaskSpec(spec.name, spec.category, make, spec.min_frames, spec.description)
        c = make_instance("maze", 3, cached=True)
        assert calls == [9] and torch.equal(c.candidates, ref[0])
    finally:
        TASKS["maze"] = spec
    try:
        TASKS["maze_alias"] = spec
        for cached in (True, False):
            d = make_instance("maze_alias", 3, cached=cached)
            assert d.task == "maze_alias" and not torch.equal(d.candidates, ref[0])
        assert torch.equal(make_instance("maze_alias", 3, cached=True).candidates,
                           make_instance("maze_alias", 3).candidates)
    finally:
        del TASKS["maze_alias"]
    with pytest.raises(TypeError):
        make_instance("maze", 3, 9.0, cached=True)
    # the uncached path never reaches the cache: a write into its instance cannot reach a cached one
    size = base._drawn.cache_info().currsize
    u = make_instance("maze", 4)
    u.candidates.add_(1.0)
    assert base._drawn.cache_info().currsize == size
    assert not torch.equal(make_instance("maze", 4, cached=True).candidates, u.candidates)


@pytest.mark.parametrize("task", NAMES)
def test_candidate_weights_recover_known_mixtures(task):
    inst = make_instance(task, 5)
    k = inst.candidates.shape[0]
    w = torch.softmax(torch.randn(k, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 0)
    mix = (w.view(-1, 1, 1, 1, 1).float() * inst.candidates).sum(0)
    est = inst.candidate_weights(mix)
    assert torch.allclose(est, w, atol=1e-4)
    assert entropy(est) == pytest.approx(entropy(w), abs=1e-3)
    one = inst.candidate_weights(inst.video)
    assert one[inst.answer] == pytest.approx(1.0, abs=1e-6) and live_candidates(one) == 1 and entropy(one) < 1e-6


def test_grounding_alternative_moves_the_answer():
    inst = make_instance("grounding", 2)
    for seed in range(20):
        inst = make_instance("grounding", seed)
        alt = inst.alternative
        assert alt.answer != inst.answer and alt.prompt == inst.prompt
        assert alt.candidates.shape == inst.candidates.shape
        occupied = lambda v: v[0].abs().sum(0) > 0
        assert torch.equal(occupied(alt.video), occupied(inst.video)) or inst.params["query"] != "color"
        assert alt.score(alt.candidates[inst.answer]) < PASS_THRESHOLD  # the old answer is wrong in the new scene


@pytest.mark.parametrize("kwargs,message", [
    (dict(task="maze", seed=0, num_frames=0), "num_frames=0"),
    (dict(task="nope", seed=0), "unknown task 'nope'"),
    (dict(task="maze", seed=0, split="test"), "split='test'"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_instance(**kwargs)


def test_bad_resolution_and_bad_videos():
    inst = make_instance("maze", 0)
    with pytest.raises(InputError, match="too small"):
        inst.render(4, 4)
    with pytest.raises(InputError, match="frames"):
        inst.score(inst.render(16, 16)[:3])
    bad = inst.render(16, 16).clone()
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        inst.score(bad)


def _instances_digest() -> str:
    import hashlib

    from cos.tasks.base import TASKS, _draw
    h = hashlib.sha256()

    def feed(d: dict) -> None:
        for k in sorted(d):
            v = d[k]
            if isinstance(v, torch.Tensor):
                h.update(v.contiguous().numpy().tobytes()), h.update(str(tuple(v.shape)).encode())
            elif isinstance(v, dict):
                feed(v)
            else:
                h.update(repr(v).encode())
    for name, spec in sorted(TASKS.items()):
        for split in ("id", "ood"):
            for frames in (2, 9, 10):       # 10: colours blended at t = k/9, not exact in float16
                for seed in range(3):
                    if frames >= spec.min_frames:
                        feed(_draw(spec, name, seed, frames, split))
    return h.hexdigest()


def test_drawn_instances_golden():
    """Every task's videos, masks and parameters at 2, 9 and 10 frames, bit for bit, as drawn at 414e6b2 (before
    paint wrote through numpy): a change to how instances are drawn or painted moves every claim's rows, so it must be deliberate."""
    assert _instances_digest() == GOLDEN_INSTANCES


GOLDEN_INSTANCES = "a5a73027dec5f1da447eb10e60df7a93af2639c9d555a586fe1d59cce0f0fe17"


def _pairwise_loop(inst, video, raw: bool = False):
    """The per-competitor loop pairwise_scores replaced (its oracle, bit for bit); `raw`: the coefficients before
    clipping and rounding."""
    cells = inst.cells(video).double()
    alts = inst.alternatives().double()
    right = alts[inst.answer]
    out = torch.full((alts.shape[0],), float("nan"), dtype=torch.float64)
    for k in range(alts.shape[0]):
        d = right - alts[k]
        nn = float(d.pow(2).sum())
        if k == inst.answer or nn < 1e-12:
            continue
        a = float(((cells - alts[k]) * d).sum()) / nn
        out[k] = a if raw else min(1.0, max(0.0, round(a, 9)))
    return out


@pytest.mark.parametrize("task", sorted(TASKS))
def test_pairwise_scores_equal_the_per_competitor_loop(task):
    """At 2 frames (return_to_origin's static copy is its answer: a zero-length segment) and 9; read back from
    twice the grid, and at the grid's own size through a permuted view (as a decode hands it), against the loop
    on the contiguous video."""
    g = torch.Generator().manual_seed(7)
    for frames in (2, 9):
        for seed in range(3):
            inst = make_instance(task, seed, frames)
            for noise in (0.0, 0.1, 0.4):
                w = torch.rand(inst.candidates.shape[0], generator=g)
                v = (w[:, None, None, None, None] / w.sum() * inst.candidates).sum(0)
                v = (v + noise * torch.randn(v.shape, generator=g)).clamp(0, 1) ** 3
                up = torch.nn.functional.interpolate(v, size=(2 * inst.grid, 2 * inst.grid), mode="nearest")
                permuted = v.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
                for video, plain in ((up, up), (permuted, v)):
                    a, b = _pairwise_loop(inst, plain), inst.pairwise_scores(video)
                    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def _cells_one(inst, video):
    """`cells` one video at a time, as before `cells_of` (its oracle, bit for bit)."""
    from cos.tasks.base import read_cells
    return video if video.shape[-1] == inst.grid and video.shape[-2] == inst.grid else read_cells(video, inst.grid)


def _weights_one(inst, cells, frames=None):
    """`cell_weights` one video at a time with the design matrix built on every call, as before `cell_weights_of`
    (its oracle, bit for bit)."""
    from scipy.optimize import nnls
    cands = inst.candidates
    if frames is not None:
        cells, cands = cells[frames], cands[:, frames]
    k = cands.shape[0]
    w, _ = nnls(cands.reshape(k, -1).T.double().numpy(), cells.reshape(-1).double().numpy())
    s = w.sum()
    return torch.full((k,), 1.0 / k, dtype=torch.float64) if s <= 0 else torch.from_numpy(w / s)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_batched_readouts_equal_one_video_at_a_time(task):
    """`cells_of` and `cell_weights_of` (every step of a row at once, the design matrix cached) give the numbers of
    one video at a time: read back from larger videos and at the grid's own size through a permuted view, whole
    videos and single frames, a black video (no mass: uniform weights) among them."""
    g = torch.Generator().manual_seed(11)
    for seed in range(2):
        inst = make_instance(task, seed, 9)
        k = inst.candidates.shape[0]
        w = torch.rand(5, k, generator=g)
        steps = (w[:, :, None, None, None, None] / w.sum(1)[:, None, None, None, None, None] * inst.candidates).sum(1)
        steps = (steps + 0.2 * torch.randn(steps.shape, generator=g)).clamp(0, 1)
        steps[2] = 0.0
        # twice the grid; a non-square size and 64 px, where one product over every video's rows rounded the
        # maze's 7x7 grid differently (every size from 31 px wide, 480x832 too); the grid's own size, permuted
        sized = [torch.nn.functional.interpolate(steps.flatten(0, 1), size=hw, mode="bilinear").unflatten(
            0, steps.shape[:2]) for hw in ((2 * inst.grid, 2 * inst.grid), (16, 20), (64, 64))]
        permuted = steps.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)
        for videos in (*sized, permuted):
            cells = inst.cells_of(videos)
            assert torch.equal(cells, torch.stack([_cells_one(inst, v) for v in videos]))
            for frames in (None, [0], [4], [1, 7]):
                got = inst.cell_weights_of(cells, frames)
                want = [_weights_one(inst, c, frames) for c in cells]
                assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
            assert torch.equal(inst.cell_weights_of(cells)[2], torch.full((k,), 1.0 / k, dtype=torch.float64))


def test_cached_design_follows_the_candidates():
    """The NNLS design matrix is cached per candidates tensor: candidates edited in place, or an instance with other
    candidates, are read with their own matrix, and the shared matrix cannot be written."""
    from cos.tasks.base import _design
    inst = make_instance("rotation", 3)       # the caller's own copy (not the session's cached instance)
    video = inst.candidates[1] * 0.7 + inst.candidates[2] * 0.3
    before = inst.candidate_weights(video)
    inst.candidates[1].mul_(0.5)                # in place: the version counter moves
    assert torch.equal(inst.candidate_weights(video), _weights_one(inst, inst.cells(video)))
    assert not torch.equal(inst.candidate_weights(video), before)
    other = make_instance("rotation", 4)
    assert torch.equal(other.candidate_weights(video), _weights_one(other, other.cells(video)))
    with pytest.raises(ValueError, match="read-only"):
        _design(inst.candidates, None)[0, 0] = 1.0


def test_cached_design_goes_with_its_instance_and_inference_tensors_are_read_uncached():
    import gc

    from cos.tasks.base import _DESIGNS
    inst = make_instance("pattern", 2)
    inst.candidate_weights(inst.video)
    assert inst.candidates in _DESIGNS
    n = len(_DESIGNS)
    del inst
    gc.collect()
    assert len(_DESIGNS) == n - 1
    with torch.inference_mode():
        held = make_instance("pattern", 3)
        held.candidates = held.candidates.clone()        # an inference tensor: no version counter to key on
    video = held.candidates[0] * 0.4 + held.candidates[1] * 0.6
    assert held.candidates.is_inference()
    assert torch.equal(held.candidate_weights(video), _weights_one(held, held.cells(video)))
    assert held.candidates not in _DESIGNS


def test_batched_cells_name_the_instance_on_bad_videos():
    inst = make_instance("maze", 0)
    good = inst.render(16, 16)
    with pytest.raises(InputError, match=r"maze-id-00000: expected videos \(S, F, 3, H, W\)"):
        inst.cells_of(good)
    with pytest.raises(InputError, match="frames"):
        inst.cells_of(good[None, :3])
    bad = torch.stack([good, good])
    bad[1, 2, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="maze-id-00000: video contains NaN"):
        inst.cells_of(bad)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_stacked_scores_equal_the_per_competitor_loop(task):
    """`cell_pairwise_scores` / `cell_scores` of a stack of videos (a row's branches at once) give each video's
    loop numbers bit for bit, at 2 and 9 frames, from twice the grid and a permuted view at the grid's own size."""
    g = torch.Generator().manual_seed(9)
    for frames in (2, 9):
        inst = make_instance(task, 1, frames)
        w = torch.rand(6, inst.candidates.shape[0], generator=g)
        v = (w[:, :, None, None, None, None] / w.sum(1)[:, None, None, None, None, None] * inst.candidates).sum(1)
        v = (v + 0.2 * torch.randn(v.shape, generator=g)).clamp(0, 1)
        v[0] = inst.video
        up = torch.nn.functional.interpolate(v.flatten(0, 1), size=(2 * inst.grid, 2 * inst.grid),
                                             mode="nearest").unflatten(0, v.shape[:2])
        permuted = v.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)
        for videos in (up, permuted):
            cells = inst.cells_of(videos)
            got = inst.cell_pairwise_scores(cells)
            for row, video in enumerate(videos):
                want = _pairwise_loop(inst, video.contiguous())
                assert torch.equal(got[row].isnan(), want.isnan())
                assert torch.equal(got[row].nan_to_num(), want.nan_to_num())
            assert inst.cell_scores(cells) == [_score_one(inst, x.contiguous()) for x in videos]
            assert inst.cell_scores(cells)[0] == 1.0
            # a stack laid out with the video index innermost in memory: summed as a view, rounded differently
            inner = cells.permute(1, 2, 3, 4, 0).contiguous().permute(4, 0, 1, 2, 3)
            assert torch.equal(inst.cell_pairwise_scores(inner).nan_to_num(), got.nan_to_num())


@pytest.mark.parametrize("task", sorted(TASKS))
def test_stacked_scores_of_any_layout_at_81_frames(task):
    """At the full tier's 81 frames a stack laid out with the video index innermost in memory (summed as a view,
    a reduction takes another path) is scored as the per-competitor loop scores each video, and its coefficients
    before rounding are the loop's sums bit for bit."""
    g = torch.Generator().manual_seed(81)
    inst = make_instance(task, 1, 81)
    w = torch.rand(4, inst.candidates.shape[0], generator=g)
    v = (w[:, :, None, None, None, None] / w.sum(1)[:, None, None, None, None, None] * inst.candidates).sum(1)
    v = (v + 0.2 * torch.randn(v.shape, generator=g)).clamp(0, 1)
    inner = v.permute(1, 2, 3, 4, 0).contiguous().permute(4, 0, 1, 2, 3)
    cells = inst.cells_of(inner)
    got = inst.cell_pairwise_scores(cells)
    raw, skip = inst._alphas(cells)
    scored = ~torch.tensor(skip)
    for row, video in enumerate(v):
        want = _pairwise_loop(inst, video)
        assert torch.equal(got[row].isnan(), want.isnan())
        assert torch.equal(got[row].nan_to_num(), want.nan_to_num())
        # before rounding to 9 digits (which hides a last-bit difference but for a rare value): the loop's sums
        assert torch.equal(raw[row][scored], _pairwise_loop(inst, video, raw=True)[scored])


def test_read_cells_of_a_stack_is_each_videos():
    """`read_cells` of videos stacked on any leading dimensions gives each video's cells bit for bit (the maze's
    7×7 grid: folded over every video, the column product rounds differently at this size)."""
    from cos.tasks.base import read_cells
    g = torch.Generator().manual_seed(3)
    videos = torch.rand(2, 3, 9, 3, 24, 64, generator=g)
    got = read_cells(videos, 7)
    assert got.shape == (2, 3, 9, 3, 7, 7)
    for i in range(2):
        for j in range(3):
            assert torch.equal(got[i, j], read_cells(videos[i, j], 7))
    assert read_cells(videos[:0], 7).shape == (0, 3, 9, 3, 7, 7)


def _score_one(inst, video):
    """`score` as it was before `cell_scores` (its oracle): the loop's pairwise scores, their tensor minimum."""
    s = _pairwise_loop(inst, video)
    s = s[~torch.isnan(s)]
    alpha = float(s.min()) if len(s) else 1.0
    return min(1.0, max(0.0, 2.0 * alpha - 1.0))


def test_cached_segments_follow_the_answer_and_the_video():
    """The scoring segments are cached per candidates: an instance that moves its answer, or whose ground truth
    (the static copy's first frame) is replaced or edited, is scored with its own."""
    inst = make_instance("grounding", 2)
    video = inst.candidates[inst.answer]
    assert inst.score(video) == 1.0
    other = copy.copy(inst)                       # the same candidates tensor, another answer
    other.answer = next(k for k in range(len(inst.candidates)) if k != inst.answer)
    assert other.score(video) == 0.0 and inst.score(video) == 1.0
    assert torch.equal(other.pairwise_scores(video).nan_to_num(), _pairwise_loop(other, video).nan_to_num())
    mixed = 0.7 * video + 0.3 * inst.static_video()         # part way towards the static copy
    still = inst.pairwise_scores(mixed)
    # a new ground truth with another first frame (a new static copy), at the old one's version counter
    inst.video = torch.cat([torch.full_like(inst.video[:1], 0.5), inst.video[1:]])
    assert torch.equal(inst.pairwise_scores(mixed).nan_to_num(), _pairwise_loop(inst, mixed).nan_to_num())
    assert not torch.equal(inst.pairwise_scores(mixed).nan_to_num(), still.nan_to_num())
    moved = inst.pairwise_scores(mixed)
    inst.video[0].fill_(0.25)                     # the same tensor edited in place
    assert torch.equal(inst.pairwise_scores(mixed).nan_to_num(), _pairwise_loop(inst, mixed).nan_to_num())
    assert not torch.equal(inst.pairwise_scores(mixed).nan_to_num(), moved.nan_to_num())
    moved = inst.pairwise_scores(mixed)
    wrong = next(k for k in range(len(inst.candidates)) if k != inst.answer)
    inst.candidates[wrong].mul_(0.5)              # a competitor edited in place
    assert torch.equal(inst.pairwise_scores(mixed).nan_to_num(), _pairwise_loop(inst, mixed).nan_to_num())
    assert not torch.equal(inst.pairwise_scores(mixed).nan_to_num(), moved.nan_to_num())


def test_cached_segments_go_with_an_instance_whose_video_is_a_view_of_its_candidates():
    """selfcorrection's `ending` scores `replace(inst, answer=e, video=inst.candidates[e])`: the cache must not keep
    such an instance's candidates alive through its video."""
    import dataclasses
    import gc

    from cos.tasks.base import _SEGMENTS
    n = len(_SEGMENTS)
    for seed in range(3):
        inst = make_instance("rotation", seed)
        e = (inst.answer + 1) % len(inst.candidates)
        as_e = dataclasses.replace(inst, answer=e, video=inst.candidates[e])
        assert as_e.score(inst.candidates[e]) == 1.0
        del inst, as_e
    gc.collect()
    assert len(_SEGMENTS) == n


"""Property tests of linear CKA and token energy."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from cos.metrics import cka_dissimilarity, linear_cka, token_energy

finite = st.floats(-10, 10, allow_nan=False, width=64)


def mats(n_min=5, n_max=20, d_max=8):
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.tuples(arrays(np.float64, (n, 6), elements=finite), arrays(np.float64, (n, 4), elements=finite)))


def usable(x):
    c = x - x.mean(0)
    return np.linalg.norm(c) > 1e-3 * max(1.0, np.abs(x).max())


def rand_orth(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@given(mats(), st.integers(0, 1000), st.floats(0.01, 100))
def test_cka_properties(xy, seed, scale):
    x, y = xy
    if not (usable(x) and usable(y)):
        return
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-9)
    c = linear_cka(X, Y)
    assert -1e-12 <= c <= 1 + 1e-12
    assert c == pytest.approx(linear_cka(Y, X), abs=1e-9)
    Xq = X @ torch.from_numpy(rand_orth(6, seed))
    assert linear_cka(Xq, Y) == pytest.approx(c, abs=1e-7)
    assert linear_cka(X * scale, Y) == pytest.approx(c, abs=1e-7)
    assert linear_cka(X, Y / scale) == pytest.approx(c, abs=1e-7)


@given(mats(n_min=6), st.integers(0, 1000))
def test_debiased_cka_properties(xy, seed):
    x, y = xy
    if not (usable(x) and usable(y)):
        return
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    try:
        xx = linear_cka(X, X, debiased=True)
    except ValueError:
        return  # degenerate draw: zero unbiased HSIC
    assert xx == pytest.approx(1.0, abs=1e-9)
    Xq = X @ torch.from_numpy(rand_orth(6, seed))
    try:
        c = linear_cka(X, Y, debiased=True)
    except ValueError:
        return
    assert c == pytest.approx(linear_cka(Xq, Y, debiased=True), abs=1e-6)
    assert c == pytest.approx(linear_cka(Y, X, debiased=True), abs=1e-9)


def test_debiased_matches_gram_formula_and_is_less_inflated():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(12, 50, generator=g, dtype=torch.float64), torch.randn(12, 40, generator=g, dtype=torch.float64)

    def hsic_u(K, L):
        n = K.shape[0]
        K, L = K - torch.diag(torch.diag(K)), L - torch.diag(torch.diag(L))
        one = torch.ones(n, dtype=K.dtype)
        return (torch.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))
    K, L = X @ X.T, Y @ Y.T
    ref = hsic_u(K, L) / torch.sqrt(hsic_u(K, K) * hsic_u(L, L))
    assert linear_cka(X, Y, debiased=True) == pytest.approx(float(ref), abs=1e-10)
    # independent features: the biased estimate is inflated at small n, the debiased one is ~0 on average
    pairs = [(torch.randn(12, 50, generator=g, dtype=torch.float64), torch.randn(12, 40, generator=g, dtype=torch.float64))
             for _ in range(40)]
    assert np.mean([linear_cka(a, b) for a, b in pairs]) > 0.5
    assert abs(np.mean([linear_cka(a, b, debiased=True) for a, b in pairs])) < 0.05


def test_cka_errors_are_clear():
    with pytest.raises(ValueError, match="more than 3"):
        linear_cka(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="must match"):
        linear_cka(torch.randn(5, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka(torch.ones(6, 4), torch.randn(6, 4))


def test_dissimilarity_and_energy():
    X = torch.randn(10, 5)
    assert cka_dissimilarity(X, X) == pytest.approx(0.0, abs=1e-9)
    h = torch.randn(2, 3, 4, 5, 7, dtype=torch.bfloat16)
    e = token_energy(h)
    assert e.shape == (2, 3, 4, 5) and e.dtype == torch.float32
    assert torch.allclose(e, h.float().norm(dim=-1), rtol=1e-3)


def test_gram_and_feature_space_paths_agree():
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(6, 40, generator=g), torch.randn(6, 30, generator=g)       # n < p: Gram path
    Xt, Yt = X.repeat(10, 1) + 0.01 * torch.randn(60, 40, generator=g), Y.repeat(10, 1)   # n > p: feature path
    X64, Y64 = X.double() - X.double().mean(0), Y.double() - Y.double().mean(0)
    feature_space = float((Y64.T @ X64).pow(2).sum() / ((X64.T @ X64).norm() * (Y64.T @ Y64).norm()))
    assert linear_cka(X, Y) == pytest.approx(feature_space, abs=1e-10)
    assert 0 <= linear_cka(Xt, Yt) <= 1


def test_prepared_cka_is_linear_cka_to_the_bit():
    """`LinearCKA(x)(y)`, the clean side prepared once (information_flow), gives linear_cka's number exactly."""
    from cos.metrics import LinearCKA

    g = torch.Generator().manual_seed(3)
    for n, f in ((300, 12), (8, 40)):
        for debiased in (False, True):
            x = torch.randn(n, f, generator=g)
            prep = LinearCKA(x, debiased)
            for _ in range(3):
                y = x + 0.5 * torch.randn(n, f, generator=g)
                assert prep(y) == linear_cka(x, y, debiased=debiased)


@pytest.mark.parametrize("n,f,debiased", [(576, 12, False), (300, 7, False), (8, 40, False), (300, 12, True)])
def test_batched_cka_equals_one_call_per_representation(n, f, debiased):
    """`LinearCKA(x).many(ys)` (information_flow: every branch at a step against the clean run at once) gives the
    per-y numbers; a constant y among them raises as its own call does; a wrong shape is refused."""
    from cos.metrics import LinearCKA

    g = torch.Generator().manual_seed(n + f)
    x = torch.randn(n, f, generator=g)
    scales = torch.tensor([0.0, 0.1, 1.0, 10.0, 1e3])[:, None, None]
    ys = (x + scales * torch.randn(5, n, f, generator=g)).reshape(5, n, f)
    prep = LinearCKA(x, debiased)
    want = [prep(y) for y in ys]
    got = LinearCKA(x, debiased).many(ys)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert LinearCKA(x, debiased).many(ys[1:2]) == pytest.approx([want[1]], rel=1e-12)
    flat = torch.cat([ys[:2], torch.ones(1, n, f)])
    with pytest.raises(ValueError, match="zero variance"):
        prep.many(flat)
    with pytest.raises(ValueError, match="expected"):
        prep.many(ys[:, :-1])
    assert prep.many(ys[:0]) == []
    for bad in (float("nan"), float("inf")):      # a non-finite y among good ones raises, as its own call does
        y = ys[2].clone()
        y[0, 0] = bad
        with pytest.raises(ValueError, match="zero variance"):
            prep(y)
        with pytest.raises(ValueError, match="zero variance"):
            prep.many(torch.stack([ys[1], y, ys[3]]))
    with pytest.raises(ValueError, match="zero variance"):      # a constant clean side
        LinearCKA(torch.ones(n, f), debiased).many(ys[1:3])
    with pytest.raises(ValueError, match="more than 3"):
        LinearCKA(torch.randn(3, f, generator=g), debiased).many(torch.randn(2, 3, f, generator=g))


def test_batched_cka_in_pieces_equals_one_piece(monkeypatch):
    """The stack is taken in pieces of MANY_BYTES (bounded memory): pieces of one y give the same numbers."""
    import cos.metrics as m

    g = torch.Generator().manual_seed(5)
    x, ys = torch.randn(100, 8, generator=g), torch.randn(7, 100, 8, generator=g)
    whole, pieces, inner = m.LinearCKA(x).many(ys), [], m.LinearCKA._many
    monkeypatch.setattr(m, "MANY_BYTES", 1)
    monkeypatch.setattr(m.LinearCKA, "_many", lambda self, part: pieces.append(len(part)) or inner(self, part))
    np.testing.assert_allclose(m.LinearCKA(x).many(ys), whole, rtol=1e-12, atol=0)
    assert pieces == [1] * 7


def test_tokens_of_a_stack_are_each_samples():
    """information_flow's patches of a stack (..., C, F, H, W) are each sample's own, exactly."""
    from cos.metrics import patch_tokens as tokens

    x = torch.randn(3, 4, 16, 2, 6, 8, generator=torch.Generator().manual_seed(0))
    got = tokens(x)
    assert got.shape == (3, 4, 2 * 3 * 4, 16 * 4)
    for i in range(3):
        for j in range(4):
            assert torch.equal(got[i, j], tokens(x[i, j]))
    one = x[0, 0]       # the per-sample layout itself: token (frame, row, col) holds that patch's C·2·2 values
    assert torch.equal(tokens(one)[1 * 12 + 1 * 4 + 2], one[:, 1, 2:4, 4:6].reshape(-1))


def test_information_flow_records_are_each_rows_own(monkeypatch):
    """measure_batch's dissimilarities, patches taken for the whole batch per (branch, step), are bit for bit those
    of the row-by-row computation it replaced (each row's clean tokens against a stack of its branches' tokens)."""
    from types import SimpleNamespace

    import cos.claims.information_flow as m
    from cos.metrics import LinearCKA
    from cos.readouts import RESEED, STEP_READINGS, NoiseSizing, noise_injection_steps

    rows, steps = 5, 6
    settings = SimpleNamespace(steps=steps)
    sizing = NoiseSizing((0.2, 0.5, 0.8), (1,))
    inj = noise_injection_steps(settings, sizing)
    g = torch.Generator().manual_seed(1)
    names = ["clean", RESEED, *[f"{r}{s}" for r in STEP_READINGS for s in inj]]
    res = {n: {"x0": torch.randn(steps, rows, 4, 3, 8, 8, generator=g)} for n in names}
    monkeypatch.setattr(m, "noise_sweep", lambda *a: res)
    batch = SimpleNamespace(instances=[SimpleNamespace(id=f"i{k}") for k in range(rows)], seeds=list(range(rows)))
    recs = m.InformationFlow().measure_batch(None, None, settings, batch, sizing)

    def tokens(x0):     # version 4's patches of one sample, as they were
        c, f, h, w = x0.shape
        return x0.reshape(c, f, h // 2, 2, w // 2, 2).permute(1, 2, 4, 0, 3, 5).reshape(f * (h // 2) * (w // 2), -1)

    assert [(r["instance"], r["seed"]) for r in recs] == [(f"i{k}", k) for k in range(rows)]
    assert all(list(r) == ["instance", "seed", "reseed", "curves"] for r in recs)
    last, clean = steps - 1, res["clean"]["x0"]
    need: dict[int, list[str]] = {last: [RESEED]}      # version 4's row-by-row computation, as it was
    for r in STEP_READINGS:
        for s in inj:
            for t in range(s + 1, last + 1):
                need.setdefault(t, []).append(f"{r}{s}")
    for row, rec in enumerate(recs):
        d = {}
        for t, branches in need.items():
            ys = torch.stack([tokens(res[n]["x0"][t][row]) for n in branches])
            cka = LinearCKA(tokens(clean[t][row])).many(ys)
            d.update({(n, t): 1.0 - c for n, c in zip(branches, cka)})
        assert rec["reseed"] == d[RESEED, last]
        for r in STEP_READINGS:
            for s in inj:
                assert rec["curves"][r][str(s)] == [d[f"{r}{s}", t] for t in range(s + 1, last + 1)], (row, r, s)

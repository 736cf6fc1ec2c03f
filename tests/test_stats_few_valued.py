"""`cos.stats.few_valued_bounds`: bootstrap_ci's interval for samples of 3-4 distinct values at n ≤ 16 (issue 24:
distill.four_step's positive control, per-instance means of 2 seeds' 0/1 drops, {0, 0.5, 1}, got [-0.62, 1.10]
from Hall's fallback). benchmarks/interval_coverage.py --few-valued is the full exact table; these are its checks
on a few cells, exact (every multinomial sample enumerated, so no Monte Carlo error and no seed), and a fixed-seed
simulation of bootstrap_ci itself."""
import numpy as np
import pytest
from scipy import stats

import cos.stats as S
from cos.stats import bootstrap_ci, distinct_values, expanded_tail, few_valued_bounds

DISTILL = ([0, 0.5, 1], [0.137, 0.466, 0.397])     # 2 seeds' mean of a drop that lands with q = 0.63


def _exact(support, probs, n, level=0.95):
    """Exact (coverage, P(lo > mu), P(hi < mu), the same two from samples on the few-valued path) of bootstrap_ci
    over every sample with ≥ 2 distinct values (the others are undecidable), weighted by its probability."""
    import itertools
    support, probs = np.asarray(support, float), np.asarray(probs, float)
    mu = float(support @ probs)
    tot = above = below = fv_above = fv_below = 0.0
    for cut in itertools.combinations(range(n + len(support) - 1), len(support) - 1):
        c = np.diff((-1,) + cut + (n + len(support) - 1,)) - 1
        k = int(np.count_nonzero(c))
        if k < 2:
            continue
        p = float(stats.multinomial.pmf(c, n, probs))
        e = bootstrap_ci(np.repeat(support, c), confidence=level)
        tot += p
        above, below = above + p * (e.ci_low > mu), below + p * (e.ci_high < mu)
        if k >= 3:
            fv_above, fv_below = fv_above + p * (e.ci_low > mu), fv_below + p * (e.ci_high < mu)
    return 1 - (above + below) / tot, above / tot, below / tot, fv_above / tot, fv_below / tot


def test_the_distill_control_sample_hand_checked():
    """{0, 0.5, 0.5, 1, 1, 1, 1, 1}: was [-0.624, 1.104] (Hall's lower bound, a range below the data). Now the upper
    bound is Student's t at the expanded quantile, 0.75 + z·s/√8 with s² = 1/7, and the lower one the score bound:
    n(x̄ − lo)² = z²·σ²(lo), σ² the variance of the empirical-likelihood weights on {0, 0.5, 1} with mean lo."""
    x = np.array([0, 0.5, 0.5, 1, 1, 1, 1, 1])
    z = expanded_tail(8)[1]
    assert z == pytest.approx(np.sqrt(8 / 7) * stats.t.ppf(0.975, 7))
    e = bootstrap_ci(x)
    assert e.ci_high == pytest.approx(0.75 + z * np.sqrt(1 / 7) / np.sqrt(8), rel=1e-12)
    assert e.ci_high == pytest.approx(1.08780, abs=1e-5)
    assert e.ci_low == pytest.approx(0.36722, abs=1e-5)
    lo = e.ci_low
    # the EL weights at lo: p_j = w_j / (n(1 + λ d_j)) sum to 1 and have mean lo; the score equals z² there
    v, w = np.array([0, 0.5, 1]), np.array([1.0, 2.0, 5.0])
    var = S._el_variance(v, w, lo)
    assert 8 * (0.75 - lo) ** 2 / var == pytest.approx(z * z, rel=1e-8)
    assert e.ci_low > 0          # the control's drop is decided: holds against 0


def test_on_two_values_the_score_part_is_wilson():
    """The score interval over two observed values is Wilson's (same z), here on 3 of 10 ones and on 0/0.5 data."""
    z = expanded_tail(10)[1]
    level = 1 - 2 * stats.norm.sf(z)
    w = stats.binomtest(3, 10).proportion_ci(confidence_level=level, method="wilson")
    v, c = np.array([0.0, 1.0]), np.array([7.0, 3.0])
    assert S._el_score_bound(v, c, 0.3, 10, z, 0.0) == pytest.approx(w.low, abs=1e-9)
    assert S._el_score_bound(v, c, 0.3, 10, z, 1.0) == pytest.approx(w.high, abs=1e-9)
    assert S._el_score_bound(v / 2, c, 0.15, 10, z, 0.5) == pytest.approx(w.high / 2, abs=1e-9)


def test_which_samples_take_the_few_valued_path(monkeypatch):
    """3-4 distinct values at n ≤ 16 only; two values, five, or n > 16 keep the bootstrap-t/Hall path unchanged."""
    calls = []
    real = S.few_valued_bounds
    monkeypatch.setattr(S, "few_valued_bounds", lambda x, z: calls.append(x.size) or real(x, z))
    for x in ([0, 0.5, 1, 1], [0, 1 / 3, 2 / 3, 1] * 4, [0, 0.5 - 1e-15, 0.5, 1]):
        bootstrap_ci(x)
    assert calls == [4, 16, 4]
    calls.clear()
    for x in ([0, 1, 1, 1], [0, 0.25, 0.5, 0.75, 1], [0, 0.5, 1] * 6, list(np.linspace(0, 1, 12))):
        bootstrap_ci(x)
    assert calls == []
    assert distinct_values(np.array([0, 0.5 - 1e-15, 0.5, 1])) == 3


def test_few_valued_bounds_contain_students_t_and_stay_finite():
    rng = np.random.default_rng(7)
    for _ in range(50):
        x = rng.choice([-1.0, 0.0, 1.0], size=int(rng.integers(3, 17)), p=[0.1, 0.5, 0.4])
        if distinct_values(x) < 3:
            continue
        z = expanded_tail(x.size)[1]
        lo, hi = few_valued_bounds(x, z)
        m, se = x.mean(), x.std(ddof=1) / np.sqrt(x.size)
        assert np.isfinite(lo) and np.isfinite(hi)
        assert lo <= m - z * se + 1e-12 and hi >= m + z * se - 1e-12


@pytest.mark.parametrize("n,expected", [
    (8, (0.98466, 0.0, 0.01534)),   # was 0.9847 [0, 0.0153] too: the misses are samples of 0 and 0.5 only
    (16, (0.98610, 0.00171, 0.01219)),
])
def test_exact_coverage_on_the_distill_shape(n, expected):
    cov, above, below, fv_above, fv_below = _exact(*DISTILL, n)
    assert (cov, above, below) == pytest.approx(expected, abs=1e-4)
    assert cov >= 0.95 and fv_above <= 0.025 and fv_below <= 0.025


@pytest.mark.parametrize("support,probs", [([-1, 0, 1], [0.02, 0.28, 0.7]), ([0, 0.5, 1], [0.8, 0.15, 0.05]),
                                           ([0, 1 / 3, 2 / 3, 1], list(stats.binom.pmf(range(4), 3, 0.3)))])
@pytest.mark.parametrize("n", [6, 12])
def test_exact_coverage_of_skewed_and_rare_few_valued_data(support, probs, n):
    cov, above, below, fv_above, fv_below = _exact(support, probs, n)
    assert cov >= 0.95 and above <= 0.025 and below <= 0.025, (cov, above, below)


def test_the_first_looks_level_on_the_few_valued_path():
    """At 99.93% (look 1 of 3) samples of 3 values miss the mean on neither side more than (1 − level)/2."""
    *_, fv_above, fv_below = _exact(*DISTILL, 8, level=0.99931)
    assert fv_above <= 0.00035 and fv_below <= 0.00035


def test_a_fixed_seed_simulation_of_the_distill_shape():
    """400 samples of the distill shape at n = 8 (seed 24): coverage ≥ 0.95 − 3 MCSE, and the median interval is
    narrower than before (0.855 with Hall's fallback, exact; 0.636 now)."""
    rng = np.random.default_rng(24)
    X = rng.choice(DISTILL[0], size=(400, 8), p=DISTILL[1])
    X = X[np.ptp(X, axis=1) > 0]
    mu = float(np.dot(*DISTILL))
    est = [bootstrap_ci(x) for x in X]
    lo, hi = np.array([e.ci_low for e in est]), np.array([e.ci_high for e in est])
    cov = np.mean((lo <= mu) & (mu <= hi))
    assert cov >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / len(X))
    assert np.median(hi - lo) < 0.7

"""Coverage of `cos.stats.bootstrap_ci` at the n claims decide on (8, 16, 32), by simulation (issue 23, item 6).

The full table, with the other methods compared and more data sets, is benchmarks/interval_coverage.py; this is
its check on bootstrap_ci itself, small enough for the suite: 400 data sets per distribution and n, each one call.
Data sets whose values are all equal are left out (bootstrap_ci marks them undecidable: no status is decided on
them). The same harness run on plain BCa, what bootstrap_ci was, fails at n = 8: the check can fail.
"""
import warnings

import numpy as np
import pytest
from scipy import stats

from cos.stats import bootstrap_ci, expanded_tail, hall_t_bounds

NS = (8, 16, 32)
SETS = 400


def _bernoulli_means(rng, shape):  # the mean of 1-3 Bernoulli(0.2) seeds per instance: ~65% zeros
    k = rng.integers(1, 4, shape)
    return rng.binomial(k, 0.2) / k


_TIES, _TIES_P = np.array([-1, -0.5, 0, 0.5, 1]), np.array([0.05, 0.1, 0.45, 0.3, 0.1])

# per-instance means as claims average them: bounded in [0, 1] or [-1, 1]; (sampler, true mean)
DISTRIBUTIONS = {
    "normal": (lambda rng, shape: rng.normal(0.5, 0.15, shape), 0.5),
    "skewed beta(0.5, 3)": (lambda rng, shape: rng.beta(0.5, 3.0, shape), 0.5 / 3.5),
    "0/1-heavy": (_bernoulli_means, 0.2),
    "ties on a 5-point grid": (lambda rng, shape: rng.choice(_TIES, size=shape, p=_TIES_P), float(_TIES @ _TIES_P)),
}


def _data(name: str, n: int, sets: int) -> np.ndarray:
    sampler, _ = DISTRIBUTIONS[name]
    return sampler(np.random.default_rng([n, sum(map(ord, name))]), (sets, n))


def coverage(intervals, name: str, n: int, sets: int = SETS) -> dict:
    """Run `intervals` ((sets, n) data → lo, hi arrays) on `sets` data sets of a distribution: the two-sided coverage
    of its true mean, the rates of missing it on either side, the number of decidable data sets, and the coverage
    threshold 0.95 − 3 MCSE (MCSE at the nominal 0.95)."""
    X = _data(name, n, sets)
    mu = DISTRIBUTIONS[name][1]
    lo, hi = (np.asarray(v, dtype=np.float64) for v in intervals(X))
    dec = np.ptp(X, axis=1) > 0
    k = int(dec.sum())
    above, below = float(np.mean(lo[dec] > mu)), float(np.mean(hi[dec] < mu))
    return {"coverage": 1 - above - below, "above": above, "below": below, "k": k,
            "threshold": 0.95 - 3 * np.sqrt(0.95 * 0.05 / k)}


def with_bootstrap_ci(X):
    est = [bootstrap_ci(x) for x in X]
    return [e.ci_low for e in est], [e.ci_high for e in est]


def with_plain_bca(X):
    """What bootstrap_ci was: scipy's percentile-BCa (percentile where BCa is NaN), all data sets in one call."""
    def ci(method):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.bootstrap((X,), np.mean, confidence_level=0.95, n_resamples=2000, method=method,
                                random_state=np.random.default_rng(0), vectorized=True, axis=-1)
        return r.confidence_interval.low, r.confidence_interval.high
    (lo, hi), (plo, phi) = ci("BCa"), ci("percentile")
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    return np.where(bad, plo, lo), np.where(bad, phi, hi)


@pytest.fixture(scope="module")
def results():
    return {(d, n): coverage(with_bootstrap_ci, d, n) for d in DISTRIBUTIONS for n in NS}


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
def test_bootstrap_ci_covers_the_mean_at_small_n(results, dist, n):
    r = results[dist, n]
    assert r["k"] >= 0.9 * SETS
    assert r["coverage"] >= r["threshold"], r


def test_bootstrap_ci_misses_each_side_at_most_at_the_nominal_rate(results):
    """A false `holds` is a one-sided miss: pooled over the cells above, each side ≤ 0.025 + 3 MCSE."""
    k = sum(r["k"] for r in results.values())
    for side in ("above", "below"):
        rate = sum(r[side] * r["k"] for r in results.values()) / k
        assert rate <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / k), (side, rate)


@pytest.mark.parametrize("dist", ["normal", "skewed beta(0.5, 3)", "ties on a 5-point grid"])
def test_the_harness_fails_plain_bca_at_n_8(dist):
    """BCa, what bootstrap_ci was until the simulation, covers 0.85-0.88 at n = 8: the same check rejects it
    (on 1000 data sets: one call for all of them, so more are cheap)."""
    r = coverage(with_plain_bca, dist, 8, sets=1000)
    assert r["coverage"] < r["threshold"], r


def test_data_with_many_ties_get_finite_bounds():
    """5 of 8 instances at 0: more resamples than the tail are all zeros (t* = −inf), so bootstrap-t leaves the upper
    side unbounded; that side is Hall's skewness-corrected t bound instead, finite and above the mean."""
    x = np.array([0, 0, 0, 0, 0, 1 / 3, 0.5, 1.0])
    e = bootstrap_ci(x)
    assert np.isfinite(e.ci_low) and np.isfinite(e.ci_high) and e.ci_low < e.value < e.ci_high and e.decidable
    assert e.ci_high == pytest.approx(hall_t_bounds(x, expanded_tail(8)[1])[1])

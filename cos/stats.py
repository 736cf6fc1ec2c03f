"""Confidence intervals for claim measurements (scipy.stats.bootstrap underneath)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A statistic with its confidence interval and sample size."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: Callable = np.mean, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Percentile-BCa bootstrap CI of `statistic` over independent values (NaN → error, n < 2 → error)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"bootstrap_ci: needs at least 2 values, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci: values contain NaN or Inf")
    value = float(statistic(x))
    if np.all(x == x[0]):  # degenerate: every resample gives the same statistic
        return Estimate(value, value, value, x.size, confidence)
    res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                          method="BCa", random_state=np.random.default_rng(seed), vectorized=False)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa can fail on near-degenerate data
        res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", random_state=np.random.default_rng(seed), vectorized=False)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Estimate(value, lo, hi, x.size, confidence)


def interval(values: Sequence[float] | np.ndarray) -> list[float]:
    """[ci_low, ci_high] of the mean for drawing a band: the point itself when there is one value or no spread."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or np.ptp(v) == 0:
        return [float(v.mean())] * 2
    e = bootstrap_ci(v)
    return [e.ci_low, e.ci_high]


def paired_difference_ci(a: Sequence[float], b: Sequence[float], **kw) -> Estimate:
    """CI of mean(a − b) over paired observations (same task instance and seed in both arms)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference_ci: arms have shapes {a.shape} and {b.shape}; pairs must match")
    return bootstrap_ci(a - b, **kw)

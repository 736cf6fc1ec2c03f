"""Confidence intervals for claim measurements.

Every claim decides on an interval of a mean over task instances (`bootstrap_ci`), at n = 8, 16 or 32. Percentile-BCa,
used until now, covers only ~0.88 at n = 8 (a false `holds` 6% of the time on either side instead of 2.5%). The mean's
interval is now a bootstrap-t (studentized) interval at Hesterberg's expanded level, with Hall's skewness-corrected t
where a bootstrap-t bound is unbounded (`bootstrap_ci` says how and why); `benchmarks/interval_coverage.py` is the
simulation that chose it and `tests/test_interval_coverage.py` checks its coverage at n = 8, 16, 32. The resample
indices are the ones scipy.stats.bootstrap draws; proportions use Wilson (scipy.stats.binomtest).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
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
    # False when the interval is not informative: every value was equal, so a bootstrap gives a zero-width
    # interval whatever n is (8 zeros are not proof that the rate is 0). A status is never decided on it.
    decidable: bool = True

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


_AXIS_STATISTICS = (np.mean,)
DEFAULT_CONFIDENCE = 0.95
# The level of every decision interval computed while a sequential look concludes (cos.sequential): the functions
# below take `confidence=None` to mean this level, so a claim's conclusion needs no parameter for it
_LEVEL: contextvars.ContextVar[float] = contextvars.ContextVar("cos_decision_level", default=DEFAULT_CONFIDENCE)


@contextlib.contextmanager
def decision_level(confidence: float):
    """Intervals computed inside default to `confidence` (a sequential look's level)."""
    token = _LEVEL.set(float(confidence))
    try:
        yield
    finally:
        _LEVEL.reset(token)


_POINT: contextvars.ContextVar[bool] = contextvars.ContextVar("cos_point_estimates", default=False)


@contextlib.contextmanager
def point_estimates():
    """Inside, the interval functions return their point estimate with a zero-width interval and draw no resample:
    for recomputing a conclusion's estimate many times over subsets of its units (cos.gate's jackknife), which
    reads `measured` only. No decision may be taken on a row concluded inside."""
    token = _POINT.set(True)
    try:
        yield
    finally:
        _POINT.reset(token)


def current_level(confidence: float | None = None) -> float:
    """`confidence`, or the decision level in force (0.95 outside a sequential look)."""
    return _LEVEL.get() if confidence is None else float(confidence)


@functools.lru_cache(maxsize=256)
def expanded_tail(n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Hesterberg's (2015) expanded level for n values: the one-sided tail probability a and its normal quantile z =
    √(n/(n−1))·t_{n−1}((1+confidence)/2); the interval is taken between the a and 1 − a quantiles (n = 8: a = 0.0057
    instead of 0.025; n = 32: 0.019; → (1 − confidence)/2 as n grows)."""
    z = float(np.sqrt(n / (n - 1)) * stats.t.ppf((1 + confidence) / 2, n - 1))
    return float(stats.norm.sf(z)), z


def _studentized_mean(center: float, se_floor: float = 0.0) -> Callable:
    """t* = (mean(x*) − center) / (sd(x*)/√n) of resamples along `axis`. A resample with no spread gives ±inf (its
    mean is off the centre by a finite amount: the studentized tail is unbounded that way), or 0 if its mean is the
    centre. A standard error at or below `se_floor` counts as no spread: values tied up to float rounding (1.0 and
    0.99999999) otherwise give t* of 1e8 and a bound millions of units away (seen: [-2060970, 1.03] for scores)."""
    def t(x, axis=-1):
        se = np.std(x, axis=axis, ddof=1) / np.sqrt(x.shape[axis])
        se = np.where(se <= se_floor, 0.0, se)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (np.mean(x, axis=axis) - center) / se
        return np.where(np.isnan(r), 0.0, r)
    return t


def bootstrap_t_star(x: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """t* of `n_resamples` resamples of x, all in one vectorised call. The resample indices are the ones
    scipy.stats.bootstrap draws from np.random.default_rng(seed) (rng.integers(0, n, (n_resamples, n))), and t* is
    the same bit for bit as scipy.stats.bootstrap evaluating `_studentized_mean` per resample (a test checks it).
    By hand because scipy has no studentized method, and its bootstrap takes 10-13x as long here (n = 8-32: input
    validation, and a percentile interval and standard error of t* that are not used), which the coverage test's
    ~5000 calls would feel."""
    idx = np.random.default_rng(seed).integers(0, x.size, (n_resamples, x.size))
    return _studentized_mean(float(np.mean(x)), se_floor(x))(x[idx], axis=-1)


def se_floor(x: np.ndarray) -> float:
    """The resample standard error below which a resample counts as having no spread: a millionth of the sample's
    own (and float rounding of its values' scale), so that float noise among tied values is not studentized."""
    return max(1e-6 * float(np.std(x, ddof=1) / np.sqrt(x.size)), 1e-12 * float(np.max(np.abs(x))))


def hall_t_bounds(x: np.ndarray, z: float) -> tuple[float, float]:
    """Hall's (1992) skewness-corrected t interval of the mean at normal quantile z: the t statistic T is
    transformed by g(T) = T + γ̂T²/(3√n) + γ̂²T³/(27n) + γ̂/(6√n) (γ̂ the adjusted sample skewness G1), which is
    monotone and inverted in closed form. Closed form, always finite; scipy has no such interval, hence by hand."""
    n = x.size
    m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(n))
    g = float(stats.skew(x, bias=False)) if n > 2 else 0.0
    g = g if np.isfinite(g) else 0.0
    a, b = g / (3 * np.sqrt(n)), g / (6 * np.sqrt(n))

    def ginv(y: float) -> float:  # g(t) = ((1 + a·t)³ − 1)/(3a) + b  ⇒  t = ((1 + 3a(y − b))^⅓ − 1)/a
        return y - b if abs(a) < 1e-12 else float((np.cbrt(1 + 3 * a * (y - b)) - 1) / a)

    return m - se * ginv(z), m - se * ginv(-z)


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: Callable = np.mean, confidence: float | None = None,
                 n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """CI of `statistic` over independent values (NaN → error, n < 2 → error; all values equal → a point, not
    decidable). For the mean (every claim's statistic): a bootstrap-t interval at Hesterberg's expanded level.

    Bootstrap-t: the a and 1 − a quantiles q of t* = (mean* − mean)/se* over resamples give
    [mean − q(1−a)·se, mean − q(a)·se]; a is the expanded tail (`expanded_tail`: 0.0057 at n = 8, 0.0138 at 16,
    0.0192 at 32 for 95%). A bound whose quantile falls among resamples with no spread (t* = ±inf: data with many
    ties, e.g. 5 of 8 values 0) is unbounded, and one more than the sample's range beyond the sample is unstable
    (resamples of values tied within clusters); that side is then Hall's skewness-corrected t bound at the same
    level (`hall_t_bounds`). In simulation (benchmarks/interval_coverage.py: normal, skewed, 0/1-heavy, bimodal, tied data at
    n = 8, 16, 32) this keeps two-sided coverage ≥ 0.95 and each one-sided miss ≤ 0.025 within Monte Carlo error,
    where BCa covered 0.85-0.88 at n = 8 and plain bootstrap-t or Student t missed 5-11% on one side of skewed data.
    The price is width: about 2.1×, 1.3×, 1.1× BCa's at n = 8, 16, 32 on normal data.

    np.mean takes `axis`: the studentized mean is evaluated on all resamples in one call (the same resample indices
    and the same interval bit for bit as one call per resample). Any other statistic (no claim uses one) has no
    standard error to studentize with: it gets scipy's BCa at the same expanded level, percentile where BCa fails,
    which the simulation did not check."""
    confidence = current_level(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"bootstrap_ci: needs at least 2 values, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci: values contain NaN or Inf")
    value = float(statistic(x))
    if _POINT.get():
        return Estimate(value, value, value, x.size, confidence)
    if np.all(x == x[0]):  # degenerate: every resample gives the same statistic
        return Estimate(value, value, value, x.size, confidence, decidable=False)
    tail, z = expanded_tail(x.size, confidence)
    if statistic in _AXIS_STATISTICS and confidence > DEFAULT_CONFIDENCE and tail * n_resamples < 10:
        # a sequential look's level: a tail this thin has too few resamples beyond it (look 1 of 3 at 99.93%, n = 16:
        # a = 5e-6); more resamples up to 100k, beyond that Hall's analytic skewness-corrected bounds
        if 10 / tail <= 100_000:
            n_resamples = int(np.ceil(10 / tail))
        else:
            lo, hi = hall_t_bounds(x, z)
            return Estimate(value, lo, hi, x.size, confidence)
    if statistic in _AXIS_STATISTICS:
        q_lo, q_hi = np.quantile(bootstrap_t_star(x, n_resamples, seed), [tail, 1 - tail], method="inverted_cdf")
        se = float(np.std(x, ddof=1) / np.sqrt(x.size))
        with np.errstate(invalid="ignore"):
            lo, hi = value - float(q_hi) * se, value - float(q_lo) * se
        # a bound is unstable where its quantile falls among resamples with no spread (±inf) or with a spread so
        # much smaller than the sample's that t* explodes (values tied within clusters: seen [-38, 1.03] for a mean
        # of 12 scores in [0, 1]); a mean's bound more than the sample's range beyond the sample is taken as that
        reach = float(np.ptp(x))
        ok_lo = np.isfinite(lo) and lo >= float(x.min()) - reach
        ok_hi = np.isfinite(hi) and hi <= float(x.max()) + reach
        if not (ok_lo and ok_hi):
            h_lo, h_hi = hall_t_bounds(x, z)
            lo, hi = (lo if ok_lo else h_lo), (hi if ok_hi else h_hi)
        return Estimate(value, lo, hi, x.size, confidence)
    level = min(1 - 2 * tail, float(np.nextafter(1.0, 0.0)))
    for method in ("BCa", "percentile"):  # BCa can fail on near-degenerate data
        res = stats.bootstrap((x,), statistic, confidence_level=level, n_resamples=n_resamples, method=method,
                              random_state=np.random.default_rng(seed), vectorized=False)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            break
    return Estimate(value, lo, hi, x.size, confidence)


def interval(values: Sequence[float] | np.ndarray) -> list[float]:
    """[ci_low, ci_high] of the mean for drawing a band: the point itself when there is one value or no spread."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or np.ptp(v) == 0:
        return [float(v.mean())] * 2
    e = bootstrap_ci(v, confidence=DEFAULT_CONFIDENCE)   # a drawn band: 95% whatever look it is drawn at
    return [e.ci_low, e.ci_high]


def paired_difference_ci(a: Sequence[float], b: Sequence[float], **kw) -> Estimate:
    """CI of mean(a − b) over paired observations (same task instance and seed in both arms)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference_ci: arms have shapes {a.shape} and {b.shape}; pairs must match")
    return bootstrap_ci(a - b, **kw)


def proportion_ci(successes: int, n: int, confidence: float | None = None) -> Estimate:
    """Wilson score interval of a proportion (scipy.stats.binomtest): informative also at 0/n and n/n, where
    a bootstrap collapses to a point."""
    confidence = current_level(confidence)
    if n < 1:
        raise ValueError(f"proportion_ci: needs n >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"proportion_ci: successes={successes} outside [0, {n}]")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), int(n), confidence)


def share_ci(per_unit: Sequence[Sequence[float]], confidence: float | None = None) -> Estimate:
    """CI of a share of 0/1 outcomes grouped by unit (task instance; its seeds are not independent): Wilson on
    the units when each has one outcome or when every unit agrees, else a bootstrap over the units' means."""
    confidence = current_level(confidence)
    means = np.array([np.mean(u) for u in per_unit], dtype=np.float64)
    if means.size == 0:
        raise ValueError("share_ci: no units")
    # every unit 0 or 1 (its seeds agree): the units are Bernoulli outcomes and Wilson is their interval (a
    # bootstrap-t of 13 ones and 2 zeros gave [0.093, 1.011] where Wilson gives [0.621, 0.963])
    if all(len(u) == 1 for u in per_unit) or np.isin(means, (0.0, 1.0)).all():
        return proportion_ci(int(round(means.sum())), means.size, confidence)
    return bootstrap_ci(means, confidence=confidence)


def argmax_ci(curves: np.ndarray, confidence: float | None = None, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Where a curve peaks, with an interval: `curves` is (units, positions); the estimate is the argmax of the
    mean curve, the interval the percentile interval of the argmax over bootstrap resamples of the units.
    Ties count at both ends: a resample whose maximum is shared by several positions contributes its first to
    the lower quantile and its last to the upper one, and the interval always covers every position tied at the
    mean curve's maximum (`np.argmax` alone picks the first: a plateau over blocks 4-7 read as a peak at 4 with
    a zero-width interval)."""
    confidence = current_level(confidence)
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2:
        raise ValueError(f"argmax_ci: needs (units >= 2, positions), got shape {c.shape}")
    if _POINT.get():
        m = c.mean(axis=0)
        peak = float(np.flatnonzero(np.isclose(m, m.max(), rtol=0, atol=1e-12))[0])
        return Estimate(peak, peak, peak, c.shape[0], confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.shape[0], size=(n_resamples, c.shape[0]))
    means = c[idx].mean(axis=1)                                       # (resamples, positions)
    top = np.isclose(means, means.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    first, last = np.argmax(top, axis=1), c.shape[1] - 1 - np.argmax(top[:, ::-1], axis=1)
    a = (1 - confidence) / 2
    lo = float(np.quantile(first, a, method="inverted_cdf"))
    hi = float(np.quantile(last, 1 - a, method="inverted_cdf"))
    m = c.mean(axis=0)
    tied = np.flatnonzero(np.isclose(m, m.max(), rtol=0, atol=1e-12))
    return Estimate(float(tied[0]), min(lo, float(tied[0])), max(hi, float(tied[-1])), c.shape[0], confidence)


def in_window(est: Estimate, lo: float, hi: float) -> str:
    """`holds` when the whole interval lies in [lo, hi], `fails` when it lies wholly outside, else
    `inconclusive` (a peak-location condition)."""
    if lo <= est.ci_low and est.ci_high <= hi:
        return "holds"
    if est.ci_high < lo or est.ci_low > hi:
        return "fails"
    return "inconclusive"


def _se(est: Estimate) -> float | None:
    """The standard error an interval implies under a normal approximation (se = width / 2z); None where the
    interval says nothing (undecidable, missing or zero width)."""
    if not est.decidable or est.ci_low is None or est.ci_high is None:
        return None
    se = (est.ci_high - est.ci_low) / (2 * float(stats.norm.ppf(1 - (1 - est.confidence) / 2)))
    return se if se > 0 else None


def one_sided_p(est: Estimate, threshold: float, direction: str) -> float | None:
    """p-value of "the effect is not on the claimed side of the threshold", from the interval by a normal
    approximation (se = CI width / 2z). Only for the Holm adjustment across claims; None when undecidable."""
    se = _se(est)
    if se is None:
        return None
    t = (est.value - threshold) / se
    return float(stats.norm.sf(t) if direction == ">" else stats.norm.cdf(t))


def detectable(est: Estimate, threshold: float, power: float = 0.8) -> dict | None:
    """What this run could have seen, from its own interval and n: the smallest effect (distance from the
    threshold) whose CI would clear the threshold with probability `power`, and, where the estimate lies off the
    threshold, about how many units a run needs to decide it with that power. Normal approximation on the
    interval (se = width / 2z), so it also covers Wilson and cluster intervals; None where the interval says
    nothing (every value equal, or zero width)."""
    se = _se(est)
    if se is None:
        return None
    z, zb = float(stats.norm.ppf(1 - (1 - est.confidence) / 2)), float(stats.norm.ppf(power))
    gap = abs(est.value - threshold)
    # se ∝ 1/√n: n units give an interval that clears the threshold at this gap with the given power
    n_dec = int(np.ceil(est.n * ((z + zb) * se / gap) ** 2)) if gap > 0 else None
    return {"power": power, "se": se, "min_detectable_effect": (z + zb) * se, "n": est.n, "n_to_decide": n_dec}


def holm(pvalues: dict[str, float], alpha: float = 0.05) -> dict[str, dict]:
    """Holm's step-down adjustment: {key: {"p": p, "p_adjusted": q, "rejects": q < alpha}}."""
    order = sorted(pvalues, key=pvalues.get)
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = {"p": pvalues[k], "p_adjusted": running, "rejects": running < alpha}
    return out


def spearman_ci(pairs: dict[str, list[tuple[float, float]]], confidence: float | None = None, n_resamples: int = 1000,
                seed: int = 0) -> tuple[float, list[float] | None]:
    """Spearman ρ over the (x, y) pairs of every unit pooled, and its percentile interval from resampling whole
    units (a task instance's pairs are not independent). ρ is NaN where it is undefined (fewer than 3 pairs or a
    constant coordinate); the interval is None with fewer than 2 units or no defined resample."""
    confidence = current_level(confidence)
    ids = sorted(pairs)

    def rho(keys) -> float:
        ps = [p for k in keys for p in pairs[k]]
        if len(ps) < 3 or len({p[0] for p in ps}) < 2 or len({p[1] for p in ps}) < 2:
            return float("nan")
        return float(stats.spearmanr([p[0] for p in ps], [p[1] for p in ps]).statistic)

    est = rho(ids)
    if len(ids) < 2 or np.isnan(est) or _POINT.get():
        return est, None
    rng = np.random.default_rng(seed)
    # the same unit draws as one rng.integers call per resample (the loop this replaced), their ρ all at once
    counts = np.stack([np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
                       for _ in range(n_resamples)])
    boots = _weighted_spearman([pairs[k] for k in ids], counts)     # finite: a NaN pair made est NaN above
    boots = boots[~np.isnan(boots)]
    a = round((1 - confidence) / 2, 12)   # 0.025, not 0.02500000000000002
    return est, [float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))] if len(boots) else None


def _weighted_spearman(units: list[list[tuple[float, float]]], counts: np.ndarray) -> np.ndarray:
    """Spearman ρ of the pooled pairs of every resample at once: resample b takes unit u `counts[b, u]` times.
    scipy.stats.spearmanr of each resample's pooled list (Pearson r of tie-averaged ranks) is this arithmetic:
    a value's average rank is (weight of smaller values) + (its own weight + 1) / 2, and a pair drawn w times
    enters the Pearson sums w times. Hand-written because scipy ranks one sample per call (1000 calls a
    bootstrap); equal to that loop up to float64 rounding (tests/test_stats_registry.py). NaN where the loop
    gave NaN: fewer than 3 pairs, or a coordinate with a single value."""
    unit = np.repeat(np.arange(len(units)), [len(u) for u in units])
    xy = np.array([p for u in units for p in u], dtype=np.float64).reshape(-1, 2)
    cols = [np.unique(col, return_inverse=True) for col in xy.T]
    # bounded memory: each (resamples, pairs) array of a chunk stays near 32 MB whatever the number of pairs (about
    # ten are alive at once)
    chunk = max(1, min(256, int(4e6 // max(1, len(unit)))))
    out = np.empty(counts.shape[0])
    for lo in range(0, counts.shape[0], chunk):
        w = counts[lo:lo + chunk][:, unit].astype(np.float64)
        ranks = []
        for vals, group in cols:
            g = len(vals)      # weight per distinct value, per resample (sums of integers: exact)
            wg = np.bincount((np.arange(w.shape[0])[:, None] * g + group).ravel(), weights=w.ravel(),
                             minlength=w.shape[0] * g).reshape(w.shape[0], g)
            below = np.cumsum(wg, axis=1) - wg
            ranks.append(((below + (wg + 1) / 2)[:, group], (wg > 0).sum(1)))
        (rx, nx), (ry, ny) = ranks
        n = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):    # a resample of empty units only: n = 0, NaN
            mx, my = (w * rx).sum(1) / n, (w * ry).sum(1) / n
            dx, dy = rx - mx[:, None], ry - my[:, None]
            r = (w * dx * dy).sum(1) / np.sqrt((w * dx * dx).sum(1) * (w * dy * dy).sum(1))
        out[lo:lo + chunk] = np.where((n < 3) | (nx < 2) | (ny < 2), np.nan, np.clip(r, -1.0, 1.0))
    return out

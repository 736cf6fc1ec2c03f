"""Sequential decisions: a claim concludes on the records it has after each look and stops once decided.

The design is group-sequential: a few looks (at most `LOOKS`, at fixed fractions of the claim's batches), each
deciding on the claim's own interval at a level set by Lan-DeMets α-spending with an O'Brien-Fleming-type
spending function, α(t) = 2 − 2Φ(z_{1−α/2}/√t). The level of look k is the exact group-sequential boundary c_k:
P_H0(|Z_1| < c_1, …, |Z_k| < c_k) = 1 − α(t_k), Corr(Z_i, Z_j) = √(t_i/t_j) (scipy's multivariate normal).

Why this and not an anytime-valid confidence sequence (betting or empirical-Bernstein, `confseq`):
- every claim decides on an interval of its own (bootstrap-t of a mean, Wilson of a share, a cluster bootstrap,
  the argmax of a curve), whose coverage was checked at the n it decides on. α-spending keeps each interval and
  only changes its level per look (`cos.stats.decision_level`); a confidence sequence would replace all of them
  with one family that needs bounded observations and is ~1.5-2× wider than the fixed-n interval at the last n;
- O'Brien-Fleming spends almost nothing early (3 equal looks: 99.93%, 98.4%, then z 2.015 instead of 1.96 at the
  last), so a run that goes to the end keeps nearly the fixed-n power, and the early looks stop the claims
  decided far from their threshold;
- the GPU works in batches and a look costs a conclusion (bootstraps): a handful of planned looks is all a run
  can use, and planned looks are what α-spending needs.
How many looks (`--cos-looks K`, default 3; `cos plan --looks K` prices it). More looks stop sooner and cost
power at the same maximum n, because each look spends a little α and may stop for futility (same model, θ = 2.8):

    K looks   boundaries (z)                    power   mean share used   share used at θ = 0
    3         3.39 2.41 2.02                    0.72    0.73              0.60
    4         3.92 2.77 2.30 2.04               0.68    0.67              0.52
    5         4.38 3.10 2.55 2.25 2.06          0.65    0.62              0.47
    8         5.54 3.92 3.21 2.80 2.54 ... 2.10 0.58    0.53              0.38

(Looks at k/K of the units. The runner looks after `look_points(batches, K)` of a claim's batches, and so does
`cos plan`: with few batches the looks come later and several collapse, e.g. 7 batches at K = 5 are looked at
after 2, 3, 5, 6 and 7.) Three stays the default. What more looks save is on claims decided far from their
threshold, which stop at the first look (8 of 40 units at K = 5 on the full tier, instead of 14). What they cost is
power on claims near it. At equal power (the
maximum n raised to keep 80%) the saving is small: 0.87-0.89× of the fixed-n rows on an effect and 0.69-0.70× on a
null for 4-6 looks, against 0.88× and 0.73× for 3 (benchmarks/results/sequential-designs.md). So `--cos-looks` is
for a run whose maximum n is fixed (a tier, a budget) and whose user would rather stop the clear claims sooner than
keep the borderline ones' power. On the A14B-shaped full tier, K = 5 plans 63.3 expected GPU-hours against 68.5
for K = 3 (benchmarks/results/plan-a14b/). A look at the organism's tiers costs a conclusion (bootstraps), as long
as a batch takes to sample. `cos validate --sequential on` calibrates the default K = 3; another K is checked by
the simulations of tests/test_sequential.py (a null's false decisions at α with K = 5), not by control draws.
Futility is non-binding: a look stops a claim as `inconclusive` when its conditional power under the current
trend (Lan & Wittes' B-value) is below `FUTILITY_POWER` in both directions. Stopping for futility only turns a
possible decision into `inconclusive`, so it cannot raise the false-positive rate; it costs power, which the
calibration measures. `tests/test_sequential.py` checks by simulation that the looks together keep the
false-decision rate of one interval at its level.

What the design costs and saves (normal model, 20,000 paths, `cos.plan.sequential_profile`), effect θ in standard
errors at the maximum n, (power, mean share of the maximum n used): θ = 0: (0.020, 0.60); 2.0: (0.44, 0.72);
2.8: (0.72, 0.73); 3.5: (0.88, 0.70); 5: (0.99, 0.57). Fixed n: power 0.025, 0.52, 0.80, 0.94, 1.00 with all
rows. So a run sized for 80% power at fixed n has ~72% with the looks: `cos plan` states the sequential power, and
a tier sized by it needs ~1.2× the fixed-n maximum for the same power, for ~0.7 of it on average. Without the
futility rule the null would use 0.995 of the rows (FUTILITY_POWER 0.05: power 0.75 at 2.8, null 0.67).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

# numpy and scipy are imported where used: the option checks (MAX_LOOKS, `resolve`) run before a refusal of a bad
# --cos-looks / --looks, which should not wait for them

ALPHA = 0.05
LOOKS = 3                  # looks per claim at most by default (fractions 1/3, 2/3, 1 of its batches; --cos-looks)
MAX_LOOKS = 10             # --cos-looks above this buys nothing: 8 looks already cost 0.14 of power at θ = 2.8
MIN_LOOK_UNITS = 8         # no look before the claim's interval has this many units: coverage is checked from n = 8
FUTILITY_POWER = 0.1       # stop as inconclusive when neither decision has this conditional power at the last look
FUTILITY_MIN_UNITS = 16    # no futility stop before this many units (a small-n interval overstates the se)
MODES = ("auto", "on", "off")


def obf_spent(t: float, alpha: float = ALPHA) -> float:
    """α spent by information fraction t (Lan-DeMets, O'Brien-Fleming type)."""
    from scipy import stats

    if t <= 0:
        return 0.0
    return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(min(1.0, t))))


@functools.lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float = ALPHA,
               spent: Callable[[float, float], float] = obf_spent) -> tuple[float, ...]:
    """Two-sided z boundaries c_k of the looks at information `fractions` (increasing, the last 1), for the
    spending function `spent(t, alpha)` (this design's O'Brien-Fleming type; benchmarks/sequential_designs.py
    compares others)."""
    import numpy as np
    from scipy import optimize, stats

    t = np.asarray(fractions, dtype=np.float64)
    if t.size == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or abs(t[-1] - 1.0) > 1e-9:
        raise ValueError(f"look fractions {fractions}: expected increasing values in (0, 1] ending at 1")
    cs: list[float] = [float(stats.norm.isf(spent(t[0], alpha) / 2))]
    for k in range(1, t.size):
        cov = np.sqrt(np.minimum.outer(t[:k + 1], t[:k + 1]) / np.maximum.outer(t[:k + 1], t[:k + 1]))
        mvn = stats.multivariate_normal(mean=np.zeros(k + 1), cov=cov, allow_singular=True)
        target = 1 - spent(t[k], alpha)
        prev = np.asarray(cs)

        def gap(c: float) -> float:
            hi = np.append(prev, c)
            return float(mvn.cdf(hi, lower_limit=-hi, rng=np.random.default_rng(0))) - target
        lo_c = 0.5
        cs.append(float(optimize.brentq(gap, lo_c, 8.0, xtol=1e-6)) if gap(lo_c) < 0 else lo_c)
    return tuple(cs)


def level(c: float) -> float:
    """The two-sided confidence level whose interval excludes the threshold exactly when |z| > c."""
    from scipy import stats

    return float(1 - 2 * stats.norm.sf(c))


def look_points(n_batches: int, looks: int = LOOKS) -> list[int]:
    """Batch counts after which to look: `looks` at most, evenly spaced, the last one after every batch."""
    if n_batches < 1:
        return []
    return sorted({max(1, math.ceil(n_batches * k / looks)) for k in range(1, looks + 1)})


@dataclass(frozen=True)
class Look:
    """One look: its index among the looks actually taken, the information fraction, the boundary and level."""

    index: int
    fraction: float
    boundary: float
    confidence: float
    final: bool


def plan_looks(fractions: list[float], alpha: float = ALPHA) -> list[Look]:
    """The looks at these information fractions (the last must be 1)."""
    cs = boundaries(tuple(round(f, 9) for f in fractions), alpha)
    return [Look(i, f, c, level(c), i == len(fractions) - 1) for i, (f, c) in enumerate(zip(fractions, cs))]


def conditional_power(z_now: float, t: float, c_final: float) -> float:
    """Probability, under the trend seen so far, that the last look's interval clears the threshold on the side
    the estimate lies now (Lan & Wittes' B-value: B(t) = Z·√t, drift θ = B(t)/t, B(1) ~ N(θ, 1 − t) given B(t))."""
    from scipy import stats

    if t >= 1:
        return float(abs(z_now) > c_final)
    drift_end = abs(z_now) / math.sqrt(t)
    return float(stats.norm.cdf((drift_end - c_final) / math.sqrt(1 - t)))


def z_of(value: float, ci_low: float, ci_high: float, confidence: float, threshold: float) -> float | None:
    """The z of the estimate's distance from the threshold, with se from the interval (se = width / 2z)."""
    from scipy import stats

    if any(v is None or not math.isfinite(v) for v in (value, ci_low, ci_high)):
        return None
    se = (ci_high - ci_low) / (2 * float(stats.norm.isf((1 - confidence) / 2)))
    if se <= 0:
        return None
    return (value - threshold) / se


def resolve(mode: str, tier: str) -> bool:
    """Whether a run decides sequentially. `auto`: on for the `gpu` and `full` tiers, off for `cpu`. The CPU tier
    decides at n = 4-64 units: its looks would come before n = 8, where no interval's coverage is checked, and the
    committed baseline of CI is a fixed-n table."""
    if mode not in MODES:
        raise ValueError(f"--cos-sequential={mode!r}: expected one of {MODES}")
    return mode == "on" or (mode == "auto" and tier in ("gpu", "full"))

"""Which sequential design would use at most half the rows on average, and at what cost in power? (issue 24)

The calibration with the looks on measured a mean share of the maximum n of 0.68 on positives and 0.83 on nulls
(gpu tier, one H200 host), against the issue's target of <= 0.5. cos.sequential's design (3 looks, O'Brien-Fleming
alpha-spending, non-binding futility at conditional power 0.1) was chosen to keep nearly the fixed-n power. This
script prints, under the same normal model as `cos.plan.stop_profile` (a claim's z path with drift theta standard
errors at the maximum n, Brownian increments between looks, each look's exact group-sequential boundary for its
spending function from scipy's multivariate normal), the alternatives a user may choose instead:
number of looks, spending function (O'Brien-Fleming, Pocock, Hwang-Shih-DeCani gamma) and futility power.
Per design: the false decision rate on the claim's side at theta = 0, power at theta = 2.8 (80% at fixed n) and
3.5 (94%), and the mean share of the maximum n at theta = 0, 2.8 and 3.5. The share alone flatters designs that
stop early by giving up power, so each design is also put at equal power: the maximum n (a multiple m of the
fixed-n size) at which it has 80% power for the effect fixed n detects with 80% (theta = 2.8 sqrt(m)), and the
rows it then uses on average, as a multiple of the fixed-n size, on that effect and on a null (m x share). No runner minimums (look units) apply:
this is the design alone. The current design's row reproduces cos.sequential's docstring (0.60; 0.72 / 0.73).

    python benchmarks/sequential_designs.py [--paths 20000] [--json FILE]
"""
from __future__ import annotations

import argparse
import functools
import json
import math

import numpy as np
from scipy import stats
from tabulate import tabulate

from cos import sequential as seq

ALPHA = 0.05


def spend(kind: str, t: float, alpha: float = ALPHA) -> float:
    """Two-sided alpha spent by information fraction t."""
    if kind == "obf":      # Lan-DeMets O'Brien-Fleming type (cos.sequential's own)
        return seq.obf_spent(t, alpha)
    if t <= 0:
        return 0.0
    t = min(1.0, t)
    if kind == "pocock":   # Lan-DeMets Pocock type
        return float(alpha * math.log(1 + (math.e - 1) * t))
    if kind.startswith("hsd"):   # Hwang-Shih-DeCani, gamma after the colon
        g = float(kind.split(":")[1])
        return float(alpha * t) if g == 0 else float(alpha * (1 - math.exp(-g * t)) / (1 - math.exp(-g)))
    raise ValueError(kind)


@functools.lru_cache(maxsize=None)
def boundaries(kind: str, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """The exact two-sided boundaries of cos.sequential.boundaries for this spending function."""
    return seq.boundaries(fractions, ALPHA, functools.partial(spend, kind))


def profile(kind: str, looks: int, futility: float, theta: float, paths: int, seed: int = 0) -> tuple[float, float]:
    """(decided on the claim's side, mean share of the maximum n), as cos.plan.stop_profile without minimums."""
    t = np.array([k / looks for k in range(1, looks + 1)])
    cs = boundaries(kind, tuple(t))
    rng = np.random.default_rng(seed)
    b = np.cumsum(rng.standard_normal((paths, looks)) * np.sqrt(np.diff(np.concatenate([[0.0], t]))), axis=1) + theta * t
    z = b / np.sqrt(t)
    stop = np.full(paths, looks - 1)
    right = np.zeros(paths, dtype=bool)
    alive = np.ones(paths, dtype=bool)
    for k in range(looks):
        cross = alive & (np.abs(z[:, k]) > cs[k])
        right |= cross & (z[:, k] > 0)
        stop[cross] = k
        alive &= ~cross
        if k < looks - 1 and futility > 0:
            cp = stats.norm.cdf((np.abs(z[:, k]) / np.sqrt(t[k]) - cs[-1]) / np.sqrt(1 - t[k]))
            fut = alive & (cp < futility)
            stop[fut] = k
            alive &= ~fut
    return float(right.mean()), float(t[stop].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=20000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    designs = [(kind, looks, fut) for kind in ("obf", "hsd:-2", "hsd:0", "pocock") for looks in (3, 4, 6)
               for fut in (0.1, 0.2)]
    rows, out = [], []
    for kind, looks, fut in designs:
        r = {"spending": kind, "looks": looks, "futility_power": fut}
        for th in (0.0, 2.8, 3.5):
            p, share = profile(kind, looks, fut, th, a.paths)
            r[f"decided_{th}"], r[f"share_{th}"] = round(p, 3), round(share, 3)
        r["share_avg_null_and_2.8"] = round((r["share_0.0"] + r["share_2.8"]) / 2, 3)
        lo, hi = 1.0, 3.0           # max-n multiple m with 80% power at theta = 2.8 sqrt(m) (same paths: monotone)
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if profile(kind, looks, fut, 2.8 * math.sqrt(mid), a.paths)[0] < 0.8 else (lo, mid)
        m = hi
        r["equal_power_max_n"] = round(m, 3)
        r["equal_power_rows_effect"] = round(m * profile(kind, looks, fut, 2.8 * math.sqrt(m), a.paths)[1], 3)
        r["equal_power_rows_null"] = round(m * r["share_0.0"], 3)
        out.append(r)
        rows.append([kind, looks, fut, r["decided_0.0"], r["decided_2.8"], r["decided_3.5"], r["share_0.0"],
                     r["share_2.8"], r["share_3.5"], r["share_avg_null_and_2.8"], r["equal_power_max_n"],
                     r["equal_power_rows_effect"], r["equal_power_rows_null"]])
        print(f"{kind} {looks} {fut}: done", flush=True)
    print(f"\nnormal model, {a.paths} paths a cell; fixed n: FPR 0.025, power 0.80 (theta 2.8), 0.94 (3.5), share 1")
    print(tabulate(rows, headers=["spending", "looks", "futility", "FPR (θ=0)", "power θ=2.8", "power θ=3.5",
                                  "share θ=0", "share θ=2.8", "share θ=3.5", "mean share (0, 2.8)",
                                  "max n for 80% (× fixed)", "rows, effect (× fixed)", "rows, null (× fixed)"],
                   tablefmt="github"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

"""Status decisions from intervals, bootstrap CIs, the catalogue and the status-file reader."""
import json

import numpy as np
import pytest

from cos.errors import CosError
from cos.registry import ClaimResult, decide, get_claim
from cos.reporting import compare, load_status
from cos.stats import bootstrap_ci, paired_difference_ci


def test_decide():
    assert decide(0.1, 0.2) == "holds"
    assert decide(-0.2, -0.1) == "fails"
    assert decide(-0.1, 0.1) == "inconclusive"
    assert decide(0.1, 0.2, threshold=0.3, direction="<") == "holds"
    assert decide(float("nan"), 1.0) == "error"


def test_unknown_claims_and_statuses_are_refused():
    with pytest.raises(KeyError, match="unknown claim id"):
        get_claim("nope")
    with pytest.raises(ValueError, match="status"):
        ClaimResult.for_claim("cos.superposition", measured=1, ci_low=0, ci_high=2, n=1, status="great")


def test_bootstrap_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = bootstrap_ci(rng.normal(1, 1, 20)), bootstrap_ci(rng.normal(1, 1, 400))
    assert small.ci_low < small.value < small.ci_high
    assert big.ci_low < 1 < big.ci_high
    assert (big.ci_high - big.ci_low) < (small.ci_high - small.ci_low)
    d = paired_difference_ci([1, 2, 3, 4.5], [0, 1, 2, 3])
    assert d.value == pytest.approx(1.125) and d.n == 4
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="pairs"):
        paired_difference_ci([1, 2], [1, 2, 3])
    const = bootstrap_ci([2.0, 2.0, 2.0])
    assert const.ci_low == const.ci_high == 2.0


@pytest.mark.parametrize("n", [2, 7, 64, 300])
def test_the_vectorised_bootstrap_of_the_mean_is_the_per_resample_one(n):
    """bootstrap_ci evaluates the studentized mean (bootstrap-t) on all resamples at once: the same indices and t*
    bit for bit as scipy.stats.bootstrap calling it per resample, so the same interval bit for bit (a numpy/scipy
    change that broke this would change every table's last digits)."""
    import warnings

    from scipy import stats

    from cos.stats import _studentized_mean, bootstrap_t_star, expanded_tail, hall_t_bounds, se_floor

    x = np.random.default_rng(n).normal(size=n) * 3.7
    with warnings.catch_warnings(), np.errstate(all="ignore"):   # n = 2: half the resamples have no spread
        warnings.simplefilter("ignore")
        slow = stats.bootstrap((x,), _studentized_mean(float(np.mean(x)), se_floor(x)), n_resamples=2000, method="percentile",
                               random_state=np.random.default_rng(0), vectorized=False).bootstrap_distribution
    np.testing.assert_array_equal(bootstrap_t_star(x), slow)
    tail, z = expanded_tail(n)
    q_lo, q_hi = np.quantile(slow, [tail, 1 - tail], method="inverted_cdf")
    m, se = float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(n))
    h_lo, h_hi = hall_t_bounds(x, z)                               # where t* leaves a side unbounded
    e = bootstrap_ci(x)
    assert (e.ci_low, e.ci_high) == (m - q_hi * se if np.isfinite(q_hi) else h_lo,
                                     m - q_lo * se if np.isfinite(q_lo) else h_hi)
    assert np.isfinite(q_lo) == np.isfinite(q_hi) == (n > 2)


def test_load_status_errors(tmp_path):
    with pytest.raises(CosError, match="does not exist"):
        load_status(tmp_path / "x.json")
    (tmp_path / "a.json").write_text(json.dumps({"claims": [{"id": "x"}]}))
    with pytest.raises(CosError, match=r"claims\[0\] lacks"):
        load_status(tmp_path / "a.json")


def test_compare_labels_regressions_and_improvements():
    mk = lambda cid, st: ClaimResult.for_claim(cid, measured=None, ci_low=None, ci_high=None, n=None, status=st)
    v = lambda cid: get_claim(cid).spec.version
    base = {"claims": [{"id": "cos.superposition", "status": "holds", "version": v("cos.superposition")},
                       {"id": "frames.count", "status": "fails", "version": v("frames.count")}]}
    c = compare(base, [mk("cos.superposition", "inconclusive"), mk("frames.count", "holds")])
    assert c["regressed"] == ["cos.superposition"] and c["newly_holds"] == ["frames.count"]


def test_a_second_condition_only_demotes_a_claim_that_holds():
    from cos.registry import ClaimResult, also_requires

    def row(status):
        return ClaimResult.for_claim("layers.swap_flip", measured=0.1, ci_low=0.05, ci_high=0.2, n=8, status=status)
    assert also_requires(row("holds"), True, "x").status == "holds"
    r = also_requires(row("holds"), False, "peak at depth 0.00")
    assert (r.status, r.reason) == ("fails", "peak at depth 0.00")
    assert also_requires(row("inconclusive"), False, "x").status == "inconclusive"


def test_interval_is_the_point_without_spread_and_brackets_the_mean_otherwise():
    from cos.stats import interval

    assert interval([0.3]) == [0.3, 0.3] and interval([0.2, 0.2, 0.2]) == pytest.approx([0.2, 0.2])
    lo, hi = interval([0.1, 0.4, 0.2, 0.5, 0.3])
    assert lo < 0.3 < hi


def test_a_condition_that_is_undecided_makes_a_holding_claim_inconclusive():
    from cos.registry import also_requires

    row = lambda: ClaimResult.for_claim("layers.swap_flip", measured=0.1, ci_low=0.05, ci_high=0.2, n=8, status="holds")
    assert also_requires(row(), "inconclusive", "peak straddles", "peak").status == "inconclusive"
    r = also_requires(row(), "holds", "x", "peak")
    assert r.status == "holds" and r.details["conditions"] == {"peak": "holds"}


def test_an_all_equal_sample_is_never_decisive():
    from cos.registry import get_claim
    from cos.settings import TIERS
    from types import SimpleNamespace

    est = bootstrap_ci([0.0] * 8)
    assert not est.decidable and est.ci_low == est.ci_high == 0.0
    claim = get_claim("layers.swap_flip")
    row = claim.result(est, SimpleNamespace(name="m", weights_hash=None), TIERS["cpu"], claim.Details())
    assert row.status == "inconclusive" and "cannot decide" in row.reason


def test_wilson_intervals_are_informative_at_the_edges():
    from cos.stats import proportion_ci, share_ci

    e = proportion_ci(8, 8)
    assert e.value == 1.0 and 0.6 < e.ci_low < 0.75 and e.ci_high == pytest.approx(1.0)
    assert proportion_ci(0, 8).ci_high > 0.25
    assert share_ci([[1.0]] * 8).ci_low == pytest.approx(e.ci_low)
    mixed = share_ci([[1, 0], [1, 1], [0, 0], [1, 0.0]])
    assert mixed.ci_low < mixed.value < mixed.ci_high


def test_argmax_interval_and_window():
    from cos.stats import argmax_ci, in_window

    rng = np.random.default_rng(0)
    sharp = np.array([[0, 0, 1, 0, 0]] * 20) + rng.normal(0, 0.05, (20, 5))
    e = argmax_ci(sharp)
    assert e.value == e.ci_low == e.ci_high == 2 and in_window(e, 1, 3) == "holds" and in_window(e, 3, 4) == "fails"
    flat = rng.normal(0, 1, (6, 5))
    f = argmax_ci(flat)
    assert f.ci_high - f.ci_low >= 2 and in_window(f, 2, 2) == "inconclusive"


def test_holm_adjusts_step_down():
    from cos.stats import holm

    h = holm({"a": 0.01, "b": 0.02, "c": 0.04})
    assert h["a"]["p_adjusted"] == pytest.approx(0.03) and h["b"]["p_adjusted"] == pytest.approx(0.04)
    assert h["c"]["p_adjusted"] == pytest.approx(0.04) and all(v["rejects"] for v in h.values())
    assert not holm({"a": 0.03, "b": 0.04})["a"]["rejects"]


def test_spearman_interval_resamples_whole_units():
    from cos.stats import spearman_ci

    rising = {f"u{k}": [(f, f + 0.1 * k) for f in range(4)] for k in range(6)}
    rho, ci = spearman_ci(rising)
    assert rho > 0.9 and ci is not None and ci[0] > 0.5
    mixed = {f"u{k}": [(f, (f if k % 2 else -f) + 0.01 * k) for f in range(4)] for k in range(8)}
    rho, ci = spearman_ci(mixed)          # units disagree: the interval is wide and straddles 0
    assert ci[0] < rho < ci[1] and ci[0] < 0 < ci[1] and ci[1] - ci[0] > 0.2
    assert np.isnan(spearman_ci({"u": [(0, 1.0), (1, 1.0), (2, 1.0)]})[0])       # constant y: undefined
    assert spearman_ci({"u": [(0, 0.0), (1, 1.0), (2, 2.0)]})[1] is None          # one unit: no interval


def _spearman_ci_by_loop(pairs, confidence=0.95, n_resamples=1000, seed=0):
    """The unit bootstrap as it was written before it was vectorised: scipy.stats.spearmanr per resample."""
    from scipy import stats

    ids = sorted(pairs)

    def rho(keys):
        ps = [p for k in keys for p in pairs[k]]
        if len(ps) < 3 or len({p[0] for p in ps}) < 2 or len({p[1] for p in ps}) < 2:
            return float("nan")
        return float(stats.spearmanr([p[0] for p in ps], [p[1] for p in ps]).statistic)
    est = rho(ids)
    if len(ids) < 2 or np.isnan(est):
        return est, None
    rng = np.random.default_rng(seed)
    boots = [rho([ids[i] for i in rng.integers(0, len(ids), len(ids))]) for _ in range(n_resamples)]
    boots = [b for b in boots if not np.isnan(b)]
    a = round((1 - confidence) / 2, 12)
    return est, [float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))] if boots else None


@pytest.mark.parametrize("case", range(40))
def test_spearman_interval_equals_the_per_resample_loop(case):
    # the vectorised resamples (tie-averaged weighted ranks) against scipy per resample: ties (frames.count's
    # frame counts, censored spreads), empty units (resamples with < 3 pairs or none), single-pair units, few units (resamples with a constant coordinate: NaN,
    # dropped), a NaN coordinate (ρ NaN, no interval, as scipy has it), several confidence levels
    from cos.stats import spearman_ci

    rng = np.random.default_rng(case)
    ties, units = case % 2 == 0, int(rng.integers(2, 30))
    draw = (lambda k: float(rng.integers(0, k))) if ties else (lambda k: float(rng.normal()))
    least = 0 if case % 4 == 1 else 1          # some units without pairs: resamples with < 3 pairs, or none
    pairs = {f"u{i}": [(draw(4), draw(3)) for _ in range(int(rng.integers(least, 6)))] for i in range(units)}
    if case % 10 == 7:
        pairs["u0"][0] = (float("nan"), 1.0)
    level = (0.95, 0.9, 0.99)[case % 3]
    (want, want_ci), (got, got_ci) = _spearman_ci_by_loop(pairs, level), spearman_ci(pairs, level)
    assert (np.isnan(want) and np.isnan(got)) or want == got
    assert (want_ci is None) == (got_ci is None)
    if want_ci is not None:
        np.testing.assert_allclose(got_ci, want_ci, rtol=0, atol=1e-12)


def test_argmax_ci_covers_a_plateau_instead_of_its_first_position():
    import numpy as np

    from cos.stats import argmax_ci

    plateau = np.zeros((10, 8))
    plateau[:, 4:] = 1.0                      # flip rate 1 at blocks 4-7: no single peak
    e = argmax_ci(plateau)
    assert (e.ci_low, e.ci_high) == (4.0, 7.0)
    rng = np.random.default_rng(0)
    peaked = rng.normal(size=(20, 8))
    peaked[:, 3] += 3.0
    e = argmax_ci(peaked)
    assert e.value == e.ci_low == e.ci_high == 3.0


def test_values_tied_up_to_float_rounding_are_not_studentized_into_a_huge_bound():
    """Scores of 1.0 and 0.99999999 (float rounding of the same value) gave resamples a standard error of ~1e-9
    and t* of ~1e8: an interval of [-2060970, 1.03] for a mean of scores in [0, 1]."""
    x = [1.0, 0.99999999, 0.9999999995, 1.0, 0.6666666, 1.0, 0.99999998, 1.0, 1.0, 0.999999, 1.0, 1.0]
    e = bootstrap_ci(x)
    assert -0.5 < e.ci_low < e.value < e.ci_high < 1.5, e


def test_values_tied_within_clusters_fall_back_to_halls_bound():
    """Scores tied within clusters (1.0, 0.999, 0.667): resamples drawn from one cluster have a spread far below the
    sample's and t* explodes (an interval of [-38, 1.03] was seen); such a side is Hall's bound instead."""
    e = bootstrap_ci([0.958, 1.0, 0.999, 0.667, 1.0, 0.9995, 1.0, 1.0, 0.999, 1.0, 0.667, 1.0])
    assert 0.0 < e.ci_low < e.value < e.ci_high < 1.4, e


def test_provenance_names_the_code_the_run_started_from(monkeypatch):
    """A run passes the (commit, dirty) it started from: a commit made while a long run went on (a 55-minute gate
    named the commit made 40 minutes in) is not the code that ran."""
    import cos.reporting as rep

    started = rep.code_state()
    monkeypatch.setattr(rep, "git_commit", lambda cwd=".": "committed-later")
    monkeypatch.setattr(rep, "git_dirty", lambda cwd=".": False)
    assert rep.provenance(code=started)["git_commit"] == started[0] != "committed-later"
    assert rep.provenance()["git_commit"] == "committed-later"     # nothing given: read now


def test_weighted_spearman_small_and_empty_resamples():
    # resamples of two pairs, of none, of one unit drawn twice, against scipy on each pooled list
    from scipy import stats

    from cos.stats import _weighted_spearman

    units = [[(0.0, 0.0), (1.0, 1.0)], [], [(2.0, 5.0), (3.0, 1.0), (4.0, 0.0)], [(1.0, 1.0)]]
    counts = np.array([[1, 3, 0, 0], [2, 2, 0, 0], [1, 0, 0, 1], [0, 4, 0, 0], [1, 0, 1, 0], [0, 1, 1, 2],
                       [1, 1, 0, 1], [0, 0, 0, 4], [0, 0, 2, 0]])

    def loop(c):
        ps = [p for u, k in zip(units, c) for _ in range(k) for p in u]
        if len(ps) < 3 or len({p[0] for p in ps}) < 2 or len({p[1] for p in ps}) < 2:
            return float("nan")
        return float(stats.spearmanr([p[0] for p in ps], [p[1] for p in ps]).statistic)
    want = np.array([loop(c) for c in counts])
    assert np.isnan(want).sum() == 3      # two pairs, none, one value: undefined
    np.testing.assert_allclose(_weighted_spearman(units, counts), want, rtol=0, atol=1e-12, equal_nan=True)

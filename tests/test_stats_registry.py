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


def test_load_status_errors(tmp_path):
    with pytest.raises(CosError, match="does not exist"):
        load_status(tmp_path / "x.json")
    (tmp_path / "a.json").write_text(json.dumps({"claims": [{"id": "x"}]}))
    with pytest.raises(CosError, match=r"claims\[0\] lacks"):
        load_status(tmp_path / "a.json")


def test_compare_labels_regressions_and_improvements():
    mk = lambda cid, st: ClaimResult.for_claim(cid, measured=None, ci_low=None, ci_high=None, n=None, status=st)
    base = {"claims": [{"id": "cos.superposition", "status": "holds"}, {"id": "frames.count", "status": "fails"}]}
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

"""`cos validate` (cos.calibration) and the minimum detectable effect every row reports (cos.stats.detectable)."""
from __future__ import annotations

import io
import json

import pytest

from cos.calibration import validate
from cos.errors import InputError
from cos.registry import ClaimResult, at_draw, reason_text
from cos.settings import ClaimSettings
from cos.stats import Estimate, detectable


def test_detectable_scales_with_the_interval_and_names_the_n_that_decides():
    e = Estimate(0.07, 0.04, 0.10, 8)
    d = detectable(e, 0.05)
    se = 0.06 / (2 * 1.959964)
    assert d["min_detectable_effect"] == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)
    # the gap 0.02 is smaller than the MDE, so more units are needed: n·(MDE/gap)²
    assert d["n_to_decide"] == pytest.approx(8 * (d["min_detectable_effect"] / 0.02) ** 2, abs=1)
    wider = detectable(Estimate(0.07, 0.01, 0.13, 8), 0.05)
    assert wider["min_detectable_effect"] > d["min_detectable_effect"] and wider["n_to_decide"] > d["n_to_decide"]
    assert detectable(Estimate(0.0, 0.0, 0.0, 8, decidable=False), 0.05) is None
    assert detectable(Estimate(0.05, 0.0, 0.1, 8), 0.05)["n_to_decide"] is None   # on the threshold: no n decides


def test_rows_carry_the_mde_in_json_and_reason_column():
    from cos.controls import ref
    from cos.registry import get_claim
    from cos.runner import RunContext

    claim = get_claim("memory.persistence")
    r = claim.measure(RunContext(progress=False), ref(prior="oracle"),
                      ClaimSettings(tasks=("return_to_origin", "occlusion"), instances=3, steps=4))
    assert r.details["detectable"]["n"] == r.n and r.details["detectable"]["min_detectable_effect"] > 0
    assert "MDE" in reason_text(r)
    undecided = ClaimResult.for_claim("memory.persistence", measured=0.6, ci_low=0.3, ci_high=0.9, n=6,
                                      status="inconclusive", details={"threshold": 0.5, "direction": ">",
                                      "detectable": detectable(Estimate(0.6, 0.3, 0.9, 6), 0.5)})
    assert "units would decide it" in reason_text(undecided)
    # undecided by a further condition while its own interval clears the threshold: no n is promised for it
    by_condition = ClaimResult.for_claim("memory.persistence", measured=0.8, ci_low=0.6, ci_high=0.9, n=6,
                                         status="inconclusive", details={"threshold": 0.5, "direction": ">",
                                         "detectable": detectable(Estimate(0.8, 0.6, 0.9, 6), 0.5)})
    assert "MDE" in reason_text(by_condition) and "would decide" not in reason_text(by_condition)


def test_draws_are_independent_repetitions():
    s = ClaimSettings(instances=3, seeds=(0, 1))
    assert at_draw(s, 0) is s
    a, b = at_draw(s, 1), at_draw(s, 2)
    assert {a.first_instance, b.first_instance, s.first_instance} == {0, 1000, 2000}
    assert set(a.seeds).isdisjoint(s.seeds) and set(a.seeds).isdisjoint(b.seeds)


def test_validate_writes_calibration_and_resumes(tmp_path):
    err = io.StringIO()
    doc = validate(tmp_path, draws=2, select="memory.persistence", stream=err)
    c = doc["claims"]["memory.persistence"]
    assert c["planted"]["draws"] == 2 and c["planted"]["holds"] == 2      # the oracle keeps the anchor
    # FPR counts noisy nulls only; at 2 draws both memory nulls read exactly 0 (exact_zero_nulls), so no FPR row
    assert c["null"] is None or c["null"]["holds"] == 0
    assert all(c["controls"][k]["holds"] == 0 for k in ("lapse-mid-way", "untrained"))
    assert c["meets_goal"] is False       # 2 draws are fewer than the goal's 20, whatever they show
    assert c["planted"]["ci"][0] < 0.5    # Wilson at n=2 is wide
    assert json.loads((tmp_path / "calibration.json").read_text())["schema"] == "cos.calibration/1"
    assert "memory.persistence" in (tmp_path / "calibration.md").read_text()
    assert "ETA" in err.getvalue()
    lines = (tmp_path / "draws.jsonl").read_text().splitlines()
    (tmp_path / "draws.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])   # a kill mid-write
    err = io.StringIO()
    validate(tmp_path, draws=2, select="memory.persistence", stream=err)
    assert f"{len(lines) - 1} already in" in err.getvalue() and err.getvalue().count("draw ") == 1   # only the lost one


def test_validate_refuses_bad_options_before_running(tmp_path):
    with pytest.raises(InputError, match="--tier"):
        validate(tmp_path, tier="tpu")
    with pytest.raises(InputError, match="--draws"):
        validate(tmp_path, draws=0)
    assert not (tmp_path / "draws.jsonl").exists()


def test_validate_cli_bad_option_is_one_line(tmp_path, capsys):
    from cos.cli import main

    assert main(["validate", "--out", str(tmp_path), "--draws", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--draws" in err[0] and "positive integer" in err[0]
    assert main(["validate", "--out", str(tmp_path), "--tier", "tpu"]) == 2
    assert "--tier" in capsys.readouterr().err


def test_a_null_that_holds_is_a_false_positive_whatever_its_check_says():
    from cos.calibration import _rate

    rec = lambda status, check: {"status": status, "check": check}
    neg = _rate([rec("holds", False), rec("holds", True), rec("fails", True), rec("inconclusive", False),
                 rec("skipped", True), rec("error", False)], "negative")
    assert neg["holds"] == 2 and neg["draws"] == 6           # both holds count, checked or not
    assert neg["off_design"] == 3 and neg["errors"] == 1       # a failed check, a skip, an error: never a pass
    pos = _rate([rec("holds", True), rec("holds", False), rec("error", False)], "positive")
    assert pos["holds"] == 1 and pos["off_design"] == 1


def test_summarize_only_recomputes_from_the_recorded_draws(tmp_path):
    import json

    validate(tmp_path, draws=2, select="memory.persistence", stream=io.StringIO())
    recs = [json.loads(x) for x in (tmp_path / "draws.jsonl").read_text().splitlines()]
    for r in recs:      # as if the null had held on every draw with an effect, its check failing
        if r["kind"] == "negative":
            r.update(status="holds", check=False, measured=0.7)
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    from cos.calibration import resummarize

    doc = resummarize(tmp_path)
    c = doc["claims"]["memory.persistence"]
    assert c["null"]["holds"] == 2 and doc["provenance"]["resummarized"]


def test_the_false_positive_rate_counts_noisy_nulls_only():
    """A null whose effect is identically 0 on every draw cannot be a false positive: it is listed apart and left
    out of the FPR; a claim whose nulls are all of that kind has no FPR and misses the goal."""
    from cos.calibration import summarize
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    rec = lambda control, kind, status, measured, d: {"claim": claim.id, "control": control, "kind": kind,
                                                      "status": status, "check": True, "measured": measured,
                                                      "mde": None, "seconds": 1.0, "draw": d}
    pos = [rec("oracle", "positive", "holds", 0.9, d) for d in range(1, 31)]
    exact = [rec("lapse-mid-way", "negative", "fails", 0.0, d) for d in range(1, 31)]
    noisy = [rec("untrained", "negative", "holds" if d <= 3 else "fails", 0.01 * (-1) ** d, d) for d in range(1, 31)]
    doc = summarize(pos + exact + noisy, [claim], 30, "cpu", 1, 1.0)["claims"][claim.id]
    assert doc["exact_zero_nulls"] == ["lapse-mid-way"] and doc["controls"]["untrained"]["noisy"]
    assert doc["null"]["holds"] == 3 and not doc["meets_goal"]          # 3/30 = 0.1 > 0.05
    only_exact = summarize(pos + exact, [claim], 30, "cpu", 1, 1.0)["claims"][claim.id]
    assert only_exact["null"] is None and not only_exact["meets_goal"]

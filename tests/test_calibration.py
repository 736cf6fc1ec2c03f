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
    # FPR counts noisy nulls only: the half-lapse boundary null is noisy on every draw (a share around 0.5),
    # lapse-mid-way reads exactly 0 (exact_zero_nulls)
    assert c["null"]["draws"] == 2 and c["null"]["holds"] == 0 and c["controls"]["half-lapse"]["noisy"]
    assert "lapse-mid-way" in c["exact_zero_nulls"]
    assert all(c["controls"][k]["holds"] == 0 for k in ("lapse-mid-way", "half-lapse", "untrained"))
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


# ---------------------------------------------------------------- cos validate --sequential (issue 24)

def test_the_fixed_n_key_is_unchanged_and_a_sequential_draw_is_keyed_apart():
    from cos.calibration import _key, _rec_key

    assert _key("cpu", "memory.persistence", 3, "oracle", 7) == "cpu|memory.persistence|v3|oracle|7"
    rec = {"tier": "gpu", "claim": "a.b", "version": 2, "control": "c", "draw": 1}
    assert _rec_key(rec) == "gpu|a.b|v2|c|1"                      # a record of before (no "sequential"): fixed n
    assert _rec_key({**rec, "sequential": False}) == "gpu|a.b|v2|c|1"
    assert _rec_key({**rec, "sequential": True}) == "gpu|a.b|v2|c|1|seq"


def test_a_sequential_draw_records_the_batches_it_used():
    """A real draw of a cheap control (memory's `untrained`, one unit at the cpu tier: one look, all of it), with
    looks and without: the fixed-n record is as before (no sequential fields), the sequential one has them."""
    from cos.calibration import _is_record, _rec_key, run_one

    off = run_one("memory.persistence", "untrained", 1, "cpu")
    on = run_one("memory.persistence", "untrained", 1, "cpu", sequential=True)
    assert not {"sequential", "batches_used", "batches_max", "looks", "stop"} & set(off)
    assert on["sequential"] is True and _is_record(on) and _is_record(off)
    assert 1 <= on["batches_used"] <= on["batches_max"] and on["looks"] == on["looks_planned"] == 1
    assert on["rows_used"] == on["rows_max"] > 0 and on["stop"] is None
    assert _rec_key(on) == _rec_key(off) + "|seq"
    assert {k: on[k] for k in ("status", "measured", "ci", "n")} == {k: off[k] for k in ("status", "measured", "ci", "n")}


def test_looks_of_reads_an_early_stop_from_the_runs_details():
    """The extraction from a claim's `details["sequential"]` (as `RunContext.measure_records` writes it), on a
    fabricated strong positive that stopped at the first of three looks (a real one: the next test)."""
    from cos.calibration import looks_of

    details = {"sequential": {"looks_planned": [{"batches": 1}, {"batches": 2}, {"batches": 3}],
                              "looks": [{"batches": 1, "n": 16, "status": "holds", "stop": "decided"}],
                              "batches_used": 1, "batches_max": 3}}
    got = looks_of(details, [64, 64, 32])
    assert got == {"batches_used": 1, "batches_max": 3, "looks_planned": 3, "looks": 1, "stop": "decided",
                   "rows_used": 64, "rows_max": 160}
    # ran to the last look: no stop reason; one unit and no details: one look over everything
    details["sequential"].update(looks=[{"stop": ""}, {"stop": ""}, {"stop": ""}], batches_used=3)
    assert looks_of(details, [64, 64, 32])["stop"] is None and looks_of(details, None)["rows_used"] is None
    assert looks_of({}, [12]) == {"batches_used": 1, "batches_max": 1, "looks_planned": 1, "looks": 1, "stop": None,
                                  "rows_used": 12, "rows_max": 12}


def test_a_strong_positive_stops_at_its_first_look_at_the_gpu_tier_scale():
    """At the cpu tier almost every control's batches form one unit (one look: fixed n in effect; frames.count's
    two are the exception, and its positive is slow and did not stop early in a measured draw). At the gpu tier's
    scale (4x instances) selfcorrection.rate's planted positive has 2 batches (64 + 32 rows) and decides on the
    first: a few seconds on a CPU."""
    from cos.calibration import run_one

    r = run_one("selfcorrection.rate", "wrong-then-right", 1, "gpu", sequential=True)
    assert r["status"] == "holds" and r["stop"] == "decided" and r["looks_planned"] == 2 and r["looks"] == 1
    assert (r["batches_used"], r["batches_max"], r["rows_used"], r["rows_max"]) == (1, 2, 64, 96)


def _seq_recs(claim):
    """Fabricated sequential draws of memory.persistence's controls: (control, kind, batches used, max, status)."""
    rows = [("oracle", "positive", 1, 3, "holds"), ("oracle", "positive", 2, 3, "holds"),
            ("oracle", "positive", 3, 3, "holds"), ("lapse-mid-way", "negative", 3, 3, "fails"),
            ("lapse-mid-way", "negative", 2, 3, "inconclusive"), ("untrained", "negative", 1, 1, "fails")]
    return [{"claim": claim.id, "version": claim.spec.version, "control": c, "kind": k, "draw": d, "tier": "cpu",
             "status": s, "check": True, "measured": 0.1 * d, "ci": [0.0, 0.2], "mde": None, "seconds": 1.0,
             "sequential": True, "batches_used": u, "batches_max": m, "looks_planned": m, "looks": u,
             "stop": "decided" if u < m else None, "rows_used": 10 * u, "rows_max": 10 * m}
            for d, (c, k, u, m, s) in enumerate(rows, 1)]


def test_the_summary_reports_the_mean_share_of_n_used():
    from cos.calibration import markdown, summarize
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    recs = _seq_recs(claim)
    doc = summarize(recs, [claim], 3, "cpu", 1, 1.0, sequential=True)
    nf = doc["claims"][claim.id]["n_fraction"]
    assert nf["positive"] == pytest.approx((1 / 3 + 2 / 3 + 1) / 3, abs=1e-4)
    assert nf["null"] == pytest.approx((1 + 2 / 3 + 1) / 3, abs=1e-4)
    assert nf["sensitivity"] is None and nf["draws"] == {"positive": 3, "null": 3, "sensitivity": 0}
    assert nf["multi_look_draws"] == 5
    assert doc["n_fraction"]["positive"] == nf["positive"] and doc["n_fraction"]["target"] == 0.5
    assert doc["provenance"]["sequential"] is True and doc["provenance"]["looks_max"] == 3
    md = markdown(doc)
    assert "mean n used (pos / null)" in md and "0.67 / 0.89" in md and "Sequential looks on" in md
    assert "count the looks" in md and "target: ≤ 0.5" in md and "not met" in md
    # the null share is over every negative control (exact-0 nulls too, which the FPR leaves out); the MDE is
    # measured where each planted draw stopped
    assert "the exact-0 nulls too (which the FPR column leaves out)" in md
    assert "MDE: measured where each planted draw stopped, not at its full n" in md
    # fixed n: no n_fraction, no column, no sentence (the document as before, its provenance saying off)
    off = summarize([{k: v for k, v in r.items() if k not in ("sequential", "batches_used", "batches_max")}
                     for r in recs], [claim], 3, "cpu", 1, 1.0)
    assert "n_fraction" not in off and "n_fraction" not in off["claims"][claim.id]
    assert off["provenance"]["sequential"] is False and "looks_max" not in off["provenance"]
    assert "mean n used" not in markdown(off) and "Sequential" not in markdown(off)


def test_summarize_only_keeps_the_mode_of_the_run(tmp_path):
    """draws.jsonl may hold draws with looks and without (keyed apart): resummarize reads those of the mode its
    calibration.json's provenance names, fixed n when it names none (a document of before)."""
    from cos.calibration import _write, resummarize, summarize
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    seq = _seq_recs(claim)
    fixed = [{**{k: v for k, v in r.items() if k not in ("sequential", "batches_used", "batches_max")},
              "status": "fails" if r["kind"] == "positive" else r["status"]} for r in seq]
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fixed + seq))
    _write(tmp_path, summarize(seq, [claim], 3, "cpu", 1, 1.0, sequential=True))
    doc = resummarize(tmp_path)
    assert doc["provenance"]["sequential"] is True and doc["claims"][claim.id]["planted"]["holds"] == 3
    assert doc["claims"][claim.id]["n_fraction"]["draws"]["positive"] == 3
    old = summarize(fixed, [claim], 3, "cpu", 1, 1.0)
    del old["provenance"]["sequential"]          # a calibration.json written before --sequential
    _write(tmp_path, old)
    doc = resummarize(tmp_path)
    assert doc["provenance"]["sequential"] is False and doc["claims"][claim.id]["planted"]["holds"] == 0
    assert "n_fraction" not in doc["claims"][claim.id]


def test_validate_cli_refuses_a_bad_sequential_value_in_one_line(tmp_path, capsys):
    from cos.cli import main

    assert main(["validate", "--out", str(tmp_path), "--sequential", "maybe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sequential" in err[0] and "'off'" in err[0] and "'on'" in err[0]
    # the gate kind takes --sequential too (cos.gate_validate.run_gate_draw_seq); resummarizing a folder with no
    # gate draws is still one line
    assert main(["validate", "--out", str(tmp_path), "--kind", "gate", "--sequential", "on", "--summarize-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--summarize-only" in err[0] and "no gate draws" in err[0]
    assert not (tmp_path / "draws.jsonl").exists()


def _fixed(recs):
    return [{k: v for k, v in r.items() if k not in ("sequential", "batches_used", "batches_max")} for r in recs]


def test_summarize_only_lists_only_the_claims_drawn_in_the_runs_mode(tmp_path):
    """Fixed-n draws of one claim and sequential draws of another in one folder: a sequential resummary lists the
    second only (the first has no draws in that mode: it was listed undrawn, 'meets_goal' false); a folder with
    no draw of the run's mode is refused in one line instead of writing an empty calibration."""
    from cos.calibration import _write, resummarize, summarize
    from cos.registry import get_claim

    mem, frames = get_claim("memory.persistence"), get_claim("frames.count")
    seq = _seq_recs(mem)
    other = [{**r, "claim": frames.id, "version": frames.spec.version, "control": c, "kind": k}
             for r, (c, k) in zip(_fixed(seq), [("every-frame-evidence", "positive"), ("reference", "negative")])]
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other + seq))
    _write(tmp_path, summarize(seq, [mem], 3, "cpu", 1, 1.0, sequential=True))
    doc = resummarize(tmp_path)
    assert list(doc["claims"]) == [mem.id] and frames.id not in (tmp_path / "calibration.md").read_text()
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(InputError, match="holds no draws of tier cpu with --sequential on"):
        resummarize(tmp_path)


def test_summarize_only_takes_draws_by_host_from_the_draws_summarized(tmp_path):
    """The provenance kept from the run is that of the run; which hosts made the draws and their seconds are
    recomputed from the draws summarized (a resumed or partly rerun folder), as resummarize_gate does."""
    from cos.calibration import _write, resummarize, summarize
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    recs = [{**r, "host": "new-host", "torch": "9.9"} for r in _seq_recs(claim)]
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    old = summarize(recs, [claim], 3, "cpu", 1, 1.0, sequential=True)
    old["provenance"].update(draws_by_host={"old-host (torch 1.0)": 99}, draw_seconds=1234.0, machine="old-host")
    _write(tmp_path, old)
    p = resummarize(tmp_path)["provenance"]
    assert p["draws_by_host"] == {"new-host (torch 9.9)": 6} and p["draw_seconds"] == 6.0
    assert p["machine"] == "old-host" and p["resummarized"]       # the run's own provenance otherwise kept


def test_summarize_only_refuses_a_sequential_mode_other_than_the_runs(tmp_path, capsys):
    from cos.calibration import _write, summarize
    from cos.cli import main
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    fixed = _fixed(_seq_recs(claim))
    (tmp_path / "draws.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fixed))
    _write(tmp_path, summarize(fixed, [claim], 3, "cpu", 1, 1.0))
    before = (tmp_path / "calibration.json").read_text()
    assert main(["validate", "--out", str(tmp_path), "--summarize-only", "--sequential", "on"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sequential on" in err[0] and "--summarize-only" in err[0] and "says off" in err[0]
    assert (tmp_path / "calibration.json").read_text() == before           # nothing rewritten
    for argv in ([], ["--sequential", "off"]):       # left out: the run's mode; the same mode given: accepted
        assert main(["validate", "--out", str(tmp_path), "--summarize-only", *argv]) == 0
        assert json.loads((tmp_path / "calibration.json").read_text())["provenance"]["sequential"] is False
    capsys.readouterr()


@pytest.mark.parametrize("mode", ["on", "off"])
def test_validate_cli_passes_sequential_to_every_draw(tmp_path, monkeypatch, capsys, mode):
    """`cos validate --sequential on|off` reaches run_one, the records' keys and the provenance. run_one is
    replaced by a stub recording its `sequential`; --jobs 1 only (with --jobs > 1 the draws run in worker
    processes, which a monkeypatch does not reach)."""
    import cos.calibration
    from cos.calibration import _is_record, _rec_key, looks_of
    from cos.cli import main
    from cos.registry import get_claim

    seen = []

    def stub(claim_id, control, draw, tier, sequential=False):
        seen.append(sequential)
        claim = get_claim(claim_id)
        ctl = next(c for c in claim.controls() if c.name == control)
        return {"claim": claim_id, "version": claim.spec.version, "control": control, "kind": ctl.kind,
                "draw": draw, "tier": tier, "seconds": 0.0, "host": "stub", "torch": "?", "status": "fails",
                "measured": 0.0, "ci": [0.0, 0.0], "n": 1, "reason": "stub", "check": True, "mde": None,
                **({"sequential": True, **looks_of(None, [1])} if sequential else {})}

    monkeypatch.setattr(cos.calibration, "run_one", stub)
    assert main(["validate", "--out", str(tmp_path), "--draws", "1", "-k", "memory", "--sequential", mode]) == 0
    capsys.readouterr()
    on = mode == "on"
    assert seen and set(seen) == {on}
    recs = [json.loads(x) for x in (tmp_path / "draws.jsonl").read_text().splitlines()]
    assert len(recs) == len(seen) and all(_is_record(r) for r in recs)
    assert all(_rec_key(r).endswith("|seq") == on for r in recs)
    doc = json.loads((tmp_path / "calibration.json").read_text())
    assert doc["provenance"]["sequential"] is on and ("n_fraction" in doc) is on
    assert doc["claims"]["memory.persistence"]["planted"]["draws"] == 1     # the draws were summarized in their mode

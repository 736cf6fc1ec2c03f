"""The pytest entry points of the claims: one test over every registered claim (`test_claim[<id>]`, tier
`claims`) and one over every claim's controls (`test_control[<id>-<control>]`, default tier). This repository's
`claims/` re-exports them; a user with only the installed package runs `cos run` or
`pytest --pyargs cos.testing -m claims --cos-model DIR`."""
from __future__ import annotations

import pytest

from cos.registry import all_claims

CLAIMS = all_claims()


@pytest.mark.claims
@pytest.mark.parametrize("claim_id", [pytest.param(c.id, marks=pytest.mark.claim(c.id), id=c.id) for c in CLAIMS])
def test_claim(claim_id, cos_claim, cos_run, cos_system, cos_settings, cos_against, pytestconfig):
    """Measure the claim on the session's model at the tier's settings and report its row (and, with
    --cos-against, its paired change against the old model: cos.gate)."""
    claim = next(c for c in CLAIMS if c.id == claim_id)
    start = len(cos_run.key_log)
    # in a gate that takes looks, the claim's rows (against a model, both models') stop once its paired change is
    # decided
    fraction = pytestconfig.getoption("--cos-tolerance")
    cos_run.look_rule = cos_against.look_rule(claim, fraction) if cos_against is not None else None
    try:
        res = cos_run.measure_claim(claim, cos_system, cos_settings)     # data parallel under a launcher
    finally:
        cos_run.look_rule = None
    for rec in res.samples:     # the stored runs this instance took part in during this claim
        inst = f"{rec['task']}-{rec['split']}-{rec['instance']:05d}"
        rec["store_keys"] = sorted({e["key"] for e in cos_run.key_log[start:] if any(i == inst for i, _ in e["rows"])})
    if cos_against is not None and res.status != "skipped":
        try:
            row = cos_against.row(claim, res, cos_run, cos_settings, fraction)
        except Exception as e:  # noqa: BLE001 - the old side failing is the gate's row, not the new model's
            row = {"verdict": "undecided", "regressed": False, "status_new": res.status,
                   "reason": f"old side: {type(e).__name__}: {e}"[:300]}
        cos_claim.gate(row)
    cos_run.paired.pop(claim.id, None)    # the old side's rows of a gate against a model, when no row took them
    cos_claim.report(res)


@pytest.mark.parametrize("claim_id,control",
                         [pytest.param(c.id, k.name, id=f"{c.id}-{k.name}") for c in CLAIMS for k in c.controls() if k.tested])
def test_control(claim_id, control):
    """A positive control must hold, a negative one must not (a claim that cannot fail, or cannot hold, is a bug)."""
    claim = next(c for c in CLAIMS if c.id == claim_id)
    ctl = next(k for k in claim.controls() if k.name == control)
    res = ctl.run(claim)
    assert res.id == claim.id
    assert res.status in ctl.expect, f"{ctl.kind} control {ctl.name!r} ({ctl.why}): {res.status} {res.measured} " \
                                     f"[{res.ci_low}, {res.ci_high}] {res.reason}"
    assert ctl.check is None or ctl.check(res), f"{ctl.name}: extra condition failed: measured {res.measured}"

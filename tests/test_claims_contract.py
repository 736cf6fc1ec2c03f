"""The contract every registered claim keeps (one test parametrised over the registry, no hard-coded ids or
counts), and that a claim is one file: registering one makes it a row, a test id and a report section."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from cos.registry import (CLAIMS, CONTROL_KINDS, Claim, ClaimResult, ClaimSpec, Control, Details, all_claims, get_claim, register,
                          unregister)
from cos.settings import TIERS

BASELINE = Path(__file__).resolve().parent.parent / "claims-baseline.json"
CLAIM_IDS = [c.id for c in all_claims()]


def test_the_registry_and_the_committed_baseline_name_the_same_claims():
    assert sorted(c["id"] for c in json.loads(BASELINE.read_text())["claims"]) == sorted(CLAIM_IDS)


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_claim_contract(claim_id, tmp_path):
    claim = get_claim(claim_id)
    check_contract(claim, next(c for c in json.loads(BASELINE.read_text())["claims"] if c["id"] == claim_id), tmp_path)


def check_contract(claim: Claim, row: dict, tmp_path: Path) -> None:
    """The contract of one claim, its baseline row given (tests/test_front_door.py runs it on `cos new-claim`'s
    skeleton too)."""
    claim_id = claim.id
    s = claim.spec
    assert all(isinstance(v, str) and v.strip() for v in (s.id, s.title, s.paper_ref, s.paper_value,
                                                          s.measured_quantity, s.statistic)), s
    assert s.direction in (">", "<") and math.isfinite(s.threshold) and s.version >= 1
    assert issubclass(claim.Details, Details) and (claim.__module__.rsplit(".", 1)[-1] != "__init__")
    kinds = [c.kind for c in claim.controls()]
    # issue 14: every claim has a planted model it must hold on and a null model it must not
    assert {"positive", "negative"} <= set(kinds) <= set(CONTROL_KINDS), kinds
    assert all(c.why for c in claim.controls())
    for tier, settings in TIERS.items():   # the ETA needs a cost on every tier, for a 40-block model
        cost = claim.cost(settings, SimpleNamespace(num_layers=40))
        assert isinstance(cost, int) and cost >= 0, (tier, cost)
        if claim.sizing:
            assert tier in claim.sizing, f"{claim_id}: no sizing for tier {tier}"
    pytest.importorskip("matplotlib", reason="figures need the report extra (matplotlib)")
    if row["status"] in ("holds", "fails", "inconclusive"):   # figures render from the recorded, typed details
        for path, caption in claim.figures(claim.Details.from_dict(row["details"]), tmp_path, {}):
            assert Path(path).exists() and caption


@dataclass
class ToyDetails(Details):
    values: list[float] | None = None


class Toy(Claim):
    spec = ClaimSpec(id="toy.always", title="A toy claim", paper_ref="nowhere", paper_value="none",
                     measured_quantity="a constant", threshold=0.0, direction=">", version=3)
    Details = ToyDetails

    def measure(self, ctx, system, settings):
        from cos.stats import bootstrap_ci

        est = bootstrap_ci([1.0, 2.0, 3.0] * 2)    # n = 3: no 95% interval of a mean excludes 0
        return self.result(est, SimpleNamespace(name="toy", weights_hash=None), settings, ToyDetails(values=[1, 2, 3]),
                           samples={"maze-id-00003": {"score": [0.5]}, "return_to_origin-ood-00012": {"score": [1.0]}})

    def controls(self):
        from cos.controls import TINY, ref

        return [Control("nothing", "negative", lambda d: ref(), TINY, why="a toy")]


def test_a_registered_claim_is_a_row_with_its_version_and_a_report_section(tmp_path):
    from cos.reporting import compare, provenance, write_status

    register(Toy())
    try:
        assert "toy.always" in {c.id for c in all_claims()} and get_claim("toy.always").spec.version == 3
        row = Toy().measure(None, None, TIERS["cpu"])
        assert row.status == "holds" and row.version == 3 and row.details["values"] == [1, 2, 3]
        write_status(tmp_path, [row], provenance())
        recs = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
        assert [(r["task"], r["split"], r["instance"], r["values"]["score"]) for r in recs] == \
            [("maze", "id", 3, [0.5]), ("return_to_origin", "ood", 12, [1.0])]
        assert all(r["claim"] == "toy.always" and r["seeds"] == [0] and r["settings_hash"] for r in recs)
        assert "samples" not in json.loads((tmp_path / "claims-status.json").read_text())["claims"][0]
        c = compare({"claims": [{"id": "toy.always", "status": "holds", "version": 2}]}, [row])
        assert c["changed_definition"] == ["toy.always"] and c["regressed"] == [] and c["newly_holds"] == []
        c = compare({"claims": [{"id": "toy.always", "status": "holds", "version": 3}]},
                    [ClaimResult.for_claim("toy.always", measured=None, ci_low=None, ci_high=None, n=None,
                                           status="fails")])
        assert c["regressed"] == ["toy.always"]
        pytest.importorskip("matplotlib")
        from cos.report import write_report

        md, _ = write_report(tmp_path)
        assert "## toy.always: A toy claim" in md.read_text()
    finally:
        unregister("toy.always")
    assert "toy.always" not in CLAIMS


def test_a_baseline_does_not_regress_claims_this_run_did_not_check():
    from cos.reporting import compare

    rows = [ClaimResult.for_claim("cos.superposition", measured=None, ci_low=None, ci_high=None, n=None, status="holds")]
    c = compare({"claims": [{"id": "cos.superposition", "status": "holds"}, {"id": "memory.persistence",
                                                                             "status": "holds"}]}, rows)
    assert c["regressed"] == [] and c["missing"] == ["memory.persistence"]

"""A claim run at an n too small for an interval says `inconclusive` with its reason, not `error` (issue 26's
`--cos-instances 1` run: layers.swap_flip raised in bootstrap_ci and its row read `error`)."""
from __future__ import annotations

from types import SimpleNamespace

from cos.registry import get_claim
from cos.settings import ClaimSettings


def _swap_records(instances: int, seeds=(0, 1, 2)) -> list[dict]:
    blocks = [str(b) for b in range(0, 12, 2)]
    return [{"instance": f"grounding-id-{i:05d}", "seed": s, "ceiling": float((i + s) % 2),
             "flips": {b: float((i + s + int(b)) % 3 == 0) for b in blocks},
             "flips_every": {b: float((i + s + int(b)) % 2 == 0) for b in blocks}}
            for i in range(instances) for s in seeds]


def test_swap_flip_with_one_instance_is_inconclusive():
    claim = get_claim("layers.swap_flip")
    system = SimpleNamespace(num_layers=12, name="toy", weights_hash="h")
    settings = ClaimSettings(tasks=("grounding",), instances=1)
    sizing = claim.sizing_for(ClaimSettings(tier="cpu"))
    row = claim.conclude(_swap_records(1), system, settings, sizing)
    assert row.status == "inconclusive" and "at least 2" in row.reason and row.measured is None
    # two instances are measured (the guard is not a blanket): an estimate with an interval
    row = claim.conclude(_swap_records(2), system, settings, sizing)
    assert row.measured is not None and row.ci_low is not None


def test_swap_flip_with_one_instance_samples_nothing():
    """`--cos-instances 1`: the row is the same inconclusive one, decided before the swap sweep is sampled (on a
    full model, hours of forwards for a row that cannot be decided)."""
    claim = get_claim("layers.swap_flip")
    system = SimpleNamespace(num_layers=12, name="toy", weights_hash="h")

    class NoSampling:
        def measure_records(self, *a, **k):
            raise AssertionError("sampled")

    settings = ClaimSettings(tier="cpu", instances=1, instance_cap=1)
    assert claim.sizing_for(settings).instances == 1
    row = claim.measure(NoSampling(), system, settings)
    assert row.status == "inconclusive" and "at least 2" in row.reason
    # and the plan prices nothing for it; two instances are sampled
    assert claim.cost(settings, system) == 0 and claim.readouts(settings, system) == {}

    class Sampling:
        def measure_records(self, claim, system, s, **kw):
            return ("sampled", s.instances)

    two = ClaimSettings(tier="cpu", instances=2, instance_cap=2)
    assert claim.measure(Sampling(), system, two) == ("sampled", 2) and claim.cost(two, system) > 0


def test_an_empty_inconclusive_row_gets_no_old_run_note(tmp_path):
    """The report's note "a run before details.conditions" is for a measured row without conditions (an old run),
    not for a row that measured nothing (one instance): that one's reason says why."""
    import json

    from cos.report import claim_sections

    claim = get_claim("layers.swap_flip")
    empty = claim._too_few(1, SimpleNamespace(name="toy", weights_hash="h"), ClaimSettings()).to_dict()
    old = {**empty, "status": "holds", "measured": 0.2, "ci_low": 0.1, "ci_high": 0.3, "n": 8, "reason": ""}
    for row, noted in ((empty, False), (old, True)):
        (tmp_path / "claims-status.json").write_text(json.dumps({"claims": [row]}))
        (s,) = claim_sections(tmp_path, tmp_path / "fig", have_mpl=False)
        assert any("a run before details.conditions" in n for n in s.notes) == noted, s.notes

"""cos.gate and cos.records: the paired change of a claim's estimate, its decision, and records on disk."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cos.errors import CosError
from cos.gate import decide_change, gate_row, paired_change, tolerance
from cos.records import Concluded, RecordedSystem, load_records
from cos.registry import Claim, ClaimSpec
from cos.settings import ClaimSettings
from cos.stats import bootstrap_ci

SYS = RecordedSystem(name="m", weights_hash="h", fingerprint="f", num_layers=4)


class MeanClaim(Claim):
    """A claim whose estimate is the mean over instances of their seeds' mean value, over `subset` tasks only."""

    spec = ClaimSpec(id="test.mean", title="t", paper_ref="-", paper_value="-", measured_quantity="v", threshold=0.0,
                     direction=">", effect=0.2)

    def conclude(self, records, system, settings, subset=None):
        per = {}
        for r in records:
            if subset is None or r["instance"].startswith(subset):
                per.setdefault(r["instance"], []).append(r["v"])
        est = bootstrap_ci([np.mean(v) for v in per.values()])
        return self.result(est, system, settings, self.Details())


def bundle(values, seeds=(0, 1), **kw):
    recs = [{"instance": f"{'a' if i % 2 else 'b'}-id-{i:05d}", "seed": s, "v": float(v + 0.01 * s)}
            for i, v in enumerate(values) for s in seeds]
    return Concluded("test.mean", 1, recs, SYS, ClaimSettings(), kw)


def test_paired_change_of_a_mean_is_the_bootstrap_t_of_the_instance_differences():
    rng = np.random.default_rng(0)
    old = rng.normal(0.5, 0.3, 12)
    new = old - 0.1 + rng.normal(0, 0.02, 12)
    ch = paired_change(MeanClaim(), bundle(new), bundle(old))
    order = sorted(range(12), key=lambda i: f"{'a' if i % 2 else 'b'}-id-{i:05d}")   # units in id order
    want = bootstrap_ci((new - old)[order])
    assert ch["n"] == 12 and ch["change"] == pytest.approx(float(np.mean(new - old)))
    assert ch["ci"] == pytest.approx([want.ci_low, want.ci_high])
    # pairing removes the shared instance spread: the unpaired interval is many times wider
    assert ch["width_ratio_unpaired"] > 5


def test_instances_that_move_no_estimate_are_left_out_of_n():
    rng = np.random.default_rng(1)
    old, new = rng.normal(0.5, 0.3, 12), rng.normal(0.4, 0.3, 12)
    ch = paired_change(MeanClaim(), bundle(new, subset="a"), bundle(old, subset="a"))
    assert ch["n_shared"] == 12 and ch["n"] == 6      # only the "a" instances enter the estimate


def test_rows_pair_only_on_the_same_instance_and_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        paired_change(MeanClaim(), bundle([1, 2, 3], seeds=(0, 1)), bundle([1, 2, 3], seeds=(5, 6)))


@pytest.mark.parametrize("ci,status_old,status_new,regressed,verdict", [
    ([-0.5, -0.2], "holds", "holds", True, "regressed"),          # worse than the tolerance 0.1
    ([-0.09, -0.01], "holds", "fails", True, "regressed"),        # a flip with a confidently worse change
    ([-0.09, -0.01], "holds", "holds", False, "unchanged"),       # worse, but within the tolerance, no flip
    ([-0.3, 0.2], "holds", "inconclusive", False, "undecided"),   # a flip by noise alone does not fail the gate
    ([0.15, 0.4], "fails", "holds", False, "improved"),
])
def test_decide_change(ci, status_old, status_new, regressed, verdict):
    d = decide_change(">", {"ci": ci}, 0.1, status_new, status_old)
    assert (d["regressed"], d["verdict"]) == (regressed, verdict)
    # the same change on a '<' claim is mirrored
    m = decide_change("<", {"ci": [-ci[1], -ci[0]]}, 0.1, status_new, status_old)
    assert (m["regressed"], m["verdict"]) == (regressed, verdict)


def test_tolerance_zero_flags_any_confidently_worse_change_and_the_option_accepts_it():
    from cos.validation import check_tolerance

    assert check_tolerance("--cos-tolerance", 0) == 0.0        # "catch any decline the run can see" (docs/gate.md)
    small = {"ci": [-0.02, -0.001]}                             # confidently worse, far inside the default tolerance
    assert decide_change(">", small, 0.0, "holds", "holds")["verdict"] == "regressed"
    assert decide_change(">", small, 0.1, "holds", "holds")["verdict"] == "unchanged"
    assert decide_change(">", {"ci": [-0.02, 0.001]}, 0.0, "holds", "holds")["verdict"] == "undecided"
    assert decide_change(">", {"ci": [0.001, 0.02]}, 0.0, "holds", "holds")["verdict"] == "improved"
    assert tolerance(MeanClaim(), 0.0) == 0.0


def test_an_identical_model_is_unchanged_and_a_changed_definition_is_not_compared():
    b = bundle([0.1, 0.5, 0.3, 0.9])
    row = gate_row(MeanClaim(), b, b, "holds", "holds")
    assert row["verdict"] == "unchanged" and not row["regressed"]
    other = bundle([0.1, 0.5, 0.3, 0.9])
    other.version = 2
    assert gate_row(MeanClaim(), b, other, "holds", "holds")["verdict"] == "changed definition"


def test_a_planted_regression_fails_the_gate_and_noise_alone_rarely_does():
    """Power and false-positive rate of the gate on a mean claim at n = 16 (tolerance 0.1 = half the effect 0.2):
    a drop of 0.3 is caught, two draws of the same model (fresh noise per row) are not called regressed."""
    rng = np.random.default_rng(7)
    hits, false = 0, 0
    for _ in range(40):
        base = rng.normal(0.5, 0.3, 16)
        same = base + rng.normal(0, 0.05, 16)
        worse = base - 0.3 + rng.normal(0, 0.05, 16)
        hits += gate_row(MeanClaim(), bundle(worse), bundle(base), "holds", "holds")["regressed"]
        false += gate_row(MeanClaim(), bundle(same), bundle(base), "holds", "holds")["regressed"]
    assert hits >= 36 and false <= 2


def test_records_round_trip_and_refuse_foreign_classes(tmp_path):
    from cos.records import _tag, _untag

    assert _untag(json.loads(json.dumps(_tag({"t": (1, (2, 3)), "s": SYS})))) == {"t": (1, (2, 3)), "s": SYS}
    b = bundle([0.2, 0.4, 0.3, 0.8])
    b.kw = {"subset": "a"}
    line = json.dumps({**b.to_dict(), "status": "holds"})
    (tmp_path / "records.jsonl").write_text(line + "\n")
    back = load_records(tmp_path)["test.mean"]
    assert back.kw == {"subset": "a"} and back.records == b.records and back.settings == b.settings
    r = back.conclude(MeanClaim())
    assert isinstance(r.measured, float)
    bad = json.loads(line)
    bad["kw"] = {"x": {"__dataclass__": "os:stat_result", "fields": {}}}
    (tmp_path / "records.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(CosError, match="not cos's"):
        load_records(tmp_path)
    (tmp_path / "records.jsonl").write_text("{not json\n")
    with pytest.raises(CosError, match="malformed JSON"):
        load_records(tmp_path)


def test_a_recorded_model_carries_the_vae_stride_a_conclusion_reads():
    from cos.readouts import NoiseSizing, noise_frames

    rec = RecordedSystem(name="m", weights_hash="h", fingerprint="f", num_layers=4, scale_temporal=4)
    back = RecordedSystem(**json.loads(json.dumps(rec.__dict__)))
    # 9 frames at stride 4: latent frames 0..2; frame 5 is clipped to the last, frame 0 never noised
    assert noise_frames(back, ClaimSettings(num_frames=9), NoiseSizing((0.1,), (1, 5))) == [1, 2]
    with pytest.raises(AttributeError, match="frame stride"):
        _ = SYS.vae


def test_a_constant_change_on_every_instance_is_a_point_not_an_empty_sample():
    """Every instance 1.0 before and 0.0 after (a planted oracle against its null): no instance moves either
    estimate when left out, yet each is a paired difference; all equal. From 6 instances the order-statistic
    interval of their median (coverage 1 - 2·0.5^n >= 0.95) is the point: regressed; at 5 it is not decidable."""
    ch = paired_change(MeanClaim(), bundle([0.0] * 6, seeds=(0,)), bundle([1.0] * 6, seeds=(0,)))
    assert ch["n"] == 6 and ch["ci"] == [-1.0, -1.0] and ch["change"] == -1.0 and "sign-test" in ch["method"]
    d = decide_change(">", ch, 0.1, "fails", "holds")
    assert d["regressed"] and d["verdict"] == "regressed"
    ch5 = paired_change(MeanClaim(), bundle([0.0] * 5, seeds=(0,)), bundle([1.0] * 5, seeds=(0,)))
    assert ch5["ci"] is None and ch5["why_no_interval"] == ("all 5 paired differences equal -1 (a point interval "
                                                           "needs n >= 6 at 95%)")
    assert decide_change(">", ch5, 0.1, "fails", "holds")["verdict"] == "undecided"
    # an identical model stays unchanged, never a point interval at 0
    same = paired_change(MeanClaim(), bundle([1.0] * 6, seeds=(0,)), bundle([1.0] * 6, seeds=(0,)))
    assert same["ci"] is None and same["identical"]
    assert decide_change(">", same, 0.1, "holds", "holds")["verdict"] == "unchanged"


def test_junit_gets_the_row_and_the_gate_change_as_short_text():
    from cos.pytest_plugin import junit_properties

    row = {"status": "holds", "measured": 0.41, "ci_low": 0.3, "ci_high": 0.52, "n": 24, "reason": None}
    gate = {"verdict": "regressed", "change": -0.21, "ci": [-0.3, -0.12], "tolerance": 0.05, "status_old": "holds",
            "status_new": "holds", "reason": "confidently worse by more than the tolerance 0.05"}
    out = dict(junit_properties([("cos_claim_id", "x.y"), ("mine", 1), ("cos_claim_result", row),
                                 ("cos_records", {"records": [1] * 1000}), ("cos_samples", [{}]),
                                 ("cos_claim_arrays", b"\0" * 100), ("cos_gate", gate)]))
    assert out == {"cos_claim_id": "x.y", "mine": 1, "cos_row": "holds: 0.41 [0.3, 0.52], n=24",
                   "cos_gate": "regressed: change -0.21 [-0.3, -0.12], tolerance 0.05, holds → holds; "
                               "confidently worse by more than the tolerance 0.05"}


def test_the_gate_says_what_it_could_catch_and_that_is_what_it_catches():
    """`resolution`: a regression of the size it says it catches at n = 16 is flagged in ~80% of draws, and the
    n it says would catch the claim's effect (0.2, tolerance 0.1) from an n = 8 pilot catches it with ~80% power
    (simulation; 150 draws: a Monte Carlo sd of 0.033)."""
    from cos.gate import render_gate

    rng = np.random.default_rng(3)

    def draw(n, drop):
        base = rng.normal(0.5, 0.3, n)
        return gate_row(MeanClaim(), bundle(base - drop + rng.normal(0, 0.15, n)), bundle(base), "holds", "holds")

    said = float(np.median([draw(16, 0.0)["resolution"]["catches"] for _ in range(30)]))
    assert 0.65 <= np.mean([draw(16, said)["regressed"] for _ in range(150)]) <= 0.9
    pilot = [draw(8, 0.0) for _ in range(30)]
    n_need = int(np.median([r["resolution"]["n_to_catch"] for r in pilot]))
    assert 16 <= n_need <= 40          # ~22 by simulation; 1/√n scaling alone said 65
    # from a pilot of 4 too: not from the pilot's own interval, which the range cap holds down there (said 6)
    assert 14 <= int(np.median([draw(4, 0.0)["resolution"]["n_to_catch"] for _ in range(30)])) <= 40
    assert 0.7 <= np.mean([draw(n_need, 0.2)["regressed"] for _ in range(150)])
    row = pilot[0]
    assert row["resolution"]["powered"] is False and row["verdict"] == "undecided"
    assert "underpowered: at n=8 it catches regressions of" in row["reason"] and "instances would" in row["reason"]
    md = render_gate({"new": "a", "old": "b", "claims": {"test.mean": row}, "regressed": []})
    assert "catches (80%)" in md and "(underpowered)" in md


def test_what_the_gate_catches_reads_the_interval_towards_the_good_side_in_either_direction():
    """`resolution` with a lopsided interval: the reach to the bound a regression must clear (the upper for '>',
    the lower for '<'), and the same `catches` for a change and its mirror image."""
    from cos.gate import resolution

    ch = {"change": -0.5, "change_jackknife": -0.5, "ci": [-0.6, -0.1], "n": 16, "sd_pair": 0.3}
    up = resolution(ch, 0.2, 1.0, direction=">")
    mirror = {**ch, "change": 0.5, "change_jackknife": 0.5, "ci": [0.1, 0.6]}
    down = resolution(mirror, 0.2, 1.0, direction="<")
    se = 0.5 / (2 * 1.959964)
    assert up["catches"] == pytest.approx(0.2 + 0.4 + 0.841621 * se, abs=1e-5)      # reach 0.4, not z·se = 0.25
    assert down["catches"] == pytest.approx(up["catches"])
    assert resolution(ch, 0.2, 1.0)["catches"] == pytest.approx(0.2 + (1.959964 + 0.841621) * se, abs=1e-5)
    # the instances it would take keep the interval's lopsidedness: more than a symmetric interval would ask
    assert up["n_to_catch"] > resolution(ch, 0.2, 1.0)["n_to_catch"] and down["n_to_catch"] == up["n_to_catch"]
    # differences equal but for float error are one value: no interval ~1e-15 wide that "catches" anything
    base = np.linspace(0.0, 1.0, 8)
    got = paired_change(MeanClaim(), bundle(base - 0.8 + 1e-13 * np.arange(8)), bundle(base))
    assert got["ci"] == [pytest.approx(-0.8), pytest.approx(-0.8)] and "sign-test" in got["method"]


def _cos(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cos", *args], capture_output=True, text=True, timeout=600)


def test_cos_gate_end_to_end_against_a_model_with_looks_and_against_a_stored_run(tmp_path):
    """`cos gate` through the plugin on the organism (v2) against organism-v1, one cheap claim at 2-row batches (16
    units) with --cos-sequential on: the two models sampled alongside stop at a look on the paired change, exit 0.
    Then against that run folder with the old rows' middle blocks raised by 0.3 (the claim's estimate, middle minus
    first quarter, is 0.3 higher there: a regression far beyond the 0.05 tolerance), at fixed n: exit 1, named."""
    from cos.claims.energy_profile import MIDDLE

    root = Path(__file__).resolve().parents[1]
    common = ["-k", "energy_profile", "--cos-store", "none", "--cos-batch-size", "2"]
    a = tmp_path / "a"
    p = _cos("gate", "--model", str(root / "fixtures" / "organism"), "--against", str(root / "fixtures" / "organism-v1"),
             "--out", str(a), *common, "--cos-sequential", "on")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    gate_doc = json.loads((a / "gate.json").read_text())
    row = gate_doc["claims"]["layers.energy_profile"]
    assert gate_doc["looks"] == 3 and "looks that decided its change" in (a / "gate.md").read_text()
    assert row["verdict"] == "unchanged" and not row["regressed"] and row["status_old"] == "fails"
    sq = json.loads((a / "claims-status.json").read_text())["claims"][0]["details"]["sequential"]
    # a stop by the gate's rule can only come from the old model's rows at the look (cos.gate.PairedLooks)
    assert sq["looks"][-1]["stop"] == "gate unchanged" and sq["batches_used"] < sq["batches_max"]

    old = tmp_path / "old"
    old.mkdir()
    line = json.loads((a / "records.jsonl").read_text().splitlines()[0])
    L = line["system"]["num_layers"]
    mid = range(int(MIDDLE[0] * L), max(int(MIDDLE[0] * L) + 1, int(MIDDLE[1] * L)))
    for r in line["records"]:
        if r["ratio"] is not None:      # None: a grid too coarse to separate the mark (not concluded on)
            r["ratio"] = [v + 0.3 if b in mid else v for b, v in enumerate(r["ratio"])]
    (old / "records.jsonl").write_text(json.dumps(line) + "\n")
    b = tmp_path / "b"
    p = _cos("gate", "--model", str(root / "fixtures" / "organism"), "--against", str(old), "--out", str(b), *common,
             "--cos-sequential", "off")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((b / "gate.json").read_text())
    assert doc["looks"] == 1
    row = doc["claims"]["layers.energy_profile"]
    assert doc["regressed"] == ["layers.energy_profile"] and row["verdict"] == "regressed"
    assert row["change"] == pytest.approx(-0.3, abs=0.02) and row["n"] >= 8

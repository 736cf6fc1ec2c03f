"""Sequential decisions (cos.sequential) and claims written as records (Claim.measure_batch + conclude,
RunContext.measure_records): the α-spending boundaries spend what they promise, looks at those levels keep a
null's false decisions at α with the claims' own intervals, a records claim concludes the one-pass row at fixed
n, stops early only when decided or futile, resumes from the store and gives one table on any rank count."""
from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

from cos import sequential as seq
from cos.controls import TINY
from cos.registry import Claim, ClaimSpec
from cos.runner import RunContext
from cos.settings import instances
from cos.stats import bootstrap_ci, decision_level, share_ci
from cos.store import ResultStore
from tests.helpers import ThreadWorld


def test_boundaries_spend_alpha_as_planned():
    """Monte Carlo of the looks' joint law (Brownian motion at t = 1/3, 2/3, 1): the chance of crossing by look k
    is α(t_k), the spent α of Lan-DeMets' O'Brien-Fleming function, 0.05 at the end."""
    t = (1 / 3, 2 / 3, 1.0)
    c = seq.boundaries(t)
    rng = np.random.default_rng(1)
    inc = rng.standard_normal((400_000, 3)) * np.sqrt(np.diff((0,) + t))
    z = np.cumsum(inc, axis=1) / np.sqrt(t)
    crossed = np.cumsum(np.abs(z) > np.asarray(c), axis=1) > 0
    for k in range(3):
        assert crossed[:, k].mean() == pytest.approx(seq.obf_spent(t[k]), abs=0.0015)
    assert crossed[:, 2].mean() == pytest.approx(0.05, abs=0.0015)
    assert c[0] > c[1] > c[2] > 1.96        # O'Brien-Fleming: strict early, near the fixed-n z at the end
    assert seq.boundaries((1.0,)) == pytest.approx((1.959964,), abs=1e-5)


def test_bad_look_fractions_and_mode_are_refused():
    with pytest.raises(ValueError, match="look fractions"):
        seq.boundaries((0.5, 0.4, 1.0))
    with pytest.raises(ValueError, match="--cos-sequential='sometimes'"):
        seq.resolve("sometimes", "gpu")
    assert seq.resolve("auto", "gpu") and seq.resolve("auto", "full") and not seq.resolve("auto", "cpu")
    assert seq.look_points(13) == [5, 9, 13] and seq.look_points(1) == [1]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("dist", ["normal", "skewed", "binary"])
def test_looks_keep_a_nulls_false_decisions_at_alpha(dist, k):
    """A null (mean exactly at the threshold) decided at k looks n = 8, 16, ..., 8k with the claims' own interval
    at each look's level: the share of runs that decide anything (holds or fails) at any look stays ≤ α = 0.05
    (Monte Carlo error at 400 runs: ±0.02). The same data looked at k times at 95% each decides more often.
    k = 5 is `--cos-looks 5`."""
    rng = np.random.default_rng({"normal": 2, "skewed": 3, "binary": 4}[dist] + 10 * k)
    looks = seq.plan_looks([j / k for j in range(1, k + 1)])
    draw = {"normal": lambda n: rng.standard_normal(n),
            "skewed": lambda n: rng.exponential(size=n) - 1.0,
            "binary": lambda n: rng.integers(0, 2, n) - 0.5}[dist]
    decided = naive = 0
    for _ in range(400):
        x = draw(8 * k)
        hit = hit95 = False
        for look, n in zip(looks, range(8, 8 * k + 1, 8)):
            v = x[:n]
            if np.ptp(v) == 0:
                continue
            with decision_level(look.confidence):
                e = bootstrap_ci(v)
            hit |= e.ci_low > 0 or e.ci_high < 0
            e95 = bootstrap_ci(v)
            hit95 |= e95.ci_low > 0 or e95.ci_high < 0
        decided += hit
        naive += hit95
    assert decided / 400 <= 0.05 + 0.02
    assert naive >= decided


def test_decision_level_reaches_every_interval_and_is_restored():
    x = np.random.default_rng(0).standard_normal(16)
    wide_b = bootstrap_ci(x)
    with decision_level(0.999):
        b = bootstrap_ci(x)
        s = share_ci([[1.0], [0.0], [1.0], [1.0]])
    assert b.confidence == 0.999 and s.confidence == 0.999
    assert b.ci_high - b.ci_low > wide_b.ci_high - wide_b.ci_low
    assert bootstrap_ci(x).confidence == 0.95


def test_conditional_power_and_z():
    assert seq.conditional_power(0.0, 0.5, 2.0) < 0.01
    assert seq.conditional_power(4.0, 0.5, 2.0) > 0.99
    assert seq.z_of(1.0, 0.0, 2.0, 0.95, 0.0) == pytest.approx(1.96, abs=1e-3)
    assert seq.z_of(float("nan"), 0.0, 2.0, 0.95, 0.0) is None


# ---------------------------------------------------------------- a claim written as records
@dataclass
class _Effect:
    """A stand-in model: a row's value is effect + N(0, 1) from its (instance, seed); nothing is sampled."""

    effect: float
    name: str = "toy"
    weights_hash: str = "toy"
    fingerprint: str = "toy"


class Toy(Claim):
    spec = ClaimSpec(id="toy.records", title="toy", paper_ref="-", paper_value="-", measured_quantity="value",
                     threshold=0.0, direction=">")

    def __init__(self):
        self.calls = []

    def measure_batch(self, ctx, system, settings, batch):
        self.calls.append(tuple(i.id for i in batch.instances))
        return [{"instance": i.id, "seed": s,
                 "value": float(system.effect + np.random.default_rng(zlib.crc32(f"{i.id}|{s}".encode())).standard_normal())}
                for i, s in zip(batch.instances, batch.seeds)]

    def conclude(self, records, system, settings):
        by = {}
        for r in records:
            by.setdefault(r["instance"], []).append(r["value"])
        return self.result(bootstrap_ci([np.mean(v) for v in by.values()]), system, settings,
                           self.Details(measured="toy"), samples=by)


SEQ = replace(TINY, tasks=("grounding",), instances=48, seeds=(0,), batch_size=8)   # 6 batches of 8 instances


def test_fixed_n_records_conclude_the_one_pass_row():
    claim = Toy()
    r = RunContext(progress=False).measure_claim(claim, _Effect(0.3), SEQ)
    assert r.n == 48 and "sequential" not in r.details and len(claim.calls) == 6
    one = Toy()
    recs = [x for b in RunContext(progress=False).batches(SEQ) for x in one.measure_batch(None, _Effect(0.3), SEQ, b)]
    ref = one.conclude(recs, _Effect(0.3), SEQ)
    assert (r.measured, r.ci_low, r.ci_high, r.status) == (ref.measured, ref.ci_low, ref.ci_high, ref.status)


def _seq(effect: float, shift: int):
    claim = Toy()
    r = RunContext(progress=False, sequential=True).measure_claim(claim, _Effect(effect),
                                                                   replace(SEQ, first_instance=100 * shift))
    return r, r.details["sequential"], claim


def test_sequential_stops_a_large_effect_early_and_runs_a_small_one_out():
    r, sq, claim = _seq(1.2, 1)                 # n = 16 at look 1 already clears 0 at 99.93%
    assert r.status == "holds" and sq["batches_used"] == 2 and sq["looks"][-1]["stop"] == "decided"
    assert len(claim.calls) == 2 and r.ci_low > 0 and r.n == 16
    assert sq["looks_planned"][0]["confidence"] > 0.999 and sq["batches_max"] == 6
    r, sq, claim = _seq(0.6, 2)                 # 0.42 at n = 48: decided only at the last look
    assert r.status == "holds" and sq["batches_used"] == 6 and [lk["stop"] for lk in sq["looks"]] == ["", "", ""]
    assert len(claim.calls) == 6


def test_cos_looks_sets_how_many_looks_a_claim_takes():
    """--cos-looks 5 (RunContext.looks): 6 batches are looked at after 2, 3, 4, 5 and 6 of them, at the 5-look
    O'Brien-Fleming levels; the same effect at the default 3 looks is looked at after 2, 4 and 6."""
    five = RunContext(progress=False, sequential=True, looks=5).measure_claim(Toy(), _Effect(0.6),
                                                                              replace(SEQ, first_instance=200))
    sq = five.details["sequential"]
    assert [lk["batches"] for lk in sq["looks_planned"]] == [2, 3, 4, 5, 6]
    want = seq.plan_looks([b / 6 for b in (2, 3, 4, 5, 6)])
    assert [lk["confidence"] for lk in sq["looks_planned"]] == pytest.approx([lk.confidence for lk in want], abs=1e-6)
    three = RunContext(progress=False, sequential=True).measure_claim(Toy(), _Effect(0.6),
                                                                      replace(SEQ, first_instance=200))
    assert [lk["batches"] for lk in three.details["sequential"]["looks_planned"]] == [2, 4, 6]


def test_futility_stops_a_flat_null_as_inconclusive():
    outcomes = [_seq(0.0, shift) for shift in range(4)]
    assert all(r.status == "inconclusive" for r, _, _ in outcomes)
    futile = [(r, sq) for r, sq, _ in outcomes if sq["looks"][-1]["stop"] == "futile"]
    assert len(futile) >= 2 and all("futile at look" in r.reason and sq["batches_used"] < 6 for r, sq in futile)


def test_records_are_stored_and_a_rerun_samples_nothing(tmp_path):
    first = Toy()
    a = RunContext(store=ResultStore(tmp_path / "s"), progress=False).measure_claim(first, _Effect(0.3), SEQ)
    again = Toy()
    b = RunContext(store=ResultStore(tmp_path / "s"), progress=False).measure_claim(again, _Effect(0.3), SEQ)
    assert len(first.calls) == 6 and again.calls == []
    assert (a.measured, a.ci_low, a.ci_high) == (b.measured, b.ci_low, b.ci_high)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("sequential", [False, True])
def test_ranks_conclude_the_single_process_row(n, sequential):
    alone = RunContext(progress=False, sequential=sequential).measure_claim(Toy(), _Effect(0.8), SEQ)
    box, bar, got, claims = {}, threading.Barrier(n), {}, [Toy() for _ in range(n)]

    def rank(r):
        ctx = RunContext(progress=False, sequential=sequential, world=ThreadWorld(r, n, box, bar))
        got[r] = ctx.measure_claim(claims[r], _Effect(0.8), SEQ)
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    for r in range(n):
        assert (got[r].measured, got[r].ci_low, got[r].ci_high, got[r].status, got[r].n) == \
            (alone.measured, alone.ci_low, alone.ci_high, alone.status, alone.n)
        assert got[r].details.get("sequential") == alone.details.get("sequential")
    # every batch sampled once over the ranks, none twice
    sampled = [b for c in claims for b in c.calls]
    assert len(sampled) == len(set(sampled))
    assert len(sampled) == (alone.details["sequential"]["batches_used"] if sequential
                            else len(instances(SEQ)) // 8)


def test_sequential_looks_see_every_task_from_the_first():
    """Looks are at fractions of the batches: the rows are interleaved across tasks so the first look is not the
    first tasks alone (task-major batches left memory's anchor tasks out of the organism's first look)."""
    seen = []

    class Tasks(Toy):
        def conclude(self, records, system, settings):
            seen.append({r["instance"].rsplit("-", 2)[0] for r in records})
            return super().conclude(records, system, settings)

    s = replace(SEQ, tasks=("grounding", "maze", "pattern"), instances=16)      # 48 rows, 6 batches of 8
    RunContext(progress=False, sequential=True).measure_claim(Tasks(), _Effect(0.0), s)
    assert len(seen) >= 1 and seen[0] == {"grounding", "maze", "pattern"}
    seen.clear()
    RunContext(progress=False, sequential=False).measure_claim(Tasks(), _Effect(0.0), s)   # fixed n: all of them
    assert seen == [{"grounding", "maze", "pattern"}]


def test_no_look_decides_before_min_units_and_an_early_skip_is_not_final():
    """A look with fewer than MIN_LOOK_UNITS units decides nothing, however large the effect; a conclusion that
    skips on an early look's subset goes on to the next look."""
    s = replace(SEQ, instances=12, batch_size=4)            # 3 batches of 4: looks at 4, 8, 12 units
    r = RunContext(progress=False, sequential=True).measure_claim(Toy(), _Effect(5.0), s)
    looks = r.details["sequential"]["looks"]
    assert looks[0]["n"] == 4 and looks[0]["stop"] == "" and r.status == "holds" and looks[-1]["n"] == 8

    class SkipsEarly(Toy):
        def conclude(self, records, system, settings):
            if len(records) < 16:
                return self.skipped("too few rows so far", system, settings)
            return super().conclude(records, system, settings)
    r = RunContext(progress=False, sequential=True).measure_claim(SkipsEarly(), _Effect(0.3), SEQ)
    assert r.status != "skipped" and r.n >= 16


class _Gated(Toy):
    """Toy with an effect size (tolerance 0.2) and noise of its own per model (`system.name`) on top of the noise
    the models share per row, as two checkpoints measured on the same rows."""

    spec = replace(Toy.spec, id="toy.gated", effect=0.4)

    def measure_batch(self, ctx, system, settings, batch):
        rows = super().measure_batch(ctx, system, settings, batch)
        for r in rows:
            own = np.random.default_rng(zlib.crc32(f"{system.name}|{r['instance']}|{r['seed']}".encode()))
            r["value"] += 0.2 * float(own.standard_normal())
        return rows


@dataclass
class _Model(_Effect):
    """An `_Effect` with the identity a row's records are kept by (cos.records.RecordedSystem)."""

    num_layers: int = 4


def test_a_gate_against_stored_records_stops_once_the_change_is_decided():
    from cos.gate import Against, as_bundle

    old = RunContext(progress=False).measure_claim(_Gated(), _Model(0.5, name="old"), SEQ)     # fixed n: 48
    base = as_bundle(old.records)
    against = Against("old-run", records={"toy.gated": base}, statuses={"toy.gated": old.status})

    def gate(effect, name):
        claim = _Gated()
        ctx = RunContext(progress=False, sequential=True)
        ctx.look_rule = against.look_rule(claim)
        r = ctx.measure_claim(claim, _Model(effect, name=name), SEQ)
        return r, r.details["sequential"], against.row(claim, r, ctx, SEQ)

    # a regression of 0.8 (tolerance 0.2): decided at the first look, 16 of 48 instances, and the final 95% row
    # on those rows agrees (it nests inside the look's 99.9% interval)
    r, sq, row = gate(-0.3, "new")
    assert sq["batches_used"] == 2 and sq["looks"][-1]["stop"] == "gate regressed" and row["regressed"]
    assert row["n"] == 16 and row["verdict"] == "regressed"
    # an unchanged model (other noise of its own): stopped once the change lies within ±0.2 at a look's level
    r, sq, row = gate(0.5, "same")
    stops = [lk["stop"] for lk in sq["looks"]]
    assert "gate unchanged" in stops and not row["regressed"] and row["verdict"] == "unchanged"
    assert sq["batches_used"] == sq["looks"][stops.index("gate unchanged")]["batches"] < 6
    # a change inside the tolerance whose new status, at a look's 99.9%, is not `holds` while the old one's (95%,
    # every row) is: no flip counts at a look, so it runs on (review: it had stopped as "gate regressed")
    r, sq, row = gate(0.35, "small")
    assert all(lk["stop"] == "" for lk in sq["looks"]) and sq["batches_used"] == 6 and not row["regressed"]
    # no old records for the claim: its own rule (a Toy with no records on the old side)
    assert against.look_rule(Toy()) is None


class _Sides(_Gated):
    """_Gated that counts the batches it samples per model (`system.name`)."""

    def __init__(self):
        super().__init__()
        self.by_model: dict[str, int] = {}

    def measure_batch(self, ctx, system, settings, batch):
        self.by_model[system.name] = self.by_model.get(system.name, 0) + 1
        if ctx is not None:     # as a stored run would: the key log (samples.jsonl) must list the new model's only
            ctx._log_key({"key": f"{system.name}-{batch.instances[0].id}",
                          "rows": [(i.id, s) for i, s in zip(batch.instances, batch.seeds)]})
        return super().measure_batch(ctx, system, settings, batch)


@pytest.mark.parametrize("old_effect,effect,name,verdict", [(0.5, -0.3, "new", "regressed"), (0.5, 0.5, "same", "unchanged"),
                                                            (-1.0, -1.0, "same", "unchanged"),
                                                            (-0.3, 0.3, "new", "improved")])
def test_a_gate_against_a_model_samples_both_unit_by_unit_and_stops_both(old_effect, effect, name, verdict):
    """Against a model under sequential looks the old model is sampled on the new one's units before each look
    (cos.gate.PairedLooks): both stop at the same look, the row is written from the rows both have, its old status
    is the old rows' at 95%, and the verdict is the fixed-n gate's (every row of both models). Where both fail, the
    old rows' status (fails) lets an unchanged model stop early: no flip from holds can come of more rows; where
    neither model's status is decided, a change decided to be better (not worse than 0) rules out a flip too."""
    from cos.gate import Against, PairedLooks

    against = Against("old-model", system=_Model(old_effect, name="old"))
    rows, keys = {}, {}
    for seqon in (True, False):
        claim, ctx = _Sides(), RunContext(progress=False, sequential=seqon)
        ctx.look_rule = against.look_rule(claim)
        assert isinstance(ctx.look_rule, PairedLooks) and ctx.look_rule.paired_system is against.system
        r = ctx.measure_claim(claim, _Model(effect, name=name), SEQ)
        kept = dict(ctx.paired)
        rows[seqon] = (against.row(claim, r, ctx, SEQ), r, claim.by_model, kept, ctx.paired)
        keys[seqon] = [e["key"] for e in ctx.key_log]
    (row, r, sampled, kept, left), (fixed, _, fixed_sampled, fixed_kept, _) = rows[True], rows[False]
    sq = r.details["sequential"]
    assert sq["batches_used"] < 6 and sq["looks"][-1]["stop"] == f"gate {verdict}"
    assert sampled == {name: sq["batches_used"], "old": sq["batches_used"]}     # the old model stopped too
    assert fixed_sampled == {name: 6, "old": 6}
    assert row["verdict"] == fixed["verdict"] == verdict and row["regressed"] == fixed["regressed"]
    assert row["n"] == r.n == 8 * sq["batches_used"] and fixed["n"] == 48
    # the old side's rows are the new side's (instance, seed) rows, taken by the row; none kept at fixed n
    old_rows = kept["toy.gated"]["records"]
    assert [(x["instance"], x["seed"]) for x in old_rows] == [(x["instance"], x["seed"]) for x in r.records["records"]]
    assert left == {} and fixed_kept == {} and kept["toy.gated"]["level"] == r.records["level"]
    assert row["status_old"] == _Sides().conclude(old_rows, _Model(old_effect, name="old"), SEQ).status   # at 95%
    assert old_effect > -1 or row["status_old"] == "fails"
    assert len(keys[True]) == sq["batches_used"] and all(k.startswith(f"{name}-") for k in keys[True])


def test_a_killed_gate_with_looks_resumes_from_both_models_stored_batches(tmp_path):
    """A gate against a model under looks, killed mid-claim with a result store: the rerun samples neither model's
    stored batches again and writes the uninterrupted gate's row (a killed run loses nothing finished)."""
    from cos.gate import Against

    def run(store, kill_after=None):
        against = Against("old-model", system=_Model(0.5, name="old"))
        claim = _Sides()
        inner = claim.measure_batch

        def measure_batch(ctx, system, settings, batch):
            if system.name == "new" and claim.by_model.get("new", 0) == kill_after:
                raise KeyboardInterrupt("killed")
            return inner(ctx, system, settings, batch)
        claim.measure_batch = measure_batch
        ctx = RunContext(progress=False, sequential=True, store=None if store is None else ResultStore(store))
        ctx.look_rule = against.look_rule(claim)
        r = ctx.measure_claim(claim, _Model(0.3, name="new"), SEQ)
        row = against.row(claim, r, ctx, SEQ)
        return {k: row[k] for k in ("change", "ci", "verdict", "n", "status_old")}, r, dict(claim.by_model)

    whole, r, sampled = run(None)
    used = r.details["sequential"]["batches_used"]
    first = r.details["sequential"]["looks_planned"][0]["batches"]
    assert used > first + 1 and sampled == {"new": used, "old": used}     # it goes past the first look
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "s", kill_after=first + 1)    # killed inside the second look's units
    again, r2, sampled2 = run(tmp_path / "s")
    assert again == whole and r2.details["sequential"]["batches_used"] == used
    # the new model's first + 1 batches and the old model's first (sampled before the first look) were served
    assert sampled2 == {"new": used - first - 1, "old": used - first}


def test_a_gate_against_a_model_with_overlapped_units_is_the_serial_gate():
    """--cos-overlap: both models' units are read out on two threads (cos.runner); the lockstep gate's row, its
    stop and what each model sampled are the serial run's."""
    from cos.gate import Against

    out = {}
    for overlap in (False, True):
        against = Against("old-model", system=_Model(0.5, name="old"))
        claim, ctx = _Sides(), RunContext(progress=False, sequential=True, overlap=overlap)
        ctx.look_rule = against.look_rule(claim)
        s = replace(SEQ, instances=96)       # 4 units a look: two in flight at once
        r = ctx.measure_claim(claim, _Model(0.5, name="same"), s)
        row = against.row(claim, r, ctx, s)
        out[overlap] = ({k: row[k] for k in ("change", "ci", "verdict", "n", "status_old")},
                        r.details["sequential"], claim.by_model, [e["key"] for e in ctx.key_log])
    assert out[True] == out[False] and out[False][1]["batches_used"] < 12


@pytest.mark.parametrize("new_effect", [0.3, -0.3])
def test_a_gate_against_a_model_on_ranks_concludes_the_single_process_row(new_effect):
    """Two ranks split both models' units at every look and gather both: the single process's gate row, each
    model's batch sampled once over the ranks."""
    from cos.gate import Against

    s = replace(SEQ, instances=96)      # 12 units: looks after 4, 8, 12

    def one(ctx, claim):
        against = Against("old-model", system=_Model(0.5, name="old"))
        ctx.look_rule = against.look_rule(claim)
        r = ctx.measure_claim(claim, _Model(new_effect, name="new"), s)
        return r, against.row(claim, r, ctx, s)
    alone_claim = _Sides()
    alone, alone_row = one(RunContext(progress=False, sequential=True), alone_claim)
    assert alone.details["sequential"]["looks_planned"][0]["batches"] >= 4      # 2 units a rank at each look
    assert (alone.details["sequential"]["batches_used"] < 12) == (new_effect < 0)     # a regression stops early
    box, bar, got, claims = {}, threading.Barrier(2), {}, [_Sides() for _ in range(2)]

    def rank(i):
        got[i] = one(RunContext(progress=False, sequential=True, world=ThreadWorld(i, 2, box, bar)), claims[i])
    threads = [threading.Thread(target=rank, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    for i in range(2):
        r, row = got[i]
        assert (r.measured, r.status, r.n) == (alone.measured, alone.status, alone.n)
        assert {k: row[k] for k in ("change", "ci", "verdict", "n", "status_old")} == \
            {k: alone_row[k] for k in ("change", "ci", "verdict", "n", "status_old")}
    for m in ("new", "old"):
        assert sum(c.by_model.get(m, 0) for c in claims) == alone_claim.by_model[m]


class _SharedNoise(Toy):
    """Rows whose noise the two models share (sd 1) far above their own (sd 0.05): the paired change is decided
    long before either model's status is (review of the lockstep gate)."""

    spec = replace(Toy.spec, id="toy.shared", effect=2.0)       # tolerance 1.0

    def measure_batch(self, ctx, system, settings, batch):
        rows = []
        for i, s in zip(batch.instances, batch.seeds):
            v = np.random.default_rng(zlib.crc32(f"{i.id}|{s}".encode())).standard_normal()
            v += 0.05 * np.random.default_rng(zlib.crc32(f"{system.name}|{i.id}|{s}".encode())).standard_normal()
            rows.append({"instance": i.id, "seed": s, "value": float(v + system.effect)})
        return rows


class _OldRaisesEarly(_Gated):
    """The old model's rows so far cannot be concluded below 24 rows (a zero count on an early subset)."""

    def conclude(self, records, system, settings):
        if getattr(system, "name", "") == "old" and len(records) < 24:
            raise ZeroDivisionError("a zero count on this subset")
        return super().conclude(records, system, settings)


class _FlipNoise(_SharedNoise):
    """_SharedNoise with tolerance 0.2 (effect 0.4): a change of -0.15 is within it, and whether a model holds on 32
    or on 48 instances turns on the rows' shared noise."""

    spec = replace(Toy.spec, id="toy.flipnoise", effect=0.4)


@pytest.mark.parametrize("case", ["old-undecided-so-far:0", "old-undecided-so-far:4", "old-undecided-so-far:103",
                                  "old-undecided-so-far:105", "new-holds-at-95-only:32", "new-holds-at-95-only:51",
                                  "old-raises-early"])
def test_a_gate_against_a_model_ends_with_the_fixed_n_verdict(case):
    """Review cases of the lockstep gate. old-undecided-so-far: at 16 of 48 instances the change lay within the
    tolerance at the look's level while the old model, which holds on all 48, was still inconclusive on its rows so
    far; the look stopped as "unchanged" (inconclusive → inconclusive) where fixed n says holds → inconclusive,
    confidently worse: regressed. An undecided old status now counts as one that may hold. new-holds-at-95-only
    (third review): the new rows so far held at 95% but not at the look's level, the look stopped as "unchanged",
    and all 48 rows did not hold (holds → inconclusive, regressed); "no flip" must now be decided at the look's
    level. old-raises-early: the old rows so far not concludable at an early look crashed the claim; now the look
    goes on, as for the new side."""
    from cos.gate import Against

    name, _, shift = case.partition(":")
    claim_of, old_e, new_e = {"old-undecided-so-far": (_SharedNoise, 0.45, 0.05),
                              "new-holds-at-95-only": (_FlipNoise, 0.3, 0.15),
                              "old-raises-early": (_OldRaisesEarly, 0.5, 0.5)}[name]
    s = replace(SEQ, first_instance=100 * int(shift or 0))
    out = {}
    for seqon in (True, False):
        against = Against("old-model", system=_Model(old_e, name="old"))
        claim, ctx = claim_of(), RunContext(progress=False, sequential=seqon)
        ctx.look_rule = against.look_rule(claim)
        r = ctx.measure_claim(claim, _Model(new_e, name="new"), s)
        out[seqon] = (against.row(claim, r, ctx, s), r)
    (row, r), (fixed, _) = out[True], out[False]
    assert r.status != "error" and row["verdict"] == fixed["verdict"] and row["regressed"] == fixed["regressed"]
    if name != "old-raises-early":
        assert fixed["verdict"] == "regressed" and fixed["status_old"] == "holds"
        assert "gate unchanged" not in [lk["stop"] for lk in r.details["sequential"]["looks"]]


def test_a_gate_against_a_model_with_the_same_rows_stops_though_its_status_is_undecided():
    """A model gated against itself (the same rows): the change is 0 on every instance and the two statuses are
    the same at every n, so no flip can come of more rows; it stops at the first look though both are
    inconclusive (an undecided old status otherwise runs to the end: third review)."""
    from cos.gate import Against

    against = Against("old-model", system=_Model(0.0, name="old"))
    claim, ctx = _Sides(), RunContext(progress=False, sequential=True)
    ctx.look_rule = against.look_rule(claim)
    r = ctx.measure_claim(claim, _Model(0.0, name="old"), SEQ)
    row = against.row(claim, r, ctx, SEQ)
    sq = r.details["sequential"]
    assert row["verdict"] == "unchanged" and row["status_old"] == "inconclusive" == r.status
    assert sq["looks"][-1]["stop"] == "gate unchanged" and sq["batches_used"] == 2


def test_an_old_model_side_with_no_record_form_is_not_measured_again():
    """`ctx.paired` holding None for a claim (its conclusion arguments have no record form): the old side has no
    records, said, and the old model is not sampled again (the new side has no records either)."""
    from cos.gate import Against

    class Boom:
        def measure_claim(self, *a, **k):
            raise AssertionError("measured the old model again")
    ctx = Boom()
    ctx.paired, ctx.tracker = {"toy.gated": None}, None
    assert Against("old-model", system=_Model(0.5, name="old")).old(_Gated(), ctx, SEQ) == (None, "not recorded")
    assert ctx.paired == {}


def test_a_gate_against_a_stored_run_that_did_not_hold_stops_an_unchanged_model_early():
    """A stored run's status is final: one that is inconclusive on every row cannot flip from holds, so an
    unchanged model stops once its change is within the tolerance (against a model's rows so far it could not)."""
    from cos.gate import Against, as_bundle

    old = RunContext(progress=False).measure_claim(_Gated(), _Model(0.0, name="old"), SEQ)
    assert old.status == "inconclusive"
    against = Against("old-run", records={"toy.gated": as_bundle(old.records)}, statuses={"toy.gated": old.status})
    claim, ctx = _Gated(), RunContext(progress=False, sequential=True)
    ctx.look_rule = against.look_rule(claim)
    r = ctx.measure_claim(claim, _Model(0.0, name="same"), SEQ)
    sq = r.details["sequential"]
    assert sq["looks"][-1]["stop"] == "gate unchanged" and sq["batches_used"] < 6
    assert against.row(claim, r, ctx, SEQ)["verdict"] == "unchanged"


def test_the_runner_does_not_ask_a_gate_at_the_last_look():
    """A row that ran to the end is the fixed-n row: the gate's rule is asked at the early looks only (its
    decision there would be unused work, and a stop label on the last look would say the rows stopped)."""
    from cos.gate import Against, as_bundle

    old = RunContext(progress=False).measure_claim(_Gated(), _Model(0.5, name="old"), SEQ)
    rule = Against("old-run", records={"toy.gated": as_bundle(old.records)},
                   statuses={"toy.gated": old.status}).look_rule(_Gated())
    asked = []
    ctx = RunContext(progress=False, sequential=True)
    ctx.look_rule = lambda res, look, *a: asked.append(look.final) or rule(res, look, *a)
    r = ctx.measure_claim(_Gated(), _Model(0.35, name="small"), SEQ)     # runs to the end (see above)
    assert r.details["sequential"]["batches_used"] == 6 and asked == [False, False]


def _gate_pair(effect_size, own_noise, old_effect, new_effect, outlier=False):
    """The gate's verdict on one new model against a stored fixed-n run, sequential and at fixed n (review cases)."""
    from cos.gate import Against, as_bundle

    class C(Toy):
        spec = replace(Toy.spec, id="toy.c", effect=effect_size)

        def measure_batch(self, ctx, system, settings, batch):
            rows = []
            for k, (i, s) in enumerate(zip(batch.instances, batch.seeds)):
                v = 0.1 * np.random.default_rng(zlib.crc32(f"{i.id}|{s}".encode())).standard_normal()
                v += own_noise * np.random.default_rng(zlib.crc32(f"{system.name}|{i.id}|{s}".encode())).standard_normal()
                if outlier and system.name == "new" and k == 0 and not self.calls:
                    v += 5.0                    # one instance far off the others' regression
                rows.append({"instance": i.id, "seed": s, "value": float(v + system.effect)})
            self.calls.append(1)
            return rows

    old = RunContext(progress=False).measure_claim(C(), _Model(old_effect, name="old"), SEQ)
    against = Against("old-run", records={"toy.c": as_bundle(old.records)}, statuses={"toy.c": old.status})
    out = {}
    for seqon in (True, False):
        claim, ctx = C(), RunContext(progress=False, sequential=seqon)
        ctx.look_rule = against.look_rule(claim) if seqon else None
        r = ctx.measure_claim(claim, _Model(new_effect, name="new"), SEQ)
        out[seqon] = (against.row(claim, r, ctx, SEQ), r.details.get("sequential", {}))
    return out


@pytest.mark.parametrize("case", ["outlier", "flip-at-the-end", "holds-to-fails", "flip-not-yet-decided",
                                  "stopped-at-a-stricter-level"])
def test_a_gate_stopped_at_a_look_writes_the_row_it_stopped_on_and_agrees_with_fixed_n(case):
    """Review cases of the gate's sequential stop. outlier: one of 16 paired differences far off, where a look's
    99.93% interval (Hall's bound) said regressed and the 95% row said undecided, so the gate passed; now a look
    stops only where the row it will write says the same. flip-at-the-end: the last look had stopped as "gate
    unchanged" and switched the flip rule off for a row that ran to the end. holds-to-fails: the old row holds,
    the new one fails, the change is confidently worse but within the tolerance; with flips off at looks it
    stopped as unchanged. flip-not-yet-decided: holds → inconclusive with a 95% interval still covering 0 at 32 of
    48 instances, "unchanged" by the tolerance, where all 48 decide the flip (second review).
    stopped-at-a-stricter-level: unchanged within the tolerance at the first look, where the new row's own status
    (at 99.93%) is inconclusive and at 95% holds. It had stopped there, and the row had to read the flip at 95%
    (at the look's level: holds → inconclusive, confidently worse, regressed). Since the third review "no flip" must
    be decided at the look's level too (the new status holds there as well as at 95%: a 95% status on a subset
    had stopped "unchanged" where all rows flipped), so it goes on. Each must end with the fixed-n verdict."""
    args = {"outlier": (0.2, 0.1, 0.0, -3.0, True), "flip-at-the-end": (0.8, 0.3, 0.3, 0.03, False),
            "holds-to-fails": (1.2, 0.05, 0.3, -0.15, False),
            "flip-not-yet-decided": (2.0, 0.42, 0.3, 0.05, False),
            "stopped-at-a-stricter-level": (0.4, 0.02, 0.15, 0.1, False)}[case]
    expected = "unchanged" if case == "stopped-at-a-stricter-level" else "regressed"
    out = _gate_pair(*args)
    (seq_row, sq), (fixed_row, _) = out[True], out[False]
    assert seq_row["verdict"] == fixed_row["verdict"] == expected and seq_row["regressed"] == (expected == "regressed")
    stops = [lk["stop"] for lk in sq["looks"]]
    if expected == "regressed":
        assert "gate unchanged" not in stops
    else:       # its first look's new status is inconclusive at 99.93%: "no flip" is not decided there
        assert stops[0] == "" and sq["looks"][0]["status"] == "inconclusive"
    if stops[-1].startswith("gate "):                # stopped early: on the verdict of the row it wrote
        assert stops[-1] == f"gate {seq_row['verdict']}" and sq["batches_used"] < sq["batches_max"]

"""The run's ETA as its plan re-estimated after each batch (cos.eta), and --cos-budget (refuse, or fit)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from cos.errors import InputError
from cos.eta import (ClaimWork, RunEstimate, apply_budget, expected_s, fit_instances, nothing_stored, parse_budget,
                     plan_work, to_do, trace_errors, with_stored)
from cos.registry import get_claim
from cos.runner import RunContext, clean_run_key, price_forwards, stored_work
from cos.settings import TIERS
from cos.store import ResultStore
from cos.validation import validate_options
from tests.test_sequential import SEQ, Toy, _Effect


class Clock:
    """A wall clock the test moves by hand: the rate must come from it, not from the plan."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


THIRDS = [(1 / 3, 0.5), (2 / 3, 0.25), (1.0, 0.25)]      # where a sequential claim may stop, with probabilities


def estimate(clock, a_stops=((1.0, 1.0),)):
    """Claim a: 10 planned s of its own, b: 30; both read a shared run of 20 planned s (counted once)."""
    return RunEstimate({"a": ClaimWork("a", 10.0, {"clean": 20.0}, list(a_stops)),
                        "b": ClaimWork("b", 30.0, {"clean": 20.0}, [(1.0, 1.0)])}, t0=clock(), start=clock() - 5,
                       clock=clock)


def test_no_eta_before_a_rate_then_the_measured_rate_times_what_is_left():
    clock = Clock()
    est = estimate(clock)
    assert est.planned_s() == pytest.approx(60.0)          # the shared run once, not per reader
    est.started("a", 4, [4])
    clock.t += 15.0
    est.progress("a", 1)                 # the run's first batch: it pays the warm-up, the rate starts after it
    assert est.eta() is None and est.status() == "" and est.trace == []
    clock.t += 10.0
    est.progress("a", 2)                 # 7.5 more planned s (a quarter of a and of the shared run) in 10 s
    done, left = est.work()
    assert (done, left) == (pytest.approx(15.0), pytest.approx(45.0))
    assert est.rate() == pytest.approx(10 / 7.5) and est.eta() == pytest.approx(60.0)
    assert est.status() == "run: 25% · ETA 1m00s"
    assert est.trace == [(30.0, 60.0, 0.25)]                # seconds into the run (start = t0 - 5), ETA, done
    clock.t += 10.0                      # the same progress, twice the wall time: the rate doubles
    assert est.rate() == pytest.approx(20 / 7.5)


def test_a_claim_that_stops_early_shrinks_the_plan_and_leaves_the_shared_run_to_its_other_reader():
    clock = Clock()
    est = estimate(clock, THIRDS)
    # expected fraction of a: 1/3·0.5 + 2/3·0.25 + 1·0.25 = 7/12 of its own work and of the shared run's
    assert est.planned_s() == pytest.approx(10 * 7 / 12 + 30 + 20)     # b still needs the whole shared run
    est.started("a", 6, [2, 4, 6])
    clock.t += 10
    est.progress("a", 1)
    est.progress("a", 2)                 # at look 1: it may still stop there
    assert est.claims["a"].target() == pytest.approx(7 / 12)
    est.progress("a", 3)                 # past look 1 without stopping: only looks 2 and 3 are left, half each
    assert est.claims["a"].target() == pytest.approx((2 / 3 + 1) / 2)
    before = est.work()[1]
    est.progress("a", 4)
    est.finished("a", 4)                 # decided at look 2: its last third leaves the plan
    done, left = est.work()
    assert est.claims["a"].target() == pytest.approx(2 / 3)
    assert left == pytest.approx(30 + 20 * (1 - 2 / 3)) and left < before
    assert done == pytest.approx(10 * 2 / 3 + 20 * 2 / 3)
    est.finished("b")                    # b skipped: nothing is left of the plan
    assert est.work()[1] == 0 and est.eta() == 0


def test_prior_stops_move_towards_where_finished_claims_stopped():
    """A claim not yet started whose stops are the prior's learns from the run: one claim stopped at its first look
    weighs a third against the prior's two (PRIOR_WEIGHT); a claim whose stops came from a pilot keeps them."""
    est = RunEstimate({"x": ClaimWork("x", 10.0, {}, list(THIRDS), learn=True),
                       "y": ClaimWork("y", 10.0, {}, list(THIRDS), learn=True),
                       "z": ClaimWork("z", 10.0, {}, list(THIRDS), learn=False)}, t0=0.0, start=0.0, clock=Clock())
    est.started("x", 3, [1, 2, 3])
    est.progress("x", 1)
    est.finished("x", 1)                 # decided at its first look
    y = est.claims["y"]
    assert [p for _, p in y.stops] == pytest.approx([2 / 3 * 0.5 + 1 / 3, 2 / 3 * 0.25, 2 / 3 * 0.25])
    assert y.target() == pytest.approx(0.5) and 0.5 < 7 / 12   # expected less of it than the prior did
    assert est.claims["z"].stops == THIRDS


def test_looks_move_onto_the_claims_actual_look_points():
    est = estimate(Clock(), THIRDS)
    est.started("a", 2, [1, 2])          # two units: looks after 1 and 2; the planned stop at 2/3 goes to the end
    assert est.claims["a"].stops == [(0.5, 0.5), (1.0, 0.5)]


def test_the_runner_tells_the_estimate_each_batch_and_the_early_stop():
    lines = []
    clock = Clock()

    class Slow(Toy):                     # each batch takes 3 s of the test's clock
        def measure_batch(self, *a, **k):
            clock.t += 3
            return super().measure_batch(*a, **k)

    tracker = RunEstimate({"toy.records": ClaimWork("toy.records", 60.0, {}, THIRDS),
                           "other": ClaimWork("other", 40.0, {}, [(1.0, 1.0)])}, t0=clock(), start=clock(),
                          clock=clock)
    ctx = RunContext(sequential=True, tracker=tracker, progress_writer=lambda t, final: lines.append(t))
    r = ctx.measure_claim(Slow(), _Effect(1.2), replace(SEQ, first_instance=100))   # decided at look 1 of 3
    assert r.details["sequential"]["batches_used"] == 2
    c = tracker.claims["toy.records"]
    assert c.finished and c.done == pytest.approx(2 / 6) and c.units == 6
    assert tracker.work() == (pytest.approx(20.0), pytest.approx(40.0))     # the rest of toy left; other stays
    # batch 2: 3 s for 10 planned s; toy may still stop at look 1 (7/12 expected): 15 + 40 planned s left
    assert tracker.trace[0] == (6.0, pytest.approx(16.5), pytest.approx(20 / 75, abs=1e-4))
    assert tracker.trace[-1] == (6.0, pytest.approx(12.0), pytest.approx(20 / 60, abs=1e-4))   # stopped: 40 left
    assert len(tracker.trace) == 2 and [e[2] for e in tracker.events] == [0, 1, 2]
    assert "run:" not in lines[0] and "ETA" not in lines[0]      # 0/6 batches: no rate yet
    assert "run: 33% · ETA 12s" in lines[-1]


def test_trace_errors_against_the_wall_time_and_the_time_then_left():
    # ETA line at 10 s, claims done at 60 s: 50 s of wall time
    assert trace_errors([(10.0, 45.0, 0.1), (50.0, 5.0, 0.9), (60.0, 1.0, 1.0)], 60.0, 10.0) == \
        [(10.0, pytest.approx(-0.1), pytest.approx(-0.1)), (50.0, pytest.approx(-0.1), pytest.approx(-0.5))]


# ---------------------------------------------------------------- --cos-budget
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "abc", "inf", "", "2:fits", "2:"])
def test_a_bad_budget_is_one_line_naming_option_value_and_rule(bad):
    with pytest.raises(InputError) as e:
        validate_options({"--cos-budget": bad})
    msg = str(e.value)
    assert msg.startswith(f"--cos-budget {bad!r}:") and "positive finite number of GPU-hours" in msg
    assert "\n" not in msg


def test_budget_values():
    assert parse_budget("20") == (20.0, False) and parse_budget("0.5:fit") == (0.5, True)
    assert parse_budget(" 1e-3 : FIT ") == (1e-3, True)


def test_fit_instances_is_the_most_that_fit():
    cost = lambda k: 10.0 * k + 5
    assert fit_instances(cost, 32, 100.0) == 9
    assert fit_instances(cost, 32, 24.9) is None           # even 2 instances cost 25
    assert fit_instances(cost, 2, 1e9) is None              # nothing below the fewest to go to


@pytest.fixture(scope="module")
def organism():
    from cos.models import load_system
    from cos.pytest_plugin import DEFAULT_MODEL

    return load_system(DEFAULT_MODEL, device="cpu")


TIMING = {"seconds_per_row_forward": 0.01, "readout_seconds": {"decode": 0.001, "weights": 0.002, "score": 0.001,
                                                           "step_weights": 0.0005, "frame_weights": 0.0005},
          "batch_rows": 63, "cold_seconds_per_row_forward": None}


def _pricer(organism, claims, sequential=True, pilot=None):
    def price(settings):
        est = price_forwards(RunContext(progress=False), organism, settings, claims, TIMING)
        work, power = plan_work(est, claims, settings, organism, sequential, pilot)
        return est, work, power
    return price


def test_budget_within_runs_as_planned_and_over_it_refuses_in_one_line(organism):
    claims = [get_claim("layers.energy_profile"), get_claim("cos.superposition")]
    s = TIERS["gpu"]
    price = _pricer(organism, claims)
    need_s = 30 + expected_s(price(s)[1])
    same, doc, refusal, notes = apply_budget(2 * need_s / 3600, False, s, 30.0, 1, price, 2)
    assert same is s and refusal is None and notes == [] and doc["within"] == "yes"
    _, doc, refusal, _ = apply_budget(need_s / 2 / 3600, False, s, 30.0, 1, price, 2)
    assert doc["within"] == "refused" and "\n" not in refusal
    assert refusal.startswith(f"--cos-budget {need_s / 2 / 3600:g}: the plan needs {need_s / 3600:.3g} expected")
    assert "2 claims, 32 instances a task" in refusal and ":fit" in refusal and "-k" in refusal


def test_budget_fit_sizes_every_claim_down_and_states_the_power_left(organism):
    claims = [get_claim("layers.energy_profile"), get_claim("layers.swap_flip"), get_claim("cos.superposition")]
    s = TIERS["gpu"]
    # a pilot at the gpu tier's n: a spread per unit for superposition only (the others' power stays unknown)
    pilot = {"cos.superposition": {"n": 320, "ci_low": 0.10, "ci_high": 0.20, "details": {}}}
    price = _pricer(organism, claims, pilot=pilot)
    hours = 0.5 * expected_s(price(s)[1]) / 3600         # half the plan, nothing spent before it
    fitted, doc, refusal, notes = apply_budget(hours, True, s, 0.0, 1, price, 3)
    k = fitted.instances
    assert refusal is None and doc["within"] == "fitted" and 2 <= k < 32 and doc["fitted_instances"] == k
    assert expected_s(price(fitted)[1]) <= hours * 3600
    bigger = replace(s, instances=k + 1, instance_scale=(k + 1) / 32)
    assert expected_s(price(bigger)[1]) > hours * 3600     # the most instances that fit
    # proportional: swap_flip's own 64 instances scale as the tier's 32 a task do
    assert get_claim("layers.swap_flip").sizing_for(fitted).instances == round(64 * k / 32)
    p = doc["power_at_effect"]
    assert p["cos.superposition"] < doc["power_at_effect_unfitted"]["cos.superposition"]
    assert p["layers.energy_profile"] is None
    assert f"sized down to {k} of 32 instances a task" in notes[0] and "cos.superposition 0." in notes[0]
    assert "unknown without a pilot's spread (--cos-pilot) for layers.energy_profile, layers.swap_flip" in notes[0]
    _, doc, refusal, _ = apply_budget(1e-9, True, s, 0.0, 1, price, 3)
    assert doc["within"] == "refused" and "even 2 instances a task do not fit" in refusal


def test_instance_scale_leaves_the_store_keys_of_runs_without_it():
    s = TIERS["gpu"]
    assert "instance_scale" not in s.record()
    assert replace(s, instance_scale=0.5).record()["instance_scale"] == 0.5


TOY = '''
import pytest
import torch

@pytest.mark.claims
@pytest.mark.claim("layers.energy_profile")
def test_e(cos_claim, cos_settings):
    raise AssertionError("ran: the budget must refuse before any claim")
'''


def test_the_run_refuses_a_plan_over_its_budget_before_any_claim(pytester):
    pytester.makepyfile(test_toy=TOY)
    out = pytester.path / "out"
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "-p", "no:xdist", "--cos-device",
                                        "cpu", "--cos-tier", "cpu", "--cos-out", str(out), "--cos-budget", "1e-9")
    text = res.stdout.str() + res.stderr.str()
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [x for x in text.splitlines() if "--cos-budget" in x]
    assert "ERROR: --cos-budget 1e-09: the plan needs" in line and "(1 claim, 4 instances a task" in line
    assert "ran: the budget" not in text and not (out / "claims-status.json").exists()


def test_budget_is_checked_at_configure(pytester):
    pytester.makepyfile(test_toy=TOY)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cos-budget", "nan")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cos-budget 'nan': must be a positive finite number of GPU-hours" in res.stderr.str()


def test_the_provenance_keeps_every_re_estimate(tmp_path):
    """What benchmarks/eta_error.py reads: the trace and each claim's plan, as plain JSON."""
    clock = Clock()
    est = estimate(clock, THIRDS)
    est.started("a", 3, [1, 2, 3])
    clock.t += 3
    est.progress("a", 1)
    clock.t += 3
    est.progress("a", 2)
    est.finished("a", 2)
    doc = json.loads(json.dumps(est.record()))
    assert [t[0] for t in doc["trace"]] == [11.0, 11.0] and all(t[1] >= 0 for t in doc["trace"])
    assert doc["events"] == [[5.0, "a", 0, 3], [8.0, "a", 1, 3], [11.0, "a", 2, 3]]
    assert doc["claims"]["a"]["used_fraction"] == pytest.approx(2 / 3, abs=1e-4)
    assert doc["claims"]["a"]["expected_fraction"] == pytest.approx(7 / 12, abs=1e-4)


def test_every_rank_meets_at_the_budget_gather_alike():
    """budget_spent gathers rank 0's decision: every rank must enter that collective, rank 0 (which holds the
    budget's provenance) and the others (which do not) alike, or the ranks' later collectives pair off by one."""
    import time
    from types import SimpleNamespace

    from cos.pytest_plugin import CosSession

    calls = []

    class World:
        connected = True

        def __init__(self, rank):
            self.rank = rank

        def gather(self, obj):
            calls.append(self.rank)
            return ["rank 0's reason"]

    def session(rank, planned):
        return SimpleNamespace(budget=(1.0, False), budget_planned=planned, eta=None, start=time.time(),
                               budget_doc={} if rank == 0 else None,
                               ctx=SimpleNamespace(world=World(rank), split=(rank, 2)))

    assert [CosSession.budget_spent(session(r, True)) for r in (0, 1)] == ["rank 0's reason"] * 2
    assert calls == [0, 1]
    assert [CosSession.budget_spent(session(r, False)) for r in (0, 1)] == [None, None] and calls == [0, 1]


# ---------------------------------------------------------------- what the store holds is not work
def test_to_do_counts_only_the_units_not_stored():
    assert to_do((), 0.4) == 0.4
    half = (1.0, 1.0, 0.0, 0.0)                       # a killed run's first two of four units are stored
    assert [to_do(half, f) for f in (0.25, 0.5, 0.625, 1.0)] == pytest.approx([0.0, 0.0, 0.125, 0.5])
    assert to_do((1.0, 0.5), 1.0) == pytest.approx(0.25)    # a unit of two phases, one of them stored


def test_the_rate_leaves_out_batches_served_from_the_store():
    """A resumed claim: its first two units are served from the store in no time; they are neither planned work
    nor done work, and the rate starts after the first unit that was computed (the one that pays the warm-up)."""
    clock = Clock()
    est = RunEstimate({"a": ClaimWork("a", 40.0, {"clean": 20.0}, [(1.0, 1.0)], stored=(1.0, 1.0, 0.0, 0.0),
                                      shared_stored={"clean": (1.0, 1.0, 0.0, 0.0)}, batches=4, stored_batches=2)},
                      t0=clock(), start=clock(), clock=clock)
    assert est.planned_s() == pytest.approx(30.0)             # half of 40 + 20
    est.started("a", 4, [4])
    est.progress("a", 1)
    est.progress("a", 2)
    assert est.warm is None and est.work() == (0.0, pytest.approx(30.0))
    clock.t += 30                        # the first unit computed: its warm-up is not part of the rate
    est.progress("a", 3)
    assert est.warm == (clock.t, pytest.approx(15.0)) and est.eta() is None
    clock.t += 10
    est.progress("a", 4)
    assert est.rate() == pytest.approx(10 / 15) and est.eta() == 0.0
    assert est.record()["claims"]["a"]["stored_batches"] == 2


def test_a_shared_run_is_sampled_where_any_reader_needs_it():
    a = ClaimWork("a", 0.0, {"clean": 20.0}, [(1.0, 1.0)], shared_stored={"clean": (1.0, 1.0)})
    b = ClaimWork("b", 0.0, {"clean": 20.0}, [(1.0, 1.0)], shared_stored={"clean": (1.0, 0.0)})
    assert expected_s({"a": a, "b": b}) == pytest.approx(10.0)     # b still reads the second batch
    assert expected_s({"a": a}) == 0.0
    c = ClaimWork("c", 0.0, {"clean": 20.0}, [(1.0, 1.0)])           # nothing known of c: all of it
    assert expected_s({"a": a, "c": c}) == pytest.approx(20.0)


def killed(after: int) -> Toy:
    """Toy killed in its batch `after` + 1: the batches before it are in the store (the same claim class: a
    subclass elsewhere would be another module's code, under other store keys)."""
    claim = Toy()
    measure = claim.measure_batch

    def measure_batch(ctx, system, settings, batch):
        if len(claim.calls) == after:
            raise KeyboardInterrupt("killed")
        return measure(ctx, system, settings, batch)
    claim.measure_batch = measure_batch
    return claim


def _toy_pricer(ctx, claims):
    def price(settings):
        est = price_forwards(ctx, _Effect(0.3), settings, claims, TIMING)
        work, power = plan_work(est, claims, settings, _Effect(0.3), False)
        return est, with_stored(work, stored_work(ctx, claims, _Effect(0.3), settings)), power
    return price


def test_a_killed_run_is_priced_by_what_it_has_left(tmp_path):
    """Rerunning a killed run under a budget its whole plan exceeds but its unfinished batches fit: not refused,
    not sized down (that would change the rows and lose the stored batches); below even the rest it is refused in
    one line that says what was stored."""
    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        ctx.measure_claim(killed(3), _Effect(0.3), SEQ)
    got = stored_work(ctx, [Toy()], _Effect(0.3), SEQ)["toy.records"]
    assert got["records"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0] and (got["stored_batches"], got["batches"]) == (3, 6)
    assert got["shared"] == {"clean run": got["records"]}       # the clean run is read only by unstored batches
    price = _toy_pricer(ctx, [Toy()])
    full = expected_s(nothing_stored(price(SEQ)[1]))
    assert full > 0 and expected_s(price(SEQ)[1]) == pytest.approx(full / 2)
    for fit in (False, True):
        hours = (10 + 0.75 * full) / 3600                        # the whole plan over it, the rest (half) within
        same, doc, refusal, notes = apply_budget(hours, fit, SEQ, 10.0, 1, price, 1)
        assert refusal is None and same is SEQ and doc["within"] == "yes"
        assert doc["stored_batches"] == 3 and doc["total_batches"] == 6
        assert doc["planned_gpu_hours"] == pytest.approx((10 + full / 2) / 3600, abs=1e-4)
        assert doc["planned_gpu_hours_if_nothing_stored"] == pytest.approx((10 + full) / 3600, abs=1e-4)
        assert notes == [f"[cos] --cos-budget {hours:g}{':fit' if fit else ''}: plan {(10 + full / 2) / 3600:.3g} "
                         f"GPU-hours ({(10 + full) / 3600:.3g} with nothing stored; 3 of 6 batches already stored), "
                         "within the budget"]
    hours = (10 + 0.25 * full) / 3600                            # below even the rest
    _, doc, refusal, _ = apply_budget(hours, False, SEQ, 10.0, 1, price, 1)
    assert doc["within"] == "refused" and "\n" not in refusal
    assert refusal.startswith(f"--cos-budget {hours:g}: the plan needs {(10 + full / 2) / 3600:.3g} expected")
    assert "3 of 6 batches already stored" in refusal
    fitted, doc, refusal, notes = apply_budget(hours, True, SEQ, 10.0, 1, price, 1)
    # sized down: other rows, other keys; priced with nothing stored (fewer instances than half the plan's)
    assert refusal is None and doc["within"] == "fitted" and fitted.instances < SEQ.instances
    assert doc["fitted_gpu_hours"] == pytest.approx((10 + expected_s(nothing_stored(price(fitted)[1]))) / 3600,
                                                    abs=1e-4)
    assert "the 3 stored batches cannot be reused" in notes[0]


def test_the_fit_prices_its_trial_sizes_without_looking_the_store_up(tmp_path):
    """The fit's ~log2(n) trial sizes are priced with nothing stored anyway: through `price_bare`, which does not
    look the store up; only the plan's own settings are looked up."""
    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    price, looked, bare = _toy_pricer(ctx, [Toy()]), [], []

    def counted(settings):
        looked.append(settings.instances)
        return price(settings)

    def price_bare(settings):
        bare.append(settings.instances)
        est = price_forwards(ctx, _Effect(0.3), settings, [Toy()], TIMING)
        return est, *plan_work(est, [Toy()], settings, _Effect(0.3), False)

    full = expected_s(price(SEQ)[1])
    fitted, doc, refusal, _ = apply_budget((10 + full / 2) / 3600, True, SEQ, 10.0, 1, counted, 1, price_bare)
    assert refusal is None and doc["within"] == "fitted" and looked == [SEQ.instances]
    assert len(bare) >= 2 and fitted.instances in bare and SEQ.instances not in bare


def test_fit_leaves_a_fully_stored_run_as_it_is(tmp_path):
    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    ctx.measure_claim(Toy(), _Effect(0.3), SEQ)                  # a first complete run
    price = _toy_pricer(ctx, [Toy()])
    assert expected_s(price(SEQ)[1]) == 0.0
    full = expected_s(nothing_stored(price(SEQ)[1]))
    hours = (10 + full / 2) / 3600                               # the time so far fits; the whole plan would not
    same, doc, refusal, notes = apply_budget(hours, True, SEQ, 10.0, 1, price, 1)
    assert refusal is None and same is SEQ and doc["within"] == "yes" and "fitted_instances" not in doc
    assert doc["stored_batches"] == doc["total_batches"] == 6 and "6 of 6 batches already stored" in notes[0]


def test_the_clean_runs_own_entry_counts_as_stored(organism, tmp_path):
    """A claim whose records are missing still need not sample the shared clean run where an earlier run of
    another reader stored it: the plan looks up the same key `RunContext.clean_run` stores it under."""
    from cos.controls import TINY

    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    claim = get_claim("cos.superposition")
    s = replace(TINY, tasks=("grounding",), instances=2, batch_size=1)       # two batches of one row
    (s0, b0), = ctx.units_of(claim, s)[0]
    ctx.clean_run(organism, s0, b0)
    assert ctx.key_log[-1]["key"] == clean_run_key(organism, s0, b0)
    got = stored_work(ctx, [claim], organism, s)[claim.id]
    assert got["records"] == [0.0, 0.0] and got["shared"] == {"clean run": [1.0, 0.0]}
    assert stored_work(RunContext(progress=False), [claim], organism, s) == {}     # no store: nothing stored


def test_the_plan_keys_each_claims_batches_as_its_run_does(organism):
    """The plan looks up the keys the run will compute: at the settings and arguments each claim's `measure`
    hands `measure_records` (several size their own), over instance ids made without their videos."""
    from cos.registry import all_claims
    from cos.runner import records_call, row_ids
    from cos.settings import instances, settings_for

    s = replace(TIERS["cpu"], instances=2, num_frames=5)
    assert [(r.id, r.num_frames, r.task) for r in row_ids(s)] == [(i.id, i.num_frames, i.task) for i in instances(s)]
    seen = {}

    class Recording(RunContext):
        def measure_records(self, claim, system, settings, **kw):
            seen[claim.id] = (settings, kw)
            raise StopIteration

    s = settings_for(organism, "gpu")
    for c in all_claims():
        try:
            Recording(progress=False).measure_claim(c, organism, s)
        except StopIteration:
            pass
        assert records_call(c, organism, s) == seen.get(c.id), c.id
    assert len(seen) == len(all_claims()) - 1 and "distill.four_step" not in seen     # its fast model is not loaded
    assert seen["frames.count"][0] != s and "sizing" in seen["frames.count"][1]


def test_to_do_over_ranks_is_a_shards_own_units_or_the_busiest_ranks():
    """Unit k runs on rank k mod n: a shard's work is its own units' rest, a world's its busiest rank's, in shares
    of the largest rank's units; `f` itself with nothing stored."""
    assert to_do((1.0, 0.0) * 3, 1.0, 2, rank=1) == 1.0 and to_do((1.0, 0.0) * 3, 1.0, 2, rank=0) == 0.0
    assert to_do((1.0, 0.0) * 3, 1.0, 2) == 1.0            # rank 1 still has all of its units
    assert to_do((1.0, 0.0) * 3, 1.0) == 0.5                # what one process would have left
    assert to_do((1.0, 1.0, 0.0, 0.0), 1.0, 2) == pytest.approx(0.5)
    assert to_do((0.0, 0.0, 0.0, 0.0, 1.0), 1.0, 2) == pytest.approx(2 / 3)   # rank 0: 2 of 3, rank 1: 2 of 2
    assert to_do((1.0, 0.0, 1.0, 0.0, 1.0), 1.0, 2, rank=1) == 1.0
    for f in (0.0, 0.3, 0.5, 1.0):
        assert to_do((0.0,) * 5, f, 2) == pytest.approx(f) and to_do((0.0,) * 5, f, 2, rank=1) == pytest.approx(f)
        assert to_do((0.0,) * 7, f, 3, rank=2) == pytest.approx(f)
    assert to_do((0.0,), 1.0, 2, rank=1) == 0.0             # a shard with no unit of the claim has none of its work


def test_a_shard_is_priced_by_what_its_own_units_have_left(tmp_path):
    """Shard 0/2 ran to completion into the store, then shard 1/2 plans against it: half of all units are
    stored, none of shard 1's, so its plan is its whole share (not half of it) and it says nothing is stored."""
    RunContext(store=ResultStore(tmp_path / "s"), progress=False, shard=(0, 2)).measure_claim(Toy(), _Effect(0.3), SEQ)
    for rank, left in ((1, 1.0), (0, 0.0)):
        ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False, shard=(rank, 2))
        got = stored_work(ctx, [Toy()], _Effect(0.3), SEQ)["toy.records"]
        assert got["records"] == [1.0, 0.0] * 3 and (got["ranks"], got["rank"]) == (2, rank)
        assert (got["stored_batches"], got["batches"]) == (3 - 3 * left, 3)     # its own batches only
        price = _toy_pricer(ctx, [Toy()])
        full = expected_s(nothing_stored(price(SEQ)[1]))
        assert full > 0 and expected_s(price(SEQ)[1]) == pytest.approx(left * full)


def test_a_world_is_priced_by_its_busiest_rank(tmp_path):
    """Rank 1 of two stored its units (rank 0 crashed): a rerun on two ranks still waits for rank 0's whole share,
    so nothing comes off the plan; with one rank's units half stored the busiest rank has what it has left."""
    from tests.test_parallel import FakeWorld

    RunContext(store=ResultStore(tmp_path / "s"), progress=False, shard=(1, 2)).measure_claim(Toy(), _Effect(0.3), SEQ)
    # on three ranks each has one of its two units (0 and 3, 1 and 4, 2 and 5) stored; on one, half is stored
    for n, left in ((2, 1.0), (3, 0.5), (1, 0.5)):
        ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False, world=FakeWorld(0, n, connected=n > 1))
        got = stored_work(ctx, [Toy()], _Effect(0.3), SEQ)["toy.records"]
        assert got["records"] == [0.0, 1.0] * 3 and (got["ranks"], got["rank"]) == (n, None)
        assert (got["stored_batches"], got["batches"]) == (3, 6)                # the world's batches
        price = _toy_pricer(ctx, [Toy()])
        full = expected_s(nothing_stored(price(SEQ)[1]))
        assert full > 0 and expected_s(price(SEQ)[1]) == pytest.approx(left * full), n
    # units 0 and 1 stored of 6 over 2 ranks: each rank has 2 of its 3 left
    work = {"a": ClaimWork("a", 30.0, {"clean": 30.0}, [(1.0, 1.0)], stored=(1.0, 1.0, 0, 0, 0, 0),
                           shared_stored={"clean": (1.0, 1.0, 0, 0, 0, 0)}, ranks=2)}
    assert expected_s(work) == pytest.approx(40.0)


class _SkipsAtPlan(Toy):
    """A claim whose measure skips (pytest.skip, a BaseException) before it gets to measure_records at plan time."""

    def measure(self, ctx, system, settings, **kw):
        if type(ctx).__name__ == "_Probe":
            pytest.skip("needs something the plan does not load")
        return super().measure(ctx, system, settings, **kw)


class _TwoCalls(Toy):
    """A claim that measures its records twice (other settings the second time): not keyed by its first call."""

    def measure(self, ctx, system, settings, **kw):
        first = ctx.measure_records(self, system, settings)
        return ctx.measure_records(self, system, replace(settings, first_instance=1000)) or first


def test_a_claim_the_probe_cannot_follow_counts_nothing_stored(tmp_path):
    from cos.runner import records_call

    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    ctx.measure_claim(Toy(), _Effect(0.3), SEQ)                 # everything of Toy's first call is stored
    assert stored_work(ctx, [Toy()], _Effect(0.3), SEQ)["toy.records"]["stored_batches"] == 6
    assert records_call(_SkipsAtPlan(), _Effect(0.3), SEQ) is None
    assert records_call(_TwoCalls(), _Effect(0.3), SEQ) is None
    assert stored_work(ctx, [_SkipsAtPlan(), _TwoCalls()], _Effect(0.3), SEQ) == {}

    class Interrupted(Toy):
        def measure(self, ctx, system, settings, **kw):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):                      # ^C at plan time still stops the run
        records_call(Interrupted(), _Effect(0.3), SEQ)

    class Reshapes(Toy):                                        # one call, its row reshaped after it: keyed
        def measure(self, ctx, system, settings, **kw):
            res = ctx.measure_records(self, system, settings)
            res.reason = "reshaped"
            return res

    assert records_call(Reshapes(), _Effect(0.3), SEQ) == (SEQ, {})


@pytest.mark.parametrize("sequential,shard", [(False, None), (True, None), (False, (1, 3)), (True, (1, 3))])
def test_the_plan_keys_every_batch_as_the_run_does_at_the_cpu_tier(organism, sequential, shard):
    """Every records claim's store keys as the plan computes them (instance ids, the model's fingerprint and name
    only, the module's code hash once) are the keys its run computes, batch for batch, with sequential looks on
    (units interleaved over tasks) and under a shard (~2.5 s each on a 2-core VM)."""
    import inspect
    from types import SimpleNamespace

    from cos.registry import all_claims
    from cos.runner import _code_hash, records_call, records_key, row_ids
    from cos.settings import settings_for

    class Stop(BaseException):
        pass

    seen = {}

    class Recording(RunContext):
        def measure_records(self, claim, system, settings, **kw):
            seen[claim.id] = (settings, kw)
            raise Stop

    s = replace(settings_for(organism, "cpu"), instances=3, instance_cap=3)
    model = SimpleNamespace(fingerprint=organism.fingerprint, name=organism.name)
    keyed = 0
    for c in [c for c in all_claims() if c.by_records]:
        try:
            Recording(progress=False, sequential=sequential, shard=shard).measure_claim(c, organism, s)
        except Stop:
            pass
        except Exception:  # noqa: BLE001 - a claim that cannot run here: records_call must say None too
            pass
        call = records_call(c, organism, s, sequential, shard)
        assert call == seen.get(c.id), c.id
        if call is None:
            continue
        sr, kw = call
        ctx = RunContext(progress=False, sequential=sequential, shard=shard)
        code = _code_hash(inspect.getmodule(type(c)))
        planned = [[records_key(c, model, x, b, kw, code=code) for x, b in u]
                   for u in ctx.units_of(c, sr, instances_of=row_ids, **kw)]
        run = [[records_key(c, organism, x, b, kw) for x, b in u] for u in ctx.units_of(c, sr, **kw)]
        assert planned == run and planned, c.id
        keyed += 1
    assert keyed >= 10


# the rerun's plan at a fixed price (a minute a row-forward, no readouts): its budget decision does not depend on
# how fast this host's forward happens to be while the test runs
FIXED_PRICE = '''
import cos.runner

def fixed(system, settings, warmup=1):
    return {"seconds_per_row_forward": 60.0, "cold_seconds_per_row_forward": None, "batch_rows": 4,
            "readout_seconds": {}}

cos.runner.time_forward = fixed
'''
RESUMED = ["--cos-tier", "cpu", "--cos-device", "cpu", "--cos-tasks", "grounding,maze", "--cos-instances", "4",
           "--cos-batch-size", "4", "-k", "energy_profile"]       # 8 rows in 2 batches of 4: 8 row-forwards


def _killed_after_one_batch(pytester, organism):
    """The store a run of layers.energy_profile killed after its first batch leaves (that batch's records, computed
    here under the keys the run uses), and the rerun's files."""
    from cos.settings import settings_for

    pytester.makeconftest(FIXED_PRICE)
    pytester.makepyfile(test_claims="from cos.testing import test_claim  # noqa: F401\n")
    s = replace(settings_for(organism, "cpu"), instances=4, instance_cap=4, batch_size=4, tasks=("grounding", "maze"))
    claim, store = get_claim("layers.energy_profile"), pytester.path / "store"
    ctx = RunContext(store=ResultStore(store), progress=False)
    units = ctx.units_of(claim, s)
    assert len(units) == 2
    (s0, b0), = units[0]
    ctx._batch_records(claim, organism, s0, b0, {})
    return store


def _rerun(pytester, store, budget):
    out = pytester.path / "out"
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "-p", "no:xdist", "--cos-out",
                                        str(out), "--cos-store", str(store), "--cos-budget", budget, *RESUMED)
    return res, res.stdout.str() + res.stderr.str(), out


def test_a_resumed_run_fits_a_budget_its_whole_plan_does_not(pytester, organism):
    """The rerun's whole plan is 8 row-forwards at 60 s (0.133 GPU-hours) plus its time so far; its first batch is
    stored, so it has 4 left (0.067): under 0.11:fit it runs, unscaled, and its provenance says what was stored."""
    store = _killed_after_one_batch(pytester, organism)
    res, text, out = _rerun(pytester, store, "0.11:fit")
    assert res.ret == 0, text
    doc = json.loads((out / "claims-status.json").read_text())
    budget = doc["provenance"]["budget"]
    assert budget["within"] == "yes" and "fitted_instances" not in budget and budget["instances"] == 4
    assert (budget["stored_batches"], budget["total_batches"]) == (1, 2)
    assert budget["planned_gpu_hours_if_nothing_stored"] > 0.11 > budget["planned_gpu_hours"]
    (row,) = doc["claims"]
    assert row["id"] == "layers.energy_profile" and row["status"] in ("holds", "fails", "inconclusive")
    assert doc["provenance"]["rank_store"][0]["hits"] == 1      # the stored batch served, not redone
    assert doc["provenance"]["looks"] == 1 and doc["provenance"]["sequential"] is False    # the cpu tier: fixed n
    assert "1 of 2 batches already stored), within the budget" in text
    assert "1 of 2 batches of the claims already stored, not redone: ETA" in text


def test_a_resumed_run_over_its_budget_still_stops_before_any_claim(pytester, organism):
    store = _killed_after_one_batch(pytester, organism)
    res, text, out = _rerun(pytester, store, "0.05")            # below even the 4 row-forwards left
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [x for x in text.splitlines() if "--cos-budget" in x]
    assert "ERROR: --cos-budget 0.05: the plan needs" in line and "1 of 2 batches already stored" in line
    assert not (out / "claims-status.json").exists()


# a claim that skips when the plan probes it (pytest.skip: a BaseException), and runs as ever otherwise
SKIP_AT_PLAN = '''
import pytest
import torch
from cos.registry import get_claim

_claim = get_claim("layers.energy_profile")
_measure = _claim.measure


def _skips_at_plan(ctx, system, settings, **kw):
    if type(ctx).__name__ == "_Probe":
        pytest.skip("not at plan time")
    return _measure(ctx, system, settings, **kw)


_claim.measure = _skips_at_plan
'''


def test_a_claim_that_skips_at_plan_time_is_planned_as_nothing_stored_and_runs(pytester, organism):
    """A pytest.skip in a claim's measure at plan time neither errors the session nor counts anything stored:
    the plan is the full price, and the run then serves the stored batch all the same."""
    store = _killed_after_one_batch(pytester, organism)
    pytester.makeconftest(FIXED_PRICE + SKIP_AT_PLAN)
    res, text, out = _rerun(pytester, store, "10")
    assert res.ret == 0, text
    doc = json.loads((out / "claims-status.json").read_text())
    budget = doc["provenance"]["budget"]
    assert budget["within"] == "yes" and (budget["stored_batches"], budget["total_batches"]) == (0, 0)
    assert budget["planned_gpu_hours"] == budget["planned_gpu_hours_if_nothing_stored"]
    (row,) = doc["claims"]
    assert row["id"] == "layers.energy_profile" and row["status"] in ("holds", "fails", "inconclusive")
    assert doc["provenance"]["rank_store"][0]["hits"] == 1


def test_a_gate_is_priced_at_every_row_and_a_run_at_its_claims_own_stops(organism):
    """Under a gate the looks stop claims by the gate's rule (cos.gate), which is not modelled: `price_plan` with
    `own_stops=False` prices every claim at its maximum n, where the same sequential run alone expects less."""
    from cos.eta import price_plan

    claims = [get_claim("layers.energy_profile"), get_claim("cos.superposition")]
    ctx, s = RunContext(progress=False, sequential=True), TIERS["gpu"]
    _, own, _ = price_plan(ctx, organism, s, claims, TIMING)
    est, gate, _ = price_plan(ctx, organism, s, claims, TIMING, own_stops=False)
    assert all(w.stops == [(1.0, 1.0)] for w in gate.values())
    assert expected_s(gate) == pytest.approx(est["eta_s"], rel=1e-6)      # the maximum: every row
    assert expected_s(own) < expected_s(gate)


def test_the_run_prices_the_looks_it_takes(organism):
    """The ETA and --cos-budget price a run at its own --cos-looks (RunContext.looks, through `price_plan`): the
    planned stops of a claim fall at its batch points for that many looks."""
    from cos.eta import price_plan
    from cos.plan import claim_layout, look_fractions

    claim, s = get_claim("layers.energy_profile"), TIERS["gpu"]
    _, nb = claim_layout(claim, organism, s)
    seen = []
    for k in (3, 5):
        _, work, _ = price_plan(RunContext(progress=False, sequential=True, looks=k), organism, s, [claim], TIMING)
        fr = [f for f, _ in work[claim.id].stops]
        assert fr == pytest.approx(list(look_fractions(k, nb)))
        seen.append(len(fr))
    assert seen[1] > seen[0]


def test_every_readout_unit_a_claim_names_is_timed(organism):
    """The ETA prices a claim's `readouts` at `time_forward`'s unit times (`price_forwards`: a unit it did not
    time costs 0 s): every unit any claim names at any tier is one `_readout_seconds` times, each a positive time."""
    from cos.registry import all_claims
    from cos.runner import time_forward
    from cos.settings import settings_for

    s = replace(settings_for(organism, "cpu"), instances=1, tasks=("grounding", "maze"))
    units = time_forward(organism, s)["readout_seconds"]
    assert units and all(0 < v < 1 for v in units.values()), units
    named = set()
    for tier in ("cpu", "gpu", "full"):
        for c in all_claims():
            named |= set(c.readouts(settings_for(organism, tier), organism))
    assert named and named <= set(units), named - set(units)


def _unit_timing_batch(organism, monkeypatch) -> tuple:
    """A one-grounding-instance batch at the cpu tier, 10 rows of random x̂0, its instance, and the lengths of the
    stacks that instance reads back (`cells_of`, recorded)."""
    from cos.runner import RunContext
    from cos.settings import settings_for

    s = replace(settings_for(organism, "cpu"), instances=1, tasks=("grounding",))
    batch = next(RunContext(progress=False).batches(s))
    shape = organism.latent_shape(1, s.num_frames, s.height, s.width)[1:]
    x0 = torch.rand(10, *shape, generator=torch.Generator().manual_seed(0))
    inst, seen = batch.instances[0], []
    cells_of = inst.cells_of
    monkeypatch.setattr(inst, "cells_of", lambda v: (seen.append(len(v)), cells_of(v))[1])
    return batch, x0, inst, seen


def test_per_step_units_are_priced_per_step_of_the_stack(organism, monkeypatch):
    """`_readout_seconds` on a clock that moves 1 s a call: a lone call's unit costs 1 s, a per-step unit 1 s over
    the stack's steps (at most 8), a batch decode 1 s over the rows decoded at once (at most 8), a branch's score
    and a CKA 1 s over the 8 branches taken at once, each stack really that long (rows decoded, videos read back
    per score); and each claim names the unit it computes: those that read a row's every step at once the per-step
    one, those that solve one video at a time the lone one, a row's steps decoded one by one (`step_videos`)
    "decode", a run's rows decoded together (`final_scores`) "batch_decode", a sweep's branches scored together
    "branch_score", information_flow's batched comparisons "cka"."""
    import itertools
    import time as _time

    import cos.runner as r
    from cos.runner import _readout_seconds
    from cos.settings import settings_for

    batch, x0, inst, seen = _unit_timing_batch(organism, monkeypatch)
    # per call of cell_scores: (videos scored, videos read back since the last call)
    scored, read, cells, cell_scores = [], [0], inst.cells, inst.cell_scores
    monkeypatch.setattr(inst, "cells", lambda v: (read.__setitem__(0, read[0] + 1), cells(v))[1])
    monkeypatch.setattr(inst, "cell_scores", lambda c: (scored.append((len(c), read[0])), read.__setitem__(0, 0),
                                                        cell_scores(c))[2])
    decoded, videos = [], r.videos
    monkeypatch.setattr(r, "videos", lambda system, lat, **kw: (decoded.append(len(lat)), videos(system, lat, **kw))[1])
    tick = itertools.count()
    monkeypatch.setattr(_time, "perf_counter", lambda: float(next(tick)))
    for steps, per, rows in ((4, 4, 10), (12, 8, 3), (1, 1, 1)):
        units = _readout_seconds(organism, batch, x0[:rows], steps)
        assert units["weights"] == units["score"] == units["decode"] == 1.0
        assert units["step_weights"] == units["frame_weights"] == 1.0 / per
        assert units["batch_decode"] == 1.0 / min(rows, 8)
        assert units["branch_score"] == units["cka"] == 1.0 / 8
        assert max(seen) == per         # the stack holds at most 8 videos (a full model's are ~0.4 GB each)
        # a lone score; a branch's: 8 runs read back, then scored at once
        assert (1, 1) in scored and {c for c in scored if c[0] > 1} == {(8, 8)}
        assert set(decoded) == {1, min(rows, 8)}    # a row alone; a run's rows at once
        seen.clear()
        scored.clear()
        decoded.clear()
    monkeypatch.undo()
    gpu = settings_for(organism, "gpu")
    for cid in ("cos.superposition", "cos.not_frames", "selfcorrection.rate"):
        got = get_claim(cid).readouts(gpu, organism)
        assert "step_weights" in got and "weights" not in got, cid
    for cid in ("layers.swap_flip", "distill.four_step"):
        got = get_claim(cid).readouts(gpu, organism)
        assert "weights" in got and "step_weights" not in got, cid
    for cid in ("cos.superposition", "cos.not_frames", "selfcorrection.rate", "memory.persistence",
                "perception.before_action"):          # step_videos: a row's steps decoded one at a time
        got = get_claim(cid).readouts(gpu, organism)
        assert "decode" in got and "batch_decode" not in got, cid
    for cid in ("bench.table1", "ensemble.mid_layers", "frames.count", "layers.swap_flip", "noise.step_vs_frame"):
        got = get_claim(cid).readouts(gpu, organism)      # final_scores(_of): a run's rows decoded at once
        assert "batch_decode" in got and "decode" not in got, cid
    n = gpu.rows
    assert get_claim("distill.four_step").readouts(gpu, organism) == {"batch_decode": 2 * n, "decode": n,
                                                                      "score": 2 * n, "weights": n}
    got = get_claim("noise.step_vs_frame").readouts(gpu, organism)
    assert "branch_score" in got and "score" not in got
    assert set(get_claim("noise.information_flow").readouts(gpu, organism)) == {"cka"}


def test_readout_units_of_large_videos_and_odd_sizes(organism, monkeypatch):
    """Where a decoded video is large (a full model's, ~0.4 GB) a unit's stack holds 2 members, not 8 (8 readbacks
    of one took seconds a call); and an odd latent size (a closed-form model runs one) is timed on its even crop
    rather than failing the plan."""
    import cos.metrics as m
    import cos.runner as r
    from cos.runner import _readout_seconds

    batch, x0, inst, seen = _unit_timing_batch(organism, monkeypatch)
    monkeypatch.setattr(r, "LARGE_VIDEO", 100)
    units = _readout_seconds(organism, batch, x0, 12)
    assert max(seen) == 2 and all(v > 0 for v in units.values())
    monkeypatch.undo()
    odd = torch.cat([x0, x0[..., :1]], dim=-1)       # width + 1
    assert odd.shape[-1] % 2 == 1
    got, many, videos = [], m.LinearCKA.many, r.videos
    monkeypatch.setattr(m.LinearCKA, "many", lambda self, ys: (got.append(tuple(ys.shape)), many(self, ys))[1])
    # the decoded videos the instance reads (the organism's decoder keeps the odd width)
    monkeypatch.setattr(r, "videos", lambda system, lat, **kw: videos(system, x0[:len(lat)], **kw))
    _readout_seconds(organism, batch, odd, 12)
    c, f, h, w = x0.shape[1:]
    assert got and set(got) == {(8, f * (h // 2) * (w // 2), c * 4)}


def test_cka_unit_compares_patch_tokens_as_information_flow_does(organism, monkeypatch):
    """The "cka" unit is one of a stack of branches' x̂0 patch tokens against a prepared clean representation, the
    shapes information_flow compares (tokens of 2×2 patches, C·4 features), not a lone CKA of every voxel."""
    import cos.metrics as m
    from cos.runner import RunContext, _readout_seconds
    from cos.settings import settings_for

    s = replace(settings_for(organism, "cpu"), instances=1, tasks=("grounding",))
    batch = next(RunContext(progress=False).batches(s))
    x0 = torch.rand(2, *organism.latent_shape(1, s.num_frames, s.height, s.width)[1:],
                    generator=torch.Generator().manual_seed(0))
    shapes, many = [], m.LinearCKA.many
    monkeypatch.setattr(m.LinearCKA, "many", lambda self, ys: (shapes.append((tuple(self.X.shape), tuple(ys.shape))),
                                                               many(self, ys))[1])
    _readout_seconds(organism, batch, x0, 12)
    c, f, h, w = x0.shape[1:]
    tok = (f * (h // 2) * (w // 2), c * 4)
    assert shapes and set(shapes) == {(tok, (8, *tok))}


def test_another_process_tells_the_estimate_its_progress():
    """`told`/`ended` (an xdist worker's word, read by the controller): units as `started` takes them (a stored
    share of other units is dropped), how far it got never backwards, a finished claim needs nothing more, a word
    of another shape leaves the claim as it was; `ended` records the event and finishes the claim."""
    clock = Clock()
    est = estimate(clock, THIRDS)
    a = est.claims["a"]
    a.stored = (1.0, 0.0, 0.0)
    est.told("a", 0.5, 4, [[0.5, 0.5], [1.0, 0.5]])
    assert (a.units, a.done, a.stored, a.stops) == (4, 0.5, (), [(0.5, 0.5), (1.0, 0.5)])
    est.told("a", 0.25, 4)
    assert a.done == 0.5                                    # never backwards
    for bad in (("half", 8, [[1.0, 1.0]]), (0.9, 8, [["last", 1.0]])):
        with pytest.raises(ValueError):
            est.told("a", *bad)
    assert (a.units, a.done, a.stops) == (4, 0.5, [(0.5, 0.5), (1.0, 0.5)])     # as it was
    est.told("a", 0.75, 4, finished=True)
    assert a.stops == [(0.75, 1.0)] and not a.finished
    clock.t += 2
    est.ended("a", 0.75, 4)
    assert a.finished and est.events[-1] == [7.0, "a", 3, 4]
    est.told("a", 1.0, 4)
    assert a.done == 0.75                                   # finished: told nothing more

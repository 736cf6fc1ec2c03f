"""The run's ETA as its plan re-estimated after each batch (cos.eta), and --cos-budget (refuse, or fit)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cos.errors import InputError
from cos.eta import (ClaimWork, RunEstimate, apply_budget, expected_s, fit_instances, parse_budget, plan_work,
                     trace_errors)
from cos.registry import get_claim
from cos.runner import RunContext, price_forwards
from cos.settings import TIERS
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


TIMING = {"seconds_per_row_forward": 0.01, "readout_seconds": {"decode": 0.001, "weights": 0.002, "score": 0.001},
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

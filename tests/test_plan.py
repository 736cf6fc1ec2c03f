"""cos plan (cos.plan): cost, power and expected n per claim before a run; bad input is one line."""
from __future__ import annotations

import json

import pytest
from scipy import stats

from cos import plan as planning
from cos.cli import main
from cos.registry import all_claims, get_claim
from cos.settings import TIERS

KEYS = {"max_n", "expected_n", "row_forwards", "gpu_hours", "expected_gpu_hours", "power_at_paper_effect", "mde",
        "no_paper_size"}


def test_fixed_n_power_is_the_normal_formula_and_the_null_decides_at_alpha():
    p, f = planning.sequential_profile(2.8, sequential=False)
    assert p == pytest.approx(stats.norm.sf(1.959964 - 2.8), abs=1e-3) and f == 1.0
    assert planning.sequential_profile(0.0, sequential=False)[0] == pytest.approx(0.025, abs=1e-3)


def test_sequential_profile_keeps_power_and_saves_rows():
    p_fix, _ = planning.sequential_profile(2.8, sequential=False)
    p_seq, f_seq = planning.sequential_profile(2.8, sequential=True)
    # the price of looks and futility (cos.sequential's doc): 0.72 against 0.80 at the fixed-n 80%-power effect,
    # for 0.73 of the rows on average
    assert p_fix - 0.1 < p_seq < p_fix and f_seq < 0.8
    p0, f0 = planning.sequential_profile(0.0, sequential=True)
    assert p0 <= 0.025 + 0.005 and f0 < 0.8               # a null: decided right rarely, stopped early by futility
    p_big, f_big = planning.sequential_profile(6.0, sequential=True)
    assert p_big > 0.99 and f_big < 0.5


def test_more_looks_stop_sooner_and_cost_power():
    """`--cos-looks 5` against the default 3 at the same maximum n (cos.sequential's table): less of the rows used
    at every effect, and less power; the stops fall at fifths; a null still decides right at most α/2."""
    p3, f3 = planning.sequential_profile(2.8, True)
    p5, f5 = planning.sequential_profile(2.8, True, looks=5)
    assert f5 < f3 - 0.05 and p3 - 0.15 < p5 < p3
    assert planning.sequential_profile(0.0, True, looks=5)[1] < planning.sequential_profile(0.0, True)[1]
    assert planning.sequential_profile(0.0, True, looks=5)[0] <= 0.025 + 0.005
    _, stops = planning.stop_profile(2.8, True, looks=5)
    assert [f for f, _ in stops] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert planning.theta_for_power(True, looks=5) > planning.theta_for_power(True)


@pytest.fixture(scope="module")
def organism():
    from cos.models import load_system
    from cos.pytest_plugin import DEFAULT_MODEL

    return load_system(DEFAULT_MODEL, device="cpu")


def test_plan_counts_shared_runs_once_and_states_unknown_power_without_a_pilot(organism):
    claims = all_claims()
    s = TIERS["cpu"]
    p = planning.plan(organism, s, claims, seconds_per_forward=2.0, gpus=2)
    assert set(p["claims"]) == {c.id for c in claims}
    for c in p["claims"].values():
        assert KEYS <= set(c) and c["power_at_paper_effect"] is None and c["mde"] is None
        assert c["gpu_hours"] == pytest.approx(c["row_forwards"] * 2.0 / 3600 / 2)
    shared = {k: v for c in claims for k, v in c.shared_runs(s, organism).items()}
    own = sum(c.cost(s, organism) for c in claims)
    assert p["total"]["row_forwards"] == own + sum(shared.values())          # guidance 1: one pass
    assert p["total"]["row_forwards"] < sum(c["row_forwards"] for c in p["claims"].values())


def test_a_pilot_gives_power_and_mde_at_the_effect_size(organism):
    claims = [c for c in all_claims() if c.id == "memory.persistence"]
    s = TIERS["gpu"]                      # 32 instances of each of the two anchor tasks: 64 units
    pilot = {"memory.persistence": {"ci_low": 0.5, "ci_high": 0.9, "n": 16}}
    p = planning.plan(organism, s, claims, None, pilot=pilot, pilot_name="pilot.json")["claims"]["memory.persistence"]
    se16 = 0.4 / (2 * 1.959964)
    se = se16 * (16 / 64) ** 0.5
    assert p["max_n"] == 64 and p["mde"] == pytest.approx((1.959964 + 0.841621) * se, rel=1e-4)
    assert p["power_at_paper_effect"] == pytest.approx(stats.norm.sf(1.959964 - 0.3 / se), abs=2e-3)
    assert p["gpu_hours"] is None and p["no_paper_size"] is True
    assert "pilot pilot.json" in p["se_source"]
    # the n that gives the effect 80% power under fixed n (sequential is off on no tier here: gpu says auto → off
    # only through --sequential; plan() was called with sequential=False): (2.80·sd/0.3)²
    sd = se16 * 4
    assert p["n_for_power"] == pytest.approx(((1.959964 + 0.841621) * sd / 0.3) ** 2, abs=1.5)
    assert planning.theta_for_power(True) > planning.theta_for_power(False)


def test_the_plan_puts_the_looks_where_the_runner_takes_them(organism):
    """The looks fall at the runner's batch points (`look_points` of the claim's batches), not at k/K: on the gpu
    tier most records claims have 7 batches, so 5 looks fall after 2, 3, 5, 6 and 7 and 3 after 3, 5 and 7; a plan
    at --looks 5 with a pilot uses fewer units than at 3, and says how many looks it planned."""
    assert planning.look_fractions(5, 7) == pytest.approx((2 / 7, 3 / 7, 5 / 7, 6 / 7, 1.0))
    assert planning.look_fractions(5) == pytest.approx((0.2, 0.4, 0.6, 0.8, 1.0))
    assert planning.look_fractions(5, 2) == pytest.approx((0.5, 1.0))       # few batches: the looks collapse
    claims = [c for c in all_claims() if c.id == "memory.persistence"]
    s = TIERS["gpu"]
    _, nb = planning.claim_layout(claims[0], organism, s)
    assert nb is not None and nb >= 2
    _, stops = planning.stop_profile(3.0, True, looks=5, batches=nb)
    assert [f for f, _ in stops] == pytest.approx(list(planning.look_fractions(5, nb)))
    pilot = {"memory.persistence": {"ci_low": 0.55, "ci_high": 0.95, "n": 16, "measured": 0.75}}
    p3 = planning.plan(organism, s, claims, 1.0, pilot=pilot, sequential=True)
    p5 = planning.plan(organism, s, claims, 1.0, pilot=pilot, sequential=True, looks=5)
    assert (p3["looks"], p5["looks"]) == (3, 5)
    c3, c5 = p3["claims"]["memory.persistence"], p5["claims"]["memory.persistence"]
    assert c5["expected_n"] < c3["expected_n"] and c5["power_at_paper_effect"] <= c3["power_at_paper_effect"]
    nb_stops = planning.claim_stops(claims[0], s, organism, True, pilot["memory.persistence"], looks=5)[0]
    assert [f for f, _ in nb_stops] == pytest.approx(list(planning.look_fractions(5, nb)))


@pytest.mark.parametrize("tier", ["gpu", "full"])
def test_the_plan_sizes_each_claim_as_the_runner_runs_it(organism, tier):
    """`claim_layout` is what a sequential run takes: for every records claim the units its interval is over
    (`max_units` at the settings its measure hands measure_records: claims that size their own rows conclude over
    fewer than the tier's) and the batches `RunContext.units_of` forms; None where the plan cannot follow the claim
    (distill's fast model). On the full tier swap_flip is 5 instances in 5 batches: no early look reaches the 8
    units a look needs, so it is planned to run to the end."""
    from cos.runner import RunContext, records_call, row_ids

    s = TIERS["gpu"] if tier == "gpu" else TIERS["full"]
    ctx = RunContext(progress=False, sequential=True)
    for c in all_claims():
        n, nb = planning.claim_layout(c, organism, s)
        call = records_call(c, organism, s, sequential=True)
        if call is None:
            assert nb is None and n == c.max_units(s, organism), c.id
            continue
        s_run, kw = call
        assert nb == len(ctx.units_of(c, s_run, instances_of=row_ids, **kw)), c.id
        assert n == c.max_units(s_run, organism), c.id
    assert planning.claim_layout(get_claim("distill.four_step"), organism, s)[1] is None
    if tier == "full":
        swap = get_claim("layers.swap_flip")
        assert planning.claim_layout(swap, organism, s) == (5, 5)
        row = {"ci_low": 0.2, "ci_high": 0.6, "n": 20, "measured": 0.4}     # far from its threshold
        p = planning.plan(organism, s, [swap], 3.0, pilot={swap.spec.id: row}, sequential=True)["claims"][swap.spec.id]
        assert p["max_n"] == 5 and p["expected_n"] == 5


def test_cli_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["plan", "--gpus", "0", "--seconds-per-forward", "1"]) == 2
    assert "--gpus 0" in capsys.readouterr().err
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    assert main(["plan", "--pilot", str(bad), "--seconds-per-forward", "1"]) == 2
    assert f"--pilot {bad}" in capsys.readouterr().err
    assert main(["plan", "-k", "nomatch", "--seconds-per-forward", "1"]) == 2
    assert "matches no claim" in capsys.readouterr().err
    for looks, rule in (("0", "must be a positive integer"), ("1", "must be at least 2"), ("11", "must be at most 10"),
                        ("x", "must be a positive integer")):
        assert main(["plan", "--looks", looks, "--seconds-per-forward", "1"]) == 2
        err = capsys.readouterr().err
        assert f"--looks '{looks}': {rule}" in err and len(err.strip().splitlines()) == 1
    assert main(["plan", "--looks", "5", "--sequential", "off", "--seconds-per-forward", "1"]) == 2
    assert "--looks '5': only with sequential decisions" in capsys.readouterr().err


def test_cli_plans_the_organism_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", "--tier", "cpu", "--seconds-per-forward", "0.5", "--json", str(out), "-k", "memory,noise"]) in (0, None)
    text = capsys.readouterr().out
    assert "memory.persistence" in text and "total" in text
    d = json.loads(out.read_text())
    assert set(d["claims"]) == {"memory.persistence", "noise.information_flow", "noise.step_vs_frame"}
    assert {"row_forwards", "gpu_hours", "expected_gpu_hours"} <= set(d["total"])
    assert d["claims"]["memory.persistence"]["max_n"] == 8 and d["claims"]["memory.persistence"]["effect"] == 0.3
    assert d["looks"] == 1      # the cpu tier decides at fixed n
    assert main(["plan", "--tier", "gpu", "--sequential", "on", "--looks", "5", "--seconds-per-forward", "0.5",
                 "--json", str(out), "-k", "memory"]) in (0, None)
    assert "sequential on, 5 looks" in capsys.readouterr().out and json.loads(out.read_text())["looks"] == 5


def test_profile_follows_the_runners_minimum_units():
    """With few units the early looks cannot stop (MIN_LOOK_UNITS, FUTILITY_MIN_UNITS): more rows used, more power."""
    p_inf, f_inf = planning.sequential_profile(3.09, True)
    p_40, f_40 = planning.sequential_profile(3.09, True, n_max=40)
    p_14, f_14 = planning.sequential_profile(0.0, True, n_max=14)
    assert f_40 > f_inf and p_40 > p_inf and f_14 > 0.95


def test_a_store_prices_what_the_run_has_left_as_the_run_does(tmp_path):
    """A run killed after 3 of its 6 batches: the plan's hours left are those of the run's own pricing (its ETA and
    --cos-budget: `stored_work` + `with_stored`), half the plan with nothing stored; planning writes nothing."""
    from cos.eta import expected_s, gpu_hours, nothing_stored, plan_work, with_stored
    from cos.runner import RunContext, price_forwards, stored_work
    from cos.store import ResultStore
    from tests.test_eta import TIMING, killed
    from tests.test_sequential import SEQ, Toy, _Effect

    with pytest.raises(KeyboardInterrupt):
        RunContext(store=ResultStore(tmp_path / "s"), progress=False).measure_claim(killed(3), _Effect(0.3), SEQ)
    ctx = RunContext(store=ResultStore(tmp_path / "s", readonly=True), progress=False)
    left = planning.left_to_run(ctx, _Effect(0.3), SEQ, [Toy()], TIMING)
    est = price_forwards(ctx, _Effect(0.3), SEQ, [Toy()], TIMING)
    work = with_stored(plan_work(est, [Toy()], SEQ, _Effect(0.3), False)[0],
                       stored_work(ctx, [Toy()], _Effect(0.3), SEQ))
    c = left["claims"]["toy.records"]
    assert (c["stored_batches"], c["total_batches"]) == (3, 6) and left["total"] == c
    assert c["gpu_hours_left"] == pytest.approx(gpu_hours(expected_s(work), 1))
    assert c["gpu_hours_if_nothing_stored"] == pytest.approx(gpu_hours(expected_s(nothing_stored(work)), 1))
    assert c["gpu_hours_left"] == pytest.approx(c["gpu_hours_if_nothing_stored"] / 2) and c["gpu_hours_left"] > 0
    p = planning.plan(_Effect(0.3), SEQ, [Toy()], 0.01, left=left, store=str(tmp_path / "s"))
    assert p["claims"]["toy.records"]["gpu_hours_left"] == c["gpu_hours_left"] and p["store"]["ranks"] == 1
    assert "stored batches" in planning.table(p) and " 3/6 " in planning.table(p)
    assert planning.store_line(p).startswith(f"store {tmp_path / 's'}: 3 of 6 record batches stored; ")


@pytest.fixture
def stored_energy(organism, tmp_path):
    """A store holding layers.energy_profile's one batch at `cos plan --tier cpu --instances 1`'s settings, and a
    crashed writer's stale temporary (a store opened to write removes it; one only looked at must not)."""
    import os
    from dataclasses import replace

    from cos.registry import get_claim
    from cos.runner import RunContext
    from cos.settings import settings_for
    from cos.store import ResultStore

    s = replace(settings_for(organism, "cpu"), instances=1, instance_cap=1)
    RunContext(store=ResultStore(tmp_path / "s"), progress=False).measure_claim(
        get_claim("layers.energy_profile"), organism, s)
    tmp = tmp_path / "s" / "ab" / "ab.safetensors.tmp1-00000000"
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_bytes(b"")
    os.utime(tmp, (1, 1))
    return tmp_path / "s"


def test_cli_plan_with_a_store_shows_the_hours_left_and_writes_nothing(stored_energy, tmp_path, capsys):
    files = lambda: sorted((str(p), p.stat().st_mtime) for p in stored_energy.rglob("*"))
    before = files()
    out = tmp_path / "plan.json"
    argv = ["plan", "--tier", "cpu", "--instances", "1", "--seconds-per-forward", "0.5", "-k", "memory,energy"]
    assert main([*argv, "--store", str(stored_energy), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert files() == before                       # nothing written, claimed or cleaned up
    d = json.loads(out.read_text())
    e, m, t = d["claims"]["layers.energy_profile"], d["claims"]["memory.persistence"], d["total"]
    assert (e["stored_batches"], e["total_batches"], e["gpu_hours_left"]) == (1, 1, 0.0)
    assert (m["stored_batches"], m["total_batches"]) == (0, 1)
    # forwards only (none timed), one process, fixed n: the run's pricing of what is left is the plan's own rows
    assert m["gpu_hours"] > 0 and m["gpu_hours_left"] == pytest.approx(m["gpu_hours"])
    assert t["gpu_hours_if_nothing_stored"] == pytest.approx(t["gpu_hours"])
    assert t["gpu_hours_left"] == pytest.approx(t["gpu_hours"] - e["gpu_hours"])
    assert (t["stored_batches"], t["total_batches"]) == (1, 2) and d["store"]["path"] == str(stored_energy)
    assert f"store {stored_energy}: 1 of 2 record batches stored" in text and "GPU-h left" in text
    assert main([*argv, "--json", str(out)]) == 0      # without a store: as before
    d = json.loads(out.read_text())
    assert "store" not in d and "gpu_hours_left" not in d["total"] and "GPU-h left" not in capsys.readouterr().out


def test_out_keeps_the_runs_store_rule_and_a_bad_store_is_one_line_before_any_timing(tmp_path, capsys,
                                                                                     monkeypatch):
    import cos.models
    import cos.runner
    from cos.store import run_store

    assert run_store(None, "o", "full", False) == "o/cos-store" and run_store(None, "o", "gpu", True) == "o/cos-store"
    assert run_store(None, "o", "gpu", False) is None and run_store("none", "o", "full", True) is None
    assert run_store("s", "o", "cpu", False) == "s"

    def boom(*a, **k):
        raise AssertionError("timed or loaded before the store was checked")
    monkeypatch.setattr(cos.models, "load_system", boom)
    monkeypatch.setattr(cos.runner, "time_forward", boom)
    (tmp_path / "cos-store").write_text("not a folder")
    for flag, path, why in (("--store", tmp_path / "cos-store", "not a folder"),
                            ("--cos-store", tmp_path / "none-here", "no such folder")):
        assert main(["plan", flag, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--store {path}: {why}; must be an existing, readable folder" in err
    assert main(["plan", "--tier", "full", "--out", str(tmp_path)]) == 2     # the full tier keeps DIR/cos-store
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {tmp_path}: {tmp_path / 'cos-store'}: not a folder" in err
    monkeypatch.undo()
    # the organism's tiers keep no store unless asked: --out alone prices nothing stored, as without it
    assert main(["plan", "--tier", "cpu", "--seconds-per-forward", "1", "-k", "memory", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "GPU-h left" not in text and "the cpu tier keeps none unless asked" in text

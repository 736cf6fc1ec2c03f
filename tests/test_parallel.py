"""Data parallel claims (cos.parallel, RunContext.measure_claim): ranks split the (instance × seed) batches,
fill the shared store, and every rank's replay computes the single-process table; captures travel with their
runs; CPU threads are shared out; the ETA comes from a warm forward. The real multi-process launch
(`accelerate launch --cpu --num_processes 2`) is checked by benchmarks/parallel_check.sh (in .ci/run)."""
from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from cos.controls import TINY, random_organism
from cos.interventions import NoiseAtStep
from cos.interventions.capture import CaptureBlocks
from cos.parallel import World, limit_threads
from cos.readouts import noise_settings
from cos.registry import get_claim
from cos.runner import Progress, RunContext, estimate_forwards, terminal_writer, unpack_readouts
from cos.settings import instances
from cos.store import ResultStore

SET = replace(TINY, tasks=("grounding", "pattern"), instances=3, seeds=(0, 1), batch_size=2)


class FakeWorld(World):
    """A connected world whose collectives need nobody else: each rank's passes run one after another here."""

    def gather(self, obj):
        return [obj] * self.size


def rows(batches):
    return [(i.id, s) for b in batches for i, s in zip(b.instances, b.seeds)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ranks_split_the_rows_disjointly_and_completely(n):
    everything = rows(RunContext(progress=False).batches(SET))
    shares = []
    for r in range(n):
        ctx = RunContext(progress=False, world=FakeWorld(r, n, connected=True))
        ctx._phase = "fill"
        shares.append(rows(ctx.batches(SET)))
        assert rows(ctx.batches(SET)) == shares[-1]                    # deterministic
        assert set(ctx.ran) == {i for i, _ in shares[-1]}             # what provenance records
    assert sorted(sum(shares, [])) == sorted(everything) and len(sum(shares, [])) == len(everything)
    # batches never mix: a rank's share is whole batches of the single-process run, so their store keys match
    assert all(len(s) % len(SET.seeds) == 0 for s in shares)
    # replay (and a process alone) sees every batch, in the single-process order
    ctx = RunContext(progress=False, world=FakeWorld(0, n, connected=True))
    ctx._phase = "replay"
    assert rows(ctx.batches(SET)) == everything


def test_capture_runs_are_stored_with_what_they_captured(tmp_path):
    system = random_organism(num_layers=2)
    batch = next(RunContext(progress=False).batches(SET))
    caps, stores = [], []
    for _ in range(2):
        store = ResultStore(tmp_path / "store")
        cap = CaptureBlocks(blocks="all", steps=[0], reduce="energy")
        RunContext(store=store, progress=False).run(system, SET, batch, interventions=[cap], until=1)
        caps.append(cap)
        stores.append(store)
    assert (stores[0].misses, stores[1].hits, stores[1].misses) == (1, 1, 0)
    assert caps[0].captured() == caps[1].captured()
    for k in caps[0].captured():
        assert torch.equal(caps[0].store[k], caps[1].store[k])
        assert caps[1].store[k].cos_what == "output"
    # a full capture (B, f, h, w, D) of every block is tens of GB on a full model: not stored, recomputed
    store = ResultStore(tmp_path / "store2")
    full = CaptureBlocks(blocks=[0], steps=[0])
    RunContext(store=store, progress=False).run(system, SET, batch, interventions=[full], until=1)
    assert len(store) == 0 and full.captured()


@pytest.mark.parametrize("claim_id", ["layers.energy_profile",      # a capture run per batch: stored captures
                                      "selfcorrection.rate"])       # per-row readouts of the clean run
def test_records_claims_ranks_conclude_the_single_process_row(tmp_path, claim_id):
    """A claim written as records on two ranks (threads meeting in a gather): each samples its own batches into
    the shared store, the records are gathered and both conclude exactly what one process does."""
    import threading

    from tests.helpers import ThreadWorld

    claim = get_claim(claim_id)
    assert claim.by_records
    s = replace(TINY, instances=3, batch_size=1)
    ctx = RunContext(progress=False)
    alone, alone_ran = ctx.measure_claim(claim, random_organism(num_layers=8), s), ctx.ran
    box, bar, got = {}, threading.Barrier(2), {}
    systems = [random_organism(num_layers=8) for _ in range(2)]   # built here: init draws from the global RNG

    def rank(r):
        c = RunContext(store=ResultStore(tmp_path / "store"), progress=False, world=ThreadWorld(r, 2, box, bar))
        got[r] = c.measure_claim(claim, systems[r], s)
        got[r, "ran"] = c.ran
    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    assert set(got[0, "ran"]) | set(got[1, "ran"]) == set(alone_ran)
    assert not set(got[0, "ran"]) & set(got[1, "ran"])
    for r in (0, 1):
        a, b = alone.to_dict(), got[r].to_dict()
        for k in ("status", "measured", "ci_low", "ci_high", "n", "reason", "details"):
            assert a[k] == b[k], (r, k, a[k], b[k])


@pytest.mark.parametrize("claim_id", ["noise.step_vs_frame"])       # a sweep's branches, scores read out per rank
def test_each_rank_replays_the_single_process_result(tmp_path, claim_id):
    """Rank 1 fills its share, then replays (computing rank 0's share itself, as nobody else filled it); rank 0
    then fills its own and replays everything from the store: both conclude exactly what one process does."""
    claim = get_claim(claim_id)
    system = random_organism(num_layers=8)
    s = replace(TINY, instances=3, batch_size=1)
    ctx = RunContext(progress=False)
    alone, alone_ran = ctx.measure_claim(claim, system, s), ctx.ran
    store = tmp_path / "store"
    got = {}
    for rank in (1, 0):
        ctx = RunContext(store=ResultStore(store), progress=False, world=FakeWorld(rank, 2, connected=True))
        got[rank] = ctx.measure_claim(claim, system, s)
        got[rank, "store"] = ctx.store
        got[rank, "ran"] = ctx.ran
    if claim_id == "layers.energy_profile":                        # one run per batch
        assert got[1, "store"].misses == len(instances(s))         # its share, then the rest in the replay
    assert got[0, "store"].misses == 0                             # everything was there
    assert set(got[0, "ran"]) | set(got[1, "ran"]) == set(alone_ran)
    assert not set(got[0, "ran"]) & set(got[1, "ran"])
    for r in (0, 1):
        a, b = alone.to_dict(), got[r].to_dict()
        for k in ("status", "measured", "ci_low", "ci_high", "n", "reason"):
            assert a[k] == b[k], (r, k, a[k], b[k])
        assert a["details"] == b["details"] or {k: v for k, v in a["details"].items() if k != "runtime_s"} == \
            {k: v for k, v in b["details"].items() if k != "runtime_s"}


class Gathering(World):
    """Two ranks in one process: rank 1's fill pass has run; its gather returns both ranks' offerings."""

    def __init__(self, rank, size, other):
        super().__init__(rank, size, connected=True)
        self.other, self.offered = other, []

    def gather(self, obj):
        self.offered.append(obj)
        return [obj, self.other] if self.rank == 0 else [self.other, obj]


def test_the_replay_is_served_the_readouts_of_every_ranks_share(tmp_path):
    """A readout runs once per data-parallel run, on the rank that sampled the batch: the replay is served what
    the fill passes computed (its own and the other rank's, through the gather), not recomputed."""
    calls = []

    class Reads:
        id = "toy.reads"

        def measure(self, ctx, system, settings):
            out = []
            for batch in ctx.batches(settings):
                res = ctx.run(system, settings, batch, until=1)
                ids = tuple(i.id for i in batch.instances)
                out.append(ctx.readout("ids", res, lambda: (calls.append((ctx._phase, ids)), ids)[1]))
            return out

    system = random_organism(num_layers=2)
    s = replace(TINY, instances=2, batch_size=1)
    n = len(instances(s))
    alone = RunContext(progress=False).measure_claim(Reads(), system, s)
    assert len(calls) == n >= 4 and all(p == "all" for p, _ in calls)
    store = ResultStore(tmp_path / "store")
    calls.clear()
    w1 = Gathering(1, 2, other=(False, None))
    r1 = RunContext(store=store, progress=False, world=w1)
    r1.measure_claim(Reads(), system, s)
    payload = w1.offered[0][1]                  # bytes: pickled once, before the collective
    own1 = unpack_readouts(pickle.loads(payload))
    assert len(own1) == n // 2 and all(k[0] == "toy.reads" and k[1] == "ids" for k in own1)
    calls.clear()
    w0 = Gathering(0, 2, other=(True, payload))
    r0 = RunContext(store=store, progress=False, world=w0)
    before = (store.hits, store.misses)       # rank 1 sampled its share and, in its replay, rank 0's
    got = r0.measure_claim(Reads(), system, s)
    assert got == alone
    assert set(r0.phase_s["toy.reads"]) == {"fill", "barrier", "replay"}      # provenance: what bounds the run
    # the replay, served every readout, read no run: only the fill's own share came from the store
    assert (store.hits - before[0], store.misses - before[1]) == (n // 2, 0)
    # rank 0 read out its own half in the fill pass and nothing in the replay
    assert [p for p, _ in calls] == ["fill"] * (n // 2)
    assert {ids for _, ids in calls}.isdisjoint({v for v in own1.values()})


def test_readouts_that_do_not_pickle_are_recomputed_not_waited_for(tmp_path):
    """A readout value that cannot cross ranks must not fail inside the collective (the other ranks would wait
    until the timeout): the rank offers nothing, warns, and the replay recomputes."""
    class Unpicklable:
        id = "toy.unpicklable"

        def measure(self, ctx, system, settings):
            return [ctx.readout("f", ctx.run(system, settings, b, until=1), lambda: (lambda: 1))()
                    for b in ctx.batches(settings)]

    system = random_organism(num_layers=2)
    s = replace(TINY, instances=1, batch_size=1)
    w = Gathering(1, 2, other=(False, None))
    with pytest.warns(UserWarning, match="readouts not shared"):
        got = RunContext(store=ResultStore(tmp_path / "s"), progress=False, world=w).measure_claim(Unpicklable(),
                                                                                                   system, s)
    assert w.offered[0][1] is None and got == [1] * len(instances(s))


def test_a_lazy_replay_run_reads_the_store_once_and_only_when_used(tmp_path):
    """In the replay a stored run (and each branch of a stored sweep) is handed out unread: its key is known,
    its fields are read from the store on first use, once, and are the stored run's."""
    system = random_organism(num_layers=2)
    batch = next(RunContext(progress=False).batches(SET))
    branches = {"step1": [NoiseAtStep(1)]}
    filled = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    run, sweep = filled.run(system, SET, batch, record=("x0",)), filled.sweep(system, SET, batch, branches)
    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False)
    ctx._phase = "replay"
    lazy, lazy_sweep = ctx.run(system, SET, batch, record=("x0",)), ctx.sweep(system, SET, batch, branches)
    assert (lazy.key, lazy_sweep["step1"].key) == (run.key, sweep["step1"].key) and ctx.store.hits == 0
    assert torch.equal(lazy["x0"], run["x0"]) and lazy.steps == run.steps and ctx.store.hits == 1
    assert torch.equal(lazy.latents, run.latents) and ctx.store.hits == 1
    assert torch.equal(lazy_sweep["clean"].latents, sweep["clean"].latents) and ctx.store.hits == 2
    assert list(lazy_sweep) == list(sweep) and torch.equal(lazy_sweep["step1"].latents, sweep["step1"].latents)
    assert ctx.store.hits == 2


def test_readouts_cross_ranks_as_numpy_and_come_back_identical():
    import pickle

    from cos.runner import pack_readouts, unpack_readouts

    w = torch.rand(5, dtype=torch.float64)
    value = {("c", "weights", "k"): ([[w, w[1:]], [{3: w * 2}]], [0.5, "x"], (np.arange(3), torch.tensor(7)))}
    packed = pickle.dumps(pack_readouts(value))
    assert b"torch" not in packed                                # no tensor pickled through torch.save
    back = unpack_readouts(pickle.loads(packed))[("c", "weights", "k")]
    assert torch.equal(back[0][0][0], w) and back[0][0][0].dtype == torch.float64
    assert torch.equal(back[0][0][1], w[1:]) and torch.equal(back[0][1][0][3], w * 2)
    assert back[1] == [0.5, "x"] and isinstance(back[2], tuple) and isinstance(back[2][0], np.ndarray)
    assert torch.equal(back[2][1], torch.tensor(7))


def test_a_claim_that_never_batches_is_measured_once():
    calls = []

    class NoBatches:
        id = "x"

        def measure(self, ctx, system, settings):
            calls.append(ctx._phase)
            return "result"

    ctx = RunContext(store=ResultStore("/tmp/unused-cos-store"), progress=False, world=FakeWorld(0, 2, connected=True))
    assert ctx.measure_claim(NoBatches(), None, SET) == "result" and calls == ["fill"]


def test_threads_are_shared_out(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert limit_threads(1) == 0 and torch.get_num_threads() == before
        n = limit_threads(10**6)
        assert n == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_eta_times_a_warm_forward():
    system = random_organism(num_layers=2)
    claims = [get_claim("layers.energy_profile")]
    est = estimate_forwards(RunContext(progress=False), system, SET, claims)
    assert est["seconds_per_row_forward"] > 0 and est["cold_seconds_per_row_forward"] > 0
    assert est["batch_rows"] == 2 and est["ranks"] == 1
    est2 = estimate_forwards(RunContext(progress=False, world=FakeWorld(0, 4, connected=True)), system, SET, claims)
    assert est2["ranks"] == 4 and est2["row_forwards"] == est["row_forwards"]


def test_eta_counts_a_shared_run_once_and_only_when_read():
    """The plan: each claim's own runs, plus each shared run (the clean run, the noise sweep's trunk) once, when a
    claim of the plan reads it (energy_profile alone was planned with the 12-step clean run: 6x its cost)."""
    system = random_organism(num_layers=2)
    plan = lambda *ids: estimate_forwards(RunContext(progress=False), system, SET, [get_claim(i) for i in ids])
    clean = SET.rows * SET.steps
    assert plan("layers.energy_profile")["row_forwards"] == SET.rows                  # one step-0 forward per row
    assert plan("cos.superposition")["row_forwards"] == clean
    assert plan("cos.superposition", "cos.not_frames", "layers.energy_profile")["row_forwards"] == clean + SET.rows
    both = plan("noise.information_flow", "noise.step_vs_frame")
    one = plan("noise.step_vs_frame")
    assert both["shared_runs"] == one["shared_runs"] and len(both["shared_runs"]) == 1
    assert both["row_forwards"] == one["row_forwards"] == plan("noise.information_flow")["row_forwards"]
    assert one["row_forwards"] > noise_settings(SET).rows * SET.steps     # the sweep's trunk and its branches


def test_eta_adds_host_readouts_divided_over_ranks():
    system = random_organism(num_layers=2)
    claims = [get_claim("layers.energy_profile"), get_claim("cos.superposition")]
    est = estimate_forwards(RunContext(progress=False), system, SET, claims)
    host = est["host_s_per_claim"]
    assert host["layers.energy_profile"] == 0 and host["cos.superposition"] > 0    # NNLS per row and step
    assert est["eta_s"] == pytest.approx(est["forwards_s"] + est["host_s"])
    est4 = estimate_forwards(RunContext(progress=False, world=FakeWorld(0, 4, connected=True)), system, SET, claims)
    # forwards and readouts split over 4 ranks by whole batches (each reads out the batches it sampled): SET's 6
    # batches of one instance give the busiest rank 2, a third of the work, not a quarter
    assert est4["batches_per_claim"] == len(list(RunContext(progress=False).batches(SET))) == 6
    assert est4["share"] == pytest.approx(2 / 6)
    assert est4["forwards_s"] == pytest.approx(est4["row_forwards"] * est4["seconds_per_row_forward"] * 2 / 6)
    unit = est4["readout_seconds"]
    assert est4["host_s"] == pytest.approx(sum(n * unit[k] for c in claims
                                               for k, n in c.readouts(SET, system).items()) * 2 / 6)
    est6 = estimate_forwards(RunContext(progress=False, world=FakeWorld(0, 6, connected=True)), system, SET, claims)
    assert est6["share"] == pytest.approx(1 / 6)
    assert est4["eta_s"] == pytest.approx(est4["forwards_s"] + est4["host_s"])


def test_progress_lines_on_rank_zero_only():
    lines = []
    ctx = RunContext(progress_writer=lambda t, final: lines.append((t, final)))
    ctx.label = "layers.energy_profile"
    list(ctx.batches(SET))
    assert lines[0][0].startswith("[cos] layers.energy_profile: 0/6 batches") and lines[-1][1]
    assert "6/6 batches" in lines[-1][0]
    other = RunContext(progress_writer=lambda t, final: lines.append("rank1"), world=FakeWorld(1, 2, connected=True))
    list(other.batches(SET))
    assert "rank1" not in lines
    log = []
    w = terminal_writer(log.append, isatty=False, every_s=3600)
    for k in range(5):
        w(f"line {k}", k == 4)
    assert log == ["line 0\n", "line 4\n"]                 # a log gets the first and the last, not 5 redraws
    assert Progress(RunContext(progress=False), "x", 5).on is False

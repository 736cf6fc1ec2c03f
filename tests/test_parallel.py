"""Data parallel claims (cos.parallel, RunContext.measure_claim): ranks split the (instance × seed) batches,
fill the shared store, and every rank's replay computes the single-process table; captures travel with their
runs; CPU threads are shared out; the ETA comes from a warm forward. The real multi-process launch
(`accelerate launch --cpu --num_processes 2`) is checked by benchmarks/parallel_check.sh (in .ci/run)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cos.controls import TINY, random_organism
from cos.interventions.capture import CaptureBlocks
from cos.parallel import World, limit_threads
from cos.registry import get_claim
from cos.runner import Progress, RunContext, estimate_forwards, terminal_writer
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


def test_each_rank_replays_the_single_process_result(tmp_path):
    """Rank 1 fills its share, then replays (computing rank 0's share itself, as nobody else filled it); rank 0
    then fills its own and replays everything from the store: both conclude exactly what one process does."""
    claim = get_claim("layers.energy_profile")       # a capture run per batch: the stored-capture path
    system = random_organism(num_layers=8)
    s = replace(TINY, instances=3, batch_size=1)
    alone = RunContext(progress=False).measure_claim(claim, system, s)
    store = tmp_path / "store"
    got = {}
    for rank in (1, 0):
        ctx = RunContext(store=ResultStore(store), progress=False, world=FakeWorld(rank, 2, connected=True))
        got[rank] = ctx.measure_claim(claim, system, s)
        got[rank, "store"] = ctx.store
        got[rank, "ran"] = ctx.ran
    n_batches = len(instances(s))
    assert got[1, "store"].misses == n_batches                     # its share, then the rest in the replay
    assert got[0, "store"].misses == 0                             # everything was there
    assert set(got[0, "ran"]) | set(got[1, "ran"]) == {i.id for i in instances(s)}
    assert not set(got[0, "ran"]) & set(got[1, "ran"])
    for r in (0, 1):
        a, b = alone.to_dict(), got[r].to_dict()
        for k in ("status", "measured", "ci_low", "ci_high", "n", "reason"):
            assert a[k] == b[k], (r, k, a[k], b[k])
        assert a["details"] == b["details"] or {k: v for k, v in a["details"].items() if k != "runtime_s"} == \
            {k: v for k, v in b["details"].items() if k != "runtime_s"}


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


def test_eta_adds_host_readouts_that_every_rank_repeats():
    system = random_organism(num_layers=2)
    claims = [get_claim("layers.energy_profile"), get_claim("cos.superposition")]
    est = estimate_forwards(RunContext(progress=False), system, SET, claims)
    host = est["host_s_per_claim"]
    assert host["layers.energy_profile"] == 0 and host["cos.superposition"] > 0    # NNLS per row and step
    assert est["eta_s"] == pytest.approx(est["forwards_s"] + est["host_s"])
    est4 = estimate_forwards(RunContext(progress=False, world=FakeWorld(0, 4, connected=True)), system, SET, claims)
    # the forwards split over 4 ranks, the readouts do not (each rank replays every claim)
    assert est4["forwards_s"] == pytest.approx(est4["row_forwards"] * est4["seconds_per_row_forward"] / 4)
    unit = est4["readout_seconds"]
    assert est4["host_s"] == pytest.approx(sum(n * unit[k] for c in claims for k, n in c.readouts(SET, system).items()))
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

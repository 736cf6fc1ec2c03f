"""Data parallel claims (cos.parallel, RunContext.measure_records): ranks split a records claim's units of batches,
gather the records and every rank concludes the single-process row; captures travel with their runs; CPU threads
are shared out; the ETA comes from a warm forward. The real multi-process launch (`accelerate launch --cpu
--num_processes 2`) is checked by benchmarks/parallel_check.sh (in .ci/run)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cos.controls import TINY, random_organism
from cos.interventions.capture import CaptureBlocks
from cos.parallel import World, limit_threads
from cos.readouts import noise_settings
from cos.registry import Claim, ClaimSpec, get_claim
from cos.runner import Progress, RunContext, estimate_forwards, terminal_writer
from cos.store import ResultStore

SET = replace(TINY, tasks=("grounding", "pattern"), instances=3, seeds=(0, 1), batch_size=2)


class FakeWorld(World):
    """A connected world whose collectives need nobody else: each rank's passes run one after another here."""

    def gather(self, obj):
        return [obj] * self.size


def rows(batches):
    return [(i.id, s) for b in batches for i, s in zip(b.instances, b.seeds)]


class _Rows(Claim):
    """A records claim that samples nothing: a row's record is its (instance, seed), a batch's rows one record each;
    it concludes the records it was given."""

    spec = ClaimSpec(id="toy.rows", title="rows", paper_ref="", paper_value="", measured_quantity="rows",
                     threshold=0.0, direction=">")

    def measure_batch(self, ctx, system, settings, batch):
        return [{"instance": i.id, "seed": s, "batch": [x.id for x in batch.instances]}
                for i, s in zip(batch.instances, batch.seeds)]

    def conclude(self, records, system, settings):
        return records


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ranks_split_the_rows_disjointly_and_completely(n):
    """Unit k goes to rank k mod n: the ranks' shares are disjoint, whole batches of the single-process run, and
    together every row; the gather hands every rank the records in the single-process order."""
    alone = RunContext(progress=False).measure_records(_Rows(), None, SET)
    everything = [(r["instance"], r["seed"]) for r in alone]
    shares = []
    for r in range(n):
        ctx = RunContext(progress=False, world=FakeWorld(r, n, connected=True))
        got = ctx.measure_records(_Rows(), None, SET)
        share = [(i, s) for i, seeds in ctx.ran.items() for s in seeds]
        shares.append(share)
        assert {(x["instance"], x["seed"]) for x in got} == set(share)   # its records: the rows it ran (provenance)
    assert sorted(sum(shares, [])) == sorted(everything) and len(sum(shares, [])) == len(everything)
    # batches never mix: a rank's share is whole batches of the single-process run, so their store keys match
    assert all(len(s) % len(SET.seeds) == 0 for s in shares)
    assert [r["batch"] for r in alone] == [r["batch"] for r in RunContext(progress=False).measure_records(
        _Rows(), None, SET)]                                              # deterministic


def test_units_interleave_the_phases_of_a_claim():
    """A claim reading several settings (`batch_settings`: one per phase, e.g. a frame count) gets units holding
    the k-th batch of every phase, in phase order; `measure_batch` sees the phase's settings."""
    class Phased(_Rows):
        def batch_settings(self, settings, **kw):
            return [replace(settings, num_frames=5), replace(settings, num_frames=9)]

        def measure_batch(self, ctx, system, settings, batch):
            return [{**r, "frames": settings.num_frames} for r in super().measure_batch(ctx, system, settings, batch)]

    got = RunContext(progress=False).measure_records(Phased(), None, SET)
    batches = len(list(RunContext(progress=False).batches(SET)))
    frames = [r["frames"] for r in got]
    per_batch = len(got) // (2 * batches)
    assert frames == ([5] * per_batch + [9] * per_batch) * batches
    assert [(r["instance"], r["seed"]) for r in got if r["frames"] == 5] == \
        [(r["instance"], r["seed"]) for r in got if r["frames"] == 9]


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
                                      "selfcorrection.rate",        # per-row readouts of the clean run
                                      "noise.step_vs_frame"])       # a sweep's branches, scores per row
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


def test_a_claim_that_overrides_measure_is_measured_once_by_it():
    calls = []

    class Own:
        id = "x"

        def measure(self, ctx, system, settings):
            calls.append(1)
            return "result"

    ctx = RunContext(store=ResultStore("/tmp/unused-cos-store"), progress=False, world=FakeWorld(0, 2, connected=True))
    assert ctx.measure_claim(Own(), None, SET) == "result" and calls == [1]


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


def test_ranks_that_disagree_leave_the_groups_before_the_error():
    """Every rank leaves together (barrier, then destroy_process_group) before the one-line error: left to
    interpreter exit, rank 0 died of SIGABRT in CI. A barrier that fails still destroys the groups, and nothing
    of the cleanup escapes (the caller's one line says what happened)."""
    from cos.parallel import _leave

    class FakeDist:
        def __init__(self, barrier_fails: bool):
            self.calls, self.fails = [], barrier_fails

        def barrier(self, group=None):
            self.calls.append(("barrier", group))
            if self.fails:
                raise RuntimeError("peer gone")

        def destroy_process_group(self):
            self.calls.append(("destroy",))

    ok, failing = FakeDist(False), FakeDist(True)
    _leave(ok, "g")
    _leave(failing, "g")
    assert ok.calls == [("barrier", "g"), ("destroy",)] and failing.calls == ok.calls

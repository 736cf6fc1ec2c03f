"""--cos-overlap: a unit's readouts run on a worker thread beside the next unit's sampling (`RunContext.overlap`).
The table, the records and the store keys must be a serial run's, bit for bit; samplings must never interleave
(interventions hook the shared model); a sequential claim must sample no unit past the look it stops at."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from cos.registry import at_draw, get_claim
from cos.runner import RunContext
from cos.store import ResultStore
from tests.test_sequential import SEQ, Toy, _Effect


class Traced(Toy):
    """Toy whose batches "sample" under the run's sampling lock, then "read out" for a while, logging both."""

    def __init__(self, read_s: float = 0.03, fail_at: str | None = None):
        super().__init__()
        self.events, self.read_s, self.fail_at = [], read_s, fail_at

    def measure_batch(self, ctx, system, settings, batch):
        first = batch.instances[0].id
        with ctx._sampling:
            t0 = time.perf_counter()
            time.sleep(0.01)
            self.events.append(("sample", first, t0, time.perf_counter()))
        t0 = time.perf_counter()
        time.sleep(self.read_s)
        if first == self.fail_at:
            raise RuntimeError("readout broke")
        self.events.append(("read", first, t0, time.perf_counter()))
        return super().measure_batch(ctx, system, settings, batch)


def _close(a, b, rel: float = 1e-9, tiny: float = 1e-12) -> bool:
    """Equal structure and equal values, floats within `rel` of each other (or both within `tiny` of 0: an
    entropy of a committed mixture is 1e-14 one way and -0.0 the other)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= max(tiny, rel * max(abs(a), abs(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel, tiny) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel, tiny) for x, y in zip(a, b))
    return a == b


def _spans(events, kind):
    return [(a, b) for k, _, a, b in events if k == kind]


def test_overlap_reads_beside_sampling_and_never_samples_two_at_once():
    claim = Traced()
    r = RunContext(progress=False, overlap=True).measure_claim(claim, _Effect(0.3), SEQ)
    serial = RunContext(progress=False).measure_claim(Toy(), _Effect(0.3), SEQ)
    assert (r.status, r.measured, r.ci_low, r.ci_high, r.n) == (serial.status, serial.measured, serial.ci_low,
                                                                  serial.ci_high, serial.n)
    samples = sorted(_spans(claim.events, "sample"))
    assert len(samples) == 6 and all(a[1] <= b[0] for a, b in zip(samples, samples[1:]))   # never two at once
    reads = _spans(claim.events, "read")
    # the readouts of one unit ran while another unit sampled (without overlap this count is 0)
    assert sum(any(ra < sb and sa < rb for sa, sb in samples) for ra, rb in reads) >= 2


def test_without_overlap_nothing_runs_beside_anything():
    claim = Traced()
    RunContext(progress=False).measure_claim(claim, _Effect(0.3), SEQ)
    samples, reads = _spans(claim.events, "sample"), _spans(claim.events, "read")
    assert not any(ra < sb and sa < rb for sa, sb in samples for ra, rb in reads)


def test_a_sequential_claim_samples_nothing_past_its_stopping_look():
    """Decided at its first look: the overlapping run samples the same units the serial one does, no more."""
    serial, ovl = Toy(), Traced(read_s=0.0)
    s = replace(SEQ, first_instance=100)
    a = RunContext(progress=False, sequential=True).measure_claim(serial, _Effect(1.2), s)
    b = RunContext(progress=False, sequential=True, overlap=True).measure_claim(ovl, _Effect(1.2), s)
    assert a.details["sequential"]["batches_used"] < a.details["sequential"]["batches_max"]
    assert b.details["sequential"] == a.details["sequential"] and ovl.calls == serial.calls
    assert (b.measured, b.ci_low, b.ci_high, b.n) == (a.measured, a.ci_low, a.ci_high, a.n)


def test_a_unit_that_raises_stops_the_run_and_the_finished_units_are_stored(tmp_path):
    claim = Traced(read_s=0.02, fail_at=None)
    units = [b.instances[0].id for b in RunContext(progress=False).batches(SEQ)]
    claim.fail_at = units[3]
    ctx = RunContext(store=ResultStore(tmp_path / "s"), progress=False, overlap=True)
    with pytest.raises(RuntimeError, match="readout broke"):
        ctx.measure_claim(claim, _Effect(0.3), SEQ)
    started = {f for k, f, _, _ in claim.events if k == "sample"}
    assert units[3] in started and units[5] not in started          # nothing started after the failing unit's turn
    again = Traced()                                                  # the rerun reads back what was finished
    RunContext(store=ResultStore(tmp_path / "s"), progress=False).measure_claim(again, _Effect(0.3), SEQ)
    assert units[0] not in {f for k, f, _, _ in again.events if k == "sample"}


@pytest.mark.parametrize("claim_id,control", [("cos.superposition", None), ("noise.step_vs_frame", None),
                                               ("frames.count", None), ("layers.swap_flip", None),
                                               # a model without weights_hash: keyed by its state_dict, which
                                               # another thread's HookSession renames while it samples
                                               ("layers.energy_profile", "untrained")])
def test_real_claims_give_the_serial_row_records_and_store_keys(claim_id, control, tmp_path):
    """A control of each claim (its positive one unless named), once serially and once with overlap, each into its
    own store: the same row, the same records, the same store keys in the same order; and the units did overlap."""
    claim = get_claim(claim_id)
    ctl = next(c for c in claim.controls() if (c.name == control if control else c.kind == "positive"))
    kw = ctl.kwargs(0) if ctl.kwargs else {}
    rows, logs = [], []
    seen_threads = set()

    class Watched(RunContext):
        def _unit_records(self, *a, **k):
            seen_threads.add(threading.current_thread().name)
            return super()._unit_records(*a, **k)

    s = at_draw(ctl.settings, 0)
    s = replace(s, batch_size=max(len(s.seeds), s.rows // 3))     # at least three units (the controls' one or two)
    for i, overlap in enumerate((False, True)):
        ctx = Watched(store=ResultStore(tmp_path / f"s{i}"), progress=False, overlap=overlap)
        r = claim.measure(ctx, ctl.model(0), s, **kw)
        rows.append((r.status, r.n, (r.measured, r.ci_low, r.ci_high), r.records))
        logs.append([e["key"] for e in ctx.key_log])
    # statuses, n and store keys exactly; numbers to float rounding: MKL, called by two threads at once, may split a
    # product another way (MKL_DYNAMIC; 1e-15 relative measured on superposition's mixtures)
    assert rows[0][:2] == rows[1][:2] and logs[0] == logs[1] and logs[0]
    assert _close(rows[0][2:], rows[1][2:])
    assert len({t for t in seen_threads if t.startswith("cos-unit")}) == 2, seen_threads   # it did run beside


class Parts(Toy):
    """Each batch samples three times (as a claim with several runs a batch does); unit `fail_at` fails after
    its first sampling."""

    def __init__(self, fail_at: str):
        super().__init__()
        self.fail_at, self.sampled = fail_at, []

    def measure_batch(self, ctx, system, settings, batch):
        first = batch.instances[0].id
        for part in range(3):
            with ctx._sampling:
                ctx._check_cancel()         # where RunContext.run and sweep check
                time.sleep(0.05)
                self.sampled.append((first, part))
            if first == self.fail_at:
                raise RuntimeError("readout broke")
        return super().measure_batch(ctx, system, settings, batch)


def test_after_a_failure_the_other_thread_samples_no_more():
    units = [b.instances[0].id for b in RunContext(progress=False).batches(SEQ)]
    claim = Parts(fail_at=units[0])
    with pytest.raises(RuntimeError, match="readout broke"):
        RunContext(progress=False, overlap=True).measure_claim(claim, _Effect(0.3), SEQ)
    # unit 1 may have begun a sampling before the failure was seen; none after it, and no unit after unit 1
    assert len([p for f, p in claim.sampled if f == units[1]]) <= 1
    assert {f for f, _ in claim.sampled} <= {units[0], units[1]}


def test_a_context_overlaps_call_after_call():
    """An overlapped call ends by stopping its own threads, not the context: the next claim on the same context
    (one unit, so serial; then another overlapped one) runs as on a fresh context."""
    ctx = RunContext(progress=False, overlap=True)
    ctx.measure_claim(Toy(), _Effect(0.3), SEQ)
    one = replace(SEQ, instances=8)
    for s in (one, SEQ):
        a = ctx.measure_claim(Traced(read_s=0.0), _Effect(0.3), s)
        b = RunContext(progress=False).measure_claim(Toy(), _Effect(0.3), s)
        assert (a.status, a.measured, a.n) == (b.status, b.measured, b.n)

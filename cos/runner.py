"""Running a claim's batches through the shared sampler: the `RunContext` a claims session hands every claim.

It owns what used to be module globals: the result store, this process's share of the batches, the shared
in-process runs (the clean x̂0 run, the noise sweep) and the loader of the distilled model. The plugin makes
one per session; a control or a script makes its own (`RunContext()`: no store, alone).

A claim is written as records (`cos.registry.Claim`): `measure_batch` turns one batch of (instance × seed) rows
into small records of plain numbers, `conclude` turns the records of the batches so far into the row, `finish`
adds report-only extras once. `measure_records` runs that loop: the batches of the claim's `batch_settings`
(phases, e.g. frame counts, interleaved into units: unit k holds the k-th batch of every phase) are formed from
the rows before they are split, so every rank count samples the single-process batches; unit k goes to rank
k mod N. After each look (one at fixed n; with --cos-sequential up to --cos-looks, default `cos.sequential.LOOKS`)
the ranks gather their records (`World.gather`: small dicts, a few numbers a row), put them in unit order, and
every rank concludes on the same records at the look's level and stops at the same look; rank 0 writes the table. The
decision is taken on the same records in the same order whatever the number of processes, so 1 and N processes
give the same table. Records are JSON round-tripped (`_plain_records`) whether or not they were stored, so a
conclusion never sees a type the store would change.

Records and runs are kept in the result store: a batch's records under the claim's id, version and module
source (`records_key`: a claim edited without a version bump still gets new records), its sampling runs under
the model, settings, rows and interventions (`RunContext.run`, `sweep`). A rank that dies loses only the batch
it was computing; a relaunch (any N) finds the rest. Runs that capture activations are stored with what they
captured (see `run`). Host-side readouts (decoding, NNLS mixtures, scores, CKA) happen inside `measure_batch`,
on the rank that sampled the batch, once: only their records cross ranks.

With `overlap` (--cos-overlap on; off by default: benchmarks/results/gpu/overlap-h200) a rank's units run on two threads:
while one thread reads out unit k (decoding, mixtures, scores, CKA) the other samples unit k+1. The model is
sampled under one lock (`_sampling`: interventions hook the shared experts and a batch binder writes the batch into
the model, so two samplings must never interleave), the VAE decodes under its own (`WanVAE`: its causal cache is
per call), at most two units are in flight (bounded memory), never past the look being taken (a sequential claim
samples no batch it would not have sampled), and the records, runs and samples.jsonl come out in unit order. The
table is a serial run's: the same statuses, n, records and store keys; numbers agree to float rounding, not always
bit for bit: while they overlap each thread has half the intra-op threads, and MKL adapts its threads to concurrent
callers, so a CPU readout's products may be summed in another order (1e-15 relative measured; tests/test_overlap.py).
A unit that fails (or an interrupt) stops the other thread before its next sampling.

(Before records, each claim ran twice under several processes, a fill pass into the store and a replay of
every batch on every rank served gathered readouts; that machinery is gone.)
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

import torch

from cos.interventions.base import Intervention
from cos.interventions.capture import CaptureBlocks
from cos.parallel import World
from cos.models.system import WanSystem
from cos.sampler import Sampler, SampleResult
from cos.sequential import LOOKS
from cos.settings import ClaimSettings, instances
from cos.store import ResultStore, key_of
from cos.taskrun import TaskBatch, conditioning, decode, make_batch


_MISSING = object()


class _Cancelled(Exception):
    """An overlapped unit stopped because an earlier one failed or the run was interrupted (never reaches a
    caller: the generator re-raises the first unit's error)."""

# bumped whenever an intervention's meaning changes (stored results of the old meaning must not be served)
ENGINE = 2
# the session's memo of shared runs (RunContext.remember): at most this many bytes of tensors, and entries. The
# organism's gpu tier holds ~3.3 GiB of them at its first looks and ~9 GiB at fixed n, by its shapes (noise sweeps
# of 126 rows: every branch's x̂0 at every step); the claims read the same batches in the same order, so a memo smaller than
# what they read evicts each entry before its next reader (least recently used is the worst case of a repeated
# scan): a quarter of the machine's memory, up to 16 GiB, per process. A full model's runs beyond it are served by
# the result store (its tiers keep one by default)
def _memo_budget() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        ram = 32 << 30
    return int(min(16 << 30, ram // 4))


MEMO_BYTES = _memo_budget()
MEMO_ENTRIES = 256


def tensor_bytes(obj: Any, seen: set | None = None) -> int:
    """Bytes of the tensor storages in `obj` (a tensor, a SampleResult with its sampler state, or dicts, lists and
    tuples of them), each storage counted once, whole (a view keeps its whole storage alive)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        st = obj.untyped_storage()
        key = (str(obj.device), st.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return st.nbytes()
    if isinstance(obj, SampleResult):
        st = obj.state      # None where the run was served by the result store
        # the state's latents and condition, its conditioning, and the scheduler's multistep history (UniPC keeps
        # a few latent-sized tensors: ~20% of a noise sweep's bytes on the cpu tier)
        held = () if st is None else (st.latents, st.condition, st.last_x0,
                                      *(list(getattr(o, "__dict__", {}).values()) for o in (st.cond, st.scheduler)))
        return sum(tensor_bytes(x, seen) for x in (obj.latents, *held, *obj.trajectory.values()))
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


@dataclass
class RunContext:
    """Where a claims session keeps its state. `world`: this process among the run's processes (data parallel
    through `measure_records`); `shard=(i, n)`: `--cos-shard`, only every n-th batch from the i-th, into the store
    (a world of n that never meets: no gather, rows are left to `cos merge` and an unsharded rerun)."""

    store: ResultStore | None = None
    shard: tuple[int, int] | None = None
    progress: bool = True
    report_instances: int = 2       # x̂0 filmstrips per task in the report (--cos-report-instances)
    distilled_loader: Callable[[], WanSystem | None] | None = None
    world: World = field(default_factory=World)
    # where progress lines go (the plugin passes one that writes past pytest's capture); None: stderr
    progress_writer: Callable[[str, bool], None] | None = field(default=None, repr=False)
    label: str = ""                     # the claim being measured (named in progress lines)
    # claims written as records decide at looks and stop once decided or futile (--cos-sequential, cos.sequential)
    sequential: bool = False
    looks: int = LOOKS      # at most this many looks per claim under `sequential` (--cos-looks)
    # the run's ETA (cos.eta.RunEstimate): told where each claim's batches stand, it re-estimates the run's remaining
    # time after every batch; the progress lines show it. None: no run ETA (a script, the cpu tier)
    tracker: Any = field(default=None, repr=False)
    # what several claims read, kept for the session (`remember`): least recently used first out, bounded by the
    # bytes of its tensors (MEMO_BYTES) and a count (MEMO_ENTRIES)
    _memo: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _memo_sizes: dict = field(default_factory=dict, repr=False)
    _memo_lock: Any = field(default_factory=threading.Lock, repr=False)
    memo_held: int = field(default=0, repr=False)     # bytes of the tensors `_memo` holds now
    # every stored run read or written: {"key", "kind", "rows": [(instance id, seed)]} (samples.jsonl names them)
    key_log: list = field(default_factory=list, repr=False)
    _distilled: Any = field(default=None, repr=False)
    ran: dict = field(default_factory=dict, repr=False)  # instance id -> seeds this process sampled (own share)
    # claim -> seconds this rank spent measuring its share of the batches ("share"), at the gathers of the looks
    # ("gather") and concluding ("conclude"): what bounds a data-parallel run (provenance records it per rank)
    phase_s: dict = field(default_factory=dict, repr=False)
    # a unit's host readouts beside the next unit's sampling (two worker threads; see the module docstring)
    overlap: bool = False
    # under sequential looks, what stops the claim being measured at a look instead of its own decision:
    # (row at the look, the look, records so far as a row's records[, the old model's so far]) -> a stop reason or
    # "". Set per claim by a gate (cos.gate.Against.look_rule; against a model a PairedLooks, whose old model is
    # sampled on the same units), None otherwise
    look_rule: Callable[..., str] | None = field(default=None, repr=False)
    # a gate against a model under sequential looks (cos.gate.PairedLooks): claim id -> the old model's records on
    # the rows the claim stopped at, for the gate's row (cos.gate.Against.old takes them)
    paired: dict = field(default_factory=dict, repr=False)
    _sampling: Any = field(default_factory=threading.RLock, repr=False)
    _log_sink: Any = field(default_factory=threading.local, repr=False)

    @property
    def max_looks(self) -> int:
        """At most how many looks a claim takes in this run (1: fixed n); provenance and gate.json record it."""
        return self.looks if self.sequential else 1

    @property
    def distilled(self) -> WanSystem | None:
        """The --cos-lora model (App. C's 4-step model), loaded on first use; None when none is given."""
        if self._distilled is None and self.distilled_loader is not None:
            with self._sampling:        # two overlapping units must not both load it
                if self._distilled is None:
                    self._distilled = self.distilled_loader()
        return self._distilled

    @property
    def split(self) -> tuple[int, int]:
        """(rank, number of ranks) the batches are split over."""
        return self.shard if self.shard is not None else (self.world.rank, self.world.size)

    # ---------------------------------------------------------------- batches
    def batches(self, settings: ClaimSettings, insts: list | None = None, desc: str = "batches") -> Iterator[TaskBatch]:
        """The batches of (instance × seed) rows, for code that loops over them itself (a script, `cos trace`,
        the VBVR evaluation). Under a shard i/n only this host's: batch k goes to shard k mod n. Batches are formed
        before they are split, so every shard count (and a merged store) serves the unsharded run batch for batch.
        Claims do not call this: `measure_records` forms and splits their batches."""
        insts = instances(settings) if insts is None else insts
        per = instances_per_batch(settings)
        starts = list(range(0, len(insts), per))
        rank, n = self.split
        sharded = self.shard is not None and n > 1
        if sharded:
            starts = [b for k, b in enumerate(starts) if k % n == rank]
        bar = Progress(self, f"{self.label or desc}" + (f" [share {rank}/{n}]" if sharded else ""), len(starts))
        for b in starts:
            batch = make_batch(insts[b:b + per], settings.seeds, settings.height, settings.width)
            self._note_ran(batch)
            yield batch
            bar.step()
        bar.close()

    def _note_ran(self, batch: TaskBatch) -> None:
        """Record the (instance, seed) rows this process sampled (provenance's rank_rows)."""
        for inst, seed in zip(batch.instances, batch.seeds):
            seen = self.ran.setdefault(inst.id, [])
            if seed not in seen:
                seen.append(seed)

    # ---------------------------------------------------------------- claims written as records
    def measure_records(self, claim, system: WanSystem, settings: ClaimSettings, **kw):
        """A claim's row from records (`Claim.measure_batch` per batch, `Claim.conclude` on all so far): the
        batches are those of `batches` for each of the claim's `batch_settings` (every claim that reads the shared
        clean run sees the same ones), grouped into units (`batch_units`: the k-th batch of every phase) and
        split over the ranks by unit index; after each look the ranks gather the records (small dicts, in batch
        order), every rank concludes on the same records at the look's level, and all stop at the same look.
        Records are kept in the result store under the claim's id, version and code (`records_key`): a killed
        run resumes with what it finished. Without `sequential` the only look is after the last batch (fixed n:
        the same row as one pass over every batch). `Claim.finish` then adds its report-only extras once."""
        from cos import sequential as seq

        self.label = claim.id
        try:
            rank, n_ranks = self.split
            alone_share = self.shard is not None      # a shard fills the store with its share and concludes on it
            units = self.units_of(claim, settings, **kw)
            mine = lambda k: n_ranks == 1 or k % n_ranks == rank
            points = (seq.look_points(len(units), self.looks) if self.sequential and not alone_share and units
                      else [len(units)])
            looks = seq.plan_looks([b / len(units) for b in points]) if units else []
            bar = Progress(self, claim.id + (f" [share {rank}/{n_ranks}]" if n_ranks > 1 else ""),
                           -(-len(units) // n_ranks) if n_ranks > 1 else len(units))
            if self.tracker is not None:
                self.tracker.started(claim.id, len(units), points)
            records: list[tuple[int, list[dict]]] = []
            done, history, res, flat = 0, [], None, []
            # a gate against a model (cos.gate.PairedLooks): its old model is sampled on the same units before each
            # look, so the look rule pairs the two and both stop together. Only where there are looks: at fixed n
            # the old side is measured whole after the claim (cos.gate.Against.old), as it always was
            paired = getattr(self.look_rule, "paired_system", None) if len(looks) > 1 else None
            old_records: list[tuple[int, list[dict]]] = []
            flat_old: list[dict] = []
            spent = self.phase_s[claim.id] = {"share": 0.0, "gather": 0.0, "conclude": 0.0}
            for look in looks or [None]:
                t0 = time.perf_counter()
                upto = points[look.index] if look else 0
                ks, own = [k for k in range(done, upto) if mine(k)], []
                for k, rs in self._units_records(claim, system, units, ks, kw):
                    own.append((k, rs))
                    if self.tracker is not None:    # unit k done here, the others' in parallel: k + 1 of them
                        self.tracker.progress(claim.id, k + 1)
                    bar.step()
                done = upto
                if paired is not None:
                    flat_old = self._paired_units(claim, paired, units, ks, kw, old_records, alone_share)
                t1 = time.perf_counter()
                flat = self._gathered(own, records, alone_share)
                t2 = time.perf_counter()
                level = look.confidence if (look and len(looks) > 1) else None
                early = look is not None and not look.final
                try:
                    res, res_level = _conclude_at(claim, flat, system, settings, kw, level), level
                except Exception as e:  # noqa: BLE001 - an early look's subset may be too small to conclude on
                    if not early:       # (one instance of a task, a zero count): not final; the last look raises
                        raise
                    history.append({"batches": upto, "fraction": round(look.fraction, 4),
                                    "confidence": round(look.confidence, 6), "n": None, "status": "not concluded",
                                    "stop": "", "why": f"{type(e).__name__}: {e}"[:200]})
                    continue
                for k, dt in (("share", t1 - t0), ("gather", t2 - t1), ("conclude", time.perf_counter() - t2)):
                    spent[k] = round(spent[k] + dt, 2)
                if look is None or len(looks) == 1:
                    break
                if self.look_rule is not None and res.status != "error":
                    # a gate (cos.gate.Against.look_rule): the look stops on the paired change's decision, not
                    # the claim's own, so that the rows stop when the change is decided. It is not asked at the
                    # last look: a row that ran to the end is the fixed-n row
                    stop = "" if look.final else self.look_rule(
                        res, look, lambda: _recorded(claim, flat, system, settings, kw, level),
                        *(() if paired is None else (lambda: _recorded(claim, flat_old, paired, settings, kw, level),)))
                else:
                    stop = self._look_stops(claim, res, look, looks[-1],
                                            lambda: _conclude_at(claim, flat, system, settings, kw, 0.95))
                history.append({"batches": upto, "fraction": round(look.fraction, 4),
                                "confidence": round(look.confidence, 6), "n": res.n, "status": res.status,
                                "stop": stop})
                if stop:
                    if stop == "futile":
                        res.reason = "; ".join(t for t in (res.reason, (
                            f"futile at look {look.index + 1} of {len(looks)} (n={res.n}): under the trend so far "
                            f"neither decision reaches {seq.FUTILITY_POWER:.0%} power by the last look")) if t)
                    break
            if self.tracker is not None:        # a claim stopped at a look: its unspent batches leave the plan
                self.tracker.finished(claim.id, done)
            bar.close()
            if res is not None:
                res = claim.finish(self, system, settings, flat, res, **kw)
                if hasattr(res, "records"):     # a ClaimResult (a test's stub claim may conclude to other values)
                    res.records = _recorded(claim, flat, system, settings, kw, res_level)
            if paired is not None:      # the old side's rows, for the gate's row (cos.gate.Against.old)
                self.paired[claim.id] = _recorded(claim, flat_old, paired, settings, kw, res_level)
            if res is not None and len(looks) > 1:
                res.details["sequential"] = {
                    "design": f"group-sequential, Lan-DeMets O'Brien-Fleming spending, alpha {seq.ALPHA}",
                    "looks_planned": [{"batches": b, "fraction": round(b / len(units), 4),
                                       "confidence": round(lk.confidence, 6)} for b, lk in zip(points, looks)],
                    "looks": history, "batches_used": done, "batches_max": len(units)}
            return res
        finally:
            self.label = ""

    def _paired_units(self, claim, system: WanSystem, units, ks: list[int], kw: Mapping[str, Any],
                      records: list[tuple[int, list[dict]]], alone: bool) -> list[dict]:
        """A gate's old model on this rank's units `ks` (the ones the new model just sampled), gathered into
        `records` over the ranks: the old side's records so far, in unit order. Their store keys stay out of the
        key log (samples.jsonl lists each instance's runs of the model under test)."""
        n0 = len(self.key_log)
        own = list(self._units_records(claim, system, units, ks, kw))
        del self.key_log[n0:]
        return self._gathered(own, records, alone)

    def _gathered(self, own: list[tuple[int, list[dict]]], records: list[tuple[int, list[dict]]],
                  alone: bool) -> list[dict]:
        """This rank's (unit, records) `own` gathered over the ranks (not under a shard, `alone`) into `records`,
        and all records so far in unit order: what every rank concludes on."""
        for part in self.world.gather(own) if (self.world.connected and not alone) else [own]:
            records.extend(part)
        records.sort(key=lambda kr: kr[0])
        return [r for _, rs in records for r in rs]

    def units_of(self, claim, settings: ClaimSettings, *, instances_of: Callable = instances,
                 **kw) -> list[list[tuple[ClaimSettings, TaskBatch]]]:
        """The units a records claim's batches form in this run (`batch_units` of its `batch_settings`, task-
        interleaved under sequential looks): what `measure_records` samples, and where `Claim.finish` finds the
        batch a record came from (`instances_of=row_ids`: the same batches of instance ids, for store keys)."""
        return batch_units(claim.batch_settings(settings, **kw), interleave=self.sequential and self.shard is None,
                           instances_of=instances_of)

    @staticmethod
    def _look_stops(claim, res, look, last, at95: Callable[[], Any]) -> str:
        """Why a look stops the claim ("decided", "futile", "error") or "" to go on. A look before the claim has
        MIN_LOOK_UNITS units decides nothing (its interval's coverage is not checked there). Futility reads the
        trend from the records' 95% interval (`at95`, se = width / 2·1.96), and only from FUTILITY_MIN_UNITS on:
        at n = 8 a bootstrap-t interval is ~2× a normal one, so its se would be doubled and the futility rule
        would stop claims that still had power."""
        from cos import sequential as seq

        if res.status == "error":
            return res.status
        if look.final or res.status == "skipped" or res.n is None or res.n < seq.MIN_LOOK_UNITS:
            # skipped on an early look's subset (too few instances of a task, say): more rows may measure it
            return ""
        if res.status in ("holds", "fails"):
            return "decided"
        th = (res.details or {}).get("threshold", claim.spec.threshold)
        if res.ci_low is not None and (res.ci_low > th or res.ci_high < th):
            return ""        # the interval is decided; a further condition is not: more rows may decide it
        if res.n < seq.FUTILITY_MIN_UNITS:
            return ""
        r = at95()
        z = seq.z_of(r.measured, r.ci_low, r.ci_high, 0.95, th)
        if z is not None and seq.conditional_power(z, look.fraction, last.boundary) < seq.FUTILITY_POWER:
            return "futile"
        return ""

    def _unit_records(self, claim, system: WanSystem, unit, kw: Mapping[str, Any],
                      cancel: threading.Event | None = None) -> tuple[list[dict], list]:
        """The records of one unit (every phase's batch) and the store keys it read or wrote, in order. `cancel`
        (an overlapped call's): once set, the unit samples no more."""
        log: list = []
        self._log_sink.entries, self._log_sink.cancel = log, cancel
        try:
            rs = []
            for s, batch in unit:
                self._check_cancel()
                rs.extend(self._batch_records(claim, system, s, batch, kw))
            return rs, log
        finally:
            self._log_sink.entries = self._log_sink.cancel = None

    def _units_records(self, claim, system: WanSystem, units, ks: list[int],
                       kw: Mapping[str, Any]) -> Iterator[tuple[int, list[dict]]]:
        """(k, records) of the units `ks`, in order. With `overlap` two worker threads take them in turn, so unit
        k's readouts run while unit k+1 samples; a unit's records and store keys are handed on only when every
        unit before it has been, so the order (and the table) is a serial run's. A unit that raises stops the
        rest: a sampling under way finishes (its run is stored), no unit samples after it (`cancel`), and the
        error reaches the caller once the other thread has stopped."""
        def note(k: int) -> None:       # provenance's rank_rows: the rows of units whose records were handed on
            for _, batch in units[k]:
                self._note_ran(batch)

        if not self.overlap or len(ks) < 2:
            for k in ks:
                rs, log = self._unit_records(claim, system, units[k], kw)
                self.key_log.extend(log)
                note(k)
                yield k, rs
            return
        cancel = threading.Event()      # this call's: set when it ends, however it ends
        # two threads each running torch's intra-op pool over every core oversubscribe the host twice over (OpenMP
        # threads spin for cores the other pool holds): each gets half while they overlap
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // 2))
        with _restore_threads(threads), ThreadPoolExecutor(max_workers=2, thread_name_prefix="cos-unit") as pool:
            submit = lambda k: pool.submit(self._unit_records, claim, system, units[k], kw, cancel)
            ahead = [(k, submit(k)) for k in ks[:2]]
            rest = iter(ks[2:])
            try:
                while ahead:
                    k, fut = ahead.pop(0)
                    rs, log = fut.result()
                    failed = any(f.done() and f.exception() is not None for _, f in ahead)
                    nxt = None if failed else next(rest, None)
                    if nxt is not None:     # keep two in flight: the next starts sampling as soon as one is done
                        ahead.append((nxt, submit(nxt)))
                    self.key_log.extend(log)
                    note(k)
                    yield k, rs
            finally:
                cancel.set()    # a queued unit already counts as running to the pool: cancel() alone misses it
                for _, fut in ahead:
                    fut.cancel()

    def _check_cancel(self) -> None:
        """In an overlapped unit's thread: stop before sampling once another unit failed or the call ended."""
        cancel = getattr(self._log_sink, "cancel", None)
        if cancel is not None and cancel.is_set():
            raise _Cancelled()

    def _log_key(self, entry: dict) -> None:
        """A store key read or written: into the running unit's list (kept in unit order), else the session's."""
        sink = getattr(self._log_sink, "entries", None)
        (self.key_log if sink is None else sink).append(entry)

    def _batch_records(self, claim, system: WanSystem, settings: ClaimSettings, batch: TaskBatch,
                       kw: Mapping[str, Any]) -> list[dict]:
        """`claim.measure_batch` of one batch, from the store when a run of the same claim code kept them."""
        compute = lambda: claim.measure_batch(self, system, settings, batch, **kw)
        if self.store is None:
            return _plain_records(compute())      # as a stored batch would hand them back
        with self._sampling:    # a model without weights_hash is hashed by its state_dict, renamed while hooked
            key = records_key(claim, system, settings, batch, kw)
        self._log_key({"key": key, "kind": "records", "rows": [(i.id, s) for i, s in zip(batch.instances, batch.seeds)]})
        hit = self.store.get(key)
        if hit is not None:
            return hit["records"]
        with self.store.computing(key):
            out = _plain_records(compute())
            self.store.put(key, {"records": out})
        return out

    def measure_claim(self, claim, system: WanSystem, settings: ClaimSettings, *args, **kwargs):
        """`claim.measure(self, system, settings, ...)`: a claim written as records goes through `measure_records`
        (its ranks split the batches and gather the records). A claim that overrides `measure` and loops over
        `batches` itself is measured whole by every rank (correct, not split)."""
        return claim.measure(self, system, settings, *args, **kwargs)

    def readout(self, name: str, run: SampleResult | None, fn: Callable[[], Any]) -> Any:
        """`fn()`. Kept for claims written before records, which wrapped their host-side readouts of a run in it
        (they were served to a replay); a records claim computes them in `measure_batch`, once, on its rank."""
        return fn()

    # ---------------------------------------------------------------- sampling
    def run(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, record: Sequence[str] = (),
            interventions: Sequence[Intervention] = (), until: int | None = None) -> SampleResult:
        """One batch from noise to the end (or to step `until`), with the claim's records and interventions.
        Runs whose interventions only modify (no captures to fill) are served from / saved to the store."""
        def compute():
            with self._sampling:
                self._check_cancel()
                sampler = Sampler(system)
                state = sampler.prepare(bound_conditioning(system, settings, batch), batch.seeds, settings.steps)
                return sampler.run(state, guidance_scale=settings.guidance_scale, record=record,
                                   interventions=interventions, until=until)
        captures = [iv for iv in interventions if not iv.modifies]
        if not all(storable_capture(iv) for iv in captures):
            return compute()
        return self._stored("run", system, settings, batch, compute, record=list(record),
                            interventions=list(interventions), until=until, captures=captures)

    def sweep(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, branches: dict,
              record: Sequence[str] = ()) -> dict[str, SampleResult]:
        """Branches of one batch sharing their clean prefix (see `Sampler.sweep`); the clean run is "clean"."""
        def compute():
            with self._sampling:
                self._check_cancel()
                return Sampler(system).sweep(bound_conditioning(system, settings, batch), batch.seeds,
                                             settings.steps, branches, guidance_scale=settings.guidance_scale,
                                             record=record)
        return self._stored("sweep", system, settings, batch, compute, record=list(record), branches=branches)

    def memo(self, kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute: Callable):
        """Compute once per session what several claims read (the clean run with x̂0 recorded, a noise sweep):
        keyed by the model, the settings, the batch's (instance, seed) rows and `kind` (`remember`)."""
        return self.remember((kind, id(system), system.fingerprint, repr(settings),
                              tuple(i.id for i in batch.instances), tuple(batch.seeds)), compute)

    def remember(self, key: Any, compute: Callable) -> Any:
        """`compute()` once per session under `key`. Entries go least recently used first once their tensors pass
        MEMO_BYTES or their number MEMO_ENTRIES; the newest always stays. (It cleared everything at 64 entries,
        whatever their size: a full model's 64 noise sweeps could fill a host's memory, and one more entry threw
        away every one.) Two threads may both compute a key neither has yet: the same value, stored once."""
        with self._memo_lock:
            hit = self._memo.get(key, _MISSING)
            if hit is not _MISSING:
                self._memo.move_to_end(key)
                return hit
        hit = compute()
        size = tensor_bytes(hit)
        with self._memo_lock:
            if key not in self._memo:
                self._memo[key], self._memo_sizes[key] = hit, size
                self.memo_held += size
            self._memo.move_to_end(key)
            while len(self._memo) > 1 and (self.memo_held > MEMO_BYTES or len(self._memo) > MEMO_ENTRIES):
                old, _ = self._memo.popitem(last=False)
                self.memo_held -= self._memo_sizes.pop(old)
        return hit

    def clean_run(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch) -> SampleResult:
        """The batch's unperturbed run with x̂0 recorded at every step, shared by every claim that reads it."""
        return self.memo("clean-x0", system, settings, batch, lambda: self.run(system, settings, batch, record=("x0",)))

    def _stored(self, kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute,
                captures: Sequence[Intervention] = (), **what):
        if self.store is None:
            return compute()
        with self._sampling:    # (as in _batch_records: another thread's HookSession renames its parameters)
            key = run_key(kind, system, settings, batch, **what)
        self._log_key({"key": key, "kind": kind, "rows": [(i.id, s) for i, s in zip(batch.instances, batch.seeds)]})
        return self._fetch(key, compute, captures, system.device)

    def _fetch(self, key: str, compute: Callable, captures: Sequence[Intervention], device: torch.device | None = None):
        hit = self.store.get(key)
        if hit is None:
            with self.store.computing(key):     # a failed computation releases the key for other processes
                out = compute()
                hit = _to_disk(out)
                if captures:    # a capture run: what the captures saw travels with the run
                    hit = {"run": hit, "captured": [dict(iv.store) for iv in captures]}
                self.store.put(key, hit)
        # a computed run is handed out in the form a stored one is read back in (no sampler state, its tensors
        # where the sampler puts them: final latents on the model's device, the recorded trajectory on the CPU,
        # `Sampler(record_device="cpu")`): one process and N processes (which read other ranks' runs from the
        # store) then compute the same table, and a run with a store reads its tensors where one without does
        if captures:
            for iv, cap in zip(captures, hit["captured"]):
                iv.fill(cap)
            hit = hit["run"]
        return _from_disk(hit, key, device)


@contextlib.contextmanager
def _restore_threads(n: int) -> Iterator[None]:
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_key(kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, **what: Any) -> str:
    """Store key of a sampling run (`RunContext.run`, `sweep`): the system's fingerprint (weights and LoRAs by
    content, scheduler config (flow shift), boundary, dtype), the settings, rows and what was recorded or done;
    ENGINE names the meaning of the interventions, so a store filled by an older engine is not served."""
    return key_of(kind=kind, engine=ENGINE, model=system.fingerprint, name=system.name, settings=settings.record(),
                  rows=[(i.id, i.num_frames, s) for i, s in zip(batch.instances, batch.seeds)],
                  size=(batch.height, batch.width), **what)


def clean_run_key(system: WanSystem, settings: ClaimSettings, batch: TaskBatch) -> str:
    """Store key of `RunContext.clean_run`'s run of a batch (`run(..., record=("x0",))` through `_stored`)."""
    return run_key("run", system, settings, batch, record=["x0"], interventions=[], until=None)


# the shared run `Claim.shared_runs` names by default: `RunContext.clean_run`, whose entry a plan can look up
CLEAN_RUN = "clean run"


@dataclass(frozen=True)
class RowId:
    """A task instance as a store key sees it (`TaskInstance.id` and its frame count), without making its videos:
    what a plan keys batches by (making the instances took 2 s per settings at the gpu tier)."""

    task: str
    split: str
    seed: int
    num_frames: int

    @property
    def id(self) -> str:
        return f"{self.task}-{self.split}-{self.seed:05d}"


def row_ids(settings: ClaimSettings) -> list[RowId]:
    """`instances(settings)` as `RowId`s, in the same order."""
    return [RowId(t, settings.split, i, settings.num_frames) for t in settings.tasks
            for i in range(settings.first_instance, settings.first_instance + settings.instances)]


class _NotProbed(BaseException):     # not an Exception: a claim's own `except Exception` must let it through
    pass


class _ProbedResult:
    """What the probe's `measure_records` hands the claim back: touching it stops the claim (what a claim does
    after its records call only reshapes the row it returns: `on_task_suite`)."""

    def __getattr__(self, name: str):
        raise _NotProbed(name)

    def __setattr__(self, name: str, value: Any):
        raise _NotProbed(name)


class _Probe:
    """The run context a claim's `measure` is called with at plan time (`records_call`): it notes the settings and
    arguments the claim measures its records at (`measure_records`, whose row it hands back as a `_ProbedResult`);
    anything else the claim reaches for (a run, its batches, the distilled model) stops it, as not known, and a
    second `measure_records` call stops it too (`calls` counts them: its keys would not be the first call's)."""

    def __init__(self, sequential: bool, shard: tuple[int, int] | None):
        self.sequential, self.shard = sequential, shard
        self.call: tuple[ClaimSettings, dict] | None = None
        self.calls = 0

    def measure_records(self, claim, system, settings, **kw):
        self.calls += 1
        if self.calls > 1:
            raise _NotProbed("a second measure_records")
        self.call = (settings, kw)
        return _ProbedResult()

    def __getattr__(self, name: str):
        raise _NotProbed(name)


def records_call(claim, system: WanSystem, settings: ClaimSettings, sequential: bool = False,
                 shard: tuple[int, int] | None = None, **kw: Any) -> tuple[ClaimSettings, dict] | None:
    """(settings, keyword arguments) the claim's `measure` hands `measure_records` at these run settings: several
    claims size their own (frames.count its frame counts, the noise claims `noise_settings` and their sizing,
    layers.swap_flip its instances), and both are in its records' store keys. None where the claim does not get
    there without running something (a VBVR run, distill.four_step's fast model, a claim that skips or fails
    first, pytest.skip included) or calls `measure_records` more than once (its records are not all under the
    first call's keys). `kw`: further arguments of `measure` (a control's). Nothing the claim raises leaves here
    but KeyboardInterrupt and SystemExit."""
    probe = _Probe(sequential, shard)
    try:
        claim.measure(probe, system, settings, **kw)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - _NotProbed, a claim's own error or pytest outcome: what it got to counts
        pass
    return probe.call if probe.calls == 1 else None


def stored_work(ctx: RunContext, claims: Sequence[Any], system: WanSystem, settings: ClaimSettings) -> dict[str, dict]:
    """What of each claim's plan the result store holds already (a killed run's finished batches, an earlier run's
    claims): per unit in run order (`RunContext.units_of`, what `measure_records` samples), "records" is the share
    of the unit's batches whose records are stored (`records_key`: served, not measured, so none of the claim's
    own runs or readouts is done for them), and "shared" is, per shared run the claim reads (`shared_runs`), the
    share of the unit's batches that will not sample it: the claim's records are stored, or, for the clean run,
    the run's own entry is (`clean_run_key`). The noise sweep's entry is not looked up (its key needs each
    reader's branches, built inside its `measure_batch`): it counts as needed wherever a reader's records are
    missing. "ranks" and "rank" say whose units are this process's work (unit k runs on rank k mod ranks; `to_do`):
    a shard's own (rank: its index; "batches" and "stored_batches" count only its record batches), a connected
    world's busiest rank's (rank None; the counts are the world's), else all (ranks 1).
    The keys are those the run will compute: at the settings and arguments the claim's `measure` hands
    `measure_records` (`records_call`), over its units with the instances as ids (`row_ids`: no videos made);
    each looked up by the header of its file (`ResultStore.has`: format, key and signer; nothing verified).
    The contract this relies on: a claim's `measure` calls `measure_records` once, as the last thing it does but
    reshaping the row it returns; a claim that calls it twice, that `records_call` cannot follow, or not written
    as records, counts as nothing stored, and so does any error keying or looking up a claim's batches (a plan is
    never refused for this: the full price). {} without a store."""
    import inspect
    from types import SimpleNamespace

    if ctx.store is None:
        return {}
    rank, n_ranks = ctx.split
    ranks = n_ranks if (ctx.shard is not None or ctx.world.connected) and n_ranks > 1 else 1
    own = rank if ctx.shard is not None and ranks > 1 else None
    # what the keys read of the model, once (its fingerprint hashes the weights' identity on every call)
    model = SimpleNamespace(fingerprint=system.fingerprint, name=system.name)
    out: dict[str, dict] = {}
    for c in claims:
        if not getattr(c, "by_records", False) or settings.extra.get("vbvr"):   # VBVR: generated, not records
            continue
        call = records_call(c, system, settings, ctx.sequential, ctx.shard)
        if call is None:
            continue
        s_run, kw = call
        try:
            units = ctx.units_of(c, s_run, instances_of=row_ids, **kw)
            shared = list(c.shared_runs(settings, system))
            code = _code_hash(inspect.getmodule(type(c)))     # once per claim: the module sources are hashed
            recs, runs, n, got = [], {k: [] for k in shared}, 0, 0
            for u, unit in enumerate(units):
                have = [ctx.store.has(records_key(c, model, s, b, kw, code=code)) for s, b in unit]
                if own is None or u % ranks == own:
                    n, got = n + len(have), got + sum(have)
                recs.append(sum(have) / len(have) if have else 1.0)
                for k in shared:
                    skip = [h or (k == CLEAN_RUN and ctx.store.has(clean_run_key(model, s, b)))
                            for h, (s, b) in zip(have, unit)]
                    runs[k].append(sum(skip) / len(skip) if skip else 1.0)
        except Exception:  # noqa: BLE001 - a plan is never refused for this: nothing stored, the full price
            continue
        out[c.id] = {"records": recs, "shared": runs, "batches": n, "stored_batches": got, "ranks": ranks,
                     "rank": own}
    return out


def _recorded(claim, records: list[dict], system: WanSystem, settings: ClaimSettings, kw: Mapping[str, Any],
              level: float | None) -> dict | None:
    """The records a row was concluded on with that conclusion's arguments (cos.records: records.jsonl, `cos
    conclude`, `cos gate`); None, with a warning, where an argument has no record form (a claim's own object)."""
    from cos.records import Concluded

    try:
        return Concluded(claim.id, claim.spec.version, records, system, settings, dict(kw), level).to_dict()
    except TypeError as e:
        import warnings

        warnings.warn(f"{claim.id}: records not kept for records.jsonl: {e}")
        return None
    except AttributeError:      # a stand-in model without an identity (a test's stub): nothing to record it by
        return None


def _conclude_at(claim, records: list[dict], system: WanSystem, settings: ClaimSettings, kw: Mapping[str, Any],
                 confidence: float | None):
    """`claim.conclude` with its decision intervals at `confidence` (None: the default level, fixed n)."""
    import contextlib

    from cos.stats import decision_level

    with decision_level(confidence) if confidence is not None else contextlib.nullcontext():
        return claim.conclude(records, system, settings, **kw)


# what a claim's records are computed with besides its own module: the shared readouts, the tasks (scores,
# candidate mixtures, entropy), the metrics (CKA), the reference denoiser and the controls' models
_RECORD_DEPS = ("cos.readouts", "cos.metrics", "cos.tasks", "cos.tasks.base", "cos.tasks.suite", "cos.controls",
                "cos.models.reference", "cos.models.scripted", "cos.models.planted")


def _code_hash(module) -> str:
    """sha256 of the claim module's source and of the modules its records depend on (a change in any of them
    must not serve stale records); a module without source (a frozen build) counts by its name."""
    import hashlib
    import importlib
    import inspect

    h = hashlib.sha256()
    for m in [module, *(importlib.import_module(n) for n in _RECORD_DEPS)]:
        try:
            h.update(inspect.getsource(m).encode())
        except (OSError, TypeError):
            h.update(getattr(m, "__name__", repr(m)).encode())
    return h.hexdigest()[:16]


def records_key(claim, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, kw: Mapping[str, Any],
                code: str | None = None) -> str:
    """Store key of one batch's records: the claim's id, version and the bytes of its module (a claim edited
    without a version bump still gets new records), cos's version and ENGINE, the model, settings and rows.
    `code`: the module's `_code_hash`, when the caller has it already (a plan keys every batch of a claim)."""
    import hashlib
    import inspect

    from cos import __version__ as cos_version

    return key_of(kind="records", claim=claim.id, version=claim.spec.version, cos=cos_version, engine=ENGINE,
                  code=code or _code_hash(inspect.getmodule(type(claim))), model=system.fingerprint, name=system.name,
                  settings=settings.record(), rows=[(i.id, i.num_frames, s) for i, s in zip(batch.instances, batch.seeds)],
                  size=(batch.height, batch.width),
                  kw={k: getattr(v, "fingerprint", None) or repr(v) for k, v in sorted(kw.items())})


def _plain_records(records: list[dict]) -> list[dict]:
    """Records as plain JSON-able values (numpy scalars and arrays become numbers and lists): what the store keeps
    and what a stored run hands back, so a computed and a served batch conclude alike."""
    import json

    from cos.registry import _plain

    return json.loads(json.dumps(_plain(records)))


def across_tasks(insts: Sequence[Any]) -> list:
    """The instances in task-interleaved order (the first of every task, then the second, ...): a sequential
    look after the first batches then sees every task, not the first tasks of a task-major list (on the organism's
    GPU tier a look at 5 of 13 batches held 3 of 10 tasks, and memory's anchor tasks not at all)."""
    by: dict[str, list] = {}
    for i in insts:
        by.setdefault(i.task, []).append(i)
    return [v[k] for k in range(max(map(len, by.values()), default=0)) for v in by.values() if k < len(v)]


def batch_units(phases: Sequence[ClaimSettings], interleave: bool = False,
                instances_of: Callable = instances) -> list[list[tuple[ClaimSettings, TaskBatch]]]:
    """A records claim's units of work: unit k holds the k-th batch of each phase (`Claim.batch_settings`), in
    phase order, with that phase's settings. The batches of a phase are formed from its (instance × seed) rows
    as `RunContext.batches` forms them (so a phase that is the shared clean run's settings reads its batches),
    and ranks and looks split the units by index: every look sees whole instances of every phase. `interleave`
    (sequential looks): the rows in task-interleaved order (`across_tasks`), so every look sees every task; its
    batches are then not those of a fixed-n run (their runs are not shared with one)."""
    per_phase = []
    for s in phases:
        insts, per = instances_of(s), instances_per_batch(s)
        insts = across_tasks(insts) if interleave else insts
        per_phase.append([(s, insts[b:b + per]) for b in range(0, len(insts), per)])
    return [[(s, make_batch(chunk, s.seeds, s.height, s.width)) for s, chunk in
             (p[k] for p in per_phase if k < len(p))] for k in range(max(map(len, per_phase), default=0))]


def instances_per_batch(settings: ClaimSettings) -> int:
    """Task instances in one batch: each brings a row per seed, `batch_size` rows at most (one at least)."""
    return max(1, settings.batch_size // len(settings.seeds))


def storable_capture(iv: Intervention) -> bool:
    """A capture whose output is stored with its run: a reduced one (per-token energies are small). A full
    capture (B, f, h, w, D) of every block is tens of GB on a full model: it is recomputed instead (one step)."""
    return isinstance(iv, CaptureBlocks) and iv.reduce != "none"


def bound_conditioning(system: WanSystem, settings: ClaimSettings, batch: TaskBatch):
    """The batch's conditioning; a model that needs the batch itself (a reference denoiser's candidate set)
    gets it through `system.batch_binder` first."""
    if system.batch_binder is not None:
        system.batch_binder(system, batch)
    return conditioning(batch, system.encode_prompt, text_dim=getattr(system.transformer.config, "text_dim", 32),
                        negative=settings.guidance_scale > 1)


def videos(system: WanSystem, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Decoded videos (B, F, 3, H, W) in [0, 1] (unclamped with clamp=False)."""
    return decode(system, latents.cpu(), clamp=clamp)


def step_videos(system: WanSystem, res: SampleResult, row: int) -> torch.Tensor:
    """Decoded x̂0 of one row at every recorded step: (steps, F, 3, H, W), unclamped."""
    return torch.stack([videos(system, res["x0"][s][row:row + 1], clamp=False)[0] for s in range(len(res.steps))])


def _to_disk(res):
    if isinstance(res, dict):
        return {k: _to_disk(v) for k, v in res.items()}
    return {"latents": res.latents.cpu(), "steps": res.steps, "timesteps": res.timesteps, "sigmas": res.sigmas,
            "trajectory": {k: v.cpu() for k, v in res.trajectory.items()}, "forwards": res.forwards}


def _from_disk(d, key: str | None = None, device: torch.device | None = None):
    """A stored run as a `SampleResult` (a dict of them for a sweep), placed as the sampler places a run: its final
    latents on `device` (the model's), its trajectory where the sampler records it (the CPU; on the GPU a full
    model's noise sweep would hold ~12 GB a batch)."""
    if "latents" not in d:
        return {k: _from_disk(v, None if key is None else f"{key}/{k}", device) for k, v in d.items()}
    lat = d["latents"] if device is None else d["latents"].to(device)
    return SampleResult(lat, None, d["steps"], d["timesteps"], d["sigmas"], d["trajectory"], d["forwards"], key=key)


def estimate_forwards(ctx: RunContext, system: WanSystem, settings: ClaimSettings, claims: Sequence[Any],
                      warmup: int = 1) -> dict:
    """The ETA of the claims at these settings: row-forwards (the shared clean run plus each claim's `cost`) at
    the time of a WARM forward, plus each claim's host-side `readouts` (decoding, NNLS mixtures, scores, CKA)
    at their times measured on the same batch (`time_forward`, then `price_forwards`). Readouts matter: on the
    organism's GPU tier they were three quarters of the wall time (an ETA from forwards alone said 45 s for a
    175 s run). An upper bound where batches share (a shared prefix, runs already in the store)."""
    return price_forwards(ctx, system, settings, claims, time_forward(system, settings, warmup))


def time_forward(system: WanSystem, settings: ClaimSettings, warmup: int = 1) -> dict:
    """Seconds per row-forward of a WARM forward and per host-side readout unit, on the plan's first batch (its
    real batch size), run for one step `warmup` times first (CUDA context, kernel selection, allocator,
    compilation: a cold first forward took 50x longer than a warm one and gave an ETA of 55 h for a 141 s run),
    then timed once. What `price_forwards` prices a plan at (also a plan at other sizes: --cos-budget's fit)."""
    cfg = 2 if settings.guidance_scale > 1 else 1
    batch = next(RunContext(progress=False).batches(settings))
    cond = bound_conditioning(system, settings, batch)
    sampler = Sampler(system)                       # not through the store: this is a timing

    def one_step():
        state = sampler.prepare(cond, batch.seeds, settings.steps)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = sampler.run(state, guidance_scale=settings.guidance_scale, until=1, record=("x0",))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0, res

    cold = [one_step()[0] for _ in range(max(0, warmup))]
    dt, res = one_step()
    return {"seconds_per_row_forward": dt / (cfg * len(batch.seeds)),
            "cold_seconds_per_row_forward": cold[0] / (cfg * len(batch.seeds)) if cold else None,
            "batch_rows": len(batch.seeds),
            "readout_seconds": _readout_seconds(system, batch, res["x0"][0], settings.steps)}


def price_forwards(ctx: RunContext, system: WanSystem, settings: ClaimSettings, claims: Sequence[Any],
                   timing: Mapping[str, Any]) -> dict:
    """The plan of `claims` at `settings` priced at `timing` (`time_forward`): row-forwards, each claim's own and
    shared runs, host seconds per claim, and the time of the busiest rank. Both are divided over the run's ranks,
    by whole batches (`share`): each rank reads out only the batches it sampled (`RunContext.measure_records`)."""
    cfg = 2 if settings.guidance_scale > 1 else 1
    per = {c.id: c.cost(settings, system) for c in claims}
    shared = {name: n for c in claims for name, n in c.shared_runs(settings, system).items()}
    total = (sum(shared.values()) + sum(per.values())) * cfg
    t, unit = timing["seconds_per_row_forward"], timing["readout_seconds"]
    host = {c.id: sum(n * unit.get(k, 0.0) for k, n in c.readouts(settings, system).items()) for c in claims}
    ranks = ctx.split[1] if (ctx.shard is not None or ctx.world.connected) else 1
    # a rank's share is whole batches: with B batches over N ranks the busiest does ceil(B/N) of them, not B/N
    # (the organism's GPU tier at 128 rows a batch: 7 batches a claim, 4 ranks do 2 each, 14% more than a quarter).
    # B is the plan's batch count; claims that size their own instances (ensemble, frames, swap_flip) are
    # approximated by it
    n_batches = len(range(0, settings.rows // len(settings.seeds), instances_per_batch(settings)))
    share = -(-n_batches // ranks) / n_batches
    return {"row_forwards": int(total), "per_claim": per, "shared_runs": shared, "seconds_per_row_forward": t,
            "ranks": ranks, "cold_seconds_per_row_forward": timing.get("cold_seconds_per_row_forward"),
            "batch_rows": timing.get("batch_rows"), "readout_seconds": unit, "host_s_per_claim": host,
            "batches_per_claim": n_batches, "share": share, "cfg": cfg,
            "forwards_s": total * t * share, "host_s": sum(host.values()) * share,
            "eta_s": (total * t + sum(host.values())) * share}


# elements of a decoded video above which a unit's stack holds 2 members, not 8 (the organism's: 6,912; a full
# model's at 480×832×81: 97 million)
LARGE_VIDEO = 1_000_000


def _readout_seconds(system: WanSystem, batch: TaskBatch, x0: torch.Tensor, steps: int = 1,
                     repeats: int = 5) -> dict[str, float]:
    """Seconds per host-side readout unit, on the batch's step-0 x̂0 (what the claims read: a mixture of the
    candidates; NNLS on a noisy state instead took 20x longer than on the x̂0 the claims fit), each timed the way
    the claims compute it: "decode", one row's video decoded alone (`step_videos`: a row's every step, one at a
    time); "batch_decode", one row of a run's rows decoded at once (`final_scores`, `final_scores_of`);
    "weights", an NNLS mixture of one video read back on its own (the final outcome of a swap or a distilled run);
    "step_weights", a row's mixtures at every step read back and solved together (per step: the clean run's
    per-step readouts) and "frame_weights", one frame's from the same read-back (per step); "score", one video
    scored alone (`final_scores`); "branch_score", one of a row's runs read back and scored with the row's others
    at once (`final_scores_of`: a sweep's branches); "cka", one of a row's branches compared with its clean run,
    prepared once, in one batched product (`LinearCKA.many` on x̂0 patch tokens: noise.information_flow). A
    stacked unit is priced per member of a stack of at most 8 (`steps` of them for the per-step units, the batch's
    rows for "batch_decode", 8 for "branch_score" and "cka"; 2 where a video is large): one lone call paid its
    small torch calls alone, and priced so (5.6 ms a mixture on a 16-core H100 host) cos.superposition's per-step
    mixtures came to 311 s for a claim that took ~7 s; a lone CKA of every voxel priced information_flow's
    readouts at 14.6-18.8 s for 4-8 s taken on the organism's gpu tier (benchmarks/results/gpu/eta-h100/; on a
    full model's latents the lone CKA cost less than a comparison of patch tokens does). Each is called once
    untimed, then `repeats` times back to back, and the median is kept: in a run these calls follow one another,
    so the thread pools are awake (a lone call after an idle pause paid their wake-up, ten times the call itself on
    a 64-core host)."""
    import statistics

    from cos.metrics import LinearCKA, patch_tokens

    inst, x = batch.instances[0], x0[:1]
    v = videos(system, x, clamp=False)[0]
    f = inst.num_frames - 1
    # at most 8 members: past the fixed overhead the cost a member is linear, and a full model's decoded video is
    # ~0.4 GB (50 copies held 19 GB of host memory to time a unit); where a video is large the overhead is
    # nothing beside it, and 2 members price it (one readback of a full model's video: 0.42 s on the 2-core VM)
    most = 8 if v.numel() <= LARGE_VIDEO else 2
    k = min(max(1, steps), most)
    rows = x0[:most]
    stack = torch.stack([v] * k)
    cells = inst.cells_of(stack)
    # information_flow's 2×2 patches; a closed-form model (patch 1) may run an odd --cos-size: timed on its crop
    h, w = x0.shape[-2:]
    lat = x0[0, ..., :h - h % 2, :w - w % 2]
    branches = torch.stack([lat] * most)
    out = {}
    for name, fn, units in (("decode", lambda: videos(system, x), 1),
                            ("batch_decode", lambda: videos(system, rows), len(rows)),
                            ("weights", lambda: inst.candidate_weights(v), 1),
                            ("step_weights", lambda: inst.cell_weights_of(inst.cells_of(stack)), k),
                            ("frame_weights", lambda: inst.cell_weights_of(cells, [f]), k),
                            ("score", lambda: inst.score(v), 1),
                            ("branch_score",
                             lambda: inst.cell_scores(torch.stack([inst.cells(v) for _ in range(most)])), most),
                            ("cka", lambda: LinearCKA(patch_tokens(lat)).many(patch_tokens(branches)), most)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / units)
        out[name] = statistics.median(times)
    return out


def fmt_s(t: float) -> str:
    t = max(0.0, t)
    if t >= 3600:
        return f"{t / 3600:.1f} h"
    if t >= 60:
        return f"{int(t // 60)}m{int(t % 60):02d}s"
    return f"{t:.0f}s" if t >= 10 else f"{t:.1f}s"


def terminal_writer(write: Callable[[str], None], isatty: bool, every_s: float = 30.0) -> Callable[[str, bool], None]:
    """A progress writer: on a terminal one line redrawn in place; into a log, a line every `every_s` and the last."""
    # None, not 0.0: time.monotonic() counts from an arbitrary origin (the boot on Linux), so on a machine up for
    # less than `every_s` (a fresh CI runner) a log got no first line at all
    last: list[float | None] = [None]

    def emit(text: str, final: bool) -> None:
        if isatty:
            write("\r" + text.ljust(90) + ("\n" if final else ""))
        elif final or last[0] is None or time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            write(text + "\n")
    return emit


def _stderr_writer() -> Callable[[str, bool], None]:
    import sys

    def write(t: str) -> None:
        sys.stderr.write(t)
        sys.stderr.flush()
    return terminal_writer(write, sys.stderr.isatty())


class Progress:
    """A claim's batches: done / total, elapsed, remaining. On rank 0 only (every host under --cos-shard)."""

    def __init__(self, ctx: RunContext, desc: str, total: int):
        self.desc, self.total, self.done, self.t0, self.last = desc, total, 0, time.monotonic(), 0.0
        self.on = ctx.progress and total >= 2 and (ctx.shard is not None or ctx.world.is_main)
        self.write = (ctx.progress_writer or _stderr_writer()) if self.on else None
        self.tracker = ctx.tracker      # the run's ETA, appended once it has a measured rate (cos.eta)
        self._emit(False)

    def _emit(self, final: bool) -> None:
        if not self.on:
            return
        el = time.monotonic() - self.t0
        left = f"~{fmt_s(el / self.done * (self.total - self.done))} left" if 0 < self.done < self.total else ""
        run = self.tracker.status() if self.tracker is not None else ""
        self.write(f"[cos] {self.desc}: {self.done}/{self.total} batches, {fmt_s(el)} elapsed {left}".rstrip()
                   + (f" · {run}" if run else ""), final)

    def step(self) -> None:
        self.done += 1
        if self.on and (self.done == self.total or time.monotonic() - self.last >= 1.0):
            self.last = time.monotonic()
            self._emit(False)

    def close(self) -> None:
        self._emit(True)
        self.on = False

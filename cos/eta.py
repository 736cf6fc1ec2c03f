"""The run's ETA is its plan, re-estimated after every batch; `--cos-budget` holds the plan to a GPU-hour budget.

The plan (`plan_work`): every claim still to run, in planned seconds, from the timed warm forward and host-side
readout units of `cos.runner.time_forward` (`price_forwards`): a claim's own work (its own runs' forwards and its
readouts) and the shared runs it reads (the clean run, the noise sweep: counted once, done by whichever reader
gets there first). Under sequential looks a claim may stop at any look: where, with what probability, comes from
`cos.plan.claim_stops` (a pilot's estimate and spread, or a prior), so the plan is the expected work; at fixed n
every claim runs all its units. Where the stops come from matters most: on the organism's gpu-tier run the
re-estimates from the prior missed by a median 37% of its wall time; replayed with the stops known, by 6%
(benchmarks/results/eta-h200/).
So the prior stops of claims not yet started move towards where this run's finished claims stopped (`_learn`).

`RunEstimate` follows the run: after each batch of any claim the claim's done fraction moves, the work done so far
is summed in planned seconds, and the measured rate is the wall time over that work since the run's first batch
was done (forwards, host readouts, conclusions, pytest's own time: everything the run spends, so none of it has to
be modelled; the first batch pays warm-ups the timed forward left out, so it is not part of the rate). The ETA
is the remaining planned work times that rate. A claim that passed a look without stopping
can only stop at a later one (its expectation is taken over the looks left); a claim that stopped early leaves
the plan with its unspent batches; a shared run another reader still needs stays in it. Every re-estimate is
kept (`trace`: seconds into the run, ETA, share of the plan done) so the error at each point can be computed
afterwards (benchmarks/eta_error.py). No ETA is shown before a batch after the first has given a rate.

What the result store holds already is not work (`cos.runner.stored_work`): a rerun of a killed run, or of a run
whose claims an earlier run measured, serves those batches' records without sampling. Per claim the plan keeps,
per unit, the share of its batches that is stored (`ClaimWork.stored`) and, per shared run it reads, the share
that will not sample it; its planned seconds up to a fraction of its units (`to_do`) count only the rest, so the
plan, the ETA and the rate (planned seconds done per wall second) leave the stored batches out alike. A process
runs only its own units (unit k on rank k mod n): a shard (`--cos-shard i/n`) is priced by what its own units
have left, a world of n ranks by its busiest rank's (`to_do`'s `ranks`, `rank`): what is stored unevenly over
the ranks (one shard's units finished, a rank that crashed) does not shorten the others' share.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from cos.errors import InputError

BUDGET_RULE = "must be a positive finite number of GPU-hours, optionally followed by :fit (e.g. 20 or 20:fit)"
MIN_FIT_INSTANCES = 2       # a claim's interval over instances needs two of them; below this --cos-budget refuses
# how many claims the prior of where a sequential claim stops weighs against those this run has finished. Two; on a
# replay of the organism's gpu-tier run one, two and four gave a median error of 28%, 29% and 32% of the wall time
# (benchmarks/results/eta-h200/: in-sample, one run, so no tuning beyond a round number)
PRIOR_WEIGHT = 2.0


def to_do(stored: Sequence[float], f: float, ranks: int = 1, rank: int | None = None) -> float:
    """The share of a claim's work up to fraction `f` of its units that the store does not hold: `f` itself when
    nothing is stored; else the units before f·U, each counted by the share of its batches not stored, and of the
    unit `f` falls in the part reached (`stored`: per unit in run order, the share of its batches stored).
    Over `ranks` processes, unit k runs on rank k mod `ranks` and each rank gets to `f` of its own units: with
    `rank` (a shard) the share of that rank's own units up to `f`; without, the busiest rank's, in shares of the
    largest rank's units (what the plan, priced at the busiest rank's share of the batches, pays for). Both are
    `f` when nothing is stored."""
    f = min(max(f, 0.0), 1.0)
    if not stored:
        return f
    if ranks > 1:
        if rank is not None:
            mine = stored[rank % ranks::ranks]
            return _to_do(mine, f) if mine else 0.0
        most = len(stored[0::ranks])
        return max(_to_do(stored[r::ranks], f) * len(stored[r::ranks]) / most
                   for r in range(min(ranks, len(stored))))
    return _to_do(stored, f)


def _to_do(stored: Sequence[float], f: float) -> float:
    n = len(stored)
    x = f * n
    i = min(int(x + 1e-9), n)
    part = (max(0.0, x - i) * (1.0 - stored[i])) if i < n else 0.0
    return (sum(1.0 - s for s in stored[:i]) + part) / n


@dataclass
class ClaimWork:
    """One claim in the plan: its own planned seconds and those of the shared runs it reads (both at its maximum
    n, on this rank), where it may stop, and how far it has got (fractions of its units)."""

    id: str
    own_s: float
    shared: dict[str, float]
    stops: list[tuple[float, float]]        # (fraction of its units, probability of stopping there)
    source: str = ""
    done: float = 0.0
    finished: bool = False
    units: int | None = None
    learn: bool = False                     # stops from the prior: moved towards where finished claims stopped
    prior: list[tuple[float, float]] | None = None
    # what the result store holds (cos.runner.stored_work), per unit in run order: the share of its batches whose
    # records are stored, and per shared run the share that will not sample it. Empty: nothing stored
    stored: tuple[float, ...] = ()
    shared_stored: dict[str, tuple[float, ...]] = field(default_factory=dict)
    batches: int = 0                        # its record batches, and how many of them are stored
    stored_batches: int = 0
    # the processes the units are split over (unit k on rank k mod ranks) and, for a shard, the one this is
    # (only its own units are its work); a world's plan is its busiest rank's (`to_do`)
    ranks: int = 1
    rank: int | None = None

    def _ahead(self) -> tuple[list[tuple[float, float]], float]:
        """The looks still ahead (a look at exactly `done` has not been taken yet) and their probability mass."""
        ahead = [(f, p) for f, p in self.stops if f >= self.done - 1e-9]
        return ahead, sum(p for _, p in ahead)

    def target(self) -> float:
        """The fraction of its units the claim is expected to end at, given it has got to `done` without
        stopping: the mean over the looks still ahead (a look at exactly `done` has not been taken yet)."""
        if self.finished:
            return self.done
        ahead, mass = self._ahead()
        if not ahead:
            return max(self.done, 1.0)
        exp = sum(f * p for f, p in ahead) / mass if mass > 0 else min(f for f, _ in ahead)
        return max(self.done, exp)

    def to_do(self, stored: Sequence[float], f: float) -> float:
        """`to_do` of `stored` at `f` over this claim's ranks."""
        return to_do(stored, f, self.ranks, self.rank)

    def expected_to_do(self, stored: Sequence[float] = ()) -> float:
        """`target` in work not served by the store (`to_do` of `stored`): the expectation, over the looks still
        ahead, of the work up to each; the same as `target` when nothing is stored."""
        if self.finished:
            return self.to_do(stored, self.done)
        ahead, mass = self._ahead()
        if not ahead:
            return self.to_do(stored, max(self.done, 1.0))
        if mass <= 0:
            return self.to_do(stored, max(self.done, min(f for f, _ in ahead)))
        return sum(p * self.to_do(stored, max(self.done, f)) for f, p in ahead) / mass


@dataclass
class RunEstimate:
    """The run's plan and its re-estimates (see the module doc). `t0`: when the plan was made (wall clock);
    `start`: the session's start, which trace times count from; `clock`: time.time (a test passes its own)."""

    claims: dict[str, ClaimWork]
    t0: float
    start: float
    clock: Callable[[], float] = field(default=time.time, repr=False)
    trace: list[tuple[float, float, float]] = field(default_factory=list)
    # [seconds into the run, claim, units done, its units]: every batch, so other estimators can be replayed
    events: list[list] = field(default_factory=list)
    batches: int = 0
    prior_weight: float = PRIOR_WEIGHT
    # the rate counts from the end of the run's first batch: that batch pays the warm-up the timed forward left
    # out (on the organism's gpu tier its first re-estimate said 837 s for 124 s left; the second 197 s)
    warm: tuple[float, float] | None = None     # (clock, planned seconds done) when the first batch was done
    # set by the xdist controller while a worker that started a claim has left no progress (cos.pytest_plugin's
    # `_waiting_workers`): the batch it is on counts nothing, so the rate would be the other workers' alone; no ETA
    hold: bool = False
    over_budget: Callable[[float], None] | None = field(default=None, repr=False)   # told elapsed + ETA
    # told the estimate after every batch and every claim's end (an xdist worker leaves its progress for the
    # controller: cos.pytest_plugin)
    listener: Callable[["RunEstimate"], None] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ the plan's arithmetic
    def _shared(self) -> tuple[float, float]:
        """(done, remaining) planned seconds of the shared runs: covered as far as their furthest reader got,
        still needed as far as the furthest expected target of a reader; a unit's batch of a shared run is not
        sampled where no reader needs it (`shared_stored`, per reader: the smallest share over the readers)."""
        done = left = 0.0
        names = {k for c in self.claims.values() for k in c.shared}
        for name in names:
            readers = [c for c in self.claims.values() if name in c.shared]
            secs = max(c.shared[name] for c in readers)
            flags = [c.shared_stored.get(name, ()) for c in readers]
            # readers of other unit counts (a claim that sizes its own instances) are not matched unit by unit
            skip = tuple(min(v) for v in zip(*flags)) if all(flags) and len({len(f) for f in flags}) == 1 else ()
            covered = readers[0].to_do(skip, max(c.done for c in readers))   # the readers' ranks are the run's
            need = max(c.expected_to_do(skip) for c in readers)
            done += secs * covered
            left += secs * max(0.0, need - covered)
        return done, left

    def work(self) -> tuple[float, float]:
        """(done, remaining) planned seconds of the whole plan (stored batches are neither)."""
        sd, sl = self._shared()
        done = sum(c.own_s * c.to_do(c.stored, c.done) for c in self.claims.values()) + sd
        left = sum(c.own_s * max(0.0, c.expected_to_do(c.stored) - c.to_do(c.stored, c.done))
                   for c in self.claims.values()) + sl
        return done, left

    def planned_s(self) -> float:
        """The plan's expected seconds from its start (at rate 1: the ETA printed before any claim runs)."""
        return sum(self.work())

    def rate(self) -> float | None:
        """Measured wall seconds per planned second since the first batch was done (None before a batch after it:
        nothing is measured)."""
        if self.warm is None:
            return None
        done = self.work()[0] - self.warm[1]
        return None if done <= 0 else max(0.0, self.clock() - self.warm[0]) / done

    def eta(self) -> float | None:
        r = None if self.hold else self.rate()
        return None if r is None else self.work()[1] * r

    def fraction(self) -> float:
        done, left = self.work()
        return done / (done + left) if done + left > 0 else 1.0

    # ------------------------------------------------------------------ told by the runner
    def _claim(self, cid: str) -> ClaimWork | None:
        return self.claims.get(cid)

    def started(self, cid: str, units: int, points: Sequence[int]) -> None:
        """A claim's units and its look points (unit counts): the plan's look fractions move onto them (a claim of
        few units looks fewer times: each planned stop goes to the first actual look at or after it)."""
        c = self._claim(cid)
        if c is None or units <= 0:
            return
        self._set_units(c, units)
        self.events.append([round(self.clock() - self.start, 2), cid, 0, units])
        actual = sorted({p / units for p in points} | {1.0})
        moved: dict[float, float] = {}
        for f, p in c.stops:
            at = min((a for a in actual if a >= f - 1e-9), default=1.0)
            moved[at] = moved.get(at, 0.0) + p
        c.stops = sorted(moved.items())

    @staticmethod
    def _set_units(c: ClaimWork, units: int) -> None:
        if c.stored and len(c.stored) != units:     # not the plan's units: what is stored is not known unit by unit
            c.stored, c.shared_stored = (), {}
        c.units = units

    def told(self, cid: str, done: float, units: int | None, stops: Sequence[Sequence[float]] = (),
             finished: bool = False) -> None:
        """Another process's word on `cid` (an xdist worker's, cos.pytest_plugin): its units (as `started`), how
        far it got (never backwards), its looks; `finished` there, it needs nothing more here either (the claim
        itself is marked finished by `finished`, once its end is reported)."""
        c = self._claim(cid)
        if c is None or c.finished:
            return
        # every value read before any is kept: a word of another shape raises and leaves the claim as it was
        units, done = int(units) if units else None, min(1.0, max(0.0, float(done)))
        stops = [(float(f), float(p)) for f, p in stops]
        if units:
            self._set_units(c, units)
        c.done = max(c.done, done)
        if stops:
            c.stops = stops
        if finished:
            c.stops = [(c.done, 1.0)]

    def ended(self, cid: str, done: float, units: int | None, stops: Sequence[Sequence[float]] = ()) -> None:
        """Another process finished `cid` at `done` of its `units` (`told`): an event, then `finished`."""
        c = self._claim(cid)
        if c is None or c.finished:
            return
        self.told(cid, done, units, stops)
        n = c.units or 0
        self.batches += 1
        self.events.append([round(self.clock() - self.start, 2), cid, round(c.done * n), n])
        self.finished(cid)

    def progress(self, cid: str, units_done: int) -> None:
        """A batch (unit) of `cid` is done: `units_done` of its units are; re-estimate."""
        c = self._claim(cid)
        if c is None or not c.units:
            return
        c.done = min(1.0, units_done / c.units)
        self.batches += 1
        self.events.append([round(self.clock() - self.start, 2), cid, units_done, c.units])
        if self.warm is None and self.work()[0] > 0:     # a batch served from the store warms nothing up
            self.warm = (self.clock(), self.work()[0])
        self._note()
        if self.listener is not None:
            self.listener(self)

    def finished(self, cid: str, units_done: int | None = None) -> None:
        """The claim ended (at its last look, stopped early, skipped or errored): it needs nothing more."""
        c = self._claim(cid)
        if c is None or c.finished:
            return
        if units_done is not None and c.units:
            c.done = min(1.0, units_done / c.units)
        c.finished = True
        self._learn()
        if self.batches:
            self._note()
        if self.listener is not None:
            self.listener(self)

    def _learn(self) -> None:
        """Move the prior stops of the claims not yet started towards where this run's finished sequential claims
        stopped: per look, counted from the last (claims of different sizes have different look fractions), with
        the prior weighing `prior_weight` claims. Claims whose stops came from a pilot keep them."""
        counts: dict[int, float] = {}
        for c in self.claims.values():
            if not (c.finished and c.units) or len(c.stops) < 2:
                continue
            fr = [f for f, _ in c.stops]
            at = min(range(len(fr)), key=lambda i: abs(fr[i] - c.done))
            counts[len(fr) - 1 - at] = counts.get(len(fr) - 1 - at, 0.0) + 1
        n = sum(counts.values())
        if not n:
            return
        w = n / (n + self.prior_weight)
        for c in self.claims.values():
            if not c.learn or c.units is not None or c.finished:
                continue
            c.prior = c.prior or list(c.stops)
            fr = [f for f, _ in c.prior]
            seen = sum(counts.get(len(fr) - 1 - i, 0.0) for i in range(len(fr)))
            c.stops = [(f, (1 - w) * p + w * counts.get(len(fr) - 1 - i, 0.0) / seen if seen else p)
                       for i, (f, p) in enumerate(c.prior)]

    def _note(self) -> None:
        eta = self.eta()
        if eta is None:
            return
        now = self.clock() - self.start
        self.trace.append((round(now, 2), round(eta, 2), round(self.fraction(), 4)))
        if self.over_budget is not None:
            self.over_budget(now + eta)

    def status(self) -> str:
        """`run: 41% · ETA 12m30s`, or "" while no rate is measured."""
        from cos.runner import fmt_s

        eta = self.eta()
        return "" if eta is None else f"run: {self.fraction():.0%} · ETA {fmt_s(eta)}"

    def record(self) -> dict:
        """For the run's provenance: the re-estimates and, per claim, the plan and what it used."""
        return {"trace": [list(t) for t in self.trace],
                "trace_fields": ["seconds into the run", "ETA s", "share of the plan done"],
                "events": self.events, "event_fields": ["seconds into the run", "claim", "units done", "its units"],
                "claims": {k: {"planned_s": round(c.own_s + sum(c.shared.values()), 2),
                               "expected_fraction": round(sum(f * p for f, p in (c.prior or c.stops)), 4),
                               "stops": [[round(f, 4), round(p, 4)] for f, p in c.stops],
                               "used_fraction": round(c.done, 4), "stops_from": c.source,
                               "batches": c.batches, "stored_batches": c.stored_batches}
                           for k, c in self.claims.items()}}


def plan_work(est: Mapping[str, Any], claims: Sequence[Any], settings: Any, system: Any, sequential: bool,
              pilot: Mapping[str, Mapping[str, Any]] | None = None,
              looks: int | None = None) -> tuple[dict[str, ClaimWork], dict]:
    """The plan's `ClaimWork` per claim from a priced estimate (`cos.runner.price_forwards`), and each claim's power
    at its effect where a pilot gives it (None otherwise); `looks`: the run's --cos-looks (None: the default)."""
    from cos.plan import PRIOR_SOURCE, claim_stops
    from cos.sequential import LOOKS

    looks = LOOKS if looks is None else looks
    t, share, cfg = est["seconds_per_row_forward"], est["share"], est.get("cfg", 1)
    out, power = {}, {}
    for c in claims:
        stops, pw, source = claim_stops(c, settings, system, sequential, (pilot or {}).get(c.id), looks)
        own = (est["per_claim"][c.id] * cfg * t + est["host_s_per_claim"][c.id]) * share
        shared = {k: n * cfg * t * share for k, n in c.shared_runs(settings, system).items()}
        out[c.id] = ClaimWork(c.id, own, shared, stops, source, learn=source == PRIOR_SOURCE)
        power[c.id] = pw
    return out, power


def price_plan(ctx: Any, system: Any, settings: Any, claims: Sequence[Any], timing: Mapping[str, Any],
               pilot: Mapping[str, Mapping[str, Any]] | None = None,
               own_stops: bool = True) -> tuple[dict, dict[str, ClaimWork], dict]:
    """The run's plan as the run prices it (its ETA, --cos-budget, `cos plan --store`): (priced estimate,
    `cos.runner.price_forwards` at `timing`; `ClaimWork` per claim, `plan_work`; power per claim at its effect),
    over `ctx`'s processes, with nothing stored (`with_stored` takes the store's batches off). `own_stops=False`:
    the looks stop claims by another rule than their own (a gate's, cos.gate), whose stops are not modelled:
    every claim is priced at its maximum n, and the ETA takes a claim's unspent batches off when it stops."""
    from cos.runner import price_forwards

    est = price_forwards(ctx, system, settings, claims, timing)
    # shards run every unit (no looks across hosts: cos.runner's alone_share), so they are priced at full n
    work, power = plan_work(est, claims, settings, system, ctx.sequential and ctx.shard is None and own_stops, pilot,
                            ctx.looks)
    return est, work, power


def expected_s(work: Mapping[str, ClaimWork]) -> float:
    """The plan's expected seconds before anything ran."""
    return RunEstimate(dict(work), 0.0, 0.0).planned_s()


def with_stored(work: Mapping[str, ClaimWork], stored: Mapping[str, Mapping[str, Any]]) -> dict[str, ClaimWork]:
    """The plan with what the result store holds taken off (`stored`: `cos.runner.stored_work`)."""
    return {k: w if k not in stored else replace(
        w, stored=tuple(stored[k]["records"]), shared_stored={n: tuple(v) for n, v in stored[k]["shared"].items()},
        batches=stored[k]["batches"], stored_batches=stored[k]["stored_batches"],
        ranks=stored[k].get("ranks", 1), rank=stored[k].get("rank")) for k, w in work.items()}


def nothing_stored(work: Mapping[str, ClaimWork]) -> dict[str, ClaimWork]:
    """The plan as if the store held nothing (every batch measured)."""
    return {k: replace(w, stored=(), shared_stored={}, stored_batches=0) for k, w in work.items()}


def stored_counts(work: Mapping[str, ClaimWork]) -> tuple[int, int]:
    """(record batches stored, record batches) over the plan's claims."""
    return sum(w.stored_batches for w in work.values()), sum(w.batches for w in work.values())


def parse_budget(value: Any, flag: str = "--cos-budget") -> tuple[float, bool]:
    """HOURS or HOURS:fit -> (hours, fit). One line naming the option, value and rule otherwise."""
    text = str(value).strip()
    head, sep, tail = text.partition(":")
    try:
        hours = float(head)
    except ValueError:
        hours = float("nan")
    if not (math.isfinite(hours) and hours > 0) or (sep and tail.strip().lower() != "fit"):
        raise InputError(f"{flag} {value!r}: {BUDGET_RULE}")
    return hours, bool(sep)


def gpu_hours(seconds: float, ranks: int) -> float:
    """GPU-hours of a run that takes `seconds` of wall time on `ranks` processes (one GPU each)."""
    return seconds * ranks / 3600


def planned_gpu_hours(work: Mapping[str, ClaimWork], ranks: int, at_s: float = 0.0) -> tuple[float, float]:
    """(GPU-hours of the plan, of the plan if the store held nothing) on `ranks` processes, after `at_s` seconds
    spent already (loading, timing): what --cos-budget holds the run to."""
    return gpu_hours(at_s + expected_s(work), ranks), gpu_hours(at_s + expected_s(nothing_stored(work)), ranks)


def fit_instances(cost_s: Callable[[int], float], n: int, limit_s: float, low: int = MIN_FIT_INSTANCES) -> int | None:
    """The most instances a task in [low, n) whose planned seconds `cost_s(k)` fit `limit_s` (bisection: the cost
    grows with k); None when even `low` does not."""
    if low >= n or cost_s(low) > limit_s:
        return None
    lo, hi = low, n - 1            # cost_s(lo) fits; find the largest that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost_s(mid) <= limit_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def budget_refusal(hours: float, need_h: float, planned: str, fit_note: str = "") -> str:
    """The one line a run over its budget ends with: the plan, the budget and how to go on."""
    return (f"--cos-budget {hours:g}: the plan needs {need_h:.3g} expected GPU-hours ({planned}), over the budget of "
            f"{hours:g}; {fit_note + '; ' if fit_note else ''}raise --cos-budget, select fewer claims (-k), lower "
            f"--cos-instances, or give --cos-budget {hours:g}:fit to size the claims down to fit")


def trace_errors(trace: Sequence[Sequence[float]], end_s: float, from_s: float) -> list[tuple[float, float, float]]:
    """Each re-estimate's error: (seconds into the run, the end it predicted (t + ETA) minus `end_s` as a share of
    the run's wall time from `from_s` (the ETA line) to `end_s`, the ETA minus the time then left as a share of
    that time left). The first is the goal's measure (issue 24: within ±25% of the wall time); the second grows
    without bound near the end (a second early with one second left is -100%). Times in seconds into the run."""
    wall = end_s - from_s
    return [(t, (t + eta - end_s) / wall, (eta - (end_s - t)) / (end_s - t))
            for t, eta, *_ in trace if end_s - t > 0 and wall > 0]


def apply_budget(hours: float, fit: bool, settings: Any, at_s: float, ranks: int,
                 price: Callable[[Any], tuple[dict, dict[str, ClaimWork], dict[str, float | None]]],
                 n_claims: int, price_bare: Callable[[Any], tuple] | None = None
                 ) -> tuple[Any, dict, str | None, list[str]]:
    """Hold the plan to `hours` GPU-hours: (settings to run at, the decision for the provenance, the refusal line
    or None, lines to print). `price(settings)` -> (priced estimate, plan work, power per claim at its effect);
    `at_s`: seconds the run has spent already (loading, timing), counted against the budget too. Over the budget
    a run is refused, or with `fit` sized down: the most instances a task that fit (`fit_instances`), every claim's
    own instance count scaled alike (`ClaimSettings.instance_scale`), with the power that leaves per claim.
    The plan is what the store does not hold yet (`with_stored`): a rerun of a killed run pays for its unfinished
    batches only, so a plan whose remainder fits runs as it is, unscaled (scaling would throw the stored batches
    away). A sized plan is priced with nothing stored: other instance counts are other rows and other store keys;
    `price_bare(settings)` (default `price`) prices it without looking the store up (the fit prices ~log2(n)
    sizes, and what the store holds of them is thrown away)."""
    from cos.runner import fmt_s

    price_bare = price_bare or price

    est, work, power = price(settings)
    eta = expected_s(work)
    need, need_bare = planned_gpu_hours(work, ranks, at_s)
    got, total = stored_counts(work)
    n = settings.instances
    doc: dict = {"hours": hours, "mode": "fit" if fit else "refuse", "ranks": ranks,
                 "planned_gpu_hours": round(need, 4), "planned_gpu_hours_if_nothing_stored": round(need_bare, 4),
                 "stored_batches": got, "total_batches": total, "instances": n}
    stored = (f"{need_bare:.3g} with nothing stored; {got} of {total} batches already stored" if got else "")
    if need <= hours:
        doc["within"] = "yes"
        return settings, doc, None, [f"[cos] --cos-budget {hours:g}{':fit' if fit else ''}: plan {need:.3g} "
                                     f"GPU-hours ({stored}), within the budget"] if got else []
    what = (f"{n_claims} claim{'s' if n_claims != 1 else ''}, {n} instances a task, {est['row_forwards']} row-forwards at "
            f"{est['seconds_per_row_forward']:.3g} s, {fmt_s(at_s)} so far + ETA {fmt_s(eta)} on {ranks} process(es)"
            + (f"; {stored}" if got else ""))
    if not fit:
        doc["within"] = "refused"
        return settings, doc, budget_refusal(hours, need, what), []
    sized = lambda k: replace(settings, instances=k, instance_scale=k / n * (settings.instance_scale or 1.0))
    k = fit_instances(lambda k: expected_s(nothing_stored(price_bare(sized(k))[1])), n,
                      hours * 3600 / ranks - at_s)
    if k is None:
        doc["within"] = "refused"
        return settings, doc, budget_refusal(hours, need, what, fit_note=(
            f"even {MIN_FIT_INSTANCES} instances a task do not fit" if n > MIN_FIT_INSTANCES
            else f"{n} instances a task are the fewest the fit goes to")), []
    fitted = sized(k)
    _, work, fit_power = price_bare(fitted)
    work = nothing_stored(work)
    doc.update(within="fitted", fitted_instances=k, scale=round(k / n, 4),
               fitted_gpu_hours=round(gpu_hours(at_s + expected_s(work), ranks), 4),
               power_at_effect={c: None if p is None else round(p, 3) for c, p in fit_power.items()},
               power_at_effect_unfitted={c: None if p is None else round(p, 3) for c, p in power.items()})
    known = ", ".join(f"{c} {p:.2f}" + (f" (was {power[c]:.2f})" if power.get(c) is not None else "")
                      for c, p in fit_power.items() if p is not None)
    unknown = [c for c, p in fit_power.items() if p is None]
    line = (f"[cos] --cos-budget {hours:g}:fit: the plan needed {need:.3g} GPU-hours; sized down to {k} of {n} "
            f"instances a task (every claim keeps {k / n:.0%} of its n: its interval ~{math.sqrt(n / k):.2f}x wider), "
            f"{doc['fitted_gpu_hours']:.3g} expected GPU-hours"
            + (f" (fewer instances are other rows under other store keys: the {got} stored batches cannot be reused, "
               "so the sized plan is priced with nothing stored)" if got else "")
            + ". Power at each claim's effect: "
            + (known + ("; " if unknown else "") if known else "")
            + (f"unknown without a pilot's spread (--cos-pilot) for {', '.join(unknown)}" if unknown else ""))
    return fitted, doc, None, [line]

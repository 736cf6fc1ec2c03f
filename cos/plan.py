"""`cos plan`: what a claims run costs and what it can detect, before a GPU-hour is spent.

Per claim: its maximum n (units its interval is over), the row-forwards of its own runs and of the shared runs it
reads (counted once in the total), GPU-hours at a measured or given time per row-forward, and, where a pilot run
gives the spread of the claim's units, the power at the claim's effect size and the minimum detectable effect at
the maximum n; with sequential decisions (`cos.sequential`) the expected n and GPU-hours at that effect.

The effect size is the claim's `ClaimSpec.effect` (distance from its threshold, in the claim's own units) with
`effect_note` saying where it comes from: the paper's numbers where they give one in those units, otherwise a
size chosen and said why (`no_paper_size`). The spread comes from a pilot: a `claims-status.json` of the same
claims at any n (its rows' intervals give se at that n; sd per unit = se·√n, scaled to the plan's n by 1/√n).
The se is read from an interval by a normal approximation (width / 2z): for a small-n bootstrap-t interval this
overstates se (up to 2× at n = 8), so the power stated is a lower bound. Without a pilot the power is unknown and
said so: no number is made up.

Expected n under the sequential rule: the looks' joint law with the drift the effect gives (Brownian motion at the
looks' information fractions, `MC_PATHS` paths), stopped where the rule stops (decided, or futile at conditional
power below `FUTILITY_POWER`); at the null (effect 0) too.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import optimize, stats

from cos import sequential as seq

MC_PATHS = 20_000
POWER_GOAL = 0.8
PRIOR_SOURCE = f"prior: as if sized for {POWER_GOAL:.0%} power (no pilot row)"


@functools.lru_cache(maxsize=64)
def theta_for_power(sequential: bool, goal: float = POWER_GOAL, n_max: int | None = None,
                    looks: int = seq.LOOKS, batches: int | None = None) -> float:
    """The effect, in standard errors at the maximum n, that the decision rule detects with power `goal`."""
    return float(optimize.brentq(lambda th: sequential_profile(th, sequential, n_max=n_max, looks=looks,
                                                               batches=batches)[0] - goal, 0.5, 8.0, xtol=1e-3))


def look_fractions(looks: int = seq.LOOKS, batches: int | None = None) -> tuple[float, ...]:
    """Where a claim's looks fall, as fractions of its units: after `cos.sequential.look_points(batches, looks)` of
    its `batches`, as the runner takes them (with few batches they are later than k/looks, and several collapse
    into one: 7 batches at 5 looks are looked at after 2, 3, 5, 6 and 7), or at k/looks where the count is
    unknown."""
    if batches:
        return tuple(b / batches for b in seq.look_points(batches, looks))
    return tuple(k / looks for k in range(1, looks + 1))


def takes_looks(claim: Any, settings: Any) -> bool:
    """Whether the claim can stop at a look in a run at `settings`: written as records, and not a VBVR run (whose
    claims are generated and scored, not records)."""
    return bool(getattr(claim, "by_records", False)) and not settings.extra.get("vbvr")


def claim_layout(claim: Any, system: Any, settings: Any) -> tuple[int, int | None]:
    """(units, batches) of a claim in a run at `settings`. Units: what its interval is over, `max_units` at the
    settings its `measure` hands `measure_records` (`cos.runner.records_call`): a claim that sizes its own rows
    concludes over fewer than the tier's (on the full tier layers.swap_flip over 5 instances, ensemble.mid_layers
    and frames.count over 16, not 40). Batches: the runner's units under sequential looks (`RunContext.units_of`:
    task-interleaved, one per k-th batch of every phase; instances as ids, nothing made), where the looks fall.
    Where the claim cannot be followed without running something (distill.four_step's fast model), or is not
    written as records: (`max_units` at `settings`, None), and the plan puts its looks at k/looks."""
    from cos.settings import instances

    units = int(claim.max_units(settings, system)) if hasattr(claim, "max_units") else len(instances(settings))
    if not getattr(claim, "by_records", False):
        return units, None
    from cos.runner import batch_units, records_call, row_ids

    call = records_call(claim, system, settings, sequential=True)
    if call is None:
        return units, None
    s_run, kw = call
    try:
        return (int(claim.max_units(s_run, system)),
                len(batch_units(claim.batch_settings(s_run, **kw), interleave=True, instances_of=row_ids)) or None)
    except Exception:  # noqa: BLE001 - a plan is never refused for this: the tier's units, the looks at k/looks
        return units, None


@dataclass
class ClaimPlan:
    max_n: int
    expected_n: float
    expected_n_at_null: float
    row_forwards: int
    expected_row_forwards: float
    gpu_hours: float | None
    expected_gpu_hours: float | None
    power_at_paper_effect: float | None
    mde: float | None
    effect: float | None
    no_paper_size: bool
    effect_note: str
    se_source: str
    n_for_power: int | None = None      # units for POWER_GOAL at the effect, under the plan's decision rule


def unit_sd(row: Mapping[str, Any]) -> float | None:
    """sd per unit from a pilot row's interval and n (normal approximation; None where the row has no interval)."""
    lo, hi, n = row.get("ci_low"), row.get("ci_high"), row.get("n")
    if lo is None or hi is None or not n or n < 2 or not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    looks = ((row.get("details") or {}).get("sequential") or {}).get("looks") or []
    conf = looks[-1].get("confidence", 0.95) if looks else 0.95     # a row stopped early is at its look's level
    return (hi - lo) / (2 * float(stats.norm.isf((1 - conf) / 2))) * math.sqrt(n)


def sequential_profile(theta: float, sequential: bool, paths: int = MC_PATHS, seed: int = 0,
                       n_max: int | None = None, looks: int = seq.LOOKS,
                       batches: int | None = None) -> tuple[float, float]:
    """(power, expected fraction of the maximum n) of a claim whose effect is `theta` standard errors (at the
    maximum n) from its threshold: with the looks of `cos.sequential` when `sequential`, else one look at the end.
    With `n_max` (the claim's units), the runner's minimums apply: a look with fewer than MIN_LOOK_UNITS units
    decides nothing, one with fewer than FUTILITY_MIN_UNITS does not stop for futility. `looks` (--cos-looks) and
    `batches` (the claim's, `claim_layout`): where the looks fall (`look_fractions`)."""
    power, stops = stop_profile(theta, sequential, paths, seed, n_max, looks, batches)
    return power, float(sum(f * p for f, p in stops))


def stop_profile(theta: float, sequential: bool, paths: int = MC_PATHS, seed: int = 0,
                 n_max: int | None = None, looks: int = seq.LOOKS,
                 batches: int | None = None) -> tuple[float, list[tuple[float, float]]]:
    """(power, [(look fraction, probability the claim stops there)]) under the same model as
    `sequential_profile`: the run's ETA (cos.eta) needs where a claim may stop, not only its mean, to re-estimate
    a claim that passed a look without stopping."""
    if not sequential:
        c = float(stats.norm.isf(seq.ALPHA / 2))
        return float(stats.norm.sf(c - theta)), [(1.0, 1.0)]     # decided on the effect's side
    planned = seq.plan_looks(list(look_fractions(looks, batches)))
    t = np.array([lk.fraction for lk in planned])
    rng = np.random.default_rng(seed)
    inc = rng.standard_normal((paths, t.size)) * np.sqrt(np.diff(np.concatenate([[0.0], t])))
    b = np.cumsum(inc, axis=1) + theta * t                 # B(t) = Z(t)·√t with drift theta
    z = b / np.sqrt(t)
    stop_at = np.full(paths, t.size - 1)
    decided_right = np.zeros(paths, dtype=bool)
    alive = np.ones(paths, dtype=bool)
    for k, lk in enumerate(planned):
        units = None if n_max is None else n_max * lk.fraction
        if not lk.final and units is not None and units < seq.MIN_LOOK_UNITS:
            continue
        cross = alive & (np.abs(z[:, k]) > lk.boundary)
        decided_right |= cross & (z[:, k] > 0)
        stop_at[cross] = k
        alive &= ~cross
        if not lk.final and (units is None or units >= seq.FUTILITY_MIN_UNITS):
            drift_end = np.abs(z[:, k]) / np.sqrt(lk.fraction)
            cp = stats.norm.cdf((drift_end - planned[-1].boundary) / np.sqrt(1 - lk.fraction))
            futile = alive & (cp < seq.FUTILITY_POWER)
            stop_at[futile] = k
            alive &= ~futile
    counts = np.bincount(stop_at, minlength=t.size) / paths
    return float(decided_right.mean()), [(float(t[k]), float(counts[k])) for k in range(t.size)]


def _minimums_key(n_max: int | None, looks: int = seq.LOOKS, batches: int | None = None) -> int | None:
    """`n_max` where the runner's minimums (MIN_LOOK_UNITS, FUTILITY_MIN_UNITS) still skip a look, else None (every
    look active: the profile no longer depends on n_max, so one cached `theta_for_power` serves every larger n)."""
    if n_max is None or n_max * look_fractions(looks, batches)[0] >= max(seq.MIN_LOOK_UNITS, seq.FUTILITY_MIN_UNITS):
        return None
    return int(n_max)


def claim_stops(claim: Any, settings: Any, system: Any, sequential: bool,
                pilot_row: Mapping[str, Any] | None = None,
                looks: int = seq.LOOKS) -> tuple[list[tuple[float, float]], float | None, str]:
    """Where a claim may stop, as [(fraction of its units, probability)], with its power at its effect size (None
    where unknown) and where both come from. Fixed n (or a claim not written as records): at the end, surely.
    Sequential with a pilot row: the looks' law at the claim's effect and the pilot's spread at its maximum n (as
    `plan`), except that where it stops follows the pilot's own estimate (its distance from the threshold, either
    side, in standard errors at n_max): a model that fails or holds by far stops early whatever the paper's effect.
    Sequential without one: a prior, the claim as if sized for POWER_GOAL at its effect (`theta_for_power`); the
    run's ETA (cos.eta) moves it towards where this run's finished claims stopped."""
    if not sequential or not takes_looks(claim, settings):
        return [(1.0, 1.0)], None, "fixed n: every unit"
    n_max, nb = claim_layout(claim, system, settings)
    effect = getattr(claim.spec, "effect", None)
    sd = unit_sd(pilot_row) if pilot_row else None
    key = _minimums_key(n_max, looks, nb)
    if sd and n_max > 0:
        se = sd / math.sqrt(n_max)
        power = stop_profile(abs(effect) / se, True, n_max=key, looks=looks, batches=nb)[0] if effect else None
        measured = pilot_row.get("measured")
        th = (pilot_row.get("details") or {}).get("threshold", claim.spec.threshold)
        if isinstance(measured, (int, float)) and math.isfinite(measured):
            # where it stops depends on how far the model's own value lies from the threshold, on either side
            # (decided or futile alike): the pilot's estimate, not the paper's effect
            _, stops = stop_profile(abs(measured - th) / se, True, n_max=key, looks=looks, batches=nb)
            return stops, power, f"pilot (n={pilot_row.get('n')}): its estimate {measured:.3g} against {th:g}"
        if power is not None:
            return stop_profile(abs(effect) / se, True, n_max=key, looks=looks, batches=nb)[1], power, \
                f"pilot spread (n={pilot_row.get('n')}) at its effect {effect:g}"
    _, stops = stop_profile(theta_for_power(True, n_max=key, looks=looks, batches=nb), True, n_max=key,
                            looks=looks, batches=nb)
    return stops, None, PRIOR_SOURCE


def left_to_run(ctx: Any, system: Any, settings: Any, claims: Sequence[Any], timing: Mapping[str, Any],
                pilot: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """What the run has left once what its result store (`ctx.store`) holds is taken off, priced as the run prices
    it (its ETA and --cos-budget: `cos.eta.price_plan` at `timing`, `cos.runner.stored_work`, `cos.eta.with_stored`,
    `cos.eta.planned_gpu_hours`): per claim its stored and total record batches and GPU-hours left (its shared runs
    included, as its row), and the whole plan's (shared runs once), each with its GPU-hours if nothing were stored.
    GPU-hours as --cos-budget counts them: the busiest process's seconds times `ctx`'s processes. Only looks the
    store up (`ResultStore.has`): nothing is written or claimed."""
    from cos.eta import planned_gpu_hours, price_plan, stored_counts, with_stored
    from cos.runner import stored_work

    est, work, _ = price_plan(ctx, system, settings, claims, timing, pilot)
    work = with_stored(work, stored_work(ctx, claims, system, settings))
    ranks = est["ranks"]

    def row(w: Mapping[str, Any]) -> dict:
        left, bare = planned_gpu_hours(w, ranks)
        got, total = stored_counts(w)
        return {"stored_batches": got, "total_batches": total, "gpu_hours_left": left,
                "gpu_hours_if_nothing_stored": bare}
    return {"claims": {k: row({k: w}) for k, w in work.items()}, "total": row(work), "ranks": ranks,
            "readouts_timed": bool(timing.get("readout_seconds"))}


def plan(system, settings, claims: Sequence[Any], seconds_per_forward: float | None, gpus: int = 1,
         pilot: Mapping[str, Mapping[str, Any]] | None = None, sequential: bool = False,
         pilot_name: str = "", left: Mapping[str, Any] | None = None, store: str = "",
         looks: int = seq.LOOKS) -> dict:
    """The plan of `claims` at `settings` (see the module doc): {"claims": {id: ClaimPlan as dict}, "total": {...}}.
    With `left` (`left_to_run` of the result store at `store`): each claim and the total also say what the store
    holds and the GPU-hours left, and "store" says how they are priced."""
    cfg = 2 if settings.guidance_scale > 1 else 1
    out, shared_readers = {}, {}
    z = float(stats.norm.isf(seq.ALPHA / 2))
    for c in claims:
        spec = c.spec
        n_max, nb = claim_layout(c, system, settings)
        by_records = takes_looks(c, settings)
        nb = nb if sequential and by_records else None
        own = int(c.cost(settings, system)) * cfg
        shared = {k: v * cfg for k, v in c.shared_runs(settings, system).items()}
        effect, note = getattr(spec, "effect", None), getattr(spec, "effect_note", "")
        row = (pilot or {}).get(spec.id)
        sd = unit_sd(row) if row else None
        se = sd / math.sqrt(n_max) if sd and n_max > 0 else None
        power = mde = n_pow = None
        frac = frac0 = 1.0
        if se:
            mde = (z + float(stats.norm.ppf(0.8))) * se
            _, frac0 = sequential_profile(0.0, sequential, n_max=n_max, looks=looks, batches=nb)
            if effect is not None:
                power, frac = sequential_profile(abs(effect) / se, sequential, n_max=n_max, looks=looks, batches=nb)
                # se ∝ 1/√n: the n at which the effect is theta_for_power standard errors from the threshold
                n_pow = int(math.ceil((theta_for_power(sequential, n_max=n_max, looks=looks, batches=nb) * sd
                                       / abs(effect)) ** 2)) if effect else None
        elif sequential:
            frac = frac0 = float("nan")    # unknown without a spread: the maximum is what is planned
        if not by_records:                 # a claim not written as records runs to its maximum n
            frac = frac0 = 1.0
        f = 1.0 if math.isnan(frac) else frac
        for k, v in shared.items():
            shared_readers.setdefault(k, []).append((v, f))
        rf = own + sum(shared.values())
        out[spec.id] = ClaimPlan(
            max_n=n_max, expected_n=round(n_max * frac, 1) if not math.isnan(frac) else float("nan"),
            expected_n_at_null=round(n_max * frac0, 1) if not math.isnan(frac0) else float("nan"),
            row_forwards=rf, expected_row_forwards=round(own * f + sum(shared.values()) * f, 1),
            gpu_hours=None if seconds_per_forward is None else rf * seconds_per_forward / 3600 / gpus,
            expected_gpu_hours=None if seconds_per_forward is None else (own * f + sum(shared.values()) * f)
            * seconds_per_forward / 3600 / gpus,
            power_at_paper_effect=None if power is None else round(power, 3), mde=mde, effect=effect,
            no_paper_size=not note.startswith("paper"), effect_note=note,
            n_for_power=n_pow, se_source=(f"pilot {pilot_name}: {spec.id} n={row.get('n')}" if sd else
                       "no pilot row with an interval: power unknown"))
    shared_total = sum(max(v for v, _ in rs) for rs in shared_readers.values())
    shared_expected = sum(max(v * f for v, f in rs) for rs in shared_readers.values())
    own_total = sum(p.row_forwards for p in out.values()) - sum(v for rs in shared_readers.values() for v, _ in rs)
    own_expected = sum(p.expected_row_forwards for p in out.values()) - \
        sum(v * f for rs in shared_readers.values() for v, f in rs)
    rf_total, rf_exp = own_total + shared_total, own_expected + shared_expected
    hours = (lambda n: None if seconds_per_forward is None else n * seconds_per_forward / 3600 / gpus)
    p = {"claims": {k: {**asdict(v), **(left["claims"].get(k, {}) if left else {})} for k, v in out.items()},
         "total": {"row_forwards": int(rf_total), "expected_row_forwards": round(rf_exp, 1),
                   "gpu_hours": hours(rf_total), "expected_gpu_hours": hours(rf_exp), **(left["total"] if left else {})},
         "settings": {"tier": settings.tier, "steps": settings.steps, "size": [settings.height, settings.width,
                      settings.num_frames], "guidance_scale": settings.guidance_scale,
                      "instances": settings.instances, "seeds": list(settings.seeds)},
         "seconds_per_forward": seconds_per_forward, "gpus": gpus, "sequential": sequential,
         "looks": looks if sequential else 1,
         "pilot": pilot_name or None,
         "notes": ["row-forwards: one row through one expert for one step, per CFG pass; shared runs once",
                   "GPU-hours divide by --gpus at efficiency 1 (benchmarks/scaling.sh measures it)",
                   "power: at the claim's effect size, from the pilot's spread (a lower bound: see cos.plan)"]}
    if left:
        p["store"] = {"path": store, "ranks": left["ranks"], "readouts_timed": left["readouts_timed"]}
        p["notes"].append("GPU-hours left: what the result store does not hold, priced as the run's ETA and "
                          "--cos-budget price it (cos.eta: expected seconds of the busiest of --gpus processes, "
                          "forwards plus timed host readouts, times --gpus); if nothing stored: the same plan whole")
    return p


def load_pilot(path: str | Path) -> dict[str, dict]:
    """Rows of a claims-status.json by id (one clean line on a file that is not one)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
        rows = d["claims"]
        return {r["id"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--pilot {p}: not a readable claims-status.json ({type(e).__name__}: {e})") from None


def table(p: dict) -> str:
    """The plan as a text table (tabulate)."""
    from tabulate import tabulate

    fmt = lambda v, d=3: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        f"{v:.{d}g}" if isinstance(v, float) else str(v))
    store = "store" in p
    # a claim not looked up in the store (not written as records, VBVR, distill's fast model) is priced whole
    held = (lambda c: [f"{c['stored_batches']}/{c['total_batches']}" if c["total_batches"] else "–",
                       # against its own whole (the budget's measure: busiest process x ranks, with readouts),
                       # not the GPU-h column beside it (forwards over --gpus)
                       f"{fmt(c['gpu_hours_left'])} of {fmt(c['gpu_hours_if_nothing_stored'])}"] if store else [])
    rows = [[k, c["max_n"], fmt(c["expected_n"]), c["row_forwards"], fmt(c["expected_row_forwards"], 4),
             fmt(c["gpu_hours"]), fmt(c["expected_gpu_hours"]), *held(c),
             fmt(c["effect"]) + (" (chosen)" if c["no_paper_size"] and c["effect"] is not None else ""),
             fmt(c["power_at_paper_effect"], 2), fmt(c["mde"]), fmt(c["n_for_power"])]
            for k, c in p["claims"].items()]
    t = p["total"]
    rows.append(["total", "", "", t["row_forwards"], fmt(t["expected_row_forwards"], 4), fmt(t["gpu_hours"]),
                 fmt(t["expected_gpu_hours"]), *held(t), "", "", "", ""])
    return tabulate(rows, headers=["claim", "max n", "expected n", "row-forwards", "expected", "GPU-h",
                                   "expected GPU-h", *(["stored batches", "budget GPU-h left"] if store else []),
                                   "effect", "power", "MDE", f"n for {POWER_GOAL:.0%}"])


def store_line(p: dict) -> str:
    """One line on what the plan's result store holds and leaves ("" for a plan without a store)."""
    if "store" not in p:
        return ""
    t, s = p["total"], p["store"]
    return (f"store {s['path']}: {t['stored_batches']} of {t['total_batches']} record batches stored; "
            f"{t['gpu_hours_left']:.3g} GPU-hours left ({t['gpu_hours_if_nothing_stored']:.3g} if nothing stored), "
            f"as the run's ETA and --cos-budget price them on {s['ranks']} process(es)"
            + ("" if s["readouts_timed"] else " (forwards only: --seconds-per-forward times no host readouts)")
            # the keys hold the settings and the model's dtype: a run made with other options than these has
            # other keys (cos plan has no --cos-steps, --cos-size, --cos-tasks, LoRAs, ...)
            + ("; 0 stored can also mean the run used other settings (steps, size, tasks, LoRAs) than this plan"
               if t["stored_batches"] == 0 else ""))

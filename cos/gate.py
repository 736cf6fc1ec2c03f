"""Gate a model change as a paired experiment: both models on the same rows, an interval on each claim's change.

`cos gate --model NEW --against OLD` (or pytest with `--cos-against OLD`) measures every selected claim on both
models with the same task instances and noise seeds. The change of a claim's measured quantity is then estimated
on the rows both have, paired by task instance (the unit every claim's interval is over: a task instance's seeds
are averaged, so rows that share an instance are one cluster).

Why a jackknife. A claim's estimate is whatever its `conclude` computes from its records (a mean of per-instance
differences, a share over anchor-task instances, a pooled score minus chance), so the gate does not re-derive it:
it recomputes the estimate with each instance left out (`cos.stats.point_estimates`: no resampling inside) and
forms Quenouille-Tukey pseudo-values, n·θ − (n − 1)·θ₍₋ᵢ₎. For a mean over instances they are the instances' own
values exactly, so the paired change's interval is the coverage-checked bootstrap-t of `cos.stats.bootstrap_ci`
over the per-instance differences of pseudo-values; for a smooth non-linear estimate (a ratio, a share of a
subset) they are its standard linearisation. An instance that moves neither model's estimate when left out (a
non-anchor instance of a share over anchor tasks) carries no information about it and is left out of the n
(otherwise its pseudo-value difference, exactly the change itself, would shrink the interval).

The decision (`decide_change`): a claim regresses when its change is confidently worse than its tolerance (the
whole interval beyond −tolerance on the claim's bad side), or when its status flips from `holds` and the change is
confidently worse than zero. A flip by noise alone (the interval covers zero) does not fail the gate. Each row also
says what it could have caught (`resolution`): an undecided, underpowered pass is not evidence of no regression.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cos.records import Concluded

SCHEMA = "cos.gate/1"
# the tolerance is this fraction of the effect size the claim is sized for (ClaimSpec.effect: its distance from
# the threshold in the claim's own units) unless the claim declares `gate_tolerance`: a change that loses half the
# effect a run is sized to see is a regression worth failing a merge on; less is within what a retrain moves
TOLERANCE_FRACTION = 0.5


def tolerance(claim: Any, fraction: float | None = None) -> float | None:
    """The change (in the claim's units, on its bad side) beyond which it regresses: the claim's own
    `gate_tolerance`, else `fraction` (default TOLERANCE_FRACTION) of its spec's effect; None without either."""
    own = getattr(claim, "gate_tolerance", None)
    if own is not None:
        return float(own)
    eff = claim.spec.effect
    return None if eff is None else (TOLERANCE_FRACTION if fraction is None else fraction) * float(eff)


def _estimate(claim: Any, bundle: Concluded, records: list[dict]) -> float:
    from cos.stats import point_estimates

    with point_estimates():
        r = bundle.conclude(claim, records)
    if r.measured is None or not math.isfinite(r.measured):
        raise ValueError(f"no estimate ({r.status}{': ' + r.reason if r.reason else ''})")
    return float(r.measured)


def units(records: list[dict]) -> dict[str, tuple]:
    """Instance id → the sorted seeds of its rows (what must match for two models' rows to pair)."""
    out: dict[str, set] = {}
    for r in records:
        out.setdefault(str(r["instance"]), set()).add(r.get("seed"))
    return {k: tuple(sorted(v, key=repr)) for k, v in out.items()}


def pseudo_values(claim: Any, bundle: Concluded, keep: list[str]) -> tuple[float, dict[str, float], dict[str, float]]:
    """(θ on the `keep` instances, their pseudo-values, each leave-one-out θ₍₋ᵢ₎)."""
    keep_set = set(keep)
    recs = [r for r in bundle.records if str(r["instance"]) in keep_set]
    theta, n = _estimate(claim, bundle, recs), len(keep)
    loo = {u: _estimate(claim, bundle, [r for r in recs if str(r["instance"]) != u]) for u in keep}
    return theta, {u: n * theta - (n - 1) * t for u, t in loo.items()}, loo


def paired_change(claim: Any, new: Concluded, old: Concluded, confidence: float = 0.95) -> dict:
    """The change new − old of the claim's estimate on the rows both models have, with its paired interval (see
    the module docstring), the unpaired interval's width beside it, and n. Raises ValueError with the reason when
    no change can be estimated (no shared rows, a conclusion that needs an instance left out)."""
    from cos.stats import bootstrap_ci

    un, uo = units(new.records), units(old.records)
    shared = sorted(u for u in un if u in uo and un[u] == uo[u])
    if len(shared) < 2:
        raise ValueError(f"{len(shared)} task instance(s) with the same seeds in both runs; a paired change needs 2 "
                         "(were both run at the same settings?)")
    t_new, pv_new, loo_new = pseudo_values(claim, new, shared)
    t_old, pv_old, loo_old = pseudo_values(claim, old, shared)
    # an instance that moves neither estimate carries nothing about it (see the module docstring)
    used = [u for u in shared if not (math.isclose(loo_new[u], t_new, rel_tol=0, abs_tol=1e-12)
                                      and math.isclose(loo_old[u], t_old, rel_tol=0, abs_tol=1e-12))]
    if not used:
        # no instance moves either estimate: every instance has the same value in each model (a planted oracle's
        # 1.0 against a null's 0.0), not a subset that leaves some out; each is then one paired difference, all
        # equal, and the reason below says so (an estimate that reads no instance at all ends here too)
        used = list(shared)
    out = {"change": t_new - t_old, "new": t_new, "old": t_old, "n": len(used), "n_shared": len(shared),
           "ci": None, "width_ratio_unpaired": None, "method": "jackknife pseudo-values per task instance, "
           "bootstrap-t of their paired differences"}
    if len(used) < 2:
        out["why_no_interval"] = f"{len(used)} instance(s) move the estimate: no interval"
        return out
    a, b = np.array([pv_new[u] for u in used]), np.array([pv_old[u] for u in used])
    d = a - b
    # pseudo-values carry float error (n·θ − (n − 1)·θ₍₋ᵢ₎): equal differences must be seen as equal, or the
    # bootstrap returns an interval ~1e-15 wide and the row says it catches anything beyond its tolerance (review)
    scale = max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))     # the error is the pseudo-values' size
    if np.ptp(d) <= 1e-9 * scale:
        m = float(d.mean())
        d = np.full_like(d, 0.0 if abs(m) <= 1e-9 * scale else m)
    est = bootstrap_ci(d, confidence=confidence)
    out["change_jackknife"] = float(d.mean())
    if not est.decidable:     # every instance changed by the same amount: a point, not an interval
        out["identical"] = bool(np.all(d == 0))
        n = len(used)
        if not out["identical"] and np.ptp(d) == 0 and 1 - 2 * 0.5 ** n >= confidence:
            # n equal paired differences: the distribution-free interval for their median, [x_(1), x_(n)], covers
            # it with probability 1 - 2·0.5^n (the sign test's), and is the point itself. So a planted oracle's
            # 1 -> 0 on every instance is decided from 6 instances at 95% (5 give 0.94), not left undecided
            out["ci"] = [float(d[0]), float(d[0])]
            out["method"] = (f"all {n} paired differences equal: the order-statistic (sign-test) interval for "
                             f"their median, coverage 1 - 2·0.5^{n} = {1 - 2 * 0.5 ** n:.3f}")
            return out
        out["why_no_interval"] = (f"all {n} paired differences equal {est.value:.3g}"
                                  + ("" if out["identical"] else f" (a point interval needs n >= "
                                     f"{math.ceil(math.log2(2 / (1 - confidence)))} at {confidence:.0%})"))
        return out
    out["ci"] = [float(est.ci_low), float(est.ci_high)]
    sd_pair = float(d.std(ddof=1))
    out["sd_pair"] = sd_pair
    sd_unpaired = math.sqrt(float(a.var(ddof=1)) + float(b.var(ddof=1)))
    out["width_ratio_unpaired"] = (sd_unpaired / sd_pair) if sd_pair > 0 else None
    return out


def beyond_tolerance(direction: str, ci: list[float] | None, tol: float | None) -> bool:
    """Whether the change's interval lies wholly beyond −tol on the claim's bad side: the tolerance route of
    `decide_change` (the one `resolution`'s `catches` describes; a status flip also needs only < 0)."""
    if ci is None or tol is None:
        return False
    sign = 1.0 if direction == ">" else -1.0
    return max(sign * ci[0], sign * ci[1]) < -tol


def decide_change(direction: str, change: dict, tol: float | None, status_new: str, status_old: str) -> dict:
    """The gate's verdict on one claim from its paired change (`paired_change`), tolerance and both statuses:
    {"regressed", "verdict", "reason"}. Worse means against the claim's direction ('>': a decrease)."""
    sign = 1.0 if direction == ">" else -1.0
    ci = change.get("ci")
    flip = status_old == "holds" and status_new != "holds"
    if ci is None and change.get("identical"):
        return {"regressed": False, "verdict": "unchanged", "reason": "the same value on every paired instance"}
    if ci is None:
        return {"regressed": False, "verdict": "undecided",
                "reason": change.get("why_no_interval", "no interval") + ("; holds → " + status_new if flip else "")}
    lo, hi = sorted((sign * ci[0], sign * ci[1]))      # the interval on the good-is-positive scale
    worse_than_tol = beyond_tolerance(direction, ci, tol)
    worse = hi < 0
    if worse_than_tol:
        return {"regressed": True, "verdict": "regressed",
                "reason": f"confidently worse by more than the tolerance {tol:.3g}"}
    if flip and worse:
        return {"regressed": True, "verdict": "regressed",
                "reason": f"holds → {status_new}, and the change is confidently worse"}
    if tol is not None and lo > tol:
        return {"regressed": False, "verdict": "improved", "reason": f"confidently better by more than {tol:.3g}"}
    if tol is not None and -tol < lo and hi < tol:
        return {"regressed": False, "verdict": "unchanged", "reason": f"change within ±{tol:.3g}"}
    return {"regressed": False, "verdict": "undecided",
            "reason": "the interval reaches past the tolerance on neither side decidedly"
            + (f"; holds → {status_new} by noise alone (the change's interval covers 0)" if flip else "")}


POWER = 0.8


def resolution(change: dict, tol: float | None, effect: float | None, confidence: float = 0.95,
               power: float = POWER, direction: str | None = None) -> dict | None:
    """What this gate could catch at its n, from its own paired interval: the smallest regression (claim units,
    on the bad side) flagged with probability `power` (`catches`), and, for a regression of the claim's own effect
    size, the instances that would catch it with that power (`n_to_catch`). A regression is flagged when the
    interval's good-side bound lies below −tol, so with the interval-implied standard error se (width / 2z, a
    normal approximation as in `cos.stats.detectable`; the interval is the expanded-level bootstrap-t, so se is
    that interval's, not σ/√n) a true regression R is caught with probability Φ((R − tol − z·se)/se): `catches`
    = tol + (z + z_power)·se (with `direction`, z·se is the interval's own reach: below), so Φ(z_power +
    (R − catches)/se) is the power at R. `n_to_catch` is the smallest m whose predicted `catches` reaches the
    effect (the good-side reach kept in its observed proportion to z·se), the
    width at m predicted from the paired differences' sd: half-width ≈ t_{m−1}(1 − a(m))·sd/√m, the bootstrap-t
    at Hesterberg's expanded tail a(m) (3.4 sd/√m at m = 8, 2.4 at 16, 2.2 at 32, → 1.96). Not from the pilot's
    own width: at n = 3-5 that is held down by the range cap and Hall's fallback and asked for 4-15 instances
    where about 22 are needed (review); scaling the pilot's width by 1/√n alone asked 65 from n = 8.
    None without a tolerance (nothing is flagged then but a status flip) or an interval of non-zero width; where
    the effect is not beyond the tolerance no n catches it, and `why` says so.
    `direction` given ('>' or '<', the claim's): `catches` = tol + h + z_power·se, h the interval's own reach
    from the estimate towards the good side (the bound a regression must clear), z·se where the interval is
    symmetric. A regression concentrated on some instances makes the paired differences 0-heavy and the
    bootstrap-t interval lopsided towards no change: the symmetric se then said it catches regressions it flagged
    in 48% of draws (`cos validate --kind gate`'s @catches on its stub; tests/test_gate_validate.py).
    `tests/test_gate.py` checks by simulation that a regression of `catches` is flagged in ~`power` of draws."""
    from scipy import stats as st

    from cos.stats import expanded_tail

    ci, n, sd = change.get("ci"), change.get("n"), change.get("sd_pair")
    if tol is None or not ci or not n or ci[1] <= ci[0]:
        return None
    z, zb = float(st.norm.ppf(1 - (1 - confidence) / 2)), float(st.norm.ppf(power))
    se = (ci[1] - ci[0]) / (2 * z)
    t = float(tol)
    reach = z * se
    mid = change.get("change_jackknife", change.get("change"))
    if direction in (">", "<") and mid is not None and ci[0] <= mid <= ci[1]:
        reach = (ci[1] - mid) if direction == ">" else (mid - ci[0])
    out = {"power": power, "se": se, "catches": t + reach + zb * se, "effect": effect, "n_to_catch": None,
           "powered": None}
    if effect is not None:
        out["powered"] = out["catches"] <= float(effect)
        if float(effect) <= t:
            out["why"] = f"the tolerance {t:.3g} is not below the effect {float(effect):.3g}: no n catches it"
        elif sd is not None and sd > 0:
            lopsided = reach / (z * se)     # the good-side reach kept in proportion at m (1 if symmetric)

            def catches_at(m: int) -> float:
                half = float(st.t.ppf(1 - expanded_tail(m, confidence)[0], m - 1))
                return t + (z * lopsided + zb) / z * half * sd / math.sqrt(m)

            lo, hi = 2, 2
            while catches_at(hi) > float(effect) and hi < 10**7:     # doubling, then bisection: catches_at falls
                lo, hi = hi, hi * 2
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if catches_at(mid) <= float(effect) else (mid + 1, hi)
            out["n_to_catch"] = hi if catches_at(hi) <= float(effect) else None
    return out


def gate_row(claim: Any, new: Concluded | None, old: Concluded | None, status_new: str, status_old: str,
             fraction: float | None = None) -> dict:
    """One claim's entry of gate.json."""
    tol = tolerance(claim, fraction)
    row: dict[str, Any] = {"change": None, "ci": None, "tolerance": tol, "regressed": False, "status_new": status_new,
                           "status_old": status_old, "n": None, "direction": claim.spec.direction,
                           "quantity": claim.spec.measured_quantity}
    if new is None or old is None:
        row.update(verdict="undecided", reason="no records on " + ("the new" if new is None else "the old") +
                   f" model ({status_new if new is None else status_old})")
        return row
    if new.version != old.version:
        row.update(verdict="changed definition", reason=f"claim version v{old.version} → v{new.version}: the two "
                   "answer different questions")
        return row
    try:
        ch = paired_change(claim, new, old)
    except (ValueError, KeyError, ZeroDivisionError, AttributeError, TypeError) as e:
        # AttributeError: a conclusion that reads more of the model than its records carry (step_vs_frame's design
        # reads the VAE): undecided, said, never a crash of the claim's row
        row.update(verdict="undecided", reason=f"no paired change: {type(e).__name__}: {e}"[:300])
        return row
    row.update({k: v for k, v in ch.items() if k not in ("ci",)}, ci=ch["ci"])
    row.update(decide_change(claim.spec.direction, ch, tol, status_new, status_old))
    res = resolution(ch, tol, claim.spec.effect, direction=claim.spec.direction)
    row["resolution"] = res
    if res is not None and row["verdict"] == "undecided" and res["powered"] is False:
        # an undecided row says what the gate could not see: a pass here is not evidence of no regression
        row["reason"] += (f"; underpowered: at n={ch['n']} it catches regressions of {res['catches']:.3g} or more "
                          f"({res['power']:.0%} power), not the claim's effect {res['effect']:.3g}"
                          + (f" (about {res['n_to_catch']} instances would)" if res["n_to_catch"] else "")
                          + (f"; {res['why']}" if res.get("why") else ""))
    return row


def final_row(claim: Any, new: Concluded, old: Concluded, status_old: str, fraction: float | None = None) -> dict:
    """The gate row of a new run a sequential look stopped: the paired change's 95% interval on its rows, and the
    flip rule read from its status re-concluded at 95% on the same rows (its row's status is at the look's
    level)."""
    return gate_row(claim, new, old, _status95(claim, new), status_old, fraction)


def write_gate(out: str | Path, rows: dict[str, dict], new_model: str, old_model: str,
               looks: int | None = None) -> list[Path]:
    """DIR/gate.json and DIR/gate.md (atomically). `looks`: at most how many looks a claim took (1: fixed n)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "new": new_model, "old": old_model, "looks": looks, "claims": dict(sorted(rows.items())),
           "regressed": sorted(k for k, r in rows.items() if r.get("regressed"))}
    paths = []
    for name, text in (("gate.json", json.dumps(doc, indent=2, default=str)), ("gate.md", render_gate(doc))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)
        paths.append(out / name)
    return paths


def render_gate(doc: dict, fmt: str = "github") -> str:
    """The gate as a table: per claim the change with its paired interval, the tolerance, both statuses."""
    from tabulate import tabulate

    def f(v: Any) -> str:
        return "" if v is None else f"{v:+.3g}"

    def catches(r: dict) -> str:
        res = r.get("resolution")
        if not res:
            return ""
        under = res.get("powered") is False and r.get("verdict") == "undecided"
        return f"{res['catches']:.3g}" + (" (underpowered)" if under else "")

    rows = [(k, r.get("verdict", ""), f(r.get("change")),
             "" if not r.get("ci") else f"[{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]",
             "" if r.get("tolerance") is None else f"{r['tolerance']:.3g}", catches(r), r.get("n") or "",
             f"{r.get('status_old')} → {r.get('status_new')}", r.get("reason", ""))
            for k, r in doc["claims"].items()]
    looks = doc.get("looks")
    head = (f"# cos gate: {doc['new']} against {doc['old']}\n\n"
            + ("" if not looks or looks == 1 else
               f"Sequential: a claim's rows stopped at the first of up to {looks} looks that decided its change (n: the "
               "paired instances it used); a status stopped early is its look's, at that look's stricter level.\n\n"))
    verdict = ("**REGRESSED**: " + ", ".join(doc["regressed"])) if doc["regressed"] else "**pass**: no claim regressed"
    return head + verdict + "\n\n" + tabulate(rows, headers=["claim", "verdict", "change", "95% CI (paired)",
                                                             "tolerance", f"catches ({POWER:.0%})", "n",
                                                             "status old → new", "why"],
                                              tablefmt=fmt) + "\n"


class Against:
    """The old side of a gate: a model measured in this session on the same rows (`system`), or the records of an
    earlier run (`records`: a run folder's records.jsonl, with its statuses)."""

    def __init__(self, label: str, system: Any = None, records: dict[str, Concluded] | None = None,
                 statuses: dict[str, str] | None = None):
        self.label, self.system, self.records, self.statuses = label, system, records or {}, statuses or {}

    @classmethod
    def from_path(cls, path: str | Path, load_model: Any) -> "Against":
        """A run folder (it holds records.jsonl) or a model directory (loaded by `load_model(path)`)."""
        from cos.records import FILE, load_records

        p = Path(path)
        if (p / FILE).exists():
            recs = load_records(p)
            return cls(str(p), records=recs, statuses={k: b.status or "unknown" for k, b in recs.items()})
        return cls(str(p), system=load_model(p))

    def old(self, claim: Any, ctx: Any, settings: Any) -> tuple[Concluded | None, str]:
        """The old side's records of `claim` and its status. Against a model whose rows were sampled beside the
        new model's at the looks (`PairedLooks`, left in `ctx.paired`), those rows, with their status concluded
        at 95% (where `final_row` reads the new side's flip); otherwise the old model measured now, every row."""
        if self.system is None:
            return self.records.get(claim.id), self.statuses.get(claim.id, "not in the old run")
        if claim.needs_distilled:   # its fast model is the new model's LoRA stack: not the old model's
            return None, "skipped"
        paired = getattr(ctx, "paired", {})
        if claim.id in paired:
            got = paired.pop(claim.id)
            if got is None:     # a conclusion argument with no record form: the new side has none either
                return None, "not recorded"
            bundle = as_bundle(got)
            return bundle, _status95(claim, bundle)
        # the run's ETA (cos.eta) tracks the new model's batches; the old side's would restart a finished claim's
        # progress in it. Left out, its wall time shows in the measured rate instead
        tracker, ctx.tracker = getattr(ctx, "tracker", None), None
        try:
            r = ctx.measure_claim(claim, self.system, settings)
        finally:
            ctx.tracker = tracker
        return as_bundle(r.records), r.status

    def look_rule(self, claim: Any, fraction: float | None = None) -> Any:
        """The rule that stops `claim`'s rows at a sequential look once its paired change is decided
        (`RunContext.look_rule`), or None: the claim stops by its own rule (the old run lacks it or measured it
        under another version; or, against a model, its fast model is the new model's LoRA stack).
        Against stored records the new model's rows pair with the old run's, and the old status is that run's
        row. Against a model the rule is a `PairedLooks`: the runner samples the old model on the same units as
        the new one before each look, so both stop together and neither samples rows the decision did not need;
        the old status is then its rows' so far, concluded at 95%, as the new one's is for the flip rule.
        A look stops the claim when (1) the change's interval at the look's level (the α-spending of
        cos.sequential) decides it by the tolerance alone (regressed, unchanged, improved; the new status there is
        at a stricter level than the old row's, so no flip is read from it), and (2) the row the gate will write
        for these rows (`final_row`: the 95% interval, the new status re-concluded at 95%, flips counted) says
        the same. (2) is needed: at n <= 32 a look's 99.93% interval is Hall's analytic bound while the 95% one is
        a bootstrap-t, and the two need not nest (review: one outlier among 16 differences gave a look interval
        of [-3.41, -0.31], regressed, and a 95% one of [-3.13, 3.85], undecided). Where the old status may hold
        on every row, "unchanged" and "improved" also need the look to decide that no flip can come (`_look_stop`,
        docs/gate.md). No look decides before MIN_LOOK_UNITS paired instances, and the runner does not ask at the
        last look: a row that ran to the end is the fixed-n row."""
        tol = tolerance(claim, fraction)
        if self.system is not None:
            if claim.needs_distilled:
                return None

            def paired(res: Any, look: Any, recorded: Any, old_recorded: Any = None) -> str:
                try:
                    old = as_bundle(old_recorded()) if old_recorded is not None else None
                    if old is None:
                        return ""
                    # the old rows so far at 95% (what the row's flip rule reads) and at the look's level (their
                    # bundle's): only a `fails` decided at the look's level rules out that every row holds
                    status_old, old_at_look = _status95(claim, old), old.conclude(claim).status
                except Exception:  # noqa: BLE001 - the old rows so far not concludable (a zero count on an early
                    return ""      # look's subset, as the runner allows the new side): more rows may make them so
                return _look_stop(claim, look, recorded, old, status_old, tol, fraction, res.status,
                                  old_may_hold=old_at_look != "fails")
            return PairedLooks(self.system, paired)
        old = self.records.get(claim.id)
        if old is None or old.version != claim.spec.version:
            return None
        status_old = self.statuses.get(claim.id, "unknown")
        return lambda res, look, recorded, old_recorded=None: _look_stop(claim, look, recorded, old, status_old,
                                                                        tol, fraction, res.status,
                                                                        old_may_hold=status_old == "holds")

    def row(self, claim: Any, new: Any, ctx: Any, settings: Any, fraction: float | None = None) -> dict:
        """gate.json's entry for `claim` given the new model's row `new`."""
        old, status_old = self.old(claim, ctx, settings)
        bundle = as_bundle(new.records)
        if bundle is not None and old is not None and bundle.level is not None:
            # concluded at a look's level (every stop by `look_rule` is, and so is a last look's 95.6%): the row
            # the rule checked (the new status re-concluded at 95% for the flip rule, as at fixed n)
            row = final_row(claim, bundle, old, status_old, fraction)
            row["status_new"] = new.status
            return row
        return gate_row(claim, bundle, old, new.status, status_old, fraction)


def as_bundle(records: dict | None) -> Concluded | None:
    """A row's records as the bundle a conclusion is recomputed from (through their JSON form, as from disk)."""
    return None if not records else Concluded.from_dict(json.loads(json.dumps(records, default=str)))


class PairedLooks:
    """A look rule against a model sampled in this session (`Against.look_rule`): the runner samples
    `paired_system`, the old model, on the new model's units before each look (`RunContext.measure_records`)
    and calls the rule with a fourth argument, a function giving the old side's records so far."""

    def __init__(self, system: Any, rule: Any):
        self.paired_system, self._rule = system, rule

    def __call__(self, res: Any, look: Any, recorded: Any, old_recorded: Any = None) -> str:
        return self._rule(res, look, recorded, old_recorded)


def _status95(claim: Any, bundle: Concluded) -> str:
    """The status of `bundle`'s rows concluded at the default 95%, whatever level they were recorded at."""
    from dataclasses import replace

    return replace(bundle, level=None).conclude(claim).status


def _look_stop(claim: Any, look: Any, recorded: Any, old: Concluded, status_old: str, tol: float | None,
               fraction: float | None, status_look: str, old_may_hold: bool) -> str:
    """"gate <verdict>" when a sequential look stops the new rows on their paired change with `old` (see
    `Against.look_rule`), "" to go on. `status_look`: the new rows' status at the look's level; `old_may_hold`:
    whether the old side's status on every row may be `holds` (a stored run's row holds; a model's rows so far,
    sampled alongside, do not fail at the look's level), where a new status that does not hold is a flip."""
    from cos import sequential as seq

    try:
        new = as_bundle(recorded())     # at claim.spec.version, which the old side's is
        if new is None:
            return ""
        ch = paired_change(claim, new, old, confidence=look.confidence)
        if (ch.get("n") or 0) < seq.MIN_LOOK_UNITS:
            return ""
        if ch.get("identical") and new.system.fingerprint != old.system.fingerprint:
            # identical rows so far bound nothing about the rows not yet sampled: another model may differ on
            # those only (calibration: a regression spliced into 4 of 48 instances stopped "unchanged" at the
            # first look in 15 of 20 draws, where all 48 rows left it undecided). Only the same weights are
            # identical at every n; other models go on to the next look (at the last, the fixed-n row decides)
            return ""
        d = decide_change(claim.spec.direction, ch, tol, status_old, status_old)
        if d["verdict"] not in ("regressed", "unchanged", "improved"):
            return ""
        final = final_row(claim, new, old, status_old, fraction)
    except Exception:  # noqa: BLE001 - not estimable on these rows yet: more rows may make it so
        return ""
    sign = 1.0 if claim.spec.direction == ">" else -1.0
    no_flip = (ch.get("identical")      # the same rows: the two statuses are the same at every n
               or (ch.get("ci") is not None and min(sign * c for c in ch["ci"]) >= 0)   # decided: not worse
               or (final["status_new"], status_look) == ("holds", "holds"))   # "no flip" decided at the look
    if old_may_hold and not no_flip and d["verdict"] != "regressed":
        # A flip from `holds` regresses once the change is confidently worse than 0, so where the old status may
        # hold on every row, only a regression stops, unless the look decides there will be no flip (reviews:
        # "unchanged" at 32 of 48 where all 48 said regressed; against a model, "unchanged" at 16 of 48 with the
        # old rows so far inconclusive where all 48 held, the paired interval being far narrower than either
        # model's own; "unchanged" with the new rows holding at 95% but not at the look's 98.4%, where all 48
        # did not hold). The new status holding at the look's level, like any early decision, is spent there.
        return ""
    return f"gate {d['verdict']}" if final["verdict"] == d["verdict"] else ""

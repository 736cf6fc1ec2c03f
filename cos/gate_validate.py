"""`cos validate --kind gate`: the gate's power and false-positive rate, measured on pairs of planted models.

A claim's controls already plant its effect (positive), remove it (negative) or plant it smaller (sensitivity).
The gate is calibrated on pairs of them run on the same rows (the same draw: the same task instances and noise
seeds, `cos.registry.at_draw`), OLD = a positive control, and per draw `cos.gate.gate_row` decides NEW against OLD:

- `regressed:<control>`: NEW = a negative (effect removed) or sensitivity (effect reduced) control with OLD's
  settings and keyword arguments (models among the keyword arguments are part of the model: distill's fast
  model). How often the gate says `regressed` is its power on that regression, which is as large as the control
  makes it (removing the effect is usually far beyond the claim's minimum detectable effect).
- `regressed:<control>@mde`: the regression planted at the claim's MDE. NEW = OLD on most task instances and the
  partner control (effect removed or reduced) on a share w of them (chosen by a hash of the instance and draw, an exact count): a model
  that lost the effect on some inputs, its records the two controls' own records of the same rows, spliced by
  instance. w = the claim's MDE (the median of what OLD's rows report, `cos.stats.detectable`) over the full
  removal's mean change, both from `PILOT` draws that are not among the measured ones (so w is fixed before the
  draws it is measured on), at most 1 (then the full removal is below the MDE, said in the table).
- `regressed:<control>@catches`: a regression planted at what the gate says it catches. Every gate row states the
  smallest regression it flags with 80% power at its n (`cos.gate.resolution`: `catches` = tolerance + the
  interval's reach towards the good side + z_0.8·se), and this pair checks that statement on real rows. Each task instance loses the effect on its
  own with probability w (`splice(..., bernoulli=True)`: the count varies between draws, as the se assumes; an
  exact count would plant a change that barely varies and is flagged in every draw once beyond tol + z·se). The
  planted regression is w × the whole removal's change in expectation; on the pilot draws the splice is made at
  each share of `GRID` (a `@grid` line per pilot draw: the `catches` the gate reported at each share), and w is
  where w × the pilots' mean whole-removal change first reaches the median reported `catches` (linear between grid
  shares). Power there counts the tolerance route only (what `catches` describes). Why a second reading of the
  MDE: issue 25 asks for power >= 0.8 "at the claim's MDE" with a default tolerance that may itself exceed that
  MDE (then no n can flag it); the claim's MDE is `@mde`, the gate's own is this.
- `same-weights`: NEW = OLD's recipe built again (a fresh object, run after OLD in the same process: what a
  reload or rebuild of the same weights is); it must never regress.
- `retrained`: NEW = OLD's recipe at another weight seed (`cos.controls.weight_seed`: a random model's init, a
  planted DiT's noise salts, a scripted trajectory's generators): a retrained copy with the same effect, which
  must fail the gate in at most 5% of draws. A recipe without weight randomness is the same model at every seed:
  its retrained pair is `n/a` (its weights are those of `same-weights`).

A claim may declare its own pairs (`Claim.gate_pairs`); one with no valid pair is listed with the reason. Each
finished draw of a pair is a line of DIR/draws.jsonl with "kind": "gate", keyed (tier, claim, version,
"gate:" + pair, draw), so a killed run loses nothing finished and shares the folder with `cos validate`'s control
draws. The summary is DIR/gate-calibration.json and .md.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from cos.calibration import MIN_DRAWS, _check_tier, _key, _num, _one_thread, _read_text, read_draws, tier_settings

if TYPE_CHECKING:
    from cos.registry import Claim, Control

SCHEMA = "cos.gate-calibration/1"
KIND = "gate"                          # the `kind` of a gate draw's line in draws.jsonl
PAIR_KINDS = ("regressed", "same-weights", "retrained")
GOAL_POWER, GOAL_FPR = 0.8, 0.05       # issue 25: power >= 0.8 at the MDE, an unchanged model flagged in <= 5%
# pilot draws (never among the measured 1..N): where the splice shares (at the MDE, at what the gate catches) are fixed
PILOT = tuple(range(9001, 9006))
MDE_SUFFIX = "@mde"
CATCHES_SUFFIX = "@catches"     # the regression planted at what the gate says it catches (module docstring)
AT_CATCHES = "regressed at what the gate catches"
GRID_SUFFIX = "@grid"           # a pilot draw's gate rows spliced at every GRID share (where @catches is sized)
GRID = tuple(round(0.05 * k, 2) for k in range(1, 21))


def is_base_pair(name: str) -> bool:
    """A pair as the claim declares it, not one of its splices nor a pilot's grid."""
    return not name.endswith((MDE_SUFFIX, CATCHES_SUFFIX, GRID_SUFFIX))


@dataclass(frozen=True)
class GatePair:
    """OLD and NEW of one gate calibration pair: two controls run at the same draw. `kind` is `regressed` (NEW
    has the effect removed or reduced: the gate should say so), `same-weights` or `retrained` (NEW is OLD
    unchanged: the gate must not fail it). `splice`: also measure the regression at the claim's MDE by splicing
    NEW's rows into OLD's (NEW must remove the effect)."""

    name: str
    kind: str
    old: "Control"
    new: "Control"
    why: str
    splice: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PAIR_KINDS:
            raise ValueError(f"gate pair {self.name!r}: kind={self.kind!r}: expected one of {PAIR_KINDS}")


class _Reseeded:
    """A control's factory (model or keyword arguments) built at weight seed = the draw (>= 1, never 0, so it is
    another seed than OLD's in every draw)."""

    def __init__(self, fn: Callable[[int], Any]):
        self.fn = fn

    def __call__(self, draw: int) -> Any:
        from cos.controls import weight_seed

        with weight_seed(draw if draw > 0 else 1):
            return self.fn(draw)


def _is_model(v: Any) -> bool:
    return hasattr(v, "experts") and hasattr(v, "fingerprint")


def rows_signature(ctl: "Control", draw: int = 1) -> str:
    """What must be equal for two controls to run the same rows: the settings and the keyword arguments, a model
    among them standing for itself (it is part of what is compared, not of the rows)."""
    from cos.records import _tag

    kw = ctl.kwargs(draw) if ctl.kwargs else {}
    sig = {"settings": _tag(ctl.settings), "kw": {k: "<model>" if _is_model(v) else _tag(v) for k, v in kw.items()}}
    return json.dumps(sig, sort_keys=True, default=str)


def default_pairs(claim: "Claim") -> tuple[list[GatePair], list[str]]:
    """The generic pairs of a claim from its controls (module docstring), and why any control was not paired.
    OLD is the first positive control that has a partner with the same rows."""
    ctls = claim.controls()
    positives = [c for c in ctls if c.kind == "positive"]
    if not positives:
        return [], ["no positive control: nothing planted to regress from"]
    sigs = {c.name: rows_signature(c) for c in ctls}
    notes: list[str] = []
    for old in positives:
        partners, not_paired = [], []
        for c in ctls:
            if c.kind == "positive":
                continue
            if c.settings != old.settings:
                not_paired.append(f"{c.name}: other settings than {old.name}")
            elif sigs[c.name] != sigs[old.name]:
                not_paired.append(f"{c.name}: other keyword arguments than {old.name}")
            else:
                partners.append(c)
        if partners:
            break
    else:
        return [], [f"no negative or sensitivity control runs the rows of a positive one ({'; '.join(not_paired)})"]
    notes += not_paired + [f"{p.name}: another positive; OLD is {old.name}" for p in positives if p is not old]
    return standard_pairs(old, partners), notes


def standard_pairs(old: "Control", partners: list["Control"]) -> list[GatePair]:
    """OLD against each partner (a regression, also spliced at the MDE), against itself rebuilt, and against its
    recipe at another weight seed. A claim's own `gate_pairs` can build on it with its own partners."""
    pairs = [GatePair(f"regressed:{c.name}", "regressed", old, c,
                      f"{old.name} → {c.name} (effect {'removed' if c.kind == 'negative' else 'reduced'})",
                      splice=True) for c in partners]
    pairs.append(GatePair("same-weights", "same-weights", old, replace(old, name=f"{old.name} (rebuilt)"),
                          f"{old.name} built again from its recipe and run after it"))
    pairs.append(GatePair("retrained", "retrained", old,
                          replace(old, name=f"{old.name} (weight seed = draw)", model=_Reseeded(old.model),
                                  kwargs=_Reseeded(old.kwargs) if old.kwargs else None),
                          f"{old.name}'s recipe at another weight seed (cos.controls.weight_seed)"))
    return pairs


def pairs_of(claim: "Claim") -> tuple[list[GatePair], list[str]]:
    """The claim's gate pairs (its own `gate_pairs`, else `default_pairs`) and the notes on what was not paired.
    Two pairs of one name, or a pair whose OLD and NEW run different rows, are refused here (a ValueError naming
    it): NEW and OLD of a pair must be the same draw of the same rows."""
    pairs, notes = claim.gate_pairs()
    seen = Counter(p.name for p in pairs)
    if dup := [n for n, k in seen.items() if k > 1]:
        raise ValueError(f"{claim.id}: gate pairs named twice: {dup}")
    for p in pairs:
        if rows_signature(p.old) != rows_signature(p.new):
            raise ValueError(f"{claim.id}: gate pair {p.name!r}: {p.old.name} and {p.new.name} do not run the same "
                             "rows (settings or keyword arguments differ); a pair is one draw of the same rows")
    return pairs, notes


# ---------------------------------------------------------------- one draw of a claim's pairs (a worker's task)
def _u(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2 ** 64


def splice(old: Any, null: Any, share: float, salt: str, bernoulli: bool = False) -> tuple[Any, list[str]]:
    """OLD's bundle (cos.records.Concluded) with the rows of round(share·n) of its n task instances (at least 1;
    ranked by a hash of `salt` and the instance id) taken from `null`'s bundle of the same rows: a model that lost
    the effect on those instances. `bernoulli`: each instance is taken on its own with probability `share` (its
    hash below it; none is possible), a model that lost the effect on a share of the input population, so the
    count varies between draws as the gate's standard error assumes it does (an exact count plants a change that
    barely varies between draws: a planted size beyond tol + z·se is then flagged in every draw, and its power says
    nothing about the 80% `catches` claims). Either way the instances of a smaller share are among a larger one's.
    Returns (the bundle, the instances taken). ValueError when the two bundles' rows are not the same rows in the
    same order."""
    inst = lambda r: str(r["instance"])
    rows = lambda b: [(inst(r), r.get("seed")) for r in b.records]
    if rows(old) != rows(null):
        raise ValueError("the two runs' rows differ (instances, seeds or order): not the same draw")
    units = sorted({inst(r) for r in old.records})
    if bernoulli:
        taken = [u for u in units if _u(f"{salt}|{u}") < share]
    else:
        k = min(len(units), max(1, round(share * len(units))))
        taken = sorted(units, key=lambda u: _u(f"{salt}|{u}"))[:k]
    pick = set(taken)
    recs = [b if inst(a) in pick else a for a, b in zip(old.records, null.records)]
    return replace(old, records=recs, status=None), sorted(taken)


def _identity(system: Any, kw: dict) -> tuple:
    return (system.fingerprint, tuple(sorted((k, v.fingerprint) for k, v in kw.items() if _is_model(v))))


def _measure(claim: "Claim", ctl: "Control", draw: int, tier: str) -> tuple[Any, tuple]:
    """The claim's row on `ctl` at `draw` and the identity of the models it ran (as `Control.run`, which it is)."""
    from cos.registry import at_draw
    from cos.runner import RunContext

    system = ctl.model(draw)
    kw = dict(ctl.kwargs(draw)) if ctl.kwargs else {}
    r = claim.measure(RunContext(progress=False), system, at_draw(tier_settings(ctl.settings, tier), draw), **kw)
    return r, _identity(system, kw)


def _row_fields(row: dict) -> dict:
    # resolution: what the row said it could catch (cos.gate.resolution), kept so that a calibration can set the
    # catch rate it predicts beside the one it observes
    keep = ("verdict", "regressed", "change", "ci", "n", "tolerance", "status_old", "status_new", "reason",
            "width_ratio_unpaired", "identical", "resolution")
    return {k: row.get(k) for k in keep}


def _bad(direction: str, change: float | None) -> float | None:
    """A change on the claim's bad side as a positive number (how much worse NEW is)."""
    return None if change is None else (-change if direction == ">" else change)


def _wanted(p: GatePair, names: frozenset[str] | None) -> bool:
    """Whether a draw asked for `names` (None: all) needs pair `p` measured: itself, a splice or a pilot grid of it."""
    return names is None or bool({p.name, p.name + MDE_SUFFIX, p.name + CATCHES_SUFFIX, p.name + GRID_SUFFIX}
                                 & names)


def _asked(out: list[dict], names: frozenset[str] | None) -> list[dict]:
    """The records a draw was asked for (`names`; None: all)."""
    return out if names is None else [r for r in out if r["pair"] in names]


def run_gate_draw(claim_id: str, draw: int, tier: str, shares: dict[str, float] | None = None,
                  names: Iterable[str] | None = None) -> list[dict]:
    """Every gate pair of a claim at one draw (OLD run once): one record per pair, and per spliced pair in
    `shares` one more for the regression at the MDE (key: the pair's name) and one for the regression at what the
    gate catches (key: the name + CATCHES_SUFFIX); a pilot draw adds each spliced pair's GRID line. `names`: only
    the records of these names (a resumed draw's missing ones; OLD and the pairs they need are measured again)."""
    import torch

    from cos.gate import as_bundle, beyond_tolerance, gate_row, units
    from cos.registry import get_claim

    claim = get_claim(claim_id)
    names = None if names is None else frozenset(names)
    pairs = [p for p in pairs_of(claim)[0] if _wanted(p, names)]
    base = {"kind": KIND, "claim": claim_id, "version": claim.spec.version, "draw": draw, "tier": tier,
            "host": platform.node(), "torch": torch.__version__}
    out: list[dict] = []
    olds: dict[str, Any] = {}
    for p in pairs:
        t0 = time.perf_counter()
        rec = {**base, "pair": p.name, "pair_kind": p.kind, "share": None, "on_design": False, "old_mde": None}
        try:
            if p.old.name not in olds:
                olds[p.old.name] = _measure(claim, p.old, draw, tier)
            old, old_id = olds[p.old.name]
            det = (old.details or {}).get("detectable") or {}
            rec["old_mde"] = det.get("min_detectable_effect")
            if p.kind == "retrained":
                new_system = p.new.model(draw)
                new_kw = dict(p.new.kwargs(draw)) if p.new.kwargs else {}
                if _identity(new_system, new_kw) == old_id:
                    rec.update(verdict="n/a", regressed=False, reason="the recipe has no weight randomness: its "
                               "retrained copy is the same weights (same-weights covers it)")
                    out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
                    continue
            new, new_id = _measure(claim, p.new, draw, tier)
            if p.kind == "same-weights" and new_id != old_id:
                raise ValueError("the rebuilt model is not the same weights (its fingerprint differs)")
            b_old, b_new = as_bundle(old.records), as_bundle(new.records)
            if b_old is None or b_new is None:
                raise ValueError(f"no records (old {old.status}: {old.reason}; new {new.status}: {new.reason})"[:300])
            if units(b_old.records) != units(b_new.records):
                raise ValueError("OLD and NEW ran different rows (task instances or seeds): not one draw")
            row = gate_row(claim, b_new, b_old, new.status, old.status)
            rec.update(_row_fields(row), on_design=row.get("change") is not None or bool(row.get("identical")))
            rec["bad_change"] = _bad(claim.spec.direction, row.get("change"))
            out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
        except Exception as e:   # a pair that cannot be measured is off design: counted apart, never as a pass
            rec.update(verdict="error", regressed=False, reason=f"{type(e).__name__}: {e}"[:300], on_design=False)
            out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
            continue
        if not p.splice:
            continue
        salt = f"{claim_id}|{draw}|{p.name}"     # one ranking of instances: a smaller share's are among a larger's
        for name, w, bern in ((p.name + MDE_SUFFIX, (shares or {}).get(p.name), False),
                              (p.name + CATCHES_SUFFIX, (shares or {}).get(p.name + CATCHES_SUFFIX), True)):
            if w is None:
                continue
            t1 = time.perf_counter()
            try:    # its own record: a failure here is the splice's, not the pair's (review)
                srow, taken = _spliced_row(claim, b_old, b_new, old.status, w, salt, bern)
                extra = {} if not bern else {
                    # the regression planted in expectation over which instances lose it (linear in w for a mean;
                    # the grid's realized changes show where it is not), and the route `catches` describes
                    "expected_bad_change": None if rec.get("bad_change") is None else w * rec["bad_change"],
                    "beyond_tolerance": beyond_tolerance(claim.spec.direction, srow.get("ci"), srow.get("tolerance"))}
                out.append({**rec, **_row_fields(srow), "pair": name, "share": w,
                            "spliced": len(taken), "spliced_ids": _ids_hash(taken),
                            "on_design": srow.get("change") is not None or bool(srow.get("identical")),
                            "bad_change": _bad(claim.spec.direction, srow.get("change")), **extra,
                            "seconds": round(time.perf_counter() - t1, 2)})
            except Exception as e:   # noqa: BLE001 - off design, counted apart
                out.append(_mde_error(base, p, w, e, t1, name))
        if draw in PILOT:
            out.append(_grid_record(claim, rec, b_old, b_new, old.status, salt))
    return _asked(out, names)


def _spliced_row(claim: "Claim", b_old: Any, b_new: Any, status_old: str, share: float, salt: str,
                 bernoulli: bool = False) -> tuple[dict, list]:
    """The gate row of OLD against OLD with a share of its instances' rows taken from NEW (`splice`)."""
    from cos.gate import gate_row

    sp, taken = splice(b_old, b_new, share, salt, bernoulli)
    status = sp.conclude(claim).status
    return gate_row(claim, replace(sp, status=status), b_old, status, status_old), taken


def _grid_record(claim: "Claim", rec: dict, b_old: Any, b_new: Any, status_old: str, salt: str) -> dict:
    """A pilot draw's GRID line of a spliced pair: per share [share, instances taken, the planted change (bad side),
    the `catches` the gate row reported at it (None where it gave none), the taken instances' hash], each instance
    taken with probability share as at @catches, from which `catches_from_pilot` sizes @catches."""
    t0 = time.perf_counter()
    grid = []
    for w in GRID:
        try:
            srow, taken = _spliced_row(claim, b_old, b_new, status_old, w, salt, bernoulli=True)
        except Exception:   # noqa: BLE001 - a share that cannot be spliced or concluded says nothing
            grid.append([w, None, None, None, None])
            continue
        res = srow.get("resolution") or {}
        grid.append([w, len(taken), _bad(claim.spec.direction, srow.get("change")), res.get("catches"),
                     _ids_hash(taken)])
    return {**{k: rec[k] for k in ("kind", "claim", "version", "draw", "tier", "host", "torch", "pair_kind")},
            "pair": rec["pair"] + GRID_SUFFIX, "share": None, "old_mde": None, **_row_fields({}),
            "verdict": "pilot grid", "regressed": False, "on_design": False, "bad_change": None,
            "grid": grid, "seconds": round(time.perf_counter() - t0, 2)}


def _mde_error(base: dict, p: GatePair, share: float, e: Exception, t0: float, name: str | None = None) -> dict:
    """The record of a spliced regression (`name`, default: the one at the MDE) that could not be measured
    (nothing of its pair's row in it)."""
    return {**base, "pair": name or p.name + MDE_SUFFIX, "pair_kind": p.kind, "share": share, "old_mde": None,
            **_row_fields({}), "verdict": "error", "regressed": False, "reason": f"{type(e).__name__}: {e}"[:300],
            "on_design": False, "bad_change": None, "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------- sequential draws (--sequential on)
# `cos validate --kind gate --sequential on`: each pair as `cos gate --cos-sequential on` runs it against a model
# (cos.gate.Against.look_rule, a PairedLooks: OLD sampled on NEW's units before each look, both stop together).
# The regression at the MDE is no model one can sample: its rows are OLD's and the partner's own rows spliced by
# instance, so both are measured on every batch first and the spliced batches are served to the same runner path
# as a model of their own (`_Spliced`), which never samples (a batch it lacks is an error, never OLD's weights).
def _batch_id(claim: "Claim", settings: Any, batch: Any, kw: dict) -> str:
    """A records batch's rows and arguments, as `cos.runner.records_key` keys them, without the model."""
    return json.dumps([claim.id, settings.record(), [(i.id, i.num_frames, s) for i, s in zip(batch.instances, batch.seeds)],
                       [batch.height, batch.width], {k: getattr(v, "fingerprint", None) or repr(v) for k, v in sorted(kw.items())}],
                      default=str)


class DrawRows:
    """The records of every batch measured in one draw, by (model, batch). Keyed by the model object's id, each
    model is held here from its first batch on, so no later model of the draw can be given its id (review: a
    freed model's address, reused by the next model built, handed that model the freed one's rows)."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, str], list[dict]] = {}
        self._held: dict[int, Any] = {}

    def key(self, model: Any, batch_id: str) -> tuple[int, str]:
        held = self._held.setdefault(id(model), model)
        assert held is model, "two live models with one id"
        return id(model), batch_id

    def of(self, model: Any) -> dict[str, list[dict]]:
        """`model`'s batches: batch id -> records."""
        return {b: rs for (m, b), rs in self.records.items() if m == id(model)}


_SERVED: list = []      # the RunContext subclass below, built on first use (cos.runner imports torch)


def _served_context(rows: DrawRows, frozen: Iterable[Any] = (), **kw: Any) -> Any:
    """A RunContext (sequential, `LOOKS` looks, no report filmstrips) whose records batches are kept in `rows`: in
    one draw OLD is sampled once over its pairs, and a model rebuilt from the same weights (another object) is
    computed again, not served OLD's rows. Models in `frozen` must find every batch in `rows` and sample nothing
    (the spliced regression): a run, sweep or stored run of theirs is an error."""
    if not _SERVED:
        from dataclasses import dataclass as _dc, field
        from cos.runner import RunContext

        @_dc
        class Served(RunContext):
            rows: DrawRows = field(default_factory=DrawRows, repr=False)
            frozen: frozenset = frozenset()

            def _guard(self, system: Any) -> None:
                if id(system) in self.frozen:
                    raise RuntimeError(f"{system.name}: spliced rows are served, never sampled")

            def _batch_records(self, claim, system, settings, batch, kw):
                import copy

                key = self.rows.key(system, _batch_id(claim, settings, batch, dict(kw)))
                if key not in self.rows.records:
                    if id(system) in self.frozen:
                        raise RuntimeError(f"{system.name}: a batch of {claim.id} not among its spliced rows")
                    self.rows.records[key] = super()._batch_records(claim, system, settings, batch, kw)
                return copy.deepcopy(self.rows.records[key])  # the runner's consumers must not share one list

            def run(self, system, *a, **k):
                self._guard(system)
                return super().run(system, *a, **k)

            def sweep(self, system, *a, **k):
                self._guard(system)
                return super().sweep(system, *a, **k)

            def _stored(self, kind, system, *a, **k):
                self._guard(system)
                return super()._stored(kind, system, *a, **k)
        _SERVED.append(Served)
    from cos.sequential import LOOKS

    return _SERVED[0](progress=False, report_instances=0, sequential=True, looks=LOOKS, rows=rows,
                      frozen=frozenset(id(m) for m in frozen), **kw)


class _Spliced:
    """The regression at the MDE as a model: OLD's attributes under its own identity (`fingerprint`, `name`);
    its batches are in the served records, so nothing of OLD's is ever sampled under it (`_served_context`)."""

    def __init__(self, base: Any, tag: str):
        self._base, self.name = base, f"{base.name} spliced"
        self.fingerprint = hashlib.sha256(f"{base.fingerprint}|{tag}".encode()).hexdigest()[:32]

    def __getattr__(self, k: str) -> Any:
        return getattr(self._base, k)


def _ids_hash(ids: list[str]) -> str:
    """A short hash of the instances a splice took (fixed n and sequential draws must take the same)."""
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:12]


def splice_served(rows: DrawRows, old: Any, null: Any, spliced: Any, share: float, salt: str) -> list[str]:
    """Every batch OLD and `null` both have in `rows` again under `spliced`, with the rows of round(share·n) of
    OLD's n task instances (at least 1; ranked by a hash of `salt` and the instance id, as `splice` ranks them)
    taken from `null`: the regression at the MDE as batches. Returns the instances taken. ValueError when the two
    models ran other batches, or a batch's two record lists are not the same rows in the same order."""
    inst = lambda r: str(r["instance"])
    olds, nulls = rows.of(old), rows.of(null)
    if set(olds) != set(nulls):
        raise ValueError("OLD and the partner ran different batches: not the same draw")
    units = sorted({inst(r) for rs in olds.values() for r in rs})
    k = min(len(units), max(1, round(share * len(units))))
    pick = set(sorted(units, key=lambda u: _u(f"{salt}|{u}"))[:k])
    for b, rs in olds.items():
        if [(inst(r), r.get("seed")) for r in rs] != [(inst(r), r.get("seed")) for r in nulls[b]]:
            raise ValueError("the two runs' rows differ (instances, seeds or order): not the same draw")
        rows.records[rows.key(spliced, b)] = [n if inst(o) in pick else o for o, n in zip(rs, nulls[b])]
    return sorted(pick)


def _gate_seq(claim: "Claim", old: Any, new: Any, kw: dict, settings: Any, rows: DrawRows,
              frozen: Iterable[Any] = ()) -> tuple[dict, Any]:
    """NEW against OLD as `cos gate --cos-sequential on` decides it (cos.testing.test_claim's two calls): the row
    and NEW's result (its `details["sequential"]`: the looks taken). A skipped claim has no gate row there: an
    error here (off design, as at fixed n, where it has no records)."""
    from cos.gate import Against

    against = Against("old", system=old)
    ctx = _served_context(rows, frozen)
    ctx.look_rule = against.look_rule(claim)
    res = ctx.measure_claim(claim, new, settings, **kw)
    if res.status == "skipped":
        raise ValueError(f"NEW skipped: {res.reason}"[:300])
    return against.row(claim, res, ctx, settings), res


def _fill(claim: "Claim", models: list[Any], call: tuple, units: list, rows: DrawRows) -> None:
    """Each model's records of every unit into `rows`, at the (settings, keyword arguments) `call` (no looks:
    none can stop it short)."""
    ctx = _served_context(rows)
    for m in models:
        for unit in units:
            ctx._unit_records(claim, m, unit, call[1])


def run_gate_draw_seq(claim_id: str, draw: int, tier: str, shares: dict[str, float] | None = None,
                      names: Iterable[str] | None = None) -> list[dict]:
    """`run_gate_draw` with the looks of `cos gate --cos-sequential on` against a model: each pair's NEW sampled
    with OLD on the same units, both stopping at the look that decides the change (`cos.gate.Against`); the
    regression at the MDE spliced batch by batch from both controls' rows on every batch. A claim whose rows form
    one unit has one look, at the end: its sequential gate is the fixed-n gate, so its draw is `run_gate_draw`'s
    (marked "fallback"). Each record adds "sequential": true and what NEW used of its batches and rows
    (`cos.calibration.looks_of`). `names`: as `run_gate_draw`'s. The regression at what the gate catches is
    calibrated at fixed n only (its share is sized on fixed-n pilot rows)."""
    import torch

    from cos import sequential as seq
    from cos.calibration import layout, looks_of
    from cos.registry import at_draw, get_claim

    claim = get_claim(claim_id)
    names = None if names is None else frozenset(names)
    pairs = [p for p in pairs_of(claim)[0] if _wanted(p, names)]
    base = {"kind": KIND, "claim": claim_id, "version": claim.spec.version, "draw": draw, "tier": tier,
            "host": platform.node(), "torch": torch.__version__, "sequential": True}
    rows = DrawRows()
    olds: dict[str, tuple | Exception] = {}      # OLD's name -> (model, kwargs, settings, layout), or why not
    for p in pairs:
        if p.old.name not in olds:
            try:
                m, kw = p.old.model(draw), dict(p.old.kwargs(draw)) if p.old.kwargs else {}
                s = at_draw(tier_settings(p.old.settings, tier), draw)
                olds[p.old.name] = (m, kw, s, layout(claim, m, s, kw))
            except Exception as e:   # noqa: BLE001 - its pairs are error draws (below), as at fixed n
                olds[p.old.name] = e
    built = [o for o in olds.values() if not isinstance(o, Exception)]
    n_looks = {len(seq.look_points(len(lay[1]), seq.LOOKS)) if lay else 1 for *_, lay in built}
    if n_looks <= {1}:
        lay = built[0][3] if built else None
        used = looks_of(None, [sum(len(b.instances) for _, b in u) for u in lay[1]] if lay else None)
        # why: one unit (one look: the fixed-n gate), or a claim whose units are not known without running it
        why = "one look" if lay else ("units not known without running" if built else "OLD not built")
        fixed = run_gate_draw(claim_id, draw, tier, {k: v for k, v in (shares or {}).items() if is_base_pair(k)}, names)
        return [{**r, "sequential": True, "fallback": why, **used} for r in fixed]
    out: list[dict] = []
    for p in pairs:
        t0 = time.perf_counter()
        rec = {**base, "pair": p.name, "pair_kind": p.kind, "share": None, "on_design": False, "old_mde": None}
        if isinstance(olds[p.old.name], Exception):
            e = olds[p.old.name]
            out.append({**rec, "verdict": "error", "regressed": False, "reason": f"OLD: {type(e).__name__}: {e}"[:300],
                        "seconds": 0.0})
            continue
        old, old_kw, settings, lay = olds[p.old.name]
        n_rows = [sum(len(b.instances) for _, b in unit) for unit in lay[1]] if lay else None
        try:
            if lay is None or len(seq.look_points(len(lay[1]), seq.LOOKS)) < 2:
                raise ValueError("a pair with one look in a claim whose other pairs have several: not calibrated")
            new = p.new.model(draw)
            new_kw = dict(p.new.kwargs(draw)) if p.new.kwargs else {}
            if any(_is_model(v) for v in (*old_kw.values(), *new_kw.values())):
                # the runner samples OLD at the looks with NEW's keyword arguments; a model among them is part of
                # what is compared (distill's fast model), so the pair is not one the looks can pair
                raise ValueError("a model among the keyword arguments: its looks would pair OLD with NEW's")
            if p.kind == "retrained" and _identity(new, new_kw) == _identity(old, old_kw):
                rec.update(verdict="n/a", regressed=False, reason="the recipe has no weight randomness: its "
                           "retrained copy is the same weights (same-weights covers it)")
                out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
                continue
            if p.kind == "same-weights" and _identity(new, new_kw) != _identity(old, old_kw):
                raise ValueError("the rebuilt model is not the same weights (its fingerprint differs)")
            row, res = _gate_seq(claim, old, new, new_kw, settings, rows)
            rec.update(_row_fields(row), on_design=row.get("change") is not None or bool(row.get("identical")),
                       bad_change=_bad(claim.spec.direction, row.get("change")), **looks_of(res.details, n_rows))
        except Exception as e:   # a pair that cannot be measured is off design: counted apart, never as a pass
            rec.update(verdict="error", regressed=False, reason=f"{type(e).__name__}: {e}"[:300], on_design=False)
            out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
            continue
        out.append({**rec, "seconds": round(time.perf_counter() - t0, 2)})
        w = (shares or {}).get(p.name)
        if w is None or not p.splice:
            continue
        t1 = time.perf_counter()
        mde = {**rec, "pair": p.name + MDE_SUFFIX, "share": w, "on_design": False}
        try:        # its own record: a failure here is the regression at the MDE's, not the pair's (review)
            _fill(claim, [old, new], lay[0], lay[1], rows)
            fake = _Spliced(old, f"{claim_id}|{draw}|{p.name}|{w!r}")
            taken = splice_served(rows, old, new, fake, w, f"{claim_id}|{draw}|{p.name}")
            srow, sres = _gate_seq(claim, old, fake, new_kw, settings, rows, frozen=[fake])
            mde.update(_row_fields(srow), spliced=len(taken), spliced_ids=_ids_hash(taken),
                       on_design=srow.get("change") is not None, bad_change=_bad(claim.spec.direction, srow.get("change")),
                       **looks_of(sres.details, n_rows))
            out.append({**mde, "seconds": round(time.perf_counter() - t1, 2)})
        except Exception as e:   # noqa: BLE001 - off design, counted apart
            out.append({**_mde_error(base, p, w, e, t1), **looks_of(None, None), "looks_planned": None, "looks": None})
    return _asked(out, names)


# ---------------------------------------------------------------- the validation
def _is_record(d: object) -> bool:
    return (isinstance(d, dict) and d.get("kind") == KIND
            and all(isinstance(d.get(k), str) for k in ("tier", "claim", "pair", "pair_kind", "verdict"))
            and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in ("version", "draw"))
            and isinstance(d.get("regressed"), bool) and isinstance(d.get("on_design"), bool)
            and isinstance(d.get("sequential", False), bool)
            and _num(d.get("change")) and _num(d.get("seconds"), none_ok=False))


def gate_key(d: dict) -> str:
    """A gate draw's key in draws.jsonl: the kind (gate), tier, claim, version, pair and draw; a draw decided at
    looks (`"sequential": true`) is keyed apart from the fixed-n one of the same rows."""
    return _key(d["tier"], d["claim"], d["version"], f"{KIND}:{d['pair']}", d["draw"], d.get("sequential") is True)


def load(path: Path, stream=None) -> dict[str, dict]:
    """The finished gate draws of a draws.jsonl by key (its other lines, `cos validate`'s control draws, are not
    read here; a line cut short by a kill is skipped and rerun; another malformed gate line is said on `stream`)."""
    done, bad = read_draws(path, lambda d: isinstance(d, dict) and d.get("kind") == KIND, _is_record, gate_key, False)
    if bad and stream is not None:
        print(f"warning: {path}: {len(bad)} gate line(s) are not gate draw records (first: line {bad[0]}); skipped, "
              "those draws are rerun", file=stream)
    return done


def shares_from_pilot(recs: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(claim, pair) → {"share", "target_mde", "pilot_bad_change", "why"} for each spliceable pair, from its pilot
    draws: share = the median MDE of OLD's rows / the mean full-removal change on the claim's bad side, at most 1."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        if r["draw"] in PILOT and r["pair_kind"] == "regressed" and is_base_pair(r["pair"]):
            by.setdefault((r["claim"], r["pair"]), []).append(r)
    out = {}
    for key, rs in by.items():
        bad = [r["bad_change"] for r in rs if r.get("bad_change") is not None]
        mdes = [r["old_mde"] for r in rs if r.get("old_mde") is not None]
        mean_bad = float(np.mean(bad)) if bad else None
        target = float(np.median(mdes)) if mdes else None
        if mean_bad is None or target is None or mean_bad <= 0:
            out[key] = {"share": None, "target_mde": target, "pilot_bad_change": mean_bad,
                        "why": "no MDE or no regression on the pilot draws: not spliced"}
            continue
        share = min(1.0, target / mean_bad)
        out[key] = {"share": share, "target_mde": target, "pilot_bad_change": mean_bad,
                    "why": "" if share < 1 else "the full removal is below the MDE: spliced whole"}
    return out


def catches_from_pilot(recs: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(claim, pair) → {"share", "target_catches", "planted", "pilot_bad_change", "pilot_draws", "why"} for each
    spliceable pair, from its pilot draws: the regression a share w plants is w × the whole removal's mean change
    on the pilot draws (in expectation over which instances lose it), and what the gate says it catches there is
    the median over the pilot draws' GRID lines of the `catches` reported at w. w is the first grid share where the
    first reaches the second, linear between it and the share before. None, with why, where no share does (even the
    whole removal is below what the gate says it catches), where the smallest share already plants more (the gate
    catches less than the grid can plant: not a test of it), or where the pilot draws say nothing."""
    full: dict[tuple[str, str], list[float]] = {}
    said: dict[tuple[str, str], dict[float, list[float]]] = {}
    n_grid: Counter = Counter()
    for r in recs:
        if r["draw"] not in PILOT:
            continue
        if r["pair_kind"] == "regressed" and is_base_pair(r["pair"]) and r.get("bad_change") is not None:
            full.setdefault((r["claim"], r["pair"]), []).append(r["bad_change"])
        elif r["pair"].endswith(GRID_SUFFIX) and isinstance(r.get("grid"), list):
            key = (r["claim"], r["pair"][: -len(GRID_SUFFIX)])
            n_grid[key] += 1
            for w, _k, _bad, catches, *_ in r["grid"]:
                if catches is not None:
                    said.setdefault(key, {}).setdefault(float(w), []).append(catches)
    out = {}
    for key in n_grid:
        mean_bad = float(np.mean(full[key])) if full.get(key) else None
        base = {"share": None, "target_catches": None, "planted": None, "pilot_bad_change": mean_bad,
                "pilot_draws": n_grid[key]}
        ws = sorted(said.get(key, {}))
        if mean_bad is None or mean_bad <= 0 or not ws:
            out[key] = {**base, "why": "no regression or no reported catches on the pilot draws: not planted"}
            continue
        c = {w: float(np.median(said[key][w])) for w in ws}
        gap = {w: w * mean_bad - c[w] for w in ws}
        hit = next((i for i, w in enumerate(ws) if gap[w] >= 0), None)
        if hit is None:
            out[key] = {**base, "why": f"even the whole removal ({mean_bad:.3g}) is below what the gate says it "
                                       f"catches ({c[ws[-1]]:.3g} at share {ws[-1]:g}): not planted"}
            continue
        if hit == 0:
            out[key] = {**base, "why": f"already the smallest share ({ws[0]:g}) plants {ws[0] * mean_bad:.3g}, "
                                       f"above what the gate says it catches ({c[ws[0]]:.3g}): not planted"}
            continue
        w0, w1 = ws[hit - 1], ws[hit]
        f = gap[w0] / (gap[w0] - gap[w1])
        w = w0 + f * (w1 - w0)
        out[key] = {**base, "share": round(w, 4), "target_catches": c[w0] + f * (c[w1] - c[w0]),
                    "planted": round(w, 4) * mean_bad, "why": ""}
    return out


def validate_gate(out: Path, draws: int = MIN_DRAWS, tier: str = "cpu", jobs: int = 1, select: str | None = None,
                  stream=sys.stderr, sequential: bool = False) -> dict:
    """Every claim's gate pairs (ids containing `select`) over the pilot draws, then draws 1..`draws`; appends to
    DIR/draws.jsonl, writes DIR/gate-calibration.json and .md; returns the document. With `sequential` the draws
    decide at looks (`run_gate_draw_seq`); the pilot draws, which size the regression at the MDE, are fixed n
    either way (shared with a fixed-n calibration in the same folder)."""
    from cos.errors import InputError
    from cos.registry import all_claims

    _check_tier(tier)
    if not 1 <= draws < PILOT[0] or jobs < 1:
        raise InputError(f"--draws {draws} / --jobs {jobs}: positive integers, --draws below {PILOT[0]} (the pilot "
                         "draws' numbers)")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "draws.jsonl"
    done = load(log, stream)
    claims = [c for c in all_claims() if select is None or select in c.id]
    plans = {c.id: pairs_of(c) for c in claims}
    t0, n_run = time.perf_counter(), [0]

    def missing(cid: str, version: int, d: int, names: list[str], seq: bool = False) -> list[str]:
        """The records of `names` not yet in draws.jsonl at draw d (the draw runs for these alone)."""
        return [n for n in names if _key(tier, cid, version, f"{KIND}:{n}", d, seq) not in done]

    def run(tasks: list[tuple[str, int, dict | None, list[str]]], what: str, draw_fn: Callable = run_gate_draw) -> None:
        print(f"cos validate --kind gate: {what}: {len(tasks)} claim draws to run ({jobs} worker(s))", file=stream)
        with log.open("a") as f:
            def record(recs: list[dict]) -> None:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
                    done[gate_key(r)] = r
                f.flush()
                n_run[0] += 1
                r0 = recs[0] if recs else {}
                print(f"  [{n_run[0]}] {r0.get('claim')} draw {r0.get('draw')}: "
                      + ", ".join(f"{r['pair']} {r['verdict']}" for r in recs)
                      + f" · elapsed {time.perf_counter() - t0:.0f} s", file=stream, flush=True)
            if jobs > 1:
                with ProcessPoolExecutor(jobs, initializer=_one_thread) as pool:
                    futs = [pool.submit(draw_fn, cid, d, tier, sh, names) for cid, d, sh, names in tasks]
                    for fut in as_completed(futs):
                        record(fut.result())
            else:
                for cid, d, sh, names in tasks:
                    record(draw_fn(cid, d, tier, sh, names))

    version = {c.id: c.spec.version for c in claims}
    pilot_names = {cid: [n for p in ps if p.splice for n in (p.name, p.name + GRID_SUFFIX)]
                   for cid, (ps, _) in plans.items()}
    pilot = [(cid, d, None, m) for cid in plans for d in PILOT
             if (m := missing(cid, version[cid], d, pilot_names[cid]))]
    run(pilot, f"pilot draws {PILOT[0]}..{PILOT[-1]} (where the regressions at the MDE and at what the gate "
        "catches are sized)")
    # this version's pilot lines only (summarize filters so too: a bumped claim's older pilots size nothing)
    fixed_n = [r for r in done.values() if r["tier"] == tier and not r.get("sequential")
               and r.get("version") == version.get(r["claim"])]
    shares, catches = shares_from_pilot(fixed_n), catches_from_pilot(fixed_n)
    todo = {}
    for cid, (ps, _) in plans.items():
        sh = {p.name: shares[(cid, p.name)]["share"] for p in ps
              if p.splice and shares.get((cid, p.name), {}).get("share") is not None}
        names = [p.name for p in ps] + [n + MDE_SUFFIX for n in sh]
        if not sequential:      # at fixed n only: see run_gate_draw_seq
            at = {p.name + CATCHES_SUFFIX: catches[(cid, p.name)]["share"] for p in ps
                  if p.splice and catches.get((cid, p.name), {}).get("share") is not None}
            sh, names = {**sh, **at}, names + list(at)
        todo[cid] = (sh, names)
    # draw by draw over the claims: a run stopped early leaves every claim about as many draws
    main = [(cid, d, sh, m) for d in range(1, draws + 1) for cid, (sh, names) in todo.items()
            if (m := missing(cid, version[cid], d, names, sequential))]
    run(main, f"draws 1..{draws}" + (", sequential looks" if sequential else ""),
        run_gate_draw_seq if sequential else run_gate_draw)
    recs = [r for r in done.values() if r["tier"] == tier and r["claim"] in plans]
    doc = summarize(recs, claims, draws, tier, jobs, time.perf_counter() - t0, sequential)
    _write(out, doc)
    return doc


def calibration_files(out: Path, sequential: bool) -> tuple[Path, Path]:
    """The summary's JSON and Markdown files: one pair per mode, so a folder holding both modes' draws keeps
    both summaries."""
    stem = "gate-calibration" + ("-seq" if sequential else "")
    return out / f"{stem}.json", out / f"{stem}.md"


def _write(out: Path, doc: dict) -> None:
    js, md = calibration_files(out, bool(doc["provenance"].get("sequential")))
    js.write_text(json.dumps(doc, indent=1))
    md.write_text(markdown(doc))


def resummarize_gate(out: Path, draws: int, sequential: bool = False) -> dict:
    """DIR/gate-calibration.json and .md (with `sequential`: -seq.json and -seq.md) again from DIR/draws.jsonl's
    gate lines of that mode with this version's rules, running nothing; the provenance of the run that made the
    draws is kept (from the earlier summary, marked `resummarized`)."""
    from cos.errors import InputError
    from cos.registry import all_claims

    recs = list(load(out / "draws.jsonl", sys.stderr).values())
    if not recs:
        raise InputError(f"--summarize-only: {out}/draws.jsonl holds no gate draws (run cos validate --kind gate)")
    cal = calibration_files(out, sequential)[0]
    try:
        old = json.loads(_read_text(cal, "--summarize-only")).get("provenance") if cal.exists() else None
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f"--summarize-only: {cal}: not a gate calibration document") from None
    mode = sequential
    if isinstance(old, dict) and bool(old.get("sequential")) != mode:
        old = None      # an older summary of the other mode (one file served both before): not this run's
    tier = old["tier"] if isinstance(old, dict) and old.get("tier") else Counter(r["tier"] for r in recs).most_common(1)[0][0]
    # the claims with measured draws of this mode (the pilot draws are fixed-n lines of every mode's run)
    ids = {r["claim"] for r in recs if (r.get("sequential") is True) == mode and r["draw"] not in PILOT}
    if not ids:
        raise InputError(f"--summarize-only: {out}/draws.jsonl holds no {'sequential' if mode else 'fixed-n'} gate "
                         f"draws (--sequential {'off' if mode else 'on'} summarizes the other mode)")
    claims = [c for c in all_claims() if c.id in ids]
    doc = summarize([r for r in recs if r["tier"] == tier], claims, draws, tier, 0, 0.0, mode)
    if isinstance(old, dict):
        # the draws themselves say which host and torch made them (a resumed or partly rerun folder mixes them)
        doc["provenance"] = {"looks": doc["provenance"]["looks"], **old, "draws": draws,
                             **{k: doc["provenance"][k] for k in ("draw_seconds", "draws_by_host", "sequential")}}
    doc["provenance"]["resummarized"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    _write(out, doc)
    return doc


# ---------------------------------------------------------------- the summary
def _rate(recs: list[dict], flagged_counts_on_design_only: bool) -> dict | None:
    """How often the gate said `regressed` over a pair's draws, with a Wilson interval. Power counts every draw
    (a draw that could not be paired is a miss); a false-positive rate counts only the draws that were paired
    (an unpaired draw tested nothing, it is no pass), and says how many were not."""
    from cos.stats import proportion_ci

    off = sum(not r["on_design"] for r in recs)
    use = [r for r in recs if r["on_design"]] if flagged_counts_on_design_only else recs
    if not use:
        return None
    k = sum(r["regressed"] for r in use)
    e = proportion_ci(k, len(use))
    return {"draws": len(use), "flagged": k, "rate": e.value, "ci": [e.ci_low, e.ci_high], "off_design": off,
            "verdicts": dict(sorted(Counter(r["verdict"] for r in recs).items()))}


def _mean_ci(values: list[float]) -> dict | None:
    from cos.stats import bootstrap_ci

    v = [x for x in values if x is not None and math.isfinite(x)]
    if len(v) < 2:
        return None if not v else {"mean": v[0], "ci": None, "n": 1}
    e = bootstrap_ci(v)
    return {"mean": e.value, "ci": None if not e.decidable else [e.ci_low, e.ci_high], "n": len(v)}


def _ratio(recs: list[dict]) -> dict | None:
    """The unpaired/paired interval width ratio over draws: geometric mean with a 95% interval (bootstrap-t of the
    log ratios, exponentiated)."""
    logs = [math.log(r["width_ratio_unpaired"]) for r in recs
            if r.get("width_ratio_unpaired") is not None and r["width_ratio_unpaired"] > 0]
    m = _mean_ci(logs)
    if m is None:
        return None
    return {"geomean": math.exp(m["mean"]), "ci": m["ci"] and [math.exp(x) for x in m["ci"]], "draws": m["n"]}


def _share(recs: list[dict], used: str, most: str) -> dict | None:
    """The mean share of NEW's rows (or batches) a sequential draw used, over draws, with a 95% interval."""
    return _mean_ci([r[used] / r[most] for r in recs if r.get(used) is not None and r.get(most)])


def summarize(recs: Iterable[dict], claims: list, draws: int, tier: str, jobs: int, wall_s: float,
              sequential: bool = False) -> dict:
    """The gate calibration document from the draws' records (draws 1..`draws` measured; pilot draws size the
    regression at the MDE). `sequential`: the draws decided at looks are measured (each pair then also says the
    share of NEW's rows its draws used, and how many of its draws gave the verdict the fixed-n draw of the same
    rows gave, where that draw is among `recs`); otherwise the fixed-n ones."""
    import torch

    import cos

    # only the draws of each claim's current version (ordinary validate keys by version too): a bumped claim's
    # older draws, measured under other rules, are neither pooled with these nor its pilot
    version = {c.id: c.spec.version for c in claims}
    recs = [r for r in recs if r.get("version") == version.get(r["claim"])]
    shares, catches = shares_from_pilot(recs), catches_from_pilot(recs)
    by: dict[str, dict[str, list[dict]]] = {}
    fixed: dict[tuple, str] = {}        # (claim, pair, draw) -> the fixed-n draw's verdict
    for r in recs:
        if 1 <= r["draw"] <= draws:
            if (r.get("sequential") is True) == sequential:
                by.setdefault(r["claim"], {}).setdefault(r["pair"], []).append(r)
            elif sequential:
                fixed[(r["claim"], r["pair"], r["draw"])] = r["verdict"]
    out = {}
    for c in claims:
        try:
            pairs, notes = pairs_of(c)
        except ValueError as e:
            out[c.id] = {"version": c.spec.version, "pairs": {}, "unpaired": [str(e)], "meets_goal": False}
            continue
        per: dict[str, dict] = {}
        for p in pairs:
            names = ([p.name] + ([p.name + MDE_SUFFIX] if p.splice else [])
                     + ([p.name + CATCHES_SUFFIX] if p.splice and not sequential else []))
            for name in names:
                rs = by.get(c.id, {}).get(name, [])
                entry: dict[str, Any] = {"kind": p.kind, "why": p.why, "old": p.old.name, "new": p.new.name}
                if name.endswith(MDE_SUFFIX):
                    s = shares.get((c.id, p.name), {})
                    entry.update(kind="regressed at the MDE", share=s.get("share"), target_mde=s.get("target_mde"),
                                 pilot_bad_change=s.get("pilot_bad_change"), share_note=s.get("why", "no pilot"))
                if name.endswith(CATCHES_SUFFIX):
                    s = catches.get((c.id, p.name), {})
                    entry.update(kind=AT_CATCHES, share=s.get("share"), target_catches=s.get("target_catches"),
                                 planted=s.get("planted"), pilot_bad_change=s.get("pilot_bad_change"),
                                 share_note=s.get("why", "no pilot grid"))
                na = [r for r in rs if r["verdict"] == "n/a"]
                if rs and len(na) == len(rs):
                    entry.update(draws=len(rs), not_applicable=na[0]["reason"])
                else:
                    entry.update(draws=len(rs), rate=_rate(rs, p.kind != "regressed") if rs else None,
                                 bad_change=_mean_ci([r.get("bad_change") for r in rs]),
                                 width_ratio=_ratio(rs))
                    if sequential:
                        # a one-look claim's draw is the fixed-n draw run again (`run_gate_draw_seq`): it agrees
                        # by construction, so it is counted apart
                        both = [(r["verdict"], fixed[k]) for r in rs if not r.get("fallback")
                                and (k := (c.id, name, r["draw"])) in fixed]
                        entry.update(one_look=sum(bool(r.get("fallback")) for r in rs),
                                     rows_share=_share(rs, "rows_used", "rows_max"),
                                     batches_share=_share(rs, "batches_used", "batches_max"),
                                     looks_planned=max((r.get("looks_planned") or 1 for r in rs), default=None),
                                     same_as_fixed={"draws": len(both), "same": sum(a == b for a, b in both)})
                    if name.endswith(MDE_SUFFIX) and entry["bad_change"] and entry.get("target_mde"):
                        # the splice plants whole instances (round(w·n), at least 1): what it planted, over the MDE
                        entry["planted_over_mde"] = entry["bad_change"]["mean"] / entry["target_mde"]
                    if name.endswith(CATCHES_SUFFIX) and rs:
                        # power as `catches` states it: flagged by the tolerance route (a status flip from holds
                        # also flags a change whose interval is only below 0); all routes kept beside it
                        entry["rate_all_routes"] = entry["rate"]
                        tol_rate = _rate([{**r, "regressed": bool(r.get("beyond_tolerance"))} for r in rs], False)
                        if tol_rate:    # its verdicts are the route's, not the rows' (those are rate_all_routes')
                            tol_rate["verdicts"] = {"beyond the tolerance": tol_rate["flagged"],
                                                    "not": tol_rate["draws"] - tol_rate["flagged"]}
                        entry["rate"] = tol_rate
                        # what these very draws' rows said they catch, what was planted in expectation, and the
                        # power each row states for that regression (`_predicted_power`)
                        entry["said_catches"] = _mean_ci([(r.get("resolution") or {}).get("catches") for r in rs])
                        entry["expected_bad_change"] = _mean_ci([r.get("expected_bad_change") for r in rs])
                        entry["predicted_power"] = _mean_ci([_predicted_power(r) for r in rs])
                per[name] = entry
        full = [v for n, v in per.items() if v["kind"] == "regressed" and v.get("rate")]
        # a pair whose whole regression is below the MDE (spliced whole) is not a regression at the MDE: listed, not
        # counted in the claim's power at the MDE
        at_mde = [v for n, v in per.items() if v["kind"] == "regressed at the MDE" and v.get("rate")
                  and v.get("share") is not None and not v.get("share_note")]
        weakest = lambda vs: min(vs, key=lambda v: v["rate"]["rate"]) if vs else None
        mde_pair, full_pair = weakest(at_mde), weakest(full)
        catch_pair = weakest([v for v in per.values() if v["kind"] == AT_CATCHES and v.get("rate")
                              and v.get("share") is not None])
        same, retr = per.get("same-weights"), per.get("retrained")
        fpr = lambda v: v and v.get("rate")
        powered = lambda v: bool(v and v["rate"]["rate"] >= GOAL_POWER and v["rate"]["draws"] >= MIN_DRAWS)
        power_ok = powered(mde_pair)
        catches_ok = None if sequential or catch_pair is None else powered(catch_pair)
        same_ok = bool(fpr(same) and same["rate"]["rate"] <= GOAL_FPR and not same["rate"]["off_design"])
        retr_ok = (None if retr is None or retr.get("not_applicable") else
                   bool(fpr(retr) and retr["rate"]["rate"] <= GOAL_FPR and not retr["rate"]["off_design"]))
        out[c.id] = {"version": c.spec.version, "direction": c.spec.direction, "effect": c.spec.effect,
                     "tolerance": next((r["tolerance"] for rs in by.get(c.id, {}).values() for r in rs
                                        if r.get("tolerance") is not None), None),
                     "unpaired": notes, "pairs": per,
                     "power_at_mde": mde_pair and {k: mde_pair.get(k) for k in ("new", "share", "target_mde", "rate",
                                                                                "bad_change", "planted_over_mde",
                                                                                "width_ratio")},
                     "power_full": full_pair and {k: full_pair.get(k) for k in ("new", "rate", "bad_change")},
                     "power_at_catches": catch_pair and {k: catch_pair.get(k) for k in (
                         "new", "share", "target_catches", "planted", "said_catches", "expected_bad_change",
                         "predicted_power", "rate", "rate_all_routes", "bad_change")},
                     "goals": {"power_at_mde": power_ok, "fpr_same_weights": same_ok, "fpr_retrained": retr_ok,
                               "power_at_catches": catches_ok},
                     "meets_goal": power_ok and same_ok and retr_ok is not False,
                     # the second reading of "at the MDE" (module docstring): the gate's own, at fixed n
                     "meets_goal_at_catches": None if catches_ok is None else (catches_ok and same_ok
                                                                               and retr_ok is not False)}
    # this mode's draws and the pilot's (a folder may hold both modes' draws of the same rows)
    mine = [r for r in recs if ((r.get("sequential") is True) == sequential and 1 <= r["draw"] <= draws)
            or r["draw"] in PILOT]
    return {"schema": SCHEMA, "claims": out,
            "goal": {"power_at_mde": GOAL_POWER, "false_positive_rate": GOAL_FPR, "min_draws": MIN_DRAWS},
            "provenance": {"cos": getattr(cos, "__version__", None), "torch": torch.__version__, "tier": tier,
                           "draws": draws, "pilot_draws": list(PILOT), "jobs": jobs, "wall_s": round(wall_s, 1),
                           "sequential": sequential, "looks": _looks() if sequential else 1,
                           "draw_seconds": round(sum(r["seconds"] for r in mine), 1),
                           "draws_by_host": dict(Counter(f"{r.get('host', '?')} (torch {r.get('torch', '?')})"
                                                         for r in mine)),
                           "machine": platform.node(), "cpus": os.cpu_count(),
                           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}}


def _looks() -> int:
    from cos.sequential import LOOKS

    return LOOKS


def _pct(rate: dict | None) -> str:
    if not rate:
        return "–"
    s = f"{rate['flagged']}/{rate['draws']} = {rate['rate']:.2f} [{rate['ci'][0]:.2f}, {rate['ci'][1]:.2f}]"
    return s + (f" ({rate['off_design']} off design)" if rate.get("off_design") else "")


def _mc(m: dict | None) -> str:
    if not m:
        return "–"
    return f"{m['mean']:.3g}" + (f" [{m['ci'][0]:.3g}, {m['ci'][1]:.3g}]" if m.get("ci") else "")


def _wr(w: dict | None) -> str:
    if not w:
        return "–"
    return f"{w['geomean']:.2g}" + (f" [{w['ci'][0]:.2g}, {w['ci'][1]:.2g}]" if w.get("ci") else "")


def _same(s: dict | None, one_look: int = 0) -> str:
    return ("–" if not s or not s["draws"] else f"{s['same']}/{s['draws']}") + (f" ({one_look} one-look)" if one_look else "")


def _predicted_power(r: dict) -> float | None:
    """The power a @catches draw's own row states for the regression planted in expectation: Φ(z_power +
    (R − catches)/se), its `catches` read back (`cos.gate.resolution`), so exactly its power at R = catches."""
    from scipy import stats as st

    res = r.get("resolution") or {}
    se, catches, power, R = res.get("se"), res.get("catches"), res.get("power"), r.get("expected_bad_change")
    if not se or catches is None or power is None or R is None:
        return None
    return float(st.norm.cdf(st.norm.ppf(power) + (R - catches) / se))


def _at_catches(c: dict) -> str:
    """A claim's weakest pair at what the gate catches: rate (w: planted; said), or why none was planted."""
    pc = c.get("power_at_catches")
    if not pc:
        notes = [v.get("share_note") for v in c.get("pairs", {}).values() if v["kind"] == AT_CATCHES]
        return "–" + (f" ({notes[0]})" if notes and notes[0] else "")
    return (f"{_pct(pc['rate'])} (w {pc['share']:.2f}: planted {_mc(pc['expected_bad_change'])}, rows said they "
            f"catch {_mc(pc['said_catches'])}, predicted power {_mc(pc['predicted_power'])})")


def markdown(doc: dict) -> str:
    """The gate calibration tables: per claim power at the MDE, FPR of both unchanged kinds, width ratio; then
    every pair."""
    from tabulate import tabulate

    g, p = doc["goal"], doc["provenance"]
    seq = bool(p.get("sequential"))
    rows, pair_rows, notes = [], [], []
    for cid, c in doc["claims"].items():
        pm, pf = c.get("power_at_mde"), c.get("power_full")
        same, retr = c["pairs"].get("same-weights"), c["pairs"].get("retrained")
        rows.append([cid, "–" if c.get("tolerance") is None else f"{c['tolerance']:.3g}",
                     "–" if not pm else f"{pm['target_mde']:.3g} (w {pm['share']:.2f}: {_mc(pm['bad_change'])})",
                     _pct(pm and pm["rate"]), "–" if not pf else f"{_pct(pf['rate'])}; {_mc(pf['bad_change'])}",
                     _pct(same and same.get("rate")),
                     "n/a" if retr and retr.get("not_applicable") else _pct(retr and retr.get("rate")),
                     _wr(pm and pm["width_ratio"]), _wr(retr and retr.get("width_ratio")),
                     "yes" if c["meets_goal"] else "no"]
                    + ([] if seq else [_at_catches(c), {True: "yes", False: "no"}.get(c.get("meets_goal_at_catches"), "–")]))
        for name, v in c.get("pairs", {}).items():
            pair_rows.append([cid, name, v["kind"], v.get("not_applicable") and "n/a" or _pct(v.get("rate")),
                              ", ".join(f"{k} {m}" for k, m in (v.get("rate") or {}).get("verdicts", {}).items()),
                              _mc(v.get("bad_change")), _wr(v.get("width_ratio"))]
                             + ([_mc(v.get("rows_share")), v.get("looks_planned") or "–", _same(v.get("same_as_fixed"), v.get("one_look") or 0)]
                                if seq else []))
        notes += [f"- {cid}: {n}" for n in c.get("unpaired", [])]
    head = (f"Gate calibration, tier `{p['tier']}`"
            + (f", **sequential looks** (at most {p.get('looks')} per claim, as `cos gate --cos-sequential on` "
               "against a model: both models sampled on the same units, stopped at the look that decides the change)"
               if seq else "")
            + f": draws 1..{p['draws']} per pair (pilot draws {p['pilot_draws'][0]}.."
            f"{p['pilot_draws'][-1]} size the spliced regressions), {p['jobs']} worker(s), {p['wall_s']:.0f} s on "
            f"{p['machine']} ({p['cpus']} CPUs), torch {p['torch']}, {p['date']}; draws by host: "
            f"{p['draws_by_host']}. Goals: a regression at the claim's MDE flagged `regressed` in ≥ {g['power_at_mde']} "
            f"of draws; an unchanged model (same weights rebuilt; a retrained copy at another weight seed) flagged in "
            f"≤ {g['false_positive_rate']}; Wilson 95% intervals. MDE: the median of the positive control's own rows' "
            "MDE; w: the share of task instances whose rows come from the effect-removed control, fixed on the pilot "
            "draws, with the mean planted change it gave [95% CI over draws] (on the claim's bad side, claim units). "
            "Width ratio: unpaired/paired interval width of the change, geometric mean over draws [95% CI]."
            + (" Per pair (below): the mean share of NEW's rows the draws used [95% CI], the looks planned, and "
               "the draws whose verdict is the fixed-n draw's of the same rows (where that draw is in the folder)."
               if seq else
               " At what the gate catches: each instance loses the effect with probability w, w where the pilot "
               "draws' w × whole-removal change reaches the median `catches (80%)` the gate rows report there (the "
               "gate's own MDE); power counts the tolerance route only (what `catches` states); beside it the "
               "regression planted in expectation, what these draws' rows said they catch and the power their own "
               "se predicts; the weakest pair, as at the MDE.") + "\n\n")
    table = tabulate(rows, headers=["claim", "tolerance", "MDE (w: planted change)", "power at MDE",
                                    "power, whole regression (weakest pair); its change", "FPR same weights", "FPR retrained",
                                    "width ratio (at MDE)", "width ratio (retrained)", "goals met"]
                     + ([] if seq else ["power at what the gate catches", "goals met (gate's catches)"]),
                     tablefmt="github")
    pairs = tabulate(pair_rows, headers=["claim", "pair", "kind", "flagged / draws [95% CI]", "verdicts",
                                         "change (bad side) [95% CI]", "width ratio"]
                     + (["share of rows used", "looks", "same verdict as fixed n"] if seq else []), tablefmt="github")
    return (head + table + "\n\nEvery pair:\n\n" + pairs + "\n"
            + ("\nNot paired:\n\n" + "\n".join(notes) + "\n" if notes else ""))

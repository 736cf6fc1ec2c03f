"""How the gate's sequential stop decides, against the fixed-n gate on the same draws (issue 25).

A simulated claim through the real runner and gate (`RunContext.measure_records`, `cos.gate.Against`), three ways:
"model", looks against a model (`PairedLooks`: both models sampled unit by unit); "stored", looks against the old
model's run folder (its records of every row, measured first at fixed n; only the new rows stop); "fixed", fixed n
against the model (the old model measured whole after the claim). The claim: a mean over 48 task instances (6 units of 8,
looks after 2, 4 and 6 units), each row's value the model's effect plus noise the two models share per row
(N(0, 1): the task instance and seed) plus noise of each model's own (N(0, own²): what a retrain moves). The claim
is sized for an effect of 0.4, so its tolerance is 0.2. Per scenario (the old model's effect: 0.5, which holds, or
0.3, which holds in about half the draws, so its status flips by noise alone; and the change new − old) and draw
(other rows' noise), the three gates decide the same two models on the same rows:
- the share of draws that fail the gate ("regressed") with its Wilson 95% interval: at a change of 0 this is the
  false-positive rate (the issue's goal: <= 0.05); at −0.2 (the tolerance) the gate regresses through the flip
  rule where the new status stops holding; at −0.4 and −0.6 (beyond the tolerance) it is power;
- each gate's verdict agreement with fixed n draw by draw, and the rows the new model sampled as a share of 48
  (against a model the old one sampled the same; a stored run's old rows were all run before the gate).

    python benchmarks/gate_sequential.py [--draws 200] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats
from tabulate import tabulate

from cos.controls import TINY
from cos.gate import Against, as_bundle
from cos.registry import Claim, ClaimSpec
from cos.runner import RunContext
from cos.stats import bootstrap_ci

SETTINGS = replace(TINY, tasks=("grounding",), instances=48, seeds=(0,), batch_size=8)
# (old effect, change, own noise sd): own 0.05 is the review's case, a paired change decided long before either
# model's status, where an old status undecided on the rows so far had let a look stop a flip as "unchanged"
SCENARIOS = ((0.5, 0.0, 0.3), (0.3, 0.0, 0.3), (0.5, -0.2, 0.3), (0.5, -0.4, 0.3), (0.5, -0.6, 0.3),
             (0.3, 0.0, 0.05), (0.3, -0.15, 0.05))


@dataclass
class Model:
    """A stand-in checkpoint: nothing is sampled; `draw` picks the rows' noise."""

    effect: float
    name: str
    draw: int
    own: float
    weights_hash: str = "sim"
    fingerprint: str = "sim"
    num_layers: int = 4


def _normal(*key) -> float:
    return float(np.random.default_rng(zlib.crc32("|".join(map(str, key)).encode())).standard_normal())


class MeanClaim(Claim):
    spec = ClaimSpec(id="sim.mean", title="simulated mean", paper_ref="-", paper_value="-",
                     measured_quantity="value", threshold=0.0, direction=">", effect=0.4)

    def __init__(self):
        self.batches: dict[str, int] = {}

    def measure_batch(self, ctx, system, settings, batch):
        self.batches[system.name] = self.batches.get(system.name, 0) + 1
        return [{"instance": i.id, "seed": s,
                 "value": system.effect + _normal(system.draw, i.id, s) + system.own * _normal(system.name, system.draw, i.id, s)}
                for i, s in zip(batch.instances, batch.seeds)]

    def conclude(self, records, system, settings):
        by: dict = {}
        for r in records:
            by.setdefault(r["instance"], []).append(r["value"])
        return self.result(bootstrap_ci([np.mean(v) for v in by.values()]), system, settings,
                           self.Details(measured="simulated mean"), samples=by)


MODES = ("model", "stored", "fixed")     # looks against a model (lockstep), looks against a stored run, fixed n


def gate_once(old: float, change: float, own: float, draw: int, mode: str) -> dict:
    """One gate of new (effect old + change) against old on draw `draw`'s rows: `mode` one of MODES."""
    claim = MeanClaim()
    old_model = Model(old, "old", draw, own)
    if mode == "stored":     # the old model's run folder: every row, at fixed n, before the gate
        run = RunContext(progress=False).measure_claim(MeanClaim(), old_model, SETTINGS)
        against = Against("old-run", records={claim.id: as_bundle(run.records)}, statuses={claim.id: run.status})
    else:
        against = Against("old", system=old_model)
    ctx = RunContext(progress=False, sequential=mode != "fixed")
    ctx.look_rule = against.look_rule(claim)
    res = ctx.measure_claim(claim, Model(old + change, "new", draw, own), SETTINGS)
    row = against.row(claim, res, ctx, SETTINGS)
    units = len(ctx.units_of(claim, SETTINGS))
    return {"verdict": row["verdict"], "regressed": bool(row["regressed"]), "n": row.get("n"),
            "share_new": claim.batches.get("new", 0) / units,
            "share_old": 1.0 if mode == "stored" else claim.batches.get("old", 0) / units}


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of k in n (scipy's binomtest)."""
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out, rows, t0 = {}, [], time.perf_counter()
    for old, change, own in SCENARIOS:
        got = {m: [gate_once(old, change, own, d, m) for d in range(a.draws)] for m in MODES}
        key = f"old {old}, change {change:+.2f}, own sd {own}"
        out[key] = {}
        for m, g in got.items():
            agree = sum(s["verdict"] == f["verdict"] for s, f in zip(g, got["fixed"])) / a.draws
            k = sum(x["regressed"] for x in g)
            verdicts = {v: sum(x["verdict"] == v for x in g) for v in sorted({x["verdict"] for x in g})}
            share = float(np.mean([x["share_new"] for x in g]))
            if m == "model":        # both models sampled the same units
                assert all(x["share_old"] == x["share_new"] for x in g)
            out[key][m] = {"regressed": k, "draws": a.draws, "ci": wilson(k, a.draws), "verdicts": verdicts,
                           "share_of_rows": share, "agreement_with_fixed": agree}
            lo, hi = wilson(k, a.draws)
            rows.append([old, f"{change:+.2f}", own, m, f"{k / a.draws:.3f} [{lo:.3f}, {hi:.3f}]", f"{share:.2f}",
                         ", ".join(f"{v} {c}" for v, c in verdicts.items()), f"{agree:.3f}"])
        print(f"{key}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(tabulate(rows, headers=["old", "change", "own sd", "gate", "regressed (Wilson 95%)", "share of rows",
                                  "verdicts", "same verdict as fixed n"], tablefmt="github"))
    doc = {"draws": a.draws, "tolerance": 0.2, "instances": 48,
           "batch_instances": 8, "results": out}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
    return doc


if __name__ == "__main__":
    main()

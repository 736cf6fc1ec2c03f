"""Replay a finished run's batches through the run's ETA (cos.eta.RunEstimate) with other stop predictions, to see
what each costs in error without another GPU run:

    python benchmarks/eta_replay.py RUN/claims-status.json [--pilot STATUS_JSON] [--prior-weight K] [--oracle]
                                    [--forwards-s S] [--model DIR]

The plan's work per claim is the run's own (provenance eta_estimates.claims: planned seconds), split into its own
part and the shared runs it reads (the registry's `shared_runs` at the run's settings, priced at the run's seconds
per row-forward: provenance eta_parts_s, or --forwards-s, the ETA line's forward seconds, for runs that did not
record it). The batches: provenance eta_estimates.events where the run recorded them; otherwise APPROXIMATED from
the rows (claims back to back in table order, from the ETA line to the claims' end, each as long as its runtime_s,
scaled to fill; its batches evenly spaced): say so with any number it gives. Stops: the prior as the run had them
(learning from finished claims with --prior-weight, the code's default), a pilot's (--pilot: cos.plan.claim_stops
from its rows), or --oracle (each claim's used fraction, known in advance: the floor of what better stop
predictions can buy)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cos.eta import PRIOR_WEIGHT, ClaimWork, RunEstimate, trace_errors
from cos.models import load_system
from cos.plan import PRIOR_SOURCE, claim_stops
from cos.pytest_plugin import DEFAULT_MODEL
from cos.registry import get_claim
from cos.settings import ClaimSettings


def events_of(doc: dict) -> tuple[list, bool]:
    """([seconds, claim, units done, its units] per batch, plus the claim's start and end), recorded or not."""
    p, rows = doc["provenance"], {r["id"]: r for r in doc["claims"]}
    out = []
    if p["eta_estimates"].get("events"):
        for t, cid, k, u in p["eta_estimates"]["events"]:
            out.append((t, "start" if k == 0 else "progress", cid, k, u))
        ends = {}
        for t, cid, k, u in p["eta_estimates"]["events"]:
            ends[cid] = (t, k)
        out += [(t, "finish", cid, k, None) for cid, (t, k) in ends.items()]
        return sorted(out, key=lambda e: (e[0], e[1] == "finish")), True
    at, end = p["eta_at_s"], p["claims_end_s"]
    order = [c for c in rows if (rows[c]["details"] or {}).get("sequential")]
    scale = (end - at) / sum(rows[c]["runtime_s"] for c in order)
    t = at
    for cid in order:
        sq = rows[cid]["details"]["sequential"]
        units, used, dur = sq["batches_max"], sq["batches_used"], rows[cid]["runtime_s"] * scale
        out.append((t, "start", cid, [lk["batches"] for lk in sq["looks_planned"]], units))
        out += [(t + dur * k / used, "progress", cid, k, units) for k in range(1, used + 1)]
        out.append((t + dur, "finish", cid, used, None))
        t += dur
    return out, False


def replay(doc: dict, stops_of, learn_weight: float | None, forwards_s: float | None, model: str) -> dict:
    p, rows = doc["provenance"], {r["id"]: r for r in doc["claims"]}
    plan = p["eta_estimates"]["claims"]
    settings = ClaimSettings(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in next(iter(rows.values()))["details"]["settings"].items()})
    system = load_system(model, device="cpu")
    parts = p.get("eta_parts_s") or {}
    spf = parts.get("seconds_per_row_forward")
    cfg = 2 if settings.guidance_scale > 1 else 1
    if spf is None:
        total = sum(get_claim(c).cost(settings, system) for c in plan) + sum(
            {k: n for c in plan for k, n in get_claim(c).shared_runs(settings, system).items()}.values())
        spf = forwards_s / (total * cfg)
    work = {}
    for cid, c in plan.items():
        claim = get_claim(cid)
        shared = {k: n * cfg * spf for k, n in claim.shared_runs(settings, system).items()}
        stops, source = stops_of(claim, settings, system)
        work[cid] = ClaimWork(cid, c["planned_s"] - sum(shared.values()), shared, stops, source,
                              learn=learn_weight is not None and source == PRIOR_SOURCE)
    clock = [p["eta_at_s"]]
    est = RunEstimate(work, t0=p["eta_at_s"], start=0.0, clock=lambda: clock[0],
                      prior_weight=learn_weight if learn_weight is not None else 0.0)
    events, recorded = events_of(doc)
    for t, kind, cid, k, u in events:
        clock[0] = t
        if kind == "start":
            sq = rows[cid]["details"].get("sequential") or {}
            est.started(cid, u, k if isinstance(k, list) else [lk["batches"] for lk in sq.get("looks_planned", [])] or [u])
        elif kind == "progress":
            est.progress(cid, k)
        else:
            est.finished(cid, k)
    errs = sorted(abs(e) for _, e, _ in trace_errors(est.trace, p["claims_end_s"], p["eta_at_s"]))
    return {"events": "recorded" if recorded else "approximated from the rows", "re_estimates": len(errs),
            "median_abs_error_of_wall": round(errs[len(errs) // 2], 4), "max_abs_error_of_wall": round(errs[-1], 4),
            "share_within_25pct": round(sum(e <= 0.25 for e in errs) / len(errs), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("status")
    ap.add_argument("--pilot", default=None)
    ap.add_argument("--prior-weight", type=float, default=None,
                    help=f"learn stops from finished claims with this prior weight (the code's: {PRIOR_WEIGHT})")
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--forwards-s", type=float, default=None)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    a = ap.parse_args()
    doc = json.loads(Path(a.status).read_text())
    if doc["provenance"].get("eta_xdist"):
        raise SystemExit(f"{a.status}: an xdist run (provenance eta_xdist): its events are claims' ends on several "
                         "workers, not one process's batches; nothing to replay")
    rows = {r["id"]: r for r in doc["claims"]}
    if a.oracle:
        def stops_of(claim, s, system):
            sq = rows[claim.id]["details"]["sequential"]
            return [(sq["batches_used"] / sq["batches_max"], 1.0)], "oracle"
    elif a.pilot:
        pilot = {r["id"]: r for r in json.loads(Path(a.pilot).read_text())["claims"]}

        def stops_of(claim, s, system):
            st, _, source = claim_stops(claim, s, system, True, pilot.get(claim.id))
            return st, source
    else:
        def stops_of(claim, s, system):
            st, _, source = claim_stops(claim, s, system, True, None)
            return st, source
    label = "oracle stops" if a.oracle else f"pilot {a.pilot}" if a.pilot else (
        f"prior, learning from finished claims (weight {a.prior_weight:g})" if a.prior_weight is not None
        else "prior only")
    print(json.dumps({"run": a.status, "stops": label, **replay(doc, stops_of, a.prior_weight, a.forwards_s, a.model)}))


if __name__ == "__main__":
    main()

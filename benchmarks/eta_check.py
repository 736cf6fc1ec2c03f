"""The ETA's parts per claim (forwards and host-side readouts, cos.runner.estimate_forwards) beside the runtime
each claim took in a finished run (its claims-status.json), on the same machine:

    python benchmarks/eta_check.py --status RUN/claims-status.json [--model fixtures/organism] [--tier gpu]

Prints per claim: the estimated forward seconds (its share of the plan; the shared clean run is charged to
the first claim that reads it, as in a run), the estimated readout seconds, and the measured runtime."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cos.models import load_system
from cos.registry import all_claims
from cos.runner import RunContext, estimate_forwards
from cos.settings import settings_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--status", required=True)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "organism"))
    ap.add_argument("--tier", default="gpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    system = load_system(a.model, device=a.device)
    s = settings_for(system, a.tier)
    claims = all_claims()
    est = estimate_forwards(RunContext(progress=False), system, s, claims)
    doc = json.loads(Path(a.status).read_text())
    rows = doc.get("claims") or doc.get("results")
    took = {r["id"]: r.get("runtime_s") or 0.0 for r in rows}
    t = est["seconds_per_row_forward"] * (2 if s.guidance_scale > 1 else 1)
    print(f"unit seconds: {json.dumps({k: round(v, 6) for k, v in est['readout_seconds'].items()})}")
    print(f"{'claim':28s} {'fwd est':>8s} {'readouts est':>12s} {'took':>8s}")
    for c in claims:
        f = est["per_claim"][c.id] * t
        print(f"{c.id:28s} {f:8.1f} {est['host_s_per_claim'][c.id]:12.1f} {took.get(c.id, 0):8.1f}")
    clean = sum(est["shared_runs"].values()) * t
    print(f"shared runs {est['shared_runs']} (est.) {clean:.1f} s; ETA {est['eta_s']:.1f} s; sum of claim runtimes "
          f"{sum(took.values()):.1f} s; wall {doc.get('provenance', {}).get('wall_s')} s")


if __name__ == "__main__":
    main()

"""The run's ETA at each re-estimate against what the run then took (issue 24 item 5), from a finished run's
claims-status.json (provenance `eta_estimates`, written by cos.eta.RunEstimate):

    python benchmarks/eta_error.py RUN/claims-status.json [--log RUN.log] [--json OUT.json]

For the ETA line and every re-estimate after a batch: seconds into the run, the ETA, and its error two ways
(cos.eta.trace_errors): the end it predicted (t + ETA) against the end of the claims, as a share of the wall time
from the ETA line on (the goal: within ±25%), and the ETA against the time then left. With --log (the pytest
output), also against the session's end as the summary line printed it (the table and report written)."""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from cos.eta import trace_errors


def summary(prov: dict, end_s: float, label: str) -> dict:
    """Errors of the ETA line and of every re-estimate against `end_s` (seconds into the run)."""
    at, eta0 = prov["eta_at_s"], prov["eta_s"]
    xdist = prov.get("eta_xdist") or {}
    if eta0 is None and xdist:      # no ETA line under xdist: the plan's one-process price is shown instead
        eta0 = xdist["one_process_eta_s"]
    trace = prov["eta_estimates"]["trace"]
    errs = trace_errors(trace, end_s, at)
    wall = end_s - at
    first = (at + eta0 - end_s) / wall
    abs_wall = [abs(e) for _, e, _ in errs]
    return {"end": label, "end_s": end_s, "eta_at_s": at, "wall_from_eta_line_s": round(wall, 1),
            "eta_line_s": eta0, "eta_line_max_s": prov.get("eta_max_s") or xdist.get("one_process_eta_max_s"),
            "eta_line_error": round(first, 4), "eta_line_is": "one process's plan (xdist)" if xdist else "the ETA",
            "re_estimates": len(errs),
            "error_of_wall": {"median_abs": round(statistics.median(abs_wall), 4) if abs_wall else None,
                              "max_abs": round(max(abs_wall), 4) if abs_wall else None,
                              "share_within_25pct": round(sum(a <= 0.25 for a in abs_wall) / len(abs_wall), 4)
                              if abs_wall else None},
            "points": [{"t_s": t, "eta_s": e, "done": d, "error_of_wall": round(ew, 4), "error_of_left": round(el, 4)}
                       for (t, e, d), (_, ew, el) in zip([x for x in trace if end_s - x[0] > 0], errs)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("status")
    ap.add_argument("--log", default=None, help="the run's pytest output (its '[cos] wall time ... (X s)' line)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    doc = json.loads(Path(a.status).read_text())
    prov = doc["provenance"]
    if "eta_estimates" not in prov:
        raise SystemExit(f"{a.status}: no eta_estimates in its provenance (a run without the re-estimated ETA)")
    out = {"status": a.status, "device_name": prov.get("device_name"), "git_commit": prov.get("git_commit"),
           "tier": prov.get("tier"), "claims": prov["eta_estimates"]["claims"],
           "against": [summary(prov, prov["claims_end_s"], "claims done")]}
    if a.log:
        m = re.search(r"\[cos\] wall time .*?\(([\d.]+) s\)", Path(a.log).read_text(errors="replace"))
        if m:
            out["against"].append(summary(prov, float(m.group(1)), "session end (table and report written)"))
    for s in out["against"]:
        e = s["error_of_wall"]
        print(f"{a.status} ({out['device_name']}, {out['tier']} tier) against the {s['end']} at {s['end_s']:.1f} s: "
              f"{'plan line (xdist, priced for one process)' if 'xdist' in s['eta_line_is'] else 'ETA line'} at "
              f"{s['eta_at_s']:.1f} s said {s['eta_line_s']:.1f} s (at most {s['eta_line_max_s']}), "
              f"took {s['wall_from_eta_line_s']:.1f} s: {s['eta_line_error']:+.1%}; {s['re_estimates']} re-estimates: "
              f"|error| as a share of that wall time median {e['median_abs']:.1%}, worst {e['max_abs']:.1%}, "
              f"{e['share_within_25pct']:.0%} within 25%")
        pts = s["points"]
        for p in pts[:: max(1, len(pts) // 12)] + pts[-1:]:
            print(f"   t {p['t_s']:7.1f} s  done {p['done']:6.1%}  ETA {p['eta_s']:7.1f} s  "
                  f"error {p['error_of_wall']:+7.1%} of the wall time, {p['error_of_left']:+7.1%} of the time left")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

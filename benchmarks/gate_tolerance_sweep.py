"""The gate's calibration draws (`cos validate --kind gate`, draws.jsonl) decided again at other tolerances.

    python benchmarks/gate_tolerance_sweep.py DIR [DIR ...] [--fractions 0 0.25 0.5]

DIR is a `cos validate --kind gate` folder (draws.jsonl and gate-calibration.json).

A gate draw records its paired change's 95% interval and both statuses, and `cos.gate.decide_change` is a function
of those and the tolerance alone. So the verdict each draw would have had under `--cos-tolerance F` (F times the
claim's ClaimSpec.effect) is recomputed here from the recorded draw, without sampling anything. Printed per tier
and fraction: the power on the regressions at the claim's MDE (its weakest splice pair counted at the MDE, as
gate-calibration.json lists them: a pair spliced whole because its whole regression is below the MDE is not), and the false-positive rate on the unchanged pairs (same weights, retrained), pooled over the claims
and per claim. A draw whose recorded tolerance is not the default fraction of the claim's effect (a claim with
its own gate_tolerance) keeps its own, as the gate would.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from collections import defaultdict

from cos.gate import TOLERANCE_FRACTION, decide_change
from cos.registry import get_claim
from cos.stats import proportion_ci


def verdict(d: dict, claim, fraction: float | None, tol: float | None = None) -> bool:
    """The draw's verdict at `fraction` of the claim's effect (or at the tolerance `tol` when fraction is None)."""
    if fraction is not None:
        eff = claim.spec.effect
        own = getattr(claim, "gate_tolerance", None)
        tol = float(own) if own is not None else (None if eff is None else fraction * float(eff))
    change = {"ci": d.get("ci"), "identical": d.get("identical")}
    return decide_change(claim.spec.direction, change, tol, d.get("status_new"), d.get("status_old"))["regressed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.25, TOLERANCE_FRACTION])
    a = ap.parse_args()
    recs, at_mde = [], set()
    for d in a.dirs:
        rs = [json.loads(line) for line in open(Path(d) / "draws.jsonl") if line.strip()]
        summary = json.loads((Path(d) / "gate-calibration.json").read_text())
        tiers = {r["tier"] for r in rs}
        at_mde |= {(t, cid, name) for t in tiers for cid, c in summary["claims"].items()
                   for name, v in c["pairs"].items() if v.get("kind") == "regressed at the MDE"
                   and v.get("share") is not None and not v.get("share_note")}
        recs += rs
    recs = [r for r in recs if r.get("kind") == "gate" and 1 <= r["draw"] < 9000 and r.get("on_design", True)]
    claims = {cid: get_claim(cid) for cid in {r["claim"] for r in recs}}
    # the recompute must give every draw its recorded verdict at its recorded tolerance, or nothing here holds
    off = [r for r in recs if r.get("verdict") != "n/a"
           and verdict(r, claims[r["claim"]], None, r.get("tolerance")) != bool(r.get("regressed"))]
    print(f"recomputed at the recorded tolerance: {len(recs) - len(off)}/{len(recs)} draws give their recorded verdict")
    if off:
        raise SystemExit(f"{len(off)} draws differ, e.g. {off[0]['claim']} {off[0]['pair']} draw {off[0]['draw']}")
    for tier in sorted({r["tier"] for r in recs}):
        rt = [r for r in recs if r["tier"] == tier]
        print(f"\n## tier {tier}: {len(rt)} pair draws\n")
        print("| claim | " + " | ".join(f"F={f:g}: power at the MDE (weakest pair) | retrained flagged"
                                        for f in a.fractions) + " |")
        print("|---|" + "---|---|" * len(a.fractions))
        pooled = {f: {"same-weights": [0, 0], "retrained": [0, 0]} for f in a.fractions}
        for cid in sorted(claims):
            cells = []
            for f in a.fractions:
                by_pair: dict[str, list[bool]] = defaultdict(list)
                for r in rt:
                    if r["claim"] != cid or r.get("verdict") == "n/a":
                        continue
                    v = verdict(r, claims[cid], f)
                    if (tier, cid, r["pair"]) in at_mde:
                        by_pair[r["pair"]].append(v)
                    elif r["pair_kind"] in pooled[f]:
                        pooled[f][r["pair_kind"]][0] += v
                        pooled[f][r["pair_kind"]][1] += 1
                        by_pair["~" + r["pair_kind"]].append(v)
                mde = [v for k, v in by_pair.items() if not k.startswith("~")]
                pw = min(((sum(v), len(v)) for v in mde), key=lambda x: x[0] / x[1]) if mde else None
                rt_ = by_pair.get("~retrained")
                cells.append(f"{pw[0]}/{pw[1]}" if pw else "–")
                cells.append(f"{sum(rt_)}/{len(rt_)}" if rt_ else "n/a")
            print(f"| {cid} | " + " | ".join(cells) + " |")
        print()
        for f, kinds in pooled.items():
            for kind, (k, n) in kinds.items():
                if n:
                    e = proportion_ci(k, n, 0.95)
                    print(f"F={f:g}: {kind} pairs flagged {k}/{n} [{e.ci_low:.3f}, {e.ci_high:.3f}] (Wilson 95%)")


if __name__ == "__main__":
    main()

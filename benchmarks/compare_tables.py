"""Compare claims-status.json files row by row (status, measured, CI, n, reason): the tables of one process and
of N processes must be identical. Prints each row side by side; exit status 1 when any row differs.

    python benchmarks/compare_tables.py [--within FRAC] runs/p1/claims-status.json runs/p2/claims-status.json [...]

--within FRAC: a row that differs counts as agreeing when its status and n are the same and its estimate and
interval ends differ by at most FRAC of the first table's interval width (a compiled model's kernels round
differently from the eager one's: the claims' tolerance is their interval, not the last bit).
"""
from __future__ import annotations

import argparse
import json
import sys

FIELDS = ("status", "measured", "ci_low", "ci_high", "n", "reason")


def rows(path: str) -> dict:
    doc = json.load(open(path))
    return {r["id"]: r for r in doc["claims"]}, doc.get("provenance", {})


def shift(a: tuple, b: tuple) -> float | None:
    """Largest difference of estimate and interval ends, as a fraction of a's interval width; None if not numeric."""
    try:
        width = float(a[3]) - float(a[2])
        d = max(abs(float(x) - float(y)) for x, y in zip(a[1:4], b[1:4]))
    except (TypeError, ValueError):
        return None
    return d / width if width > 0 else (0.0 if d == 0 else float("inf"))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--within", type=float, default=None)
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args(argv)
    tables = [rows(p) for p in a.paths]
    ids = sorted(set().union(*(t[0] for t in tables)))
    bad = near = 0
    for cid in ids:
        vals = [tuple(t[0].get(cid, {}).get(f) for f in FIELDS) for t in tables]
        same = all(v == vals[0] for v in vals)
        tag = "same"
        if not same:
            shifts = [shift(vals[0], v) for v in vals[1:]]
            ok = a.within is not None and all(v[0] == vals[0][0] and v[4] == vals[0][4] for v in vals) and \
                all(s is not None and s <= a.within for s in shifts)
            near += ok
            bad += not ok
            tag = "near" if ok else "DIFF"
        show = lambda v: f"{v[0]:<12} {v[1]!s:>22} [{v[2]!s}, {v[3]!s}] n={v[4]}"
        print(f"{tag:<5} {cid:<26} " + "  |  ".join(show(v) for v in vals))
        if not same:
            print(f"      largest shift / interval width: {[shift(vals[0], v) for v in vals[1:]]}")
            for v in vals:
                print(f"      reason: {v[5]}")
    for p, (_, prov) in zip(a.paths, tables):
        print(f"{p}: world_size={prov.get('world_size')} wall_s={prov.get('wall_s')} eta_s={prov.get('eta_s')} "
              f"store={prov.get('rank_store')}")
    print(f"{len(ids) - bad - near}/{len(ids)} rows identical across {len(a.paths)} tables"
          + (f"; {near} more agree within {a.within:g} of their interval width" if a.within is not None else ""))
    return 1 if bad or not ids else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

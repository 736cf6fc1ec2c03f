"""Compare claims-status.json files row by row (status, measured, CI, n, reason): the tables of one process and
of N processes must be identical. Prints each row side by side; exit status 1 when any row differs.

    python benchmarks/compare_tables.py runs/p1/claims-status.json runs/p2/claims-status.json [...]
"""
from __future__ import annotations

import json
import sys

FIELDS = ("status", "measured", "ci_low", "ci_high", "n", "reason")


def rows(path: str) -> dict:
    doc = json.load(open(path))
    return {r["id"]: r for r in doc["claims"]}, doc.get("provenance", {})


def main(paths: list[str]) -> int:
    tables = [rows(p) for p in paths]
    ids = sorted(set().union(*(t[0] for t in tables)))
    bad = 0
    for cid in ids:
        vals = [tuple(t[0].get(cid, {}).get(f) for f in FIELDS) for t in tables]
        same = all(v == vals[0] for v in vals)
        bad += not same
        show = lambda v: f"{v[0]:<12} {v[1]!s:>22} [{v[2]!s}, {v[3]!s}] n={v[4]}"
        print(f"{'same' if same else 'DIFF':<5} {cid:<26} " + "  |  ".join(show(v) for v in vals))
        if not same:
            for v in vals:
                print(f"      reason: {v[5]}")
    for p, (_, prov) in zip(paths, tables):
        print(f"{p}: world_size={prov.get('world_size')} wall_s={prov.get('wall_s')} eta_s={prov.get('eta_s')} "
              f"store={prov.get('rank_store')}")
    print(f"{len(ids) - bad}/{len(ids)} rows identical across {len(paths)} tables")
    return 1 if bad or not ids else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

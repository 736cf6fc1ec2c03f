"""Run folders and their history: `--cos-out DIR` holds the latest run; the run before it moves to
`DIR/history/<UTC timestamp>/` at the moment a new run first writes (its partial table, or its final one), so a
run that breaks before measuring anything leaves the previous one in place.

Only what cos wrote moves: the run's own file names (`RUN_FILES`), the arrays files its rows name under `data/`,
and a `figures/` folder that `cos report` made (it carries report.py's `.cos-made` marker). The folder itself
carries a `.cos-made` marker listing those paths, rewritten after every write. A user's own files, the result
store (`cos-store/`, shared by every run into the folder), VBVR-Bench's generated videos and cached baseline
scores (written while claims measure, before any table) stay where they are. A history folder is never
overwritten: a second run of the same second gets a suffix (`-2`, ...).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from cos.errors import CosError

MARKER = ".cos-made"         # the same marker name as report.py's figures/ folder
MADE_BY = "cos run"
HISTORY = "history"
STATUS, PARTIAL = "claims-status.json", "claims-status.partial.json"
RUN_FILES = (STATUS, "claims-status.md", PARTIAL, "samples.jsonl", "records.jsonl", "claims-report.md",
             "claims-report.html", "gate.json", "gate.md")     # every file a run writes into --cos-out: extend here
MAX_STATUS = 256 << 20       # the bound on a status file read here (cos.trust.read_regular)
_DATA = re.compile(r"data/[A-Za-z0-9_.\-]+\.safetensors")


def _read_json(path: Path) -> dict | None:
    """A JSON object from a file cos may have written; None when missing, unreadable or not an object."""
    from cos.trust import read_regular

    try:
        doc = json.loads(read_regular(path, MAX_STATUS))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _status_doc(run: Path) -> tuple[dict | None, bool]:
    """The run's final table, else its partial one (True: partial), else (None, False)."""
    doc = _read_json(run / STATUS)
    if doc is not None and isinstance(doc.get("claims"), list):
        return doc, False
    doc = _read_json(run / PARTIAL)
    if doc is not None and isinstance(doc.get("claims"), list):
        return doc, True
    return None, False


def _figures_by_cos(run: Path) -> bool:
    mark = _read_json(run / "figures" / MARKER)
    return (run / "figures").is_dir() and not (run / "figures").is_symlink() and bool(mark) \
        and str(mark.get("by", "")).startswith("cos report")


def _allowed(rel: str) -> bool:
    """Whether a path a marker lists is one cos writes in a run folder (a hand-edited marker moves nothing else)."""
    return rel in RUN_FILES or rel == "figures" or bool(_DATA.fullmatch(rel))


def holds_run(out: str | Path) -> bool:
    """Whether the folder holds a run's table (final or partial)."""
    out = Path(out)
    return (out / STATUS).is_file() or (out / PARTIAL).is_file()


def run_entries(out: str | Path) -> list[str]:
    """The paths (relative, posix) of the run now in `out` that cos wrote: its run files, the arrays files its
    rows name, and a figures/ folder `cos report` made. Empty when the folder holds no run."""
    out = Path(out)
    if not holds_run(out):
        return []
    found = [n for n in RUN_FILES if (out / n).is_file() and not (out / n).is_symlink()]
    names = set()
    for doc in (_read_json(out / STATUS), _read_json(out / PARTIAL)):
        for row in (doc or {}).get("claims") or []:
            name = ((row.get("details") or {}) if isinstance(row, dict) else {}).get("arrays_file")
            if isinstance(name, str) and _DATA.fullmatch(name) and (out / name).is_file():
                names.add(name)
    mark = _read_json(out / MARKER)
    if mark is not None and mark.get("by") == MADE_BY:   # files cos recorded writing (rows may no longer name them)
        names |= {n for n in mark.get("files") or [] if isinstance(n, str) and _DATA.fullmatch(n)
                  and (out / n).is_file()}
    return found + sorted(names) + (["figures"] if _figures_by_cos(out) else [])


def mark_run(out: str | Path) -> Path:
    """Write (atomically) the folder's `.cos-made` marker: cos made this run and these are its paths."""
    out = Path(out)
    path = out / MARKER
    tmp = out / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"by": MADE_BY, "files": run_entries(out)}, indent=1) + "\n")
    tmp.replace(path)
    return path


def _stamp(out: Path, entries: list[str]) -> str:
    """The run's UTC start time as a folder name (2026-11-26T100000Z): from its provenance, else the newest
    mtime of its files (a partial table has no provenance)."""
    doc, _ = _status_doc(out)
    start = ((doc or {}).get("provenance") or {}).get("start_time")
    when = None
    if isinstance(start, str):
        try:
            when = datetime.strptime(start, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            when = None
    if when is None:
        mtimes = [(out / e).stat().st_mtime for e in entries if (out / e).exists()]
        when = datetime.fromtimestamp(max(mtimes) if mtimes else time.time(), timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")


def _fresh(base: Path, name: str) -> Path:
    """A new, empty folder base/name (base/name-2, -3, ... when taken): never an existing one."""
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        path = base / (name if k == 1 else f"{name}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CosError(f"{base}: no free history folder for {name}")


def keep_previous(out: str | Path, keep: bool = True) -> Path | None:
    """Clear the folder of the run it holds, before a new run writes: move cos's paths of it to
    `out/history/<timestamp>/` (keep=False, `--cos-overwrite`: delete them instead). Returns the history folder,
    or None when there was no run (or keep=False)."""
    out = Path(out)
    mark = _read_json(out / MARKER)
    listed = [n for n in (mark or {}).get("files") or [] if isinstance(n, str)] if (mark or {}).get("by") == MADE_BY \
        else []
    entries = list(dict.fromkeys([*run_entries(out), *(n for n in listed if _allowed(n) and (out / n).exists()
                                                      and (n != "figures" or _figures_by_cos(out)))]))
    if not entries:
        return None
    if not keep:
        for e in entries:
            shutil.rmtree(out / e) if (out / e).is_dir() else (out / e).unlink(missing_ok=True)
        (out / MARKER).unlink(missing_ok=True)
        return None
    dest = _fresh(out / HISTORY, _stamp(out, entries))
    for e in entries:
        (dest / e).parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / e, dest / e)
    (dest / MARKER).write_text(json.dumps({"by": MADE_BY, "files": entries, "moved_from": str(out)}, indent=1) + "\n")
    (out / MARKER).unlink(missing_ok=True)
    return dest


def summary(run: str | Path) -> dict | None:
    """One run folder's line of `cos history`: its start, model, weights hash, tier and statuses tally; None when
    it holds no table."""
    run = Path(run)
    doc, partial = _status_doc(run)
    if doc is None:
        return None
    rows = [r for r in doc["claims"] if isinstance(r, dict)]
    prov = doc.get("provenance") or {}
    details = [r.get("details") or {} for r in rows]
    hashes = sorted({str(d["weights_hash"]) for d in details if d.get("weights_hash")})
    tiers = sorted({str((d.get("settings") or {}).get("tier")) for d in details if (d.get("settings") or {}).get("tier")})
    return {"run": run.name, "path": str(run), "start_time": prov.get("start_time"), "partial": partial,
            "model": prov.get("model") or ", ".join(sorted({str(r["model"]) for r in rows if r.get("model")})) or None,
            "weights_hash": prov.get("weights_hash") or ", ".join(hashes) or None,
            "tier": prov.get("tier") or ", ".join(tiers) or None,
            "statuses": dict(Counter(str(r.get("status")) for r in rows))}


def history(out: str | Path) -> list[dict]:
    """Every run of the folder, oldest first: the history entries (by their timestamp names), then the latest
    (the folder itself, named "latest")."""
    out = Path(out)
    runs = []
    hist = out / HISTORY
    if hist.is_dir():
        for d in sorted(p for p in hist.iterdir() if p.is_dir() and not p.is_symlink()):
            s = summary(d)
            if s is not None:
                runs.append(s)
    latest = summary(out)
    if latest is not None:
        runs.append({**latest, "run": "latest"})
    return runs


def previous_run(out: str | Path, weights_hash: str | None) -> Path | None:
    """The most recent history entry of `out` measured on the same weights (its weights hash), or None."""
    if not weights_hash:
        return None
    for s in reversed(history(out)):
        if s["run"] != "latest" and s["weights_hash"] == weights_hash:
            return Path(s["path"])
    return None


def status_changes(before: dict, now: list) -> list[str]:
    """Every claim whose status moved between a previous run's table and this run's rows, as 'id: a → b'."""
    old = {c["id"]: c["status"] for c in before.get("claims") or [] if isinstance(c, dict) and "id" in c}
    return [f"{r.id}: {old[r.id]} → {r.status}" for r in sorted(now, key=lambda r: r.id)
            if r.id in old and old[r.id] != r.status]

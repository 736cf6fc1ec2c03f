"""The claims-status table: terminal (tabulate), Markdown and JSON with provenance; baseline comparison."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable

from tabulate import tabulate

from cos.errors import CosError
from cos.registry import SCHEMA, ClaimResult, reason_text

PACKAGES = ("cos-claims", "torch", "diffusers", "numpy", "scipy", "accelerate", "transformers", "pytest")


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def measured_cell(r: ClaimResult) -> str:
    if r.measured is None:
        return "–"
    if r.ci_low is None or r.ci_high is None:
        return _fmt(r.measured)
    return f"{_fmt(r.measured)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"


def holm_cell(r: ClaimResult) -> str:
    h = (r.details or {}).get("holm")
    if not h:
        return "–"
    return f"{h['p_adjusted']:.2g}" + (" (holds)" if r.status == "holds" and h["rejects"] else
                                       " (not after Holm)" if r.status == "holds" else "")


def table_rows(results: Iterable[ClaimResult], changes: dict[str, str] | None = None) -> list[list[str]]:
    changes = changes or {}
    rows = []
    for r in sorted(results, key=lambda r: r.id):
        status = r.status + (f" ({changes[r.id]})" if r.id in changes else "")
        rows.append([r.id, status, r.paper_value, measured_cell(r), "–" if r.n is None else str(r.n), holm_cell(r),
                     reason_text(r)])
    return rows


HEADERS = ["claim", "status", "paper", "measured [95% CI]", "n", "Holm-adj. p", "reason"]


def apply_holm(results: list[ClaimResult], alpha: float = 0.05) -> None:
    """Holm's adjustment across the run's claims, beside each claim's own decision: each row's one-sided p (of
    "not on the claimed side", from its interval) adjusted for the number of claims decided in the run; a row
    that holds but does not survive the adjustment says so in the table (its status is kept)."""
    from cos.stats import holm

    ps = {r.id: r.details["p_value"] for r in results
          if r.status in ("holds", "fails", "inconclusive") and (r.details or {}).get("p_value") is not None}
    for k, v in holm(ps, alpha).items():
        r = next(x for x in results if x.id == k)
        r.details = {**r.details, "holm": {**v, "m": len(ps), "alpha": alpha}}


def render_table(results: Iterable[ClaimResult], fmt: str = "github", changes: dict[str, str] | None = None) -> str:
    return tabulate(table_rows(results, changes), headers=HEADERS, tablefmt=fmt,
                    maxcolwidths=[None, None, 40, None, None, None, 50])


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(model: str | None = None, weights_hash: str | None = None, device: str | None = None,
               command: list[str] | None = None, start_time: float | None = None) -> dict:
    """Versions, hardware, commit, model and command: enough to reproduce a claims-status file."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_commit": git_commit(Path(__file__).parent), "model": model, "weights_hash": weights_hash,
            "command": command or sys.argv,
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start_time or time.time())),
            "wall_s": round(time.time() - start_time, 1) if start_time else None}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["device"] = device or "cpu"
        if torch.cuda.is_available() and (device or "").startswith(("cuda", "auto")):
            info["device_name"] = torch.cuda.get_device_name()
            info["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        else:
            info["device_name"] = platform.processor() or platform.machine()
    except ImportError:  # pragma: no cover
        pass
    return info


def status_document(results: Iterable[ClaimResult], prov: dict, comparison: dict | None = None) -> dict:
    doc = {"schema": SCHEMA, "provenance": prov, "claims": [r.to_dict() for r in sorted(results, key=lambda r: r.id)]}
    if comparison is not None:
        doc["comparison"] = comparison
    return doc


def write_status(out_dir: str | Path, results: list[ClaimResult], prov: dict, comparison: dict | None = None) -> tuple[Path, Path]:
    """Write claims-status.json and claims-status.md into `out_dir` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        if r.arrays:   # a claim's recorded arrays (x̂0 filmstrips): safetensors beside the JSON, named in the row
            write_arrays(out, r)
    write_samples(out, results, prov)
    doc = status_document(results, prov, comparison)
    jpath, mpath = out / "claims-status.json", out / "claims-status.md"
    changes = (comparison or {}).get("labels", {})
    md = [f"# Claims status: {prov.get('model') or 'model'}", "",
          f"commit `{prov.get('git_commit')}` · weights `{prov.get('weights_hash')}` · device {prov.get('device_name')}"
          f" · {prov.get('start_time')}", "", render_table(results, "github", changes), ""]
    for path, text in ((jpath, json.dumps(doc, indent=2, default=str)), (mpath, "\n".join(md))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return jpath, mpath


def write_samples(out: Path, results: list[ClaimResult], prov: dict) -> Path:
    """samples.jsonl (lm-eval's --log_samples): one line per claim and task instance with what the claim measured
    on it per seed, the settings hash, the model and its weights hash, and the store keys of the runs it read."""
    path = out / "samples.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for r in sorted(results, key=lambda r: r.id):
            for rec in r.samples:
                f.write(json.dumps({**rec, "model": r.model, "weights_hash": (r.details or {}).get("weights_hash"),
                                    "status": r.status}, default=str) + "\n")
    tmp.replace(path)
    return path


def write_arrays(out: Path, r: ClaimResult) -> Path:
    """Write a row's arrays to `data/<id>.safetensors` (atomically) and name the file in its details."""
    import numpy as np
    from safetensors.numpy import save_file

    path = out / "data" / f"{r.id}.safetensors"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in r.arrays.items()}, str(tmp))
    tmp.replace(path)
    r.details = {**r.details, "arrays_file": str(path.relative_to(out))}
    return path


def load_arrays(run: Path, row: dict) -> dict:
    """The arrays a row names (`details.arrays_file`), or none; never a file the row does not name."""
    name = (row.get("details") or {}).get("arrays_file")
    if not name:
        return {}
    from safetensors.numpy import load_file

    path = (run / name).resolve()
    if run.resolve() not in path.parents or not path.exists():
        return {}
    return load_file(str(path))


def load_status(path: str | Path) -> dict:
    """Read a claims-status.json; one-line error naming the file when it is missing or malformed."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise CosError(f"{p}: claims-status file does not exist") from None
    except json.JSONDecodeError as e:
        raise CosError(f"{p}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise CosError(f"{p}: not a claims-status file (no 'claims' list)")
    for i, c in enumerate(doc["claims"]):
        if not isinstance(c, dict) or "id" not in c or "status" not in c:
            raise CosError(f"{p}: claims[{i}] lacks 'id' or 'status'")
    return doc


def compare(baseline: dict, results: Iterable[ClaimResult]) -> dict:
    """Regressions (held in the baseline, not now) and improvements (hold now, did not before). A claim whose
    definition changed (its `version` differs; rows without one are version 1) is neither: it is listed under
    `changed_definition`, since the two statuses answer different questions."""
    results = list(results)
    before = {c["id"]: c["status"] for c in baseline["claims"]}
    vb = {c["id"]: c.get("version") or 1 for c in baseline["claims"]}
    now = {r.id: r.status for r in results}
    vn = {r.id: r.version or 1 for r in results}
    changed = sorted(k for k in now if k in before and vb[k] != vn[k])
    # only claims this run checked: a -k subset does not regress the claims it left out (listed as missing)
    regressed = sorted(k for k, s in before.items() if s == "holds" and k in now and now[k] != "holds"
                       and k not in changed)
    improved = sorted(k for k, s in now.items() if s == "holds" and before.get(k) != "holds" and k not in changed)
    labels = {k: "REGRESSED: held in baseline" for k in regressed if k in now}
    labels.update({k: "newly holds" for k in improved})
    labels.update({k: f"changed definition: v{vb[k]} → v{vn[k]}" for k in changed})
    return {"regressed": regressed, "newly_holds": improved, "changed_definition": changed, "labels": labels,
            "missing": sorted(k for k in before if k not in now)}

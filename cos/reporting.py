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


def decision_alpha(r: ClaimResult) -> float:
    """One side's α of the intervals that decided the row: 0.025 for 95% intervals (a sequential look records
    the level it decided at)."""
    d = r.details or {}
    level = d.get("confidence") or (d.get("sequential") or {}).get("level") or 0.95
    return (1 - float(level)) / 2


def p_cell(r: ClaimResult) -> str:
    """The row's one-sided p (of "not on the claimed side") as the bound its own intervals give, so it can never
    contradict the status: a row holds exactly when every interval it decides on clears its threshold at one
    side's α, i.e. when that intersection-union test has p < α; a wholly wrong-side interval puts p above 1 − α.
    (A normal approximation of the interval gave p-values that disagreed with the verdicts, e.g. 0.048 beside a
    row that held and 4.8e-05 beside an inconclusive one.)"""
    if r.status not in ("holds", "fails", "inconclusive") or r.measured is None:
        return "–"
    a = decision_alpha(r)
    return {"holds": f"< {a:g}", "fails": f"> {1 - a:g}", "inconclusive": f"{a:g} – {1 - a:g}"}[r.status]


def table_rows(results: Iterable[ClaimResult], changes: dict[str, str] | None = None) -> list[list[str]]:
    changes = changes or {}
    rows = []
    for r in sorted(results, key=lambda r: r.id):
        status = r.status + (f" ({changes[r.id]})" if r.id in changes else "")
        rows.append([r.id, status, r.paper_value, measured_cell(r), "–" if r.n is None else str(r.n), p_cell(r),
                     reason_text(r)])
    return rows


HEADERS = ["claim", "status", "paper", "measured [95% CI]", "n", "p (one-sided)", "reason"]
P_NOTE = ("p (one-sided): bounded by the intervals that decide the row, at α = 0.025 a side (95% intervals): "
          "< 0.025 exactly when the row holds. No adjustment across claims.")


def apply_p(results: list[ClaimResult]) -> None:
    """Record each decided row's p bound and its α in details["p"] (what the table shows), and drop the
    normal-approximation p of the interval, which could contradict the status."""
    for r in results:
        if r.status in ("holds", "fails", "inconclusive") and r.measured is not None:
            d = {k: v for k, v in (r.details or {}).items() if k not in ("p_value", "holm")}
            r.details = {**d, "p": {"bound": p_cell(r), "alpha_one_sided": decision_alpha(r),
                                    "from": "the row's own decision intervals (intersection-union)"}}





def render_table(results: Iterable[ClaimResult], fmt: str = "github", changes: dict[str, str] | None = None) -> str:
    return tabulate(table_rows(results, changes), headers=HEADERS, tablefmt=fmt,
                    maxcolwidths=[None, None, 40, None, None, None, 50])


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty(cwd: str | Path = ".") -> bool | None:
    """Whether tracked files differ from the commit (None outside a checkout): a dirty tree's commit does not
    say which code ran."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def environment() -> dict:
    """GPU, CUDA, driver and cuDNN from torch.utils.collect_env (what `python -m torch.utils.collect_env`
    prints), beside the CPU and OS; {} where it cannot run."""
    try:
        from torch.utils import collect_env

        e = collect_env.get_env_info()
    except Exception:  # collect_env shells out (nvidia-smi, ...): never let it break a run's table
        return {}
    gpu = e.nvidia_gpu_models or None
    cpu = next((x.split(":", 1)[1].strip() for x in (e.cpu_info or "").splitlines() if x.startswith("Model name")), None)
    # a CUDA toolkit on a host without a GPU is not what ran: CUDA and cuDNN only beside a GPU
    return {"gpu": gpu, "driver": e.nvidia_driver_version or None, "cuda": (e.cuda_runtime_version or None) if gpu else None,
            "torch_cuda": e.cuda_compiled_version or None, "cudnn": (e.cudnn_version or None) if gpu else None,
            "os": e.os, "cpu": cpu}


def code_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout cos runs from; a run takes it when it starts (`provenance(code=...)`):
    read at the end, a commit made while a long run went on would be named as the code that ran."""
    here = Path(__file__).parent
    return git_commit(here), git_dirty(here)


def provenance(model: str | None = None, weights_hash: str | None = None, device: str | None = None,
               command: list[str] | None = None, start_time: float | None = None,
               code: tuple[str | None, bool | None] | None = None) -> dict:
    """Versions, hardware, commit, model and command: enough to reproduce a claims-status file. `code`: the
    (commit, dirty) the run started from (`code_state()` at its start); read now when not given."""
    commit, dirty = code if code is not None else code_state()
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_commit": commit, "git_dirty": dirty,
            "env": environment(), "model": model, "weights_hash": weights_hash,
            "command": command or sys.argv,
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start_time or time.time())),
            "wall_s": round(time.time() - start_time, 1) if start_time else None}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["device"] = device or "cpu"
        # the default device (None or auto) is CUDA where there is one: name the GPU, not the host's CPU
        if torch.cuda.is_available() and (device or "auto").startswith(("cuda", "auto")):
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
    (out / PARTIAL).unlink(missing_ok=True)      # the whole table is written: the partial one has served
    return jpath, mpath


PARTIAL = "claims-status.partial.json"


def write_partial(out_dir: str | Path, results: list[ClaimResult]) -> Path:
    """The rows finished so far, rewritten (atomically) as each claim finishes, with their samples: a run killed
    or out of disk before its final write keeps every claim it finished. The final write removes it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PARTIAL
    doc = {"schema": "cos.claims-status-partial/1", "partial": True,
           "claims": [{**r.to_dict(), "samples": r.samples} for r in sorted(results, key=lambda r: r.id)]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, default=str))
    tmp.replace(path)
    return path


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

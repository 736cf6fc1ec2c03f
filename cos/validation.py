"""Every `--cos-*` value checked before anything is loaded or sampled: one line naming option, value and rule.

`validate_options({"--cos-steps": 0, ...})` raises `InputError`; the pytest plugin turns that into a usage
error before the first test, the `cos` command into exit status 2. Keys may be flags (`--cos-steps`) or
option destinations (`cos_steps`); values of None (not given) are not checked.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable

from cos.errors import CosError, InputError

DEVICE_RULE = "cpu, cuda, cuda:N or auto"


def _fail(flag: str, value: Any, rule: str) -> None:
    raise InputError(f"{flag} {value!r}: {rule}")


def positive_int(flag: str, value: Any) -> int:
    """An integer ≥ 1 (0 would silently fall back to the tier's value, a negative makes no sense)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"[+-]?\d+", str(value).strip()):
        _fail(flag, value, "must be a positive integer")
    if int(value) < 1:
        _fail(flag, value, "must be a positive integer (at least 1)")
    return int(value)


def check_looks(flag: str, value: Any) -> int:
    """Looks per claim under sequential decisions: an integer from 2 to cos.sequential.MAX_LOOKS. One look is fixed
    n, which --cos-sequential off gives with the fixed-n run's batches (a sequential run's rows are task-interleaved,
    so its batches, and their stored runs, are not a fixed-n run's)."""
    from cos.sequential import MAX_LOOKS

    k = positive_int(flag, value)
    if k < 2:
        _fail(flag, value, "must be at least 2 (one look is fixed n: --cos-sequential off)")
    if k > MAX_LOOKS:
        _fail(flag, value, f"must be at most {MAX_LOOKS} (more looks buy nothing and cost power)")
    return k


def check_size(flag: str, value: str) -> tuple[int, int, int]:
    """HxWxF: height and width positive multiples of 16 (VAE ×8, patch ×2), frames 4k+1 (the VAE's time stride)."""
    m = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", str(value).lower())
    if not m:
        _fail(flag, value, "expected HxWxF, e.g. 480x832x81")
    h, w, f = map(int, m.groups())
    if h < 16 or w < 16 or h % 16 or w % 16:
        _fail(flag, value, "height and width must be positive multiples of 16")
    if f < 1 or (f - 1) % 4:
        _fail(flag, value, "frames must be 4k+1 (1, 5, 9, ..., 81)")
    return h, w, f


def finite_number(flag: str, value: Any, zero_ok: bool = False, why: str = "") -> float:
    """A finite number > 0 (>= 0 with `zero_ok`); `why` is added to the one-line refusal."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0)):
        _fail(flag, value, f"must be a finite number {'>=' if zero_ok else '>'} 0" + (f" ({why})" if why else ""))
    return v


def check_flow_shift(flag: str, value: Any) -> float:
    return finite_number(flag, value)


def check_shard(flag: str, value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not m:
        _fail(flag, value, "expected I/N, e.g. 0/2")
    i, n = map(int, m.groups())
    if not 0 <= i < n:
        _fail(flag, value, "need 0 <= I < N")
    return i, n


def check_device(flag: str, value: str) -> str:
    """auto, cpu, cuda or cuda:N; a CUDA device must exist on this machine."""
    v = str(value)
    if v in ("auto", "cpu"):
        return v
    m = re.fullmatch(r"cuda(?::(\d+))?", v)
    if not m:
        _fail(flag, value, f"must be {DEVICE_RULE}")
    import torch

    if not torch.cuda.is_available():
        _fail(flag, value, f"CUDA is not available here (torch {torch.__version__}, CUDA {torch.version.cuda}); "
                           "use cpu or auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        _fail(flag, value, f"this machine sees {torch.cuda.device_count()} CUDA device(s)")
    return v


def check_writable_dir(flag: str, value: str) -> Path:
    """An existing writable directory, or a path whose nearest existing parent is one (created later)."""
    p = Path(value)
    if p.exists() and not p.is_dir():
        _fail(flag, value, "must be a directory, and this is a file")
    q = p if p.exists() else next((a for a in p.absolute().parents if a.exists()), Path("/"))
    if not q.is_dir():
        _fail(flag, value, f"cannot be created: {q} is a file")
    if not os.access(q, os.W_OK | os.X_OK):
        _fail(flag, value, f"must be writable ({q} is not)")
    return p


def check_store(flag: str, value: str) -> Path | None:
    return None if value == "none" else check_writable_dir(flag, value)


def check_model(flag: str, value: str) -> Path:
    """An existing model directory whose configs and weight headers pass every check that reads no weights
    (`cos.models.loading.check_model_dir`): a bad model is one line before the first test, not one per claim."""
    p = Path(value)
    if not p.exists():
        _fail(flag, value, "model path does not exist")
    if not p.is_dir():
        _fail(flag, value, "must be a model directory, and this is a file")
    from cos.models.loading import check_model_dir

    try:
        check_model_dir(p)
    except CosError as e:
        raise InputError(f"{flag}: {e}") from None
    return p


def check_tasks(flag: str, value: str) -> tuple[str, ...]:
    """Comma-separated names of registered tasks, at least one."""
    from cos.tasks import TASKS as known   # importing cos.tasks registers them

    tasks = tuple(t.strip() for t in str(value).split(",") if t.strip())
    if not tasks:
        _fail(flag, value, f"names no task; known: {', '.join(sorted(known))}")
    bad = [t for t in tasks if t not in known]
    if bad:
        _fail(flag, value, f"unknown task(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return tasks


def check_store_key(flag: str, value: str) -> Path:
    """An existing store key file, readable by its owner only (cos.trust)."""
    from cos.trust import load_key

    try:
        load_key(value, create=False)
    except CosError as e:
        raise InputError(f"{flag}: {e}") from None
    return Path(value)


def check_lora(flag: str, spec: str) -> tuple[Path, float]:
    """PATH[:WEIGHT]: an existing safetensors file (or a folder holding exactly one), a finite weight."""
    from cos.models.lora import parse_lora_spec

    path, weight = parse_lora_spec(str(spec))
    if not math.isfinite(weight):
        _fail(flag, spec, "the LoRA weight must be a finite number")
    if weight == 0:
        _fail(flag, spec, "a LoRA at weight 0 changes nothing; drop it or give a nonzero weight")
    if not path.exists():
        _fail(flag, spec, f"LoRA file {path} does not exist")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            _fail(flag, spec, f"a LoRA folder must hold exactly one .safetensors file, found {len(files)}")
        path = files[0]
    from cos.models.files import check_safetensors

    try:
        check_safetensors(path)
    except CosError as e:
        raise InputError(f"{flag}: {e}") from None
    return path, weight


STATUSES = ("holds", "fails", "inconclusive", "skipped", "error")
MAX_STATUS_BYTES = 256 << 20


def check_baseline(flag: str, value: str) -> dict:
    """A claims-status file: regular, bounded, of this schema, and every row with a string id, a known status
    and an integer version (a hand-edited row would otherwise crash the comparison at the end of the run)."""
    from cos.registry import SCHEMA
    from cos.reporting import load_status
    from cos.trust import read_regular

    try:
        read_regular(value, MAX_STATUS_BYTES)     # a FIFO or /dev/zero would hang load_status's read
        doc = load_status(value)
    except FileNotFoundError:
        _fail(flag, value, "claims-status file does not exist")
    except OSError as e:
        raise InputError(f"{flag}: {str(e) if str(value) in str(e) else f'{value}: {e.strerror or e}'}") from None
    except CosError as e:
        raise InputError(f"{flag}: {e}") from None
    if doc.get("schema", SCHEMA) != SCHEMA:
        _fail(flag, value, f"a claims-status file of schema {doc.get('schema')!r}; this cos writes {SCHEMA!r}")
    for i, c in enumerate(doc["claims"]):
        if not isinstance(c["id"], str) or c["status"] not in STATUSES:
            _fail(flag, value, f"claims[{i}] needs a string id and a status of {', '.join(STATUSES)} "
                               f"(has {c['id']!r}, {c['status']!r})")
        if c.get("version") is not None and (not isinstance(c["version"], int) or isinstance(c["version"], bool)):
            _fail(flag, value, f"claims[{i}] ({c['id']}): version {c['version']!r} must be an integer")
    return doc


def check_vbvr(flag: str, value: str) -> Path:
    """A VBVR-Bench data folder with sample folders; with EvalKit installed, task folders it knows (else the
    claims skip with that reason)."""
    from cos.tasks.vbvr import check_data, sample_dirs

    from cos.vbvr_eval import check_tasks, evalkit

    p = Path(value)
    try:
        dirs = sample_dirs(p)
    except InputError as e:
        raise InputError(f"{flag}: {e}") from None
    if not dirs:
        _fail(flag, value, "no sample folders of the form split/task/idx (a VBVR-Bench data folder?)")
    try:
        evalkit()
        check_tasks(d.relative_to(p).parts[:2] for d in dirs)
    except InputError as e:
        raise InputError(f"{flag}: {e}") from None
    except CosError:   # EvalKit missing: the claims skip and say why in their rows; the data is still checked
        pass
    try:    # every sample's files, before the model loads (cos.tasks.vbvr.check_data)
        check_data(p)
    except InputError as e:
        raise InputError(f"{flag}: {e}") from None
    return p


def check_against(flag: str, value: str) -> Path:
    """The old side of a gate: a run folder holding records.jsonl (read now: a malformed one is refused here), or a
    model directory (checked as --cos-model is)."""
    from cos.records import FILE, load_records

    p = Path(value)
    if (p / FILE).exists():
        try:
            load_records(p)
        except CosError as e:
            raise InputError(f"{flag}: {e}") from None
        return p
    if (p / "claims-status.json").exists():
        _fail(flag, value, f"a run folder without {FILE} (written by cos 0.3 and later): rerun it, or give the model")
    return check_model(flag, value)


def check_tolerance(flag: str, value: Any) -> float:
    """A fraction of the claim's effect size: finite and >= 0. 0 is allowed and means "any confidently worse change
    is a regression" (the setting that reaches the power goal at a large n: docs/gate.md)."""
    return finite_number(flag, value, zero_ok=True, why="a fraction of each claim's effect size")


def check_budget(flag: str, value: Any) -> tuple[float, bool]:
    """HOURS or HOURS:fit (cos.eta.parse_budget): a positive finite number of GPU-hours."""
    from cos.eta import parse_budget

    return parse_budget(value, flag)


CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "--cos-against": check_against, "--cos-tolerance": check_tolerance,
    "--cos-steps": positive_int, "--cos-instances": positive_int, "--cos-batch-size": positive_int, "--cos-size": check_size,
    "--cos-flow-shift": check_flow_shift, "--cos-shard": check_shard, "--cos-device": check_device,
    "--cos-out": check_writable_dir, "--cos-store": check_store, "--cos-model": check_model,
    "--cos-baseline": check_baseline, "--cos-report-instances": positive_int, "--cos-vbvr": check_vbvr,
    "--cos-tasks": check_tasks, "--cos-store-key": check_store_key, "--cos-budget": check_budget,
    "--cos-pilot": check_baseline, "--cos-looks": check_looks,
}
LISTS: dict[str, Callable[[str, Any], Any]] = {"--cos-lora": check_lora, "--cos-model-lora": check_lora}


def _flag(key: str) -> str:
    return key if key.startswith("--") else "--" + key.replace("_", "-")


def validate_options(opts: dict[str, Any]) -> None:
    """Check every known `--cos-*` value in `opts`; raise `InputError` (one line) at the first bad one."""
    o = {_flag(k): v for k, v in opts.items()}
    for flag, check in CHECKS.items():
        if o.get(flag) is not None:
            check(flag, o[flag])
    for flag, check in LISTS.items():
        for spec in o.get(flag) or ():
            check(flag, spec)

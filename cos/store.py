"""The result store: finished sampling runs on disk, keyed by a hash of (model weights, task instances, seeds,
settings, what was recorded, the interventions as data), written atomically. An interrupted long run resumes
without recomputing or losing a finished batch; shards of one run on several hosts fill stores that
`cos merge` unites, after which the unsharded run reads everything back without sampling."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch


def fingerprint(obj: Any) -> Any:
    """A JSON-able description of `obj` in which tensors stand for the hash of their bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return {"tensor": hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16],
                "shape": list(t.shape), "dtype": str(t.dtype)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__,
                **{f.name: fingerprint(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}}
    if isinstance(obj, dict):
        return {str(k): fingerprint(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [fingerprint(v) for v in items]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def key_of(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(fingerprint(parts), sort_keys=True).encode()).hexdigest()[:32]


class ResultStore:
    """A folder of `<key[:2]>/<key>.pt` files; each one is written to a temporary name, then renamed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> Any | None:
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            value = torch.load(p, map_location="cpu", weights_only=False)
        except Exception:   # a file cut short by a crash outside the rename: recompute it
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        torch.save(value, tmp)
        os.replace(tmp, p)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.pt")) if self.root.exists() else 0


def merge(sources: list[str | Path], dest: str | Path) -> int:
    """Copy every result of `sources` into `dest` (results are immutable: an existing key is kept). Returns how
    many files were copied."""
    dest = Path(dest)
    n = 0
    for src in map(Path, sources):
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: not a result store folder")
        for f in src.glob("*/*.pt"):
            target = dest / f.parent.name / f.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".tmp{os.getpid()}")
                shutil.copyfile(f, tmp)
                os.replace(tmp, target)
                n += 1
    return n

"""Content identity of weight files: sha256 of their bytes, streamed once per (path, size, mtime) and cached.

Two checkpoints with the same layout and different weights must never share a hash (the result store is keyed
by it), so every byte is hashed; a 28 GB Wan2.2 A14B directory costs that once per machine, after which the
small JSON cache answers. A Hugging Face hub-cache snapshot needs no reading: its files link to
`blobs/<sha256>`, and that name is the content hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

_BLOB = re.compile(r"[0-9a-f]{64}")
CACHE_NAME = "file-sha256.json"


def cache_dir() -> Path:
    """$COS_CACHE_DIR, else $XDG_CACHE_HOME/cos, else ~/.cache/cos."""
    if os.environ.get("COS_CACHE_DIR"):
        return Path(os.environ["COS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cos"


def _load(cache: Path) -> dict:
    try:
        d = json.loads(cache.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(cache: Path, key: str, digest: str) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        d = _load(cache)   # re-read: another process may have added entries meanwhile
        d[key] = digest
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(d, indent=0, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:   # a read-only home: hashing still works, only slower next time
        pass


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes; hub blobs by their name; others cached by (absolute path, size, mtime_ns)."""
    real = Path(path).resolve()
    if real.parent.name == "blobs" and _BLOB.fullmatch(real.name):
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache = cache_dir() / CACHE_NAME
    hit = _load(cache).get(key)
    if isinstance(hit, str) and _BLOB.fullmatch(hit):
        return hit
    h = hashlib.sha256()
    with real.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _save(cache, key, digest)
    return digest


def weights_hash(root: str | Path) -> str:
    """Hash of every `*.safetensors` file under `root` (or of `root` itself when it is a file): names and bytes."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        name = f.name if f == root else str(f.relative_to(root))
        h.update(f"{name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()[:32]

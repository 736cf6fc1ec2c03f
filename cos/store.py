"""The result store: finished sampling runs on disk, keyed by a hash of (model weights, task instances, seeds,
settings, what was recorded, the interventions as data), written atomically. An interrupted long run resumes
without recomputing or losing a finished batch; shards of one run on several hosts fill stores that
`cos merge` unites, after which the unsharded run reads everything back without sampling.

Trust: an entry is one safetensors file (`<key[:2]>/<key>.safetensors`): tensors as tensors, everything else
as a JSON tree in its metadata, with the key it belongs to and a sha256 over its content. Nothing is ever
unpickled, so a planted file cannot run code; a file that fails its checksum, belongs to another key or is not
an entry at all is a miss (one warning line) and is recomputed. A claim file per key (`<key>.claim`, created
with O_EXCL) makes a second process on the same store wait for the first instead of computing the key again.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import math
import os
import socket
import struct
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

FORMAT = "cos-store/2"
SUFFIX = ".safetensors"
STALE_TMP_S = 3600          # a temporary older than this is a crashed writer's leftover
CLAIM_STALE_S = 300         # a claim not touched for this long is abandoned (holders touch theirs every 30 s)
HEARTBEAT_S = 30
_PLACEHOLDER = "0" * 64
_RESERVED = ("__tensor__", "__tuple__", "__dict__")


class StoreWarning(UserWarning):
    """A store entry was not used (corrupt, foreign, old format); it is recomputed."""


class EntryError(ValueError):
    """Why bytes are not a valid entry for a key (one line)."""


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


# ---------------------------------------------------------------- encoding: JSON tree + safetensors

def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage (trajectory slices of one buffer)
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _RESERVED or k == "__float__" for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"the result store holds tensors, numbers, strings, lists, tuples and dicts, not {type(obj).__name__}")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in tree["__dict__"]}
    if "__float__" in tree:
        return float(tree["__float__"])
    return {k: _decode(v, tensors) for k, v in tree.items()}


def _split(raw: bytes) -> tuple[dict, int]:
    """The safetensors header of `raw` and where its data starts, or EntryError."""
    if len(raw) < 8:
        raise EntryError(f"truncated ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if raw[8:9] != b"{":
        raise EntryError("not a cos store entry (no safetensors header; an old pickle file or foreign data?)")
    if n > len(raw) - 8:
        raise EntryError(f"truncated (header of {n} bytes, file of {len(raw)})")
    try:
        header = json.loads(raw[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EntryError("corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise EntryError("corrupt safetensors header")
    return header, 8 + n


def _digest(meta: dict, header: dict, data: bytes | memoryview) -> str:
    h = hashlib.sha256()
    for part in (meta["format"], meta["key"], meta["tree"],
                 json.dumps({k: v for k, v in header.items() if k != "__metadata__"}, sort_keys=True)):
        h.update(part.encode() + b"\0")
    h.update(data)
    return h.hexdigest()


def pack(key: str, value: Any) -> bytes:
    """`value` as the bytes of one entry for `key`."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(value, tensors))
    meta = {"format": FORMAT, "key": key, "tree": tree, "sha256": _PLACEHOLDER}
    raw = save(tensors, metadata=meta)
    header, start = _split(raw)
    digest = _digest(meta, header, memoryview(raw)[start:])
    # the digest has the placeholder's length: patch it in place instead of serializing the tensors twice
    needle = f'"sha256":"{_PLACEHOLDER}"'.encode()
    if raw[:start].count(needle) != 1:
        return save(tensors, metadata={**meta, "sha256": digest})
    return raw[:start].replace(needle, f'"sha256":"{digest}"'.encode()) + raw[start:]


def unpack(raw: bytes, key: str) -> Any:
    """The value stored in `raw` for `key`; EntryError (one line) when the bytes are not that entry."""
    from safetensors.torch import load

    header, start = _split(raw)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise EntryError(f"not a cos store entry (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("key") != key:
        raise EntryError(f"holds the entry of key {meta.get('key')!r} (a swapped file)")
    if _digest(meta, header, memoryview(raw)[start:]) != meta.get("sha256"):
        raise EntryError("checksum mismatch (sha256 of the content differs from the one recorded)")
    try:
        return _decode(json.loads(meta["tree"]), load(raw))
    except Exception as e:  # noqa: BLE001 - a checksum-valid but malformed entry: still a miss
        raise EntryError(f"unreadable entry ({type(e).__name__})") from None


# ---------------------------------------------------------------- claims (one computing process per key)

_HOST = socket.gethostname()
_HOST_TAG = hashlib.sha256(_HOST.encode()).hexdigest()[:8]
_HELD: set[Path] = set()
_HELD_LOCK = threading.Lock()
_HEARTBEAT: threading.Thread | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _beat() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        with _HELD_LOCK:
            held = list(_HELD)
        for p in held:
            try:
                os.utime(p)
            except OSError:
                pass


def _hold(p: Path) -> None:
    global _HEARTBEAT
    with _HELD_LOCK:
        _HELD.add(p)
        if _HEARTBEAT is None:   # keeps held claims fresh so that others can tell a live holder from a dead one
            _HEARTBEAT = threading.Thread(target=_beat, name="cos-store-heartbeat", daemon=True)
            _HEARTBEAT.start()


def _unhold(p: Path) -> None:
    with _HELD_LOCK:
        _HELD.discard(p)
    try:
        p.unlink()
    except FileNotFoundError:
        pass


@atexit.register
def _release_all() -> None:
    for p in list(_HELD):
        _unhold(p)


def _claim_is_stale(p: Path, stale_s: float) -> bool:
    try:
        age = time.time() - p.stat().st_mtime
        info = json.loads(p.read_text() or "{}")
    except FileNotFoundError:
        return False
    except (OSError, json.JSONDecodeError):
        info = {}
    if info.get("host") == _HOST and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
        if not _pid_alive(info["pid"]):
            return True
    return age > stale_s


def _tmp_is_stale(p: Path, now: float) -> bool:
    try:
        if now - p.stat().st_mtime > STALE_TMP_S:
            return True
    except FileNotFoundError:
        return False
    tag = p.name.rpartition(".tmp")[2]
    pid, _, host = tag.partition("-")
    return host == _HOST_TAG and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))


class ResultStore:
    """A folder of `<key[:2]>/<key>.safetensors` entries; each written to a temporary name, then renamed.

    `get` returns None on a miss and then holds the key's claim until `put` (or `release`): another process
    asking for the same key meanwhile waits for the entry instead of computing it too."""

    def __init__(self, root: str | Path, *, poll_s: float = 0.25, claim_stale_s: float = CLAIM_STALE_S,
                 wait_s: float | None = None):
        self.root = Path(root)
        self.hits = self.misses = 0
        self.poll_s, self.claim_stale_s, self.wait_s = poll_s, claim_stale_s, wait_s
        self._warned: set[str] = set()
        if self.root.is_dir():
            self._clean()

    def _clean(self) -> None:
        now = time.time()
        for p in self.root.glob("*/*.tmp*"):
            if _tmp_is_stale(p, now):
                p.unlink(missing_ok=True)
        old = sum(1 for _ in self.root.glob("*/*.pt"))
        if old:
            warnings.warn(f"{self.root}: {old} entries in the old pickle format (.pt) are ignored, never "
                          "unpickled; their runs are recomputed", StoreWarning, stacklevel=3)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def _claim_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.claim"

    def _read(self, key: str) -> tuple[bool, Any]:
        p = self.path(key)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return False, None
        try:
            return True, unpack(raw, key)
        except EntryError as e:
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"{p}: {e}; recomputing it", StoreWarning, stacklevel=3)
            return False, None

    def _try_claim(self, key: str) -> bool:
        p = self._claim_path(key)
        if p in _HELD:
            return True
        p.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _claim_is_stale(p, self.claim_stale_s):
                    return False
                # break the abandoned claim: rename first, so that only one breaker wins
                try:
                    os.rename(p, p.with_name(f"{p.name}.stale{os.getpid()}"))
                    p.with_name(f"{p.name}.stale{os.getpid()}").unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": _HOST, "time": time.time()}, f)
            _hold(p)
            return True
        return False

    def get(self, key: str) -> Any | None:
        """The stored value, or None: then the caller computes it and calls `put` (the key is claimed)."""
        t0 = time.time()
        while True:
            found, value = self._read(key)
            if found:
                self.hits += 1
                return value
            if self._try_claim(key):
                found, value = self._read(key)      # finished between our read and our claim
                if found:
                    self.release(key)
                    self.hits += 1
                    return value
                self.misses += 1
                return None
            if self.wait_s is not None and time.time() - t0 > self.wait_s:
                self.misses += 1    # give up waiting: compute it here too (the result is the same)
                return None
            time.sleep(self.poll_s)

    def put(self, key: str, value: Any) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.tmp{os.getpid()}-{_HOST_TAG}")
        tmp.write_bytes(pack(key, value))
        os.replace(tmp, p)
        self.release(key)

    def release(self, key: str) -> None:
        """Give up this process's claim on `key` (after `put`, or when computing it failed)."""
        p = self._claim_path(key)
        if p in _HELD:
            _unhold(p)

    @contextmanager
    def computing(self, key: str) -> Iterator[None]:
        """Release the claim taken by a missed `get` even when the computation raises."""
        try:
            yield
        finally:
            self.release(key)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob(f"*/*{SUFFIX}")) if self.root.exists() else 0


def merge(sources: list[str | Path], dest: str | Path) -> int:
    """Copy every valid result of `sources` into `dest` (results are immutable: an existing valid key is kept).
    Entries that fail their check are skipped with one warning line each. Returns how many files were copied."""
    dest = Path(dest)
    n = 0
    for src in map(Path, sources):
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: not a result store folder")
        old = sum(1 for _ in src.glob("*/*.pt"))
        if old:
            warnings.warn(f"{src}: {old} old-format (.pt, pickle) entries skipped, never unpickled", StoreWarning,
                          stacklevel=2)
        for f in sorted(src.glob(f"*/*{SUFFIX}")):
            key = f.name.removesuffix(SUFFIX)
            raw = f.read_bytes()
            try:
                unpack(raw, key)
            except EntryError as e:
                warnings.warn(f"{f}: {e}; not merged", StoreWarning, stacklevel=2)
                continue
            target = dest / f.parent.name / f.name
            if target.exists():
                try:
                    unpack(target.read_bytes(), key)
                    continue
                except EntryError:
                    pass     # a damaged copy in dest: replace it with the good one
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{_HOST_TAG}")
            tmp.write_bytes(raw)
            os.replace(tmp, target)
            n += 1
    return n

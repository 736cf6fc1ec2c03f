"""The result store: finished sampling runs on disk, keyed by a hash of (model identity, task instances, seeds,
settings, what was recorded, the interventions as data), written atomically. An interrupted long run resumes
without recomputing or losing a finished batch; shards of one run on several hosts fill stores that
`cos merge` unites, after which the unsharded run reads everything back without sampling.

Trust: an entry is one safetensors file (`<key[:2]>/<key>.safetensors`): tensors as tensors, everything else
as a JSON tree in its metadata, with the key it belongs to and an HMAC-SHA256 over its whole content keyed by
the user's secret store key (`cos.trust`: a file outside the store, mode 0600; one key may be shared on purpose
between the hosts of one launch). Whoever can write to the store but cannot read the key cannot make an entry
that is served: a planted, edited, re-keyed or foreign entry is a miss (one warning line) and is recomputed;
`cos merge --trust KEYFILE` accepts another key's entries and re-signs them with this user's key. Nothing is
ever unpickled. Reading never hangs: only regular files (no FIFO, device or symlink), size checked against
`MAX_ENTRY_BYTES` before reading; any error reading an entry is a miss with one warning. A claim file per key
(`<key>.claim`, created with O_EXCL) makes a second process on the same store wait for the first instead of
computing the key again; a claim whose holder is dead, silent or dated in the future is broken.
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
from torch.utils.weak import WeakIdKeyDictionary

from cos.errors import InputError
from cos.trust import UnsafeFile, key_id, key_path, load_key, mac, mac_ok, open_regular, read_regular, read_upto

FORMAT = "cos-store/3"      # 3: an HMAC by the user's key instead of an unkeyed sha256 (2's entries are misses)
SUFFIX = ".safetensors"
STALE_TMP_S = 3600          # a temporary older than this is a crashed writer's leftover
CLAIM_STALE_S = 300         # a claim not touched for this long is abandoned (holders touch theirs every 30 s)
HEARTBEAT_S = 30
MAX_ENTRY_BYTES = 16 << 30  # a bound on one entry (a full-tier batch with trajectories is well under 2 GiB)
MAX_CLAIM_BYTES = 4096
_PLACEHOLDER = "0" * 64
_KID_PLACEHOLDER = "0" * 16
_RESERVED = ("__tensor__", "__tuple__", "__dict__")


class StoreWarning(UserWarning):
    """A store entry was not used (corrupt, foreign, old format); it is recomputed."""


class EntryError(ValueError):
    """Why bytes are not a valid entry for a key (one line)."""


# Tensors cos owns and never changes once made (a capture's results), whose digest may be kept: tensor -> (stamp,
# digest) or None. Keyed by identity and held weakly, off the tensor: a pickled, copied or deep-copied tensor is not
# frozen (an attribute on the tensor travelled with copies, stamp included, and could match a changed one).
_FROZEN = WeakIdKeyDictionary()
_FROZEN_LOCK = threading.Lock()


def freeze(*tensors: torch.Tensor) -> None:
    """Mark tensors as read-only for store keys: their digest is computed once and reused while their version
    counter, storage pointer, shape, strides, dtype and device are unchanged. Only for tensors nothing writes to
    (captures: `CaptureBlocks.close`): writes through numpy, `.data`, `from_numpy`'s array or a process group do not
    bump the version counter, so a frozen tensor changed that way would keep its old digest. Any other tensor is
    hashed every time it is named in a key."""
    with _FROZEN_LOCK:
        for t in tensors:
            if isinstance(t, torch.Tensor) and t not in _FROZEN:
                _FROZEN[t] = None


def _tensor_digest(obj: torch.Tensor) -> str:
    """The hash of a tensor's bytes; for a frozen tensor (`freeze`) kept and reused while it has not changed. Why:
    a key hashes the interventions it names, and one capture is named by many (layers.swap_flip swaps each block's
    captured update in turn, each swap's key naming the whole capture): on one H200 the organism's gpu tier spent
    ~60 s of swap_flip's 78 s re-hashing the same capture."""
    with _FROZEN_LOCK:
        frozen = obj in _FROZEN
        cached = _FROZEN.get(obj) if frozen else None
    stamp = None
    if frozen:
        try:
            stamp = (obj._version, obj.data_ptr(), tuple(obj.shape), obj.stride(), str(obj.dtype), str(obj.device))
        except RuntimeError:    # an inference tensor tracks no version: hashed every time
            stamp = None
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
    t = obj.detach().cpu().contiguous()
    digest = hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16]
    if stamp is not None:
        with _FROZEN_LOCK:
            if obj in _FROZEN:
                _FROZEN[obj] = (stamp, digest)
    return digest


def fingerprint(obj: Any) -> Any:
    """A JSON-able description of `obj` in which tensors stand for the hash of their bytes."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": _tensor_digest(obj), "shape": list(obj.shape), "dtype": str(obj.dtype)}
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


def _digest(meta: dict, header: dict, data: bytes | memoryview) -> bytes:
    """sha256 over everything an entry says: format, key, tree, the tensors' header and their bytes."""
    h = hashlib.sha256()
    for part in (meta["format"], meta["key"], meta["tree"],
                 json.dumps({k: v for k, v in header.items() if k != "__metadata__"}, sort_keys=True)):
        h.update(part.encode() + b"\0")
    h.update(data)
    return h.digest()


def _patch(head: bytes, field: str, old: str, new: str) -> bytes | None:
    """Replace one metadata string of equal length in a serialized header; None if it is not found exactly once."""
    needle = f'"{field}":"{old}"'.encode()
    if head.count(needle) != 1 or len(old) != len(new):
        return None
    return head.replace(needle, f'"{field}":"{new}"'.encode())


def pack(key: str, value: Any, secret: bytes | None = None) -> bytes:
    """`value` as the bytes of one entry for `key`, signed with `secret` (default: the user's store key)."""
    from safetensors.torch import save

    secret = load_key() if secret is None else secret
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(value, tensors))
    meta = {"format": FORMAT, "key": key, "tree": tree, "key_id": _KID_PLACEHOLDER, "mac": _PLACEHOLDER}
    raw = save(tensors, metadata=meta)
    header, start = _split(raw)
    tag = mac(secret, _digest(meta, header, memoryview(raw)[start:]))
    return _sign(raw, start, _KID_PLACEHOLDER, _PLACEHOLDER, key_id(secret), tag) or \
        save(tensors, metadata={**meta, "key_id": key_id(secret), "mac": tag})


def _sign(raw: bytes, start: int, old_kid: str, old_mac: str, kid: str, tag: str) -> bytes | None:
    # the tag has the placeholder's length: patch it in place instead of serializing the tensors twice
    head = _patch(raw[:start], "mac", old_mac, tag)
    head = head and _patch(head, "key_id", old_kid, kid)
    return None if head is None else head + raw[start:]


def _meta(header: dict, key: str) -> dict:
    """The metadata of an entry header for `key`: this FORMAT, every field a string, the key its own; else
    EntryError (what `_check` requires before it checks the signature)."""
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise EntryError(f"not a cos store entry of this version (format {fmt!r}, this cos reads {FORMAT!r})")
    if not all(isinstance(meta.get(k), str) for k in ("key", "tree", "key_id", "mac")):
        raise EntryError("not a cos store entry (metadata without key, tree, key_id or mac)")
    if meta["key"] != key:
        raise EntryError(f"holds the entry of key {meta['key']!r} (a swapped file)")
    return meta


def _check(raw: bytes, key: str, secrets: list[bytes]) -> tuple[dict, int, bytes]:
    """The header, data start and the accepted secret that signed `raw` as the entry of `key`; else EntryError."""
    header, start = _split(raw)
    meta = _meta(header, key)
    digest = _digest(meta, header, memoryview(raw)[start:])
    for s in secrets:
        if mac_ok(s, meta["mac"], digest):
            return header, start, s
    mine = ", ".join(key_id(s) for s in secrets)
    if meta["key_id"] in {key_id(s) for s in secrets}:
        raise EntryError(f"authentication failed (content changed after key {meta['key_id']} signed it)")
    raise EntryError(f"not signed by a trusted key (signed by key id {meta['key_id']!r}; trusted: {mine}): a "
                     "planted or another host's entry (cos merge --trust KEYFILE accepts a known host's)")


def unpack(raw: bytes, key: str, secret: bytes | list[bytes] | None = None) -> Any:
    """The value stored in `raw` for `key` if one of the accepted secrets (default: the user's store key) signed
    it; EntryError (one line) when the bytes are not that entry."""
    from safetensors.torch import load

    secrets = [load_key()] if secret is None else [secret] if isinstance(secret, bytes) else list(secret)
    header, _, _ = _check(raw, key, secrets)
    try:
        return _decode(json.loads(header["__metadata__"]["tree"]), load(raw))
    except Exception as e:  # noqa: BLE001 - a signed but malformed entry (another cos version?): still a miss
        raise EntryError(f"unreadable entry ({type(e).__name__})") from None


def resign(raw: bytes, key: str, trusted: list[bytes], secret: bytes) -> bytes:
    """`raw` checked against the trusted secrets and signed anew with `secret` (EntryError when not trusted)."""
    header, start, s = _check(raw, key, trusted)
    if s == secret:
        return raw
    meta = header["__metadata__"]
    tag = mac(secret, _digest(meta, header, memoryview(raw)[start:]))
    out = _sign(raw, start, meta["key_id"], meta["mac"], key_id(secret), tag)
    return out if out is not None else pack(key, unpack(raw, key, s), secret)


def _why(e: BaseException, p: Path) -> str:
    """One line on why an entry was not used, without repeating its path."""
    if isinstance(e, (EntryError, UnsafeFile)):
        return str(e).removeprefix(f"{p}: ")
    if isinstance(e, OSError):
        return f"unreadable ({e.strerror or type(e).__name__})"
    return f"unreadable ({type(e).__name__})"


def _read_entry(p: Path) -> bytes | None:
    """An entry's bytes; None when absent; OSError (one line) when it is not a regular file or too large."""
    try:
        return read_regular(p, MAX_ENTRY_BYTES, follow=False)
    except FileNotFoundError:
        return None


def _entry_head_ok(p: Path, key: str, kid: str) -> bool:
    """Whether `p` is a regular file (a symlink is not followed, as `_read_entry` does not) whose safetensors
    header says an entry of this FORMAT for `key` (`_meta`), signed by key id `kid`; only the header is read."""
    try:
        with open_regular(p, MAX_ENTRY_BYTES, follow=False) as (fd, size):
            prefix = read_upto(fd, 8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            header, _ = _split(prefix + read_upto(fd, min(n, size - 8)))    # _split: truncated, not JSON, ...
        return _meta(header, key)["key_id"] == kid
    except (OSError, EntryError):
        return False


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
    """Whether a claim may be broken: its holder is dead (same host), or it has not been touched for `stale_s`
    either way (a claim dated in the future is no live holder's heartbeat), or it is not a claim file at all."""
    try:
        age = time.time() - os.lstat(p).st_mtime
        info = json.loads(read_regular(p, MAX_CLAIM_BYTES, follow=False) or b"{}")
    except FileNotFoundError:
        return False
    except UnsafeFile:     # a FIFO, link or huge file in a claim's place: no holder made it, never read it
        return True
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if info.get("host") == _HOST and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
        if not _pid_alive(info["pid"]):
            return True
    return abs(age) > stale_s


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
    asking for the same key meanwhile waits for the entry instead of computing it too. `readonly`: a store only
    looked at (`has`: `cos plan --store`), which must change nothing: no stale temporaries are removed and a
    missing default key is an error, not made (with no key nothing in the store could be counted as stored)."""

    def __init__(self, root: str | Path, *, poll_s: float = 0.25, claim_stale_s: float = CLAIM_STALE_S,
                 wait_s: float | None = None, key_file: str | Path | None = None, readonly: bool = False):
        self.root = Path(root)
        self.key_file = key_path(key_file)
        _refuse_key_inside(self.key_file, self.root)
        self.secret = load_key(key_file, create=False if readonly else None)
        self.hits = self.misses = 0
        self.poll_s, self.claim_stale_s, self.wait_s = poll_s, claim_stale_s, wait_s
        self._warned: set[str] = set()
        self.readonly = readonly
        if self.root.is_dir() and not readonly:
            self._clean()

    def _clean(self) -> None:
        now = time.time()
        for p in self.root.glob("*/*.tmp*"):
            try:
                if p.is_file() and _tmp_is_stale(p, now):
                    p.unlink(missing_ok=True)
            except OSError:     # another process's, or not ours to remove: left alone
                pass
        old = sum(1 for _ in self.root.glob("*/*.pt"))
        if old:
            warnings.warn(f"{self.root}: {old} entries in the old pickle format (.pt) are ignored, never "
                          "unpickled; their runs are recomputed", StoreWarning, stacklevel=3)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def _claim_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.claim"

    def _warn(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, StoreWarning, stacklevel=4)

    def _read(self, key: str) -> tuple[bool, Any]:
        p = self.path(key)
        try:
            raw = _read_entry(p)
            if raw is None:
                return False, None
            return True, unpack(raw, key, self.secret)
        except (EntryError, OSError, MemoryError) as e:   # any error reading an entry is a miss, never a crash
            self._warn(key, f"{p}: {_why(e, p)}; recomputing it")
            return False, None

    def _writable(self, what: str) -> None:
        if self.readonly:   # a plan's store: a claim or an entry written here would change what the run finds
            raise RuntimeError(f"{self.root}: opened read-only (cos plan); {what} is not allowed")

    def _try_claim(self, key: str) -> bool:
        self._writable("claiming a key")
        p = self._claim_path(key)
        if p in _HELD:
            return True
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:    # a read-only store: compute here, unclaimed (put will say it cannot store)
            self._warn(key, f"{p}: cannot claim ({e.strerror or e}); computing without a claim")
            return True
        for _ in range(3):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except OSError as e:
                if not isinstance(e, FileExistsError):
                    self._warn(key, f"{p}: cannot claim ({e.strerror or e}); computing without a claim")
                    return True
                if not _claim_is_stale(p, self.claim_stale_s):
                    return False
                # break the abandoned claim: rename first, so that only one breaker wins
                try:
                    os.rename(p, p.with_name(f"{p.name}.stale{os.getpid()}"))
                    p.with_name(f"{p.name}.stale{os.getpid()}").unlink()
                except OSError:     # gone already (another breaker won), or a folder: left renamed
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": _HOST, "time": time.time()}, f)
            _hold(p)
            return True
        return False

    def get(self, key: str) -> Any | None:
        """The stored value, or None: then the caller computes it and calls `put` (the key is claimed)."""
        self._writable("get (it claims a missing key)")
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

    def has(self, key: str) -> bool:
        """Whether `get` would find an entry for `key` (what a plan counts as stored): a regular file, not a symlink,
        whose safetensors header names this format, this key and a signer this store trusts. Only the header is
        read (one small read), the MAC is not verified: an entry damaged after it was signed is still counted, and
        `get` then recomputes it (such a plan is short by it). Never raises."""
        try:
            return _entry_head_ok(self.path(key), key, key_id(self.secret))
        except Exception:  # noqa: BLE001 - not known to be there: not stored
            return False

    def put(self, key: str, value: Any) -> None:
        """Store `value` (signed); a write error (full disk, read-only store) loses only this entry: warned once,
        the run goes on with the value in memory."""
        self._writable("put")
        p = self.path(key)
        tmp = p.with_name(f"{p.name}.tmp{os.getpid()}-{_HOST_TAG}")
        raw = pack(key, value, self.secret)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(raw)
            os.replace(tmp, p)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self._warn(key, f"{p}: not stored ({e.strerror or e}); this run keeps the value, a rerun recomputes it")
        finally:
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


def run_store(store: str | None, out: str | Path, tier: str, several: bool) -> str | None:
    """A run's result-store folder (None: it keeps none): `store` as given (--cos-store; 'none': none); without it
    `<out>/cos-store` on the full tier and wherever several processes meet through the store (`several`: a shard,
    a launch), none on the organism's tiers. The plugin's rule, shared with `cos plan --out`."""
    if store is None and (tier == "full" or several):
        return str(Path(out) / "cos-store")
    return None if store in (None, "none") else store


def _refuse_key_inside(key_file: Path, root: Path) -> None:
    """A key kept in the store would travel with it to whoever receives the store: refused."""
    k, r = key_file.absolute().resolve(), root.absolute().resolve()
    if k == r or r in k.parents:
        raise InputError(f"{key_file}: the store key must not live inside the store {root} (whoever gets the store "
                         "could then sign entries); keep it in the cache dir or name another with $COS_STORE_KEY")


def merge(sources: list[str | Path], dest: str | Path, trust: list[str | Path] = (),
          key_file: str | Path | None = None) -> int:
    """Copy every valid result of `sources` into `dest` (results are immutable: an existing valid key is kept).
    An entry is valid when this user's key or one of the `trust` key files signed it; it is written re-signed
    with this user's key. Entries that fail their check are skipped with one warning line each. Returns how many
    files were copied."""
    dest = Path(dest)
    own_file = key_path(key_file)
    _refuse_key_inside(own_file, dest)
    own = load_key(key_file)
    trusted = [own] + [load_key(t, create=False) for t in trust]
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
            try:
                raw = _read_entry(f)
                if raw is None:
                    continue
                raw = resign(raw, key, trusted, own)
            except (EntryError, OSError, MemoryError) as e:
                warnings.warn(f"{f}: {_why(e, f)}; not merged", StoreWarning, stacklevel=2)
                continue
            target = dest / f.parent.name / f.name
            try:
                have = _read_entry(target)
                if have is not None:
                    _check(have, key, [own])
                    continue
            except (EntryError, OSError):
                pass     # a damaged or foreign copy in dest: replace it with the good one
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{_HOST_TAG}")
            try:
                tmp.write_bytes(raw)
                os.replace(tmp, target)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            n += 1
    return n

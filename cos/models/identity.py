"""Content identity of a model: a sha256 over the bytes of every file `load_system` reads.

A model's identity keys the result store, so anything that changes the output must change it: the configs
(`cos_model.json`, `model_index.json`, each component's `config.json`: two same-shape models with other heads
differ only there), every weight file of every read component whatever its format (safetensors, `.bin`, index
files), the prompt encoder and its vocabulary, the tokenizer, the scheduler and the VAE. Files are named by
their path relative to the model directory and hashed by content; no file name (a hub `blobs/<sha256>` link is
hashed like any file) and no cache entry is taken as proof of content.

Cost: files up to `SMALL` bytes are hashed every time (the whole organism, 5.5 MB, takes milliseconds). Larger
files are hashed once per machine into `<cache dir>/file-sha256-v2.json`, keyed by (path, device, inode, size,
mtime_ns, ctime_ns): `touch -d`, `cp -p` and `rsync -t` can set mtime but not ctime, and any write changes ctime,
so a same-size, same-mtime rewrite misses the cache. Each entry also holds the hashes of up to `MAX_BLOCKS`
blocks of the file and an HMAC by the user's secret key (`cos.trust`): an edited cache line is ignored, and on
first use in a process `VERIFY_BLOCKS` random blocks are re-read and checked before the cached digest is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from pathlib import Path

from cos.errors import CosError, ModelLoadError
from cos.trust import cache_dir, load_key, mac, mac_ok, read_regular  # noqa: F401 - cache_dir re-exported

CACHE_NAME = "file-sha256-v2.json"   # v1 was unauthenticated: never read again
SMALL = 8 << 20
MAX_BLOCKS = 256
VERIFY_BLOCKS = 3
MAX_CACHE_BYTES = 64 << 20
IDENTITY_VERSION = "cos-identity/2"
# what load_system reads, per layout (cos.models.loading): top-level files, then whole component folders
COS_FILES = ("cos_model.json", "prompt_encoder.json", "prompt_encoder.safetensors")
COS_COMPONENTS = ("transformer", "transformer_2", "scheduler")
WAN_FILES = ("model_index.json",)
WAN_COMPONENTS = ("transformer", "transformer_2", "scheduler", "vae", "text_encoder", "tokenizer")

_verified: dict[str, str] = {}    # stat key -> digest checked in this process (first use verifies)


def _stat_key(real: Path, st: os.stat_result) -> str:
    return f"{real}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _block_size(size: int) -> int:
    return max(1 << 20, -(-size // MAX_BLOCKS))


def _hash_fd(fd: int, size: int) -> tuple[str, list[str]]:
    """The file's sha256 and the (truncated) sha256 of each of its blocks, in one pass."""
    whole, blocks, bs, off = hashlib.sha256(), [], _block_size(size), 0
    while off < size:
        b = os.pread(fd, min(bs, size - off), off)
        if not b:
            raise ModelLoadError(f"file shrank while being hashed (at byte {off} of {size})")
        whole.update(b)
        blocks.append(hashlib.sha256(b).hexdigest()[:16])
        off += len(b)
    return whole.hexdigest(), blocks


def _key() -> bytes | None:
    try:
        return load_key()
    except CosError:     # no usable key (read-only home, a bad $COS_STORE_KEY): hash fully, cache nothing
        return None


def _load(cache: Path) -> dict:
    try:
        d = json.loads(read_regular(cache, MAX_CACHE_BYTES))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(cache: Path, skey: str, entry: dict) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        d = _load(cache)   # re-read: another process may have added entries meanwhile
        prefix = skey.rsplit("|", 5)[0] + "|"
        d = {k: v for k, v in d.items() if not k.startswith(prefix)}   # older versions of the same path
        d[skey] = entry
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(d, indent=0, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:   # a read-only or full home: hashing still works, only slower next time
        pass


def _entry_ok(key: bytes, skey: str, e: object) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("blocks"), list)
            and all(isinstance(b, str) for b in e["blocks"])
            and mac_ok(key, e.get("mac"), skey, e["sha256"], ",".join(e["blocks"])))


def _verify_sample(fd: int, size: int, blocks: list[str]) -> bool:
    bs = _block_size(size)
    if len(blocks) != -(-size // bs):
        return False
    for i in random.SystemRandom().sample(range(len(blocks)), min(VERIFY_BLOCKS, len(blocks))):
        b = os.pread(fd, min(bs, size - i * bs), i * bs)
        if hashlib.sha256(b).hexdigest()[:16] != blocks[i]:
            return False
    return True


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a regular file's bytes (see the module docstring for when a cached digest is used)."""
    real = Path(path).resolve()
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelLoadError(f"{path}: not a regular file (a FIFO, device or socket cannot be a model file)")
        if st.st_size <= SMALL:
            return _hash_fd(fd, st.st_size)[0]
        skey = _stat_key(real, st)
        if skey in _verified:
            return _verified[skey]
        key = _key()
        cache = cache_dir() / CACHE_NAME
        if key is not None:
            e = _load(cache).get(skey)
            if _entry_ok(key, skey, e) and _verify_sample(fd, st.st_size, e["blocks"]):
                _verified[skey] = e["sha256"]
                return e["sha256"]
        digest, blocks = _hash_fd(fd, st.st_size)
        if key is not None and _stat_key(real, os.fstat(fd)) == skey:   # unchanged while hashed: cacheable
            _save(cache, skey, {"sha256": digest, "blocks": blocks, "mac": mac(key, skey, digest, ",".join(blocks))})
            _verified[skey] = digest
        return digest
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def _walk(folder: Path) -> list[Path]:
    """Files under `folder`, following links to folders but never into one twice (a link loop cannot hang)."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))   # .cache/.git: hub bookkeeping
        out += [Path(dirpath) / n for n in filenames if not n.startswith(".")]
    return out


def model_files(root: str | Path) -> list[Path]:
    """The files `load_system` reads from a model directory (every file of each read component folder, so that
    a weight file diffusers would fall back to is covered too); for any other folder, its `*.safetensors`."""
    root = Path(root)
    if (root / "cos_model.json").exists():
        names, comps = COS_FILES, COS_COMPONENTS
    elif (root / "model_index.json").exists():
        names, comps = WAN_FILES, WAN_COMPONENTS
    else:
        return sorted(root.rglob("*.safetensors"))
    files = [root / n for n in names if (root / n).exists()]
    for c in comps:
        if (root / c).is_dir():
            files += _walk(root / c)
    return sorted(files)


def weights_hash(root: str | Path) -> str:
    """The identity of a model directory (every file it reads: names and bytes) or of one file (a LoRA)."""
    root = Path(root)
    files = [root] if root.is_file() else model_files(root)
    h = hashlib.sha256(f"{IDENTITY_VERSION}\n".encode())
    for f in files:
        name = f.name if f == root else f.relative_to(root).as_posix()
        h.update(f"{name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()[:32]

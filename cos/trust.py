"""What cos trusts and how it checks the rest: the per-user secret key, HMACs, and bounded reads of files that
anyone may have handed it.

- The key: 32 random bytes (hex) in a file readable only by its owner (mode 0600). By default
  `<cache dir>/store.key`, created on first use; `$COS_STORE_KEY` (or `--cos-store-key`) names another, e.g. one
  key copied to the hosts of one launch so that their stores can be merged. Whoever can read the key can forge
  entries, so a key file that group or others can read is refused, and a key must never live inside a store.
- `read_regular(path, limit)`: only a regular file (no FIFO, device or symlink to one: opened non-blocking and
  checked with fstat), its size checked against `limit` before anything is read, and never more than that size
  read. Every reader of a file a user can hand cos goes through it, so no such file can hang or exhaust memory.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Iterator

from cos.errors import InputError

KEY_ENV = "COS_STORE_KEY"
KEY_NAME = "store.key"
KEY_BYTES = 32
MAX_KEY_FILE = 4096


class UnsafeFile(OSError):
    """A file that is not a regular file, or larger than the reader's bound (one line)."""


def cache_dir() -> Path:
    """$COS_CACHE_DIR, else $XDG_CACHE_HOME/cos, else ~/.cache/cos."""
    if os.environ.get("COS_CACHE_DIR"):
        return Path(os.environ["COS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cos"


@contextlib.contextmanager
def open_regular(path: str | Path, limit: int, *, follow: bool = True) -> Iterator[tuple[int, int]]:
    """(fd, size) of `path` opened for reading if it is a regular file of at most `limit` bytes; else UnsafeFile
    (an OSError). Opened with O_NONBLOCK so that a FIFO cannot block the open; fstat decides on the opened file
    itself (no race between a check and the read); `follow=False` also refuses a symlink."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if not follow and e.errno == errno.ELOOP:
            raise UnsafeFile(f"{path}: a symbolic link, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                    else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                    else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
            raise UnsafeFile(f"{path}: {kind}, not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"{path}: {st.st_size} bytes, more than the {limit} allowed for it")
        yield fd, st.st_size
    finally:
        os.close(fd)


def read_upto(fd: int, n: int) -> bytes:
    """At most `n` bytes of `fd` from where it stands (fewer only at the end of the file)."""
    chunks, left = [], n
    while left > 0:
        b = os.read(fd, min(left, 1 << 24))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def read_regular(path: str | Path, limit: int, *, follow: bool = True) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; else UnsafeFile (an OSError)
    (`open_regular`). Reads at most the size fstat reported, so a file that grows meanwhile (or lies about its
    size) cannot make the read unbounded."""
    with open_regular(path, limit, follow=follow) as (fd, size):
        return read_upto(fd, size)


def key_path(explicit: str | Path | None = None) -> Path:
    """The key file in use: `explicit`, else $COS_STORE_KEY, else <cache dir>/store.key."""
    if explicit:
        return Path(explicit)
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    return cache_dir() / KEY_NAME


def _create(path: Path) -> None:
    """A fresh key, published atomically (os.link fails if another process made one first: theirs wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def load_key(path: str | Path | None = None, *, create: bool | None = None) -> bytes:
    """The secret of a key file (created, mode 0600, when it is the default one and missing); InputError (one
    line naming the file and the rule) when it is missing, unreadable, not a key, or readable by others."""
    p = key_path(path)
    explicit = bool(path) or bool(os.environ.get(KEY_ENV))
    if create is None:
        create = not explicit    # a named key must exist: a typo must not silently make a new, unshared one
    if not p.exists() and create:
        try:
            _create(p)
        except OSError as e:
            raise InputError(f"{p}: cannot create the store key ({e.strerror or e})") from None
    try:
        raw = read_regular(p, MAX_KEY_FILE)
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: store key file does not exist (set by ${KEY_ENV} or --cos-store-key?)") from None
    except OSError as e:
        raise InputError(f"{p}: store key unreadable ({e.strerror or e})") from None
    if st.st_mode & 0o077:
        raise InputError(f"{p}: store key readable by others (mode {stat.S_IMODE(st.st_mode):o}); anyone who can "
                         f"read it can forge results: chmod 600 {p}")
    text = raw.decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise InputError(f"{p}: not a cos store key (expected at least 32 hex digits, as `cos` writes)")
    return key


def key_id(key: bytes) -> str:
    """A public name of a key (16 hex digits), for messages: which key signed an entry."""
    return hashlib.sha256(b"cos-key-id\0" + key).hexdigest()[:16]


def mac(key: bytes, *parts: bytes | str) -> str:
    """HMAC-SHA256 (hex) of the parts, each length-prefixed so that no two part lists collide."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def mac_ok(key: bytes, tag: object, *parts: bytes | str) -> bool:
    return isinstance(tag, str) and hmac.compare_digest(tag, mac(key, *parts))

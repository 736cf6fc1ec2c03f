"""Issue 28, store: whoever can write to a result store but cannot read the user's key cannot get an entry
served or merged; reading an entry never hangs and any error is a miss with one warning line; the key never
lives in the store; a full disk loses only the entry being written."""
import errno
import hashlib
import json
import os
import struct
import time
import warnings
from pathlib import Path

import pytest
import torch

from cos.errors import InputError
from cos.store import FORMAT, ResultStore, StoreWarning, _digest, _split, merge, pack, unpack
from cos.trust import key_id, load_key

K = "a" * 32


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's user: a cache dir (where the key is made) of its own."""
    monkeypatch.setenv("COS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COS_STORE_KEY", raising=False)
    return tmp_path / "cache" / "store.key"


def other_key(tmp_path: Path, name: str = "other.key") -> Path:
    p = tmp_path / "keys" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(os.urandom(32).hex())
    p.chmod(0o600)
    return p


def _header(raw: bytes) -> tuple[dict, int]:
    return _split(raw)


def _rebuild(raw: bytes, fn) -> bytes:
    """Edit an entry's header (fn(header)) and re-serialize it: what a forger with write access can do."""
    header, start = _split(raw)
    fn(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[start:]


def _unkeyed_sha(header: dict, data: bytes) -> str:
    """What store format 2 called a checksum: anyone can recompute it."""
    return _digest(header["__metadata__"], header, data).hex()


def forge_value(raw: bytes) -> bytes:
    """Change the JSON tree (a rewritten value) and recompute an unkeyed checksum into the MAC field."""
    def f(h):
        m = h["__metadata__"]
        m["tree"] = m["tree"].replace('"n": 1', '"n": 666')
        m["mac"] = hashlib.sha256(_digest(m, h, raw[_split(raw)[1]:])).hexdigest()
    return _rebuild(raw, f)


def forge_nan(raw: bytes) -> bytes:
    """Planted NaNs in the tensor bytes, the header left as it was."""
    header, start = _split(raw)
    return raw[:start] + struct.pack("<f", float("nan")) * ((len(raw) - start) // 4)


def forge_rekey(raw: bytes) -> bytes:
    """Another key's genuine entry relabelled as this key's."""
    return _rebuild(raw, lambda h: h["__metadata__"].update(key=K))


def forge_v2(raw: bytes) -> bytes:
    """A format-2 entry (unkeyed sha256) that is internally consistent."""
    def f(h):
        m = h["__metadata__"]
        m["format"] = "cos-store/2"
        m["sha256"] = _unkeyed_sha(h, raw[_split(raw)[1]:])
        del m["mac"], m["key_id"]
    return _rebuild(raw, f)


FORGERIES = [
    # (case, how the planted bytes at K's path are made, the warning's words)
    ("rewritten value, checksum recomputed", lambda ok, other: forge_value(ok), "authentication failed"),
    ("planted NaN tensors", lambda ok, other: forge_nan(ok), "authentication failed"),
    ("another key's entry relabelled", lambda ok, other: forge_rekey(other), "authentication failed"),
    ("format-2 entry with a valid sha256", lambda ok, other: forge_v2(ok), "format 'cos-store/2'"),
    ("signed with a stranger's key", lambda ok, other: pack(K, {"n": 666}, os.urandom(32)), "not signed by a trusted key"),
    ("empty metadata", lambda ok, other: _rebuild(ok, lambda h: h.update(__metadata__={})), "format None"),
    ("metadata without a MAC", lambda ok, other: _rebuild(ok, lambda h: h["__metadata__"].pop("mac")), "without key"),
    ("the entry of another key", lambda ok, other: other, "swapped file"),
    ("bytes that are no entry", lambda ok, other: b"\x07" * len(ok), "not a cos store entry"),
    ("a JSON file", lambda ok, other: b'{"n": 666}', "not a cos store entry"),
]


@pytest.mark.parametrize("case,make,words", FORGERIES, ids=[c for c, _, _ in FORGERIES])
def test_a_forged_entry_is_a_miss_with_one_warning(tmp_path, case, make, words):
    s = ResultStore(tmp_path / "s")
    s.put(K, {"n": 1, "x": torch.arange(8.0)})
    s.put("b" * 32, {"n": 2, "x": torch.arange(8.0)})
    ok, other = s.path(K).read_bytes(), s.path("b" * 32).read_bytes()
    s.path(K).write_bytes(make(ok, other))
    fresh = ResultStore(tmp_path / "s")
    with pytest.warns(StoreWarning) as w:
        assert fresh.get(K) is None
    assert len(w) == 1 and words in str(w[0].message) and "\n" not in str(w[0].message), case
    assert str(s.path(K)) in str(w[0].message) and fresh.misses == 1 and fresh.hits == 0
    # and merge does not carry it either
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert merge([tmp_path / "s"], tmp_path / "dst") == 1          # only b's genuine entry
    assert any(words in str(c.message) for c in caught)
    assert not (tmp_path / "dst" / K[:2] / f"{K}.safetensors").exists()


NOT_REGULAR = [
    ("a FIFO", lambda p: os.mkfifo(p), "a FIFO"),
    ("a link to /dev/zero", lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
    ("a link to a genuine entry elsewhere", None, "symbolic link"),
    ("a folder", lambda p: p.mkdir(), "directory"),
]


@pytest.mark.parametrize("case,make,words", NOT_REGULAR, ids=[c for c, _, _ in NOT_REGULAR])
def test_an_entry_that_is_not_a_regular_file_is_a_miss_never_a_hang(tmp_path, no_hang, case, make, words):
    s = ResultStore(tmp_path / "s")
    p = s.path(K)
    p.parent.mkdir(parents=True)
    if make is None:
        elsewhere = ResultStore(tmp_path / "elsewhere")
        elsewhere.put(K, {"n": 1})
        p.symlink_to(elsewhere.path(K))
    else:
        make(p)
    with pytest.warns(StoreWarning) as w:
        assert s.get(K) is None
    assert len(w) == 1 and words in str(w[0].message) and "\n" not in str(w[0].message), case
    s.release(K)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert merge([tmp_path / "s"], tmp_path / "dst") == 0
    assert len(caught) == 1 and words in str(caught[0].message)


def test_an_entry_over_the_size_bound_is_not_read(tmp_path, monkeypatch):
    import cos.store

    s = ResultStore(tmp_path / "s")
    s.put(K, {"x": torch.zeros(4096)})
    monkeypatch.setattr(cos.store, "MAX_ENTRY_BYTES", 1024)
    with pytest.warns(StoreWarning, match="more than the 1024 allowed") as w:
        assert ResultStore(tmp_path / "s").get(K) is None
    assert len(w) == 1


def test_a_read_error_is_a_miss_with_one_warning(tmp_path, monkeypatch):
    import cos.store

    s = ResultStore(tmp_path / "s")
    s.put(K, {"n": 1})

    def eio(*a, **k):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(cos.store, "read_regular", eio)
    with pytest.warns(StoreWarning, match="unreadable \\(Input/output error\\)") as w:
        assert ResultStore(tmp_path / "s").get(K) is None
    assert len(w) == 1


CLAIMS = [
    # (case, what sits in the key's claim slot): none may make a reader wait forever
    ("dated an hour in the future", lambda p: (p.write_text(json.dumps({"pid": 1, "host": "elsewhere"})),
                                               os.utime(p, (time.time() + 3600, time.time() + 3600)))),
    ("a FIFO", lambda p: os.mkfifo(p)),
    ("a link to /dev/zero", lambda p: p.symlink_to("/dev/zero")),
    ("a JSON list, long untouched", lambda p: (p.write_text("[1, 2]"), os.utime(p, (0, 0)))),
]


@pytest.mark.parametrize("case,make", CLAIMS, ids=[c for c, _ in CLAIMS])
def test_a_hostile_claim_never_blocks_the_run(tmp_path, no_hang, case, make):
    s = ResultStore(tmp_path / "s", poll_s=0.01, claim_stale_s=60)
    claim = tmp_path / "s" / K[:2] / f"{K}.claim"
    claim.parent.mkdir(parents=True)
    make(claim)
    t0 = time.time()
    assert s.get(K) is None, case          # claimed by us: we compute it
    s.put(K, {"n": 1})
    assert time.time() - t0 < 5 and s.get(K) == {"n": 1}


def test_a_live_claim_still_makes_others_wait(tmp_path):
    """The control of the cases above: a fresh claim of a live holder is respected."""
    s = ResultStore(tmp_path / "s", poll_s=0.01, wait_s=0.3)
    claim = tmp_path / "s" / K[:2] / f"{K}.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time()}))
    t0 = time.time()
    assert s.get(K) is None and time.time() - t0 >= 0.3


KEYS = [
    # (case, set-up returning the key file to use, the one line's words)
    ("inside the store", lambda t: _key_in(t / "s" / "keys" / "k"), "must not live inside the store"),
    ("readable by others", lambda t: _key_mode(t, 0o644), "readable by others"),
    ("named but missing", lambda t: t / "nope.key", "does not exist"),
    ("not a key", lambda t: _key_text(t, "hello"), "not a cos store key"),
    ("a FIFO", lambda t: _key_fifo(t), "a FIFO"),
]


def _key_in(p: Path) -> Path:
    p.parent.mkdir(parents=True)
    p.write_text(os.urandom(32).hex())
    p.chmod(0o600)
    return p


def _key_mode(t: Path, mode: int) -> Path:
    p = other_key(t)
    p.chmod(mode)
    return p


def _key_text(t: Path, text: str) -> Path:
    p = other_key(t)
    p.write_text(text)
    return p


def _key_fifo(t: Path) -> Path:
    p = t / "fifo.key"
    os.mkfifo(p, 0o600)
    return p


@pytest.mark.parametrize("case,make,words", KEYS, ids=[c for c, _, _ in KEYS])
def test_a_bad_key_is_one_line_before_anything_is_read(tmp_path, no_hang, monkeypatch, case, make, words):
    key = make(tmp_path)
    for via_env in (False, True):
        if via_env:
            monkeypatch.setenv("COS_STORE_KEY", str(key))
        with pytest.raises(InputError) as e:
            ResultStore(tmp_path / "s", key_file=None if via_env else key)
        assert words in str(e.value) and "\n" not in str(e.value) and str(key) in str(e.value), case


def test_the_default_key_is_made_once_owner_only_and_outside_the_store(tmp_path, own_key):
    s = ResultStore(tmp_path / "s")
    s.put(K, {"n": 1})
    assert own_key.exists() and (own_key.stat().st_mode & 0o777) == 0o600
    assert not any(p.name.endswith(".key") for p in (tmp_path / "s").rglob("*"))
    assert load_key() == s.secret and ResultStore(tmp_path / "s").get(K) == {"n": 1}


# what `has` (a plan's "stored") can tell from the header alone: everything but a MAC that no longer matches
HEADER_REFUSED = {"signed with a stranger's key", "format-2 entry with a valid sha256", "empty metadata",
                  "metadata without a MAC", "the entry of another key", "bytes that are no entry", "a JSON file"}


def test_a_plan_counts_as_stored_only_what_get_would_read_by_its_header(tmp_path, no_hang):
    """`has`, what --cos-budget and the ETA count as stored: a regular file (a symlink is not followed, as a read
    does not) whose header names this format, this key and this user's key id; one small read, no MAC check."""
    s = ResultStore(tmp_path / "s")
    assert not s.has(K)
    s.put(K, {"n": 1, "x": torch.arange(8.0)})
    s.put("b" * 32, {"n": 2})
    assert s.has(K) and s.has("b" * 32)
    ok, other = s.path(K).read_bytes(), s.path("b" * 32).read_bytes()
    for case, make, _ in FORGERIES:
        s.path(K).write_bytes(make(ok, other))
        assert s.has(K) is (case not in HEADER_REFUSED), case
    s.path(K).write_bytes(ok[:20])                              # truncated inside its header
    assert not s.has(K)
    s.path(K).unlink()
    for case, make, _ in NOT_REGULAR:
        p = s.path(K)
        if make is None:                                        # a link to a genuine entry of this key elsewhere
            elsewhere = ResultStore(tmp_path / "elsewhere")
            elsewhere.put(K, {"n": 1})
            assert elsewhere.has(K)
            p.symlink_to(elsewhere.path(K))
        else:
            make(p)
        assert not s.has(K), case
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    # another host's genuine entry (a key this store does not trust) is not stored either
    ResultStore(tmp_path / "s", key_file=other_key(tmp_path)).put(K, {"n": 3})
    assert not s.has(K) and ResultStore(tmp_path / "s", key_file=tmp_path / "keys" / "other.key").has(K)


def test_hosts_sharing_a_key_read_each_others_entries_and_strangers_do_not(tmp_path, monkeypatch):
    shared = other_key(tmp_path, "launch.key")
    a = ResultStore(tmp_path / "s", key_file=shared)
    a.put(K, {"n": 1})
    monkeypatch.setenv("COS_STORE_KEY", str(shared))            # host B of the same launch
    assert ResultStore(tmp_path / "s").get(K) == {"n": 1}
    monkeypatch.delenv("COS_STORE_KEY")
    with pytest.warns(StoreWarning, match=f"signed by key id '{key_id(load_key(shared))}'"):
        assert ResultStore(tmp_path / "s").get(K) is None        # this user's own key: a stranger's entry


def test_merge_trusts_only_the_keys_it_is_given_and_re_signs(tmp_path):
    host_b = other_key(tmp_path, "b.key")
    ResultStore(tmp_path / "b", key_file=host_b).put(K, {"n": 1, "x": torch.ones(3)})
    ResultStore(tmp_path / "c", key_file=other_key(tmp_path, "c.key")).put("c" * 32, {"n": 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert merge([tmp_path / "b", tmp_path / "c"], tmp_path / "dst") == 0
    assert len(caught) == 2 and all("not signed by a trusted key" in str(c.message) for c in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert merge([tmp_path / "b", tmp_path / "c"], tmp_path / "dst", trust=[host_b]) == 1
    assert len(caught) == 1 and "c" * 32 in str(caught[0].message)
    got = ResultStore(tmp_path / "dst").get(K)                      # readable with this user's key
    assert got["n"] == 1 and torch.equal(got["x"], torch.ones(3))
    meta = _split((tmp_path / "dst" / K[:2] / f"{K}.safetensors").read_bytes())[0]["__metadata__"]
    assert meta["key_id"] == key_id(load_key()) and meta["format"] == FORMAT


def test_cos_merge_trust_on_the_command_line(tmp_path, capsys):
    from cos.cli import main

    host_b = other_key(tmp_path, "b.key")
    ResultStore(tmp_path / "b", key_file=host_b).put(K, {"n": 1})
    assert main(["merge", str(tmp_path / "b"), "--into", str(tmp_path / "dst")]) == 0
    err = capsys.readouterr()
    assert "merged 0 new results" in err.out and err.err.count("\n") == 1 and "--trust KEYFILE" in err.err
    assert main(["merge", str(tmp_path / "b"), "--into", str(tmp_path / "dst"), "--trust", str(host_b)]) == 0
    assert "merged 1 new results" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "b"), "--into", str(tmp_path / "dst"), "--trust", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.parametrize("where", ["write", "mkdir"])
def test_a_full_disk_loses_only_the_entry_being_written(tmp_path, monkeypatch, where):
    s = ResultStore(tmp_path / "s")
    s.put("b" * 32, {"n": 2})
    assert s.get(K) is None                   # claimed
    orig = Path.write_bytes if where == "write" else Path.mkdir

    def full(self, *a, **k):
        if where == "write":
            orig(self, b"partial")            # the temporary gets some bytes, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes" if where == "write" else "mkdir", full)
    with pytest.warns(StoreWarning, match="not stored \\(No space left on device\\)") as w:
        s.put(K, {"n": 1})
    monkeypatch.undo()
    assert len(w) == 1 and str(s.path(K)) in str(w[0].message)
    assert not list((tmp_path / "s").rglob("*.tmp*")) and not list((tmp_path / "s").rglob("*.claim"))
    assert s.get("b" * 32) == {"n": 2}        # what existed is kept

"""Issue 28, identity: another model's results are never served. Every file `load_system` reads is in the
model's identity, by content; no name and no cache entry is taken as proof of content, and no same-size,
same-mtime rewrite fools the hash cache. Each case crafts one bypass and asserts the identity moved (or the
model is refused with one line)."""
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from cos.errors import ModelLoadError
from cos.models import identity
from cos.models.identity import file_sha256, model_files, weights_hash

ROOT = Path(__file__).resolve().parent.parent
ORGANISM = ROOT / "fixtures" / "organism"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A cache dir (and store key) of this test's own; nothing verified in this process yet."""
    monkeypatch.setenv("COS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COS_STORE_KEY", raising=False)
    monkeypatch.setattr(identity, "_verified", {})
    return tmp_path / "cache"


@pytest.fixture
def organism(tmp_path):
    return Path(shutil.copytree(ORGANISM, tmp_path / "organism"))


def _edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d, indent=1))


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def _heads_4x16(d):   # same parameter shapes as 2x32, another forward
    d["num_attention_heads"], d["attention_head_dim"] = 4, 16


# (case, edit of a copy of the organism): each file that changes the output moves the identity
ORGANISM_EDITS = [
    ("transformer config: heads 2x32 -> 4x16", lambda m: _edit_json(m / "transformer" / "config.json", _heads_4x16)),
    ("transformer config: rope_max_seq_len", lambda m: _edit_json(m / "transformer" / "config.json",
                                                                 lambda d: d.update(rope_max_seq_len=128))),
    ("cos_model.json: sampling defaults", lambda m: _edit_json(m / "cos_model.json",
                                                               lambda d: d["defaults"].update(steps=8))),
    ("cos_model.json: vae channels", lambda m: _edit_json(m / "cos_model.json", lambda d: d["vae"].update(channels=4))),
    ("prompt vocabulary: two words swapped", lambda m: _edit_json(
        m / "prompt_encoder.json", lambda d: d.update(vocab=d["vocab"][:2] + [d["vocab"][3], d["vocab"][2]] + d["vocab"][4:]))),
    ("prompt vocabulary: max_len", lambda m: _edit_json(m / "prompt_encoder.json", lambda d: d.update(max_len=6))),
    ("prompt encoder table: one byte", lambda m: _flip_last_byte(m / "prompt_encoder.safetensors")),
    ("scheduler: flow shift", lambda m: _edit_json(m / "scheduler" / "scheduler_config.json",
                                                   lambda d: d.update(flow_shift=5.0))),
    ("scheduler: solver order", lambda m: _edit_json(m / "scheduler" / "scheduler_config.json",
                                                     lambda d: d.update(solver_order=1))),
    ("weights: one byte", lambda m: _flip_last_byte(m / "transformer" / "diffusion_pytorch_model.safetensors")),
    ("a .bin beside the safetensors", lambda m: (m / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"x" * 64)),
    ("a second expert folder", lambda m: shutil.copytree(m / "transformer", m / "transformer_2")),
]


@pytest.mark.parametrize("case,edit", ORGANISM_EDITS, ids=[c for c, _ in ORGANISM_EDITS])
def test_every_read_file_of_the_organism_is_in_its_identity(organism, case, edit):
    before = weights_hash(organism)
    edit(organism)
    assert weights_hash(organism) != before, case


def test_what_is_not_read_is_not_in_the_identity(organism, tmp_path):
    before = weights_hash(organism)
    (organism / "README.md").write_text("notes")                      # documentation, eval logs, pictures
    _edit_json(organism / "eval.json", lambda d: d.update(note="x"))
    assert weights_hash(organism) == before
    assert weights_hash(shutil.copytree(organism, tmp_path / "elsewhere" / "organism")) == before   # not the path
    names = {p.relative_to(organism).as_posix() for p in model_files(organism)}
    assert names == {"cos_model.json", "prompt_encoder.json", "prompt_encoder.safetensors",
                     "scheduler/scheduler_config.json", "transformer/config.json",
                     "transformer/diffusion_pytorch_model.safetensors"}


@pytest.fixture(scope="module")
def wan_src(tmp_path_factory):
    from tests.helpers import write_wan_dir

    root = tmp_path_factory.mktemp("wan")
    write_wan_dir(root)
    for comp, files in {"tokenizer": {"spiece.model": b"\x0a\x0bsentencepiece", "tokenizer_config.json": b"{}"},
                        "text_encoder": {"config.json": b"{}"}}.items():
        (root / comp).mkdir()
        for n, b in files.items():
            (root / comp / n).write_bytes(b)
    return root


WAN_EDITS = [
    ("vae config", lambda m: _edit_json(m / "vae" / "config.json", lambda d: d.update(clip_output=False))),
    ("vae weights", lambda m: _flip_last_byte(next((m / "vae").glob("*.safetensors")))),
    ("model_index boundary", lambda m: _edit_json(m / "model_index.json", lambda d: d.update(boundary_ratio=0.5))),
    ("tokenizer model", lambda m: _flip_last_byte(m / "tokenizer" / "spiece.model")),
    ("tokenizer added file", lambda m: (m / "tokenizer" / "added_tokens.json").write_text('{"<x>": 9}')),
    ("text encoder config", lambda m: (m / "text_encoder" / "config.json").write_text('{"d_model": 8}')),
    ("second expert config", lambda m: _edit_json(m / "transformer_2" / "config.json", _heads_4x16)),
]


@pytest.mark.parametrize("case,edit", WAN_EDITS, ids=[c for c, _ in WAN_EDITS])
def test_every_read_file_of_a_diffusers_dir_is_in_its_identity(wan_src, tmp_path, case, edit):
    m = Path(shutil.copytree(wan_src, tmp_path / "m"))
    before = weights_hash(m)
    edit(m)
    assert weights_hash(m) != before, case


def test_a_hub_blob_named_after_the_organisms_digest_is_hashed_by_content(organism, tmp_path):
    w = organism / "transformer" / "diffusion_pytorch_model.safetensors"
    digest, before = file_sha256(w), weights_hash(organism)
    (tmp_path / "blobs").mkdir()
    blob = tmp_path / "blobs" / digest                 # the genuine content's name over halved weights
    raw = bytearray(w.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    raw[8 + n:] = bytes(len(raw) - 8 - n)
    blob.write_bytes(bytes(raw))
    w.unlink()
    w.symlink_to(blob)
    assert file_sha256(w) == hashlib.sha256(bytes(raw)).hexdigest() != digest
    assert weights_hash(organism) != before


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A 'large' weight file (SMALL lowered so that it goes through the cache), 8 blocks of 1 MiB."""
    monkeypatch.setattr(identity, "SMALL", 1024)
    f = tmp_path / "w.safetensors"
    f.write_bytes(os.urandom(8 << 20))
    return f


def _rewrite_keeping_mtime(f: Path, data: bytes) -> None:
    st = f.stat()
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def _halve(data: bytes) -> bytes:
    return bytes(b >> 1 for b in data[:1 << 16]) * (len(data) >> 16)


REWRITES = [
    # (case, how the same-size content replaces the genuine file)
    ("in place, mtime restored (rsync -t)", lambda f, new: _rewrite_keeping_mtime(f, new)),
    ("cp -p of another file over it", lambda f, new: (f.with_name("o").write_bytes(new),
                                                      os.utime(f.with_name("o"), ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns)),
                                                      shutil.copy2(f.with_name("o"), f))),
    ("renamed into place, mtime copied", lambda f, new: (f.with_name("o").write_bytes(new),
                                                         os.utime(f.with_name("o"), ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns)),
                                                         os.replace(f.with_name("o"), f))),
]


@pytest.mark.parametrize("case,rewrite", REWRITES, ids=[c for c, _ in REWRITES])
def test_a_same_size_same_mtime_rewrite_misses_the_cache(big, case, rewrite):
    genuine = file_sha256(big)
    assert file_sha256(big) == genuine and identity.CACHE_NAME in os.listdir(big.parent / "cache")
    new = _halve(big.read_bytes())
    rewrite(big, new)
    identity._verified.clear()                            # a new process
    assert file_sha256(big) == hashlib.sha256(new).hexdigest() != genuine, case


def _cache(big: Path) -> tuple[Path, dict]:
    p = big.parent / "cache" / identity.CACHE_NAME
    return p, json.loads(p.read_text())


CACHE_FORGERIES = [
    # (case, edit of the cache after the genuine file was hashed and then replaced by halved weights)
    ("the new stat key given the genuine digest, no MAC", lambda e, new_key, d: d.update({new_key: {**e, "mac": "0" * 64}})),
    ("the genuine entry (its MAC) copied to the new stat key", lambda e, new_key, d: d.update({new_key: e})),
    ("the new key's entry with its digest swapped", lambda e, new_key, d: d[new_key].update(sha256=e["sha256"])),
    ("a digest that is not a dict entry", lambda e, new_key, d: d.update({new_key: e["sha256"]})),
]


@pytest.mark.parametrize("case,forge", CACHE_FORGERIES, ids=[c for c, _ in CACHE_FORGERIES])
def test_an_edited_cache_line_is_not_served(big, case, forge):
    genuine = file_sha256(big)
    p, d = _cache(big)
    (old_key, entry), = d.items()
    new = _halve(big.read_bytes())
    _rewrite_keeping_mtime(big, new)
    identity._verified.clear()
    truth = file_sha256(big)                     # writes the honest entry for the new stat key
    _, d = _cache(big)
    new_key = next(k for k in d if k != old_key) if len(d) > 1 else identity._stat_key(big.resolve(), big.stat())
    if new_key not in d:
        d[new_key] = {"sha256": truth, "blocks": [], "mac": "0" * 64}
    forge(entry, new_key, d)
    p.write_text(json.dumps(d))
    identity._verified.clear()
    assert file_sha256(big) == truth == hashlib.sha256(new).hexdigest() != genuine, case


def test_first_use_in_a_process_rechecks_sampled_blocks(big, monkeypatch):
    """Where ctime cannot be trusted (simulated: a stat key without inode and ctime), the sampled re-read of
    blocks still catches content that differs throughout (halved weights)."""
    monkeypatch.setattr(identity, "_stat_key", lambda real, st: f"{real}|{st.st_size}|{st.st_mtime_ns}")
    genuine = file_sha256(big)
    new = _halve(big.read_bytes())
    _rewrite_keeping_mtime(big, new)
    assert file_sha256(big) == genuine                        # same process: the verified digest is reused
    identity._verified.clear()
    assert file_sha256(big) == hashlib.sha256(new).hexdigest()


def test_an_unchanged_large_file_is_served_from_the_cache_without_a_full_read(big, monkeypatch):
    genuine = file_sha256(big)
    identity._verified.clear()
    reads = []
    orig = os.pread
    monkeypatch.setattr(identity.os, "pread", lambda fd, n, off: reads.append(n) or orig(fd, n, off))
    assert file_sha256(big) == genuine
    assert sum(reads) == identity.VERIFY_BLOCKS * (1 << 20)       # 3 of 8 blocks re-read, not the file


NOT_FILES = [
    ("weights are a FIFO", "fifo"),
    ("weights link to /dev/zero", "devzero"),
    ("a folder link loops back", "loop"),
]


@pytest.mark.parametrize("case,kind", NOT_FILES, ids=[c for c, _ in NOT_FILES])
def test_a_model_file_that_is_not_a_file_is_one_line_never_a_hang(organism, no_hang, case, kind):
    from cos.models import load_system

    w = organism / "transformer" / "diffusion_pytorch_model.safetensors"
    if kind == "fifo":
        w.unlink()
        os.mkfifo(w)
    elif kind == "devzero":
        w.unlink()
        w.symlink_to("/dev/zero")
    else:
        (organism / "transformer" / "again").symlink_to(organism / "transformer")
        assert weights_hash(organism)        # terminates: the loop is walked once
        return
    with pytest.raises(ModelLoadError) as e:
        load_system(organism)
    assert "\n" not in str(e.value) and str(w) in str(e.value) and "not a regular file" in str(e.value), case
    with pytest.raises(ModelLoadError, match="not a regular file"):
        weights_hash(organism)

"""Issue 28, VBVR-Bench data: every malformed data folder handed to `--cos-vbvr` stops the run at option time
(`validate_options`, what the plugin runs at configure, before the model loads) and again in
`extra_from_options`, with one line naming the file, its value and the rule: no traceback, no hang (FIFOs and
devices are never opened), no silent wrong result. Nothing is skipped: a skipped sample would change the
benchmark's score, so every case stops.

Each case copies two real samples of ../shared/vbvr/bench (the benchmark's format) into a temporary folder and
breaks one thing."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from cos.errors import InputError
from cos.tasks.vbvr import check_data, write_video
from cos.validation import validate_options
from cos.vbvr_run import extra_from_options

BENCH = Path(__file__).resolve().parents[2] / "shared" / "vbvr" / "bench"
SPLIT, TASK = "Out-of-Domain_50", "O-59_symbol_insert_data-generator"   # the smallest videos (24-32 frames)
pytestmark = pytest.mark.skipif(not (BENCH / SPLIT / TASK).is_dir(), reason=f"no VBVR-Bench samples at {BENCH}")


def copy_samples(root: Path, n: int = 2) -> Path:
    """Two samples in the benchmark layout, writable (the shared copy is read-only)."""
    for k in range(n):
        src, dst = BENCH / SPLIT / TASK / f"{k:05d}", root / SPLIT / TASK / f"{k:05d}"
        dst.mkdir(parents=True)
        for f in src.iterdir():
            shutil.copyfile(f, dst / f.name)
    return root


def S(k: int = 0) -> str:
    return f"{SPLIT}/{TASK}/{k:05d}"


def png_bytes(w: int, h: int, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format=fmt)
    return buf.getvalue()


def put(rel: str, data: bytes) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        p = root / rel
        p.unlink(missing_ok=True)
        p.write_bytes(data)
    return do


def cut(rel: str, frac: float) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        b = (root / rel).read_bytes()
        (root / rel).write_bytes(b[:int(len(b) * frac)])
    return do


def gone(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


def sparse(rel: str, size: int, head: bytes = b"") -> Callable[[Path], None]:
    """A file of `size` bytes that costs no disk (the reader must refuse it by its size, not read it)."""
    def do(root: Path) -> None:
        with open(root / rel, "wb") as f:
            f.write(head)
            f.truncate(size)
    return do


def as_dir(rel: str) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        (root / rel).unlink()
        (root / rel).mkdir()
    return do


def fifo(rel: str) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        (root / rel).unlink(missing_ok=True)
        os.mkfifo(root / rel)
    return do


def link(rel: str, target: str) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        p.symlink_to(target)
    return do


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).mkdir(parents=True)


def rename(rel: str, new: str | bytes) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        src = root / rel
        dst = os.path.join(os.fsencode(src.parent), new) if isinstance(new, bytes) else src.parent / new
        os.rename(src, dst)
    return do


def video(rel: str, frames: int, size: int) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        import torch

        (root / rel).unlink()
        write_video(root / rel, torch.zeros(frames, 3, size, size), 16)
    return do


def both(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def do(root: Path) -> None:
        for f in fns:
            f(root)
    return do


P, F1, F2, GT = (f"{S()}/{n}" for n in ("prompt.txt", "first_frame.png", "final_frame.png", "ground_truth.mp4"))
LOOP = "a symbolic link loop"

CASES = [
    # (case, breakage of a copy of two samples, words of the one line (file, value, rule))
    # missing files
    ("prompt.txt missing", gone(P), ["prompt.txt: missing", "every sample folder holds"]),
    ("first_frame.png missing", gone(F1), ["first_frame.png: missing"]),
    ("final_frame.png missing", gone(F2), ["final_frame.png: missing"]),
    ("ground_truth.mp4 missing", gone(GT), ["ground_truth.mp4: missing"]),
    # prompt contents
    ("prompt empty", put(P, b""), ["prompt.txt: empty (0 bytes", "needs the prompt"]),
    ("prompt only whitespace", put(P, b" \n\t\n"), ["prompt.txt: empty (4 bytes"]),
    ("prompt binary", put(P, b"Move the\x00block"), ["prompt.txt: binary (a NUL byte at offset 8)", "UTF-8 text"]),
    ("prompt latin-1", put(P, "Déplacez".encode("latin-1")), ["prompt.txt: not UTF-8 (byte 0xe9 at offset 1)"]),
    ("prompt huge", sparse(P, 8 << 20, b"Move"), ["prompt.txt: 8388608 bytes, more than the 65536"]),
    # frames
    ("first frame empty", put(F1, b""), ["first_frame.png: not a PNG (0 bytes", "PNG files"]),
    ("first frame truncated", cut(F1, 0.5), ["first_frame.png: not a readable PNG (truncated or corrupt"]),
    ("final frame truncated to its header", cut(F2, 0.01), ["final_frame.png: not a readable PNG"]),
    ("text named .png", put(F1, b"not an image\n"), ["first_frame.png: not a PNG (13 bytes", "b'not an i'"]),
    ("JPEG named .png", put(F1, png_bytes(1024, 1024, fmt="JPEG")), ["first_frame.png: not a PNG", "xff"]),
    ("final frame another size", put(F2, png_bytes(512, 512)),
     ["final_frame.png: 512x512, but first_frame.png is 1024x1024", "same size"]),
    ("frames another size than the video", both(put(F1, png_bytes(512, 512)), put(F2, png_bytes(512, 512))),
     ["ground_truth.mp4: 1024x1024 frames, but first_frame.png is 512x512"]),
    ("frame of a decompression-bomb size", put(F1, png_bytes(9000, 9000, mode="1")),
     ["first_frame.png: 9000x9000 pixels", "sides must be 1..8192"]),
    ("frame over the read bound", sparse(F1, 65 << 20, b"\x89PNG\r\n\x1a\n"),
     ["first_frame.png: 68157440 bytes, more than the 67108864"]),
    # the ground truth
    ("ground truth empty", put(GT, b""), ["ground_truth.mp4: not a readable video"]),
    ("ground truth truncated", cut(GT, 0.5), ["ground_truth.mp4: not a readable video (truncated or corrupt"]),
    ("ground truth is a PNG", put(GT, png_bytes(1024, 1024)), ["ground_truth.mp4: 1 frame(s)", "at least 2 frames"]),
    ("ground truth of one frame", video(GT, 1, 1024), ["ground_truth.mp4: 1 frame(s)"]),
    ("ground truth another size", video(GT, 5, 64), ["ground_truth.mp4: 64x64 frames, but first_frame.png is 1024x1024"]),
    # not regular files where files should be
    ("prompt.txt a directory", as_dir(P), ["prompt.txt: a directory, not a regular file"]),
    ("first_frame.png a directory", as_dir(F1), ["first_frame.png: a directory, not a regular file"]),
    ("ground_truth.mp4 a directory", as_dir(GT), ["ground_truth.mp4: a directory, not a regular file"]),
    ("prompt.txt a FIFO", fifo(P), ["prompt.txt: a FIFO, not a regular file"]),
    ("final_frame.png a FIFO", fifo(F2), ["final_frame.png: a FIFO, not a regular file"]),
    ("ground_truth.mp4 a FIFO", fifo(GT), ["ground_truth.mp4: a FIFO, not a regular file"]),
    ("ground_truth.mp4 a link to /dev/zero", link(GT, "/dev/zero"), ["ground_truth.mp4: a device, not a regular file"]),
    ("prompt.txt a symlink loop", link(P, "prompt.txt"), ["prompt.txt: " + LOOP]),
    ("first_frame.png a dangling link", link(F1, "nowhere.png"), ["first_frame.png: a dangling symbolic link",
                                                                    "'nowhere.png'"]),
    # folders
    ("task folder without samples", mkdir(f"{SPLIT}/O-24_domino_chain_gap_analysis_data-generator"),
     ["O-24_domino_chain_gap_analysis_data-generator: no sample folders"]),
    ("split folder without tasks", mkdir("In-Domain_50"), ["In-Domain_50: no task folders"]),
    ("unknown split folder", mkdir(f"Extra_50/{TASK}/00000"), ["Extra_50: not a split folder", "In-Domain_50"]),
    ("duplicate sample ids", rename(S(1), "0"), ["00000: the same sample id as 0 (both 00000)", "its own number"]),
    ("sample folder not a number", rename(S(1), "first"), ["sample folder name 'first': must be a number"]),
    ("sample folder non-UTF-8 name", rename(S(1), b"0\xff"), ["\\udcff", "not valid UTF-8"]),
    ("task folder non-UTF-8 name", lambda r: os.rename(r / SPLIT / TASK, os.path.join(os.fsencode(r / SPLIT), b"O-\xfe")),
     ["\\udcfe", "not valid UTF-8"]),
    ("file where a sample folder should be", put(f"{SPLIT}/{TASK}/00002", b"x"), ["00002: a file, where a sample folder"]),
    ("FIFO where a sample folder should be", fifo(f"{SPLIT}/{TASK}/00002"), ["00002: a FIFO, where a sample folder"]),
    ("sample folder a symlink loop", link(S(1), "00001"), ["00001: " + LOOP]),
    ("sample folder a dangling link", link(S(1), "/nonexistent/vbvr"), ["00001: a dangling symbolic link"]),
    ("split folder a symlink loop", link("In-Domain_50", "In-Domain_50"), ["In-Domain_50: " + LOOP]),
]


@pytest.mark.parametrize("case,breakage,words", CASES, ids=[c[0] for c in CASES])
def test_malformed_vbvr_data_is_one_line(tmp_path, no_hang, case, breakage, words):
    root = copy_samples(tmp_path / "data")
    breakage(root)
    with pytest.raises(InputError) as opt:          # at option time (the plugin's configure)
        validate_options({"--cos-vbvr": str(root)})
    msg = str(opt.value)
    assert "\n" not in msg and "Traceback" not in msg and msg.startswith("--cos-vbvr: "), msg
    for w in words:
        assert w in msg, (w, msg)
    with pytest.raises(InputError) as again:        # and where the settings are made, for callers of the API
        extra_from_options(str(root))
    assert "\n" not in str(again.value) and all(w in str(again.value) for w in words), str(again.value)


def test_missing_and_empty_data_folder(tmp_path):
    for root, words in ((tmp_path / "none", "does not exist"), (tmp_path, "no sample folders")):
        with pytest.raises(InputError, match=f"--cos-vbvr.*{words}") as e:
            validate_options({"--cos-vbvr": str(root)})
        assert "\n" not in str(e.value)


def test_clean_copies_pass(tmp_path, no_hang):
    """The controls: the pristine copy, a README and hidden folders beside the samples, and a hub snapshot's
    layout (each file a symbolic link into a blobs folder) are accepted, and the checked list is the samples."""
    root = copy_samples(tmp_path / "data")
    (root / "README.md").write_text("VBVR-Bench\n")
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / SPLIT / TASK / "notes.txt").write_text("not a sample\n")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in (root / S(1)).iterdir():
        f.rename(blobs / f.name)
        f.symlink_to(blobs / f.name)
    validate_options({"--cos-vbvr": str(root)})
    assert [d.name for d in check_data(root)] == ["00000", "00001"]
    assert extra_from_options(str(root))["data"] == str(root)

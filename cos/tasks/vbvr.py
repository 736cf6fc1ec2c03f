"""VBVR-Bench layout: read data samples as a task source, write generated videos where its scorer expects them.

Data:       {split}/{task}/{idx}/first_frame.png, final_frame.png, ground_truth.mp4, prompt.txt
Generated:  {split}/{task}/{idx:05d}.mp4
Scoring uses the optional `vbvr_bench` package (VBVR-EvalKit, task-specific score) when importable;
otherwise `scorer_status()` gives the skip reason. Video I/O needs PyAV (`pip install av`), PNG needs Pillow.
"""
from __future__ import annotations

import errno
import importlib.util
import io
import math
import os
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from cos.errors import InputError
from cos.trust import UnsafeFile, read_regular

SPLITS = ("In-Domain_50", "Out-of-Domain_50")
# What a sample folder must hold, in the order checked (the prompt first: the cheapest to read)
SAMPLE_FILES = ("prompt.txt", "first_frame.png", "final_frame.png", "ground_truth.mp4")
# Read bounds: a VBVR-Bench prompt is a paragraph (under 1 KiB), a 1024² frame under 100 KiB, a ground truth
# under 1 MiB; the bounds leave room for larger data but never read a hostile file whole
PROMPT_LIMIT = 64 << 10
PNG_LIMIT = 64 << 20
VIDEO_LIMIT = 4 << 30
MAX_SIDE = 8192                    # a frame side beyond this is not a benchmark frame (and a decompression bomb)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class VBVRSample:
    split: str
    task: str
    idx: str
    prompt: str
    first_frame: torch.Tensor      # (3, H, W) in [0, 1]
    final_frame: torch.Tensor      # (3, H, W) in [0, 1]
    ground_truth: Path

    @property
    def id(self) -> str:
        return f"{self.split}/{self.task}/{self.idx}"


def _png(path: Path) -> torch.Tensor:
    """A PNG as (3, H, W) in [0, 1], read through `read_regular` (no FIFO, bounded)."""
    from PIL import Image

    try:
        raw = read_regular(path, PNG_LIMIT)
        arr = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except UnsafeFile as e:
        raise InputError(str(e)) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: not a readable image ({' '.join(str(e).split())})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_prompt(path: Path) -> str:
    """A sample's prompt: UTF-8 text without NUL bytes, at most PROMPT_LIMIT bytes, not empty (stripped)."""
    try:
        raw = read_regular(path, PROMPT_LIMIT)
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except OSError as e:
        raise InputError(_oneline(str(e)) if isinstance(e, UnsafeFile) else f"{path}: unreadable ({e.strerror or e})") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise InputError(f"{path}: binary (a NUL byte at offset {nul}): a prompt must be UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}): a prompt must be "
                         "UTF-8 text") from None
    if not text.strip():
        raise InputError(f"{path}: empty ({len(raw)} bytes, no text): a sample needs the prompt it is generated from")
    return text.strip()


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _utf8_name(path: Path) -> None:
    """Names go into ids, JSON and messages: one that is not UTF-8 (a surrogate-escaped byte) is refused."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{ascii(str(path))}: the name is not valid UTF-8; rename it (VBVR-Bench names are "
                         "ASCII)") from None


def _stat(path: Path, what: str) -> os.stat_result:
    """stat (following links) with one line for a missing file, a link loop or a dangling link."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{path}: a dangling symbolic link (-> {os.readlink(path)!r}): {what}") from None
        raise InputError(f"{path}: missing: {what}") from None
    except OSError as e:
        why = "a symbolic link loop" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror or e})"
        raise InputError(f"{path}: {why}: {what}") from None


def _kind(st: os.stat_result) -> str:
    m = st.st_mode
    return ("a directory" if stat.S_ISDIR(m) else "a FIFO" if stat.S_ISFIFO(m) else "a socket" if stat.S_ISSOCK(m)
            else "a device" if stat.S_ISCHR(m) or stat.S_ISBLK(m) else "not a regular file")


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG that decodes whole (signature, sides, every chunk); one line otherwise."""
    from PIL import Image

    try:
        raw = read_regular(path, PNG_LIMIT)
    except OSError as e:
        raise InputError(_oneline(str(e)) if isinstance(e, UnsafeFile) else f"{path}: unreadable ({e.strerror or e})") from None
    if not raw.startswith(PNG_MAGIC):
        raise InputError(f"{path}: not a PNG ({len(raw)} bytes starting {raw[:8]!r}): VBVR-Bench frames are PNG files")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
                raise InputError(f"{path}: {w}x{h} pixels: a frame's sides must be 1..{MAX_SIDE}")
            im.load()     # a truncated or corrupt PNG fails here, not mid-run in the sampler or EvalKit
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, zlib errors...
        raise InputError(f"{path}: not a readable PNG (truncated or corrupt: {_oneline(str(e))[:200]})") from None
    return w, h


def _video_header(path: Path, frame: tuple[int, int]) -> None:
    """A ground truth is an mp4 whose video stream has >= 2 frames (all present: packets demuxed, not decoded),
    a frame rate > 0, and the first frame's size (H.264 pads odd sides to even); one line otherwise."""
    import av

    st = _stat(path, "the ground truth")
    if st.st_size > VIDEO_LIMIT:
        raise InputError(f"{path}: {st.st_size} bytes, more than the {VIDEO_LIMIT} allowed for a ground truth")
    try:
        with av.open(str(path)) as c:   # a regular file (checked by the caller): opening it cannot block
            if not c.streams.video:
                raise InputError(f"{path}: no video stream: a ground truth is an mp4 video")
            v = c.streams.video[0]
            fps = float(v.average_rate or v.guessed_rate or 0)
            size, header = (v.width, v.height), v.frames
            packets = sum(1 for pk in c.demux(v) if pk.size)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - av.error.* and decoder errors: one line
        raise InputError(f"{path}: not a readable video (truncated or corrupt: {_oneline(str(e))[:200]})") from None
    if packets < 2:
        raise InputError(f"{path}: {packets} frame(s): a ground truth needs at least 2 frames")
    if header and packets < header:
        raise InputError(f"{path}: {packets} of the {header} frames its header lists (truncated): the ground "
                         "truth must be complete")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"{path}: frame rate {fps!r}: must be > 0")
    even = tuple(x + x % 2 for x in frame)
    if size not in (frame, even):
        raise InputError(f"{path}: {size[0]}x{size[1]} frames, but first_frame.png is {frame[0]}x{frame[1]}: the "
                         "ground truth and its first frame must be the same size")


_CHECKED: dict[tuple, list[Path]] = {}


def check_data(root: str | Path) -> list[Path]:
    """The sample folders of a VBVR-Bench data folder, every one checked before any of it is used: one InputError
    line naming the file, its value and the rule at the first problem. Layout: split folders In-Domain_50 /
    Out-of-Domain_50, task folders in them, sample folders named by a number (unique per task as a number:
    `1` and `00001` would write the same video) each holding SAMPLE_FILES as regular files (symbolic links to
    them are fine: a hub snapshot is links into its blobs). Hidden entries are skipped; other plain files beside
    the folders (a README) are ignored. Nothing that is not a regular file is opened, and every read is bounded.
    Content checks (prompt text, PNGs decoded whole, the ground truth's header and packets) run once per process
    and folder state (memo keyed by every sample file's inode, size and mtime)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: VBVR-Bench data folder does not exist")
    samples: list[Path] = []
    for split in _listing(root):
        st = _stat(split, "an entry of the data folder")
        if not stat.S_ISDIR(st.st_mode):
            continue     # a README or LICENSE beside the splits
        _utf8_name(split)
        if split.name not in SPLITS:
            raise InputError(f"{split}: not a split folder: the data folder holds {' and '.join(SPLITS)}")
        tasks = [t for t in _listing(split) if stat.S_ISDIR(_stat(t, "a task folder").st_mode)]
        if not tasks:
            raise InputError(f"{split}: no task folders: an empty split would be left out of the scores silently")
        for task in tasks:
            _utf8_name(task)
            seen: dict[int, Path] = {}
            for d in _listing(task):
                _utf8_name(d)
                st = _stat(d, "a sample folder")
                if not stat.S_ISDIR(st.st_mode):
                    if d.name.isdigit():
                        raise InputError(f"{d}: {_kind(st) if _kind(st) != 'not a regular file' else 'a file'}, "
                                         "where a sample folder should be")
                    continue
                if not (d.name.isascii() and d.name.isdigit()):
                    raise InputError(f"{d}: sample folder name {d.name!r}: must be a number (00000, 00001, ...)")
                if int(d.name) in seen:
                    raise InputError(f"{d}: the same sample id as {seen[int(d.name)].name} (both {int(d.name):05d}): "
                                     "each sample of a task needs its own number")
                seen[int(d.name)] = d
                samples.append(d)
            if not seen:
                raise InputError(f"{task}: no sample folders: a task folder holds numbered samples (00000, ...)")
    if not samples:
        raise InputError(f"{root}: no sample folders of the form split/task/idx")
    samples.sort()
    files = [d / n for d in samples for n in SAMPLE_FILES]
    stats = []
    for f in files:
        st = _stat(f, f"every sample folder holds {', '.join(SAMPLE_FILES)}")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{f}: {_kind(st)}, not a regular file: every sample folder holds "
                             f"{', '.join(SAMPLE_FILES)} as files")
        stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    key = (str(root.resolve()), tuple(map(str, files)), tuple(stats))
    if key not in _CHECKED:
        for d in samples:
            read_prompt(d / "prompt.txt")
            first = _png_size(d / "first_frame.png")
            final = _png_size(d / "final_frame.png")
            if final != first:
                raise InputError(f"{d / 'final_frame.png'}: {final[0]}x{final[1]}, but first_frame.png is "
                                 f"{first[0]}x{first[1]}: a sample's frames must be the same size")
            _video_header(d / "ground_truth.mp4", first)
        _CHECKED[key] = list(samples)
    return list(_CHECKED[key])


def _listing(d: Path) -> list[Path]:
    """The non-hidden entries of a folder, sorted (names only: nothing is opened or followed)."""
    try:
        return sorted(d / e.name for e in os.scandir(d) if not e.name.startswith("."))
    except OSError as e:
        raise InputError(f"{d}: cannot list the folder ({e.strerror or e})") from None


def sample_dirs(root: str | Path) -> list[Path]:
    """The split/task/idx sample folders under root, sorted; hidden folders at any level are skipped (a hub
    download leaves `.cache/huggingface/...` beside the splits)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: VBVR-Bench data folder does not exist")
    return sorted(p for p in root.glob("*/*/*") if p.is_dir()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_samples(root: str | Path) -> list[VBVRSample]:
    """Every sample folder under root, in sorted order; one-line errors for missing or broken files."""
    root = Path(root)
    out = []
    for d in check_data(root):
        split, task, idx = d.relative_to(root).parts
        out.append(VBVRSample(split, task, idx, read_prompt(d / "prompt.txt"), _png(d / "first_frame.png"),
                              _png(d / "final_frame.png"), d / "ground_truth.mp4"))
    return out


def write_video(path: str | Path, video: torch.Tensor, fps: int | Fraction = 16) -> Path:
    """(F, 3, H, W) in [0, 1] → H.264 mp4 (even sizes are padded by repeating the last row/column)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"crf": "0"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    tmp.replace(path)
    return path


def read_video(path: str | Path) -> torch.Tensor:
    """mp4 → (F, 3, H, W) in [0, 1]."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (FileNotFoundError, av.error.FileNotFoundError):
        raise InputError(f"{path}: missing") from None
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def video_info(path: str | Path) -> tuple[int, Fraction]:
    """(frame count, fps) of an mp4: the header's count, decoding only when the header has none."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = Fraction(stream.average_rate or stream.guessed_rate or 16)
            n = stream.frames or sum(1 for _ in container.decode(video=0))
    except (FileNotFoundError, av.error.FileNotFoundError):
        raise InputError(f"{path}: missing") from None
    except av.error.InvalidDataError as e:
        raise InputError(f"{path}: not a readable video ({e})") from None
    return n, fps


def output_path(out_root: str | Path, sample: VBVRSample) -> Path:
    return Path(out_root) / sample.split / sample.task / f"{int(sample.idx):05d}.mp4"


def scorer_status() -> str | None:
    """None when VBVR-EvalKit is importable, else the reason to skip its scores."""
    if importlib.util.find_spec("vbvr_bench") is None:
        return "scorer not installed: VBVR-EvalKit (`vbvr_bench`) is needed for VBVR-Bench task-specific scores"
    return None


def export_tasks(root: str | Path, instances, height: int, width: int, split_of=lambda i: SPLITS[i.split == "ood"]) -> None:
    """Write task instances in the VBVR-Bench data layout (for tests and for driving a model on our tasks)."""
    from PIL import Image

    counters: dict[tuple[str, str], int] = {}
    for inst in instances:
        split = split_of(inst)
        idx = counters.get((split, inst.task), 0)
        counters[(split, inst.task)] = idx + 1
        d = Path(root) / split / inst.task / f"{idx:05d}"
        d.mkdir(parents=True, exist_ok=True)
        video = inst.render(height, width)
        for name, frame in (("first_frame.png", video[0]), ("final_frame.png", video[-1])):
            Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()).save(d / name)
        write_video(d / "ground_truth.mp4", video)
        (d / "prompt.txt").write_text(inst.prompt + "\n")

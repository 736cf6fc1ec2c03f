"""VBVR-Bench layout: read data samples as a task source, write generated videos where its scorer expects them.

Data:       {split}/{task}/{idx}/first_frame.png, final_frame.png, ground_truth.mp4, prompt.txt
Generated:  {split}/{task}/{idx:05d}.mp4
Scoring uses the optional `vbvr_bench` package (VBVR-EvalKit, task-specific score) when importable;
otherwise `scorer_status()` gives the skip reason. Video I/O needs PyAV (`pip install av`), PNG needs Pillow.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from cos.errors import InputError

SPLITS = ("In-Domain_50", "Out-of-Domain_50")


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
    from PIL import Image

    try:
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


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
    for d in sample_dirs(root):
        split, task, idx = d.relative_to(root).parts
        prompt_file = d / "prompt.txt"
        if not prompt_file.exists():
            raise InputError(f"{prompt_file}: missing")
        gt = d / "ground_truth.mp4"
        if not gt.exists():
            raise InputError(f"{gt}: missing")
        out.append(VBVRSample(split, task, idx, prompt_file.read_text().strip(), _png(d / "first_frame.png"),
                              _png(d / "final_frame.png"), gt))
    if not out:
        raise InputError(f"{root}: no sample folders of the form split/task/idx")
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

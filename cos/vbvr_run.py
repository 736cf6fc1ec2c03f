"""Generating VBVR-Bench videos with a model at VBVR-Wan2.2's evaluation settings, and scoring them.

Each sample's first frame and prompt condition the model: the first frame's size rounded to multiples of 16, the
ground truth's frame count rounded to 4k+1, 50 steps, guidance 5, flow shift 5, seed 1, Wan2.2's negative prompt,
the model's own expert boundary. `--cos-size` (H×W×F) and `--cos-steps`, `--cos-flow-shift` override; every value
is recorded in the provenance. Batches go through `RunContext.run` (the result store: an interrupted run resumes),
and videos are written as mp4 at the ground truth's fps to `{out}/vbvr-videos/{split}/{task}/{idx:05d}.mp4`.

A claims session carries the options as `ClaimSettings.extra["vbvr"]` (see `extra_from_options`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cos.settings import ClaimSettings
from cos.tasks.vbvr import PNG_LIMIT, _png, check_data, read_prompt, sample_dirs, video_info, write_video
from cos.trust import read_regular

# Wan2.2's default negative prompt (`sample_neg_prompt` of its I2V configs), used by its I2V inference
WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
                "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

# bench.table1 on VBVR-Bench: a per-split score within this distance of Table 1 counts as reproduced. 0.05 is
# about the gap between neighbouring models in Table 1 and above the run-to-run spread of 500 samples
TABLE1_TOLERANCE = 0.05


@dataclass(frozen=True)
class VBVRConfig:
    """Where the data is and how samples are generated (VBVR-Wan2.2's evaluation settings by default)."""

    data: str
    out: str = "."
    steps: int = 50
    guidance_scale: float = 5.0
    flow_shift: float = 5.0
    seed: int = 1
    negative_prompt: str = WAN_NEGATIVE
    size: tuple[int, int, int] | None = None     # H, W, F for every sample (--cos-size); None: per sample

    def record(self, system: Any = None) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["boundary_ratio"] = getattr(system, "boundary_ratio", None)
        return d


def extra_from_options(data: str, out: str = ".", steps: int | None = None, size: str | None = None,
                       flow_shift: float | None = None) -> dict[str, Any]:
    """What `ClaimSettings.extra["vbvr"]` holds: the data folder and only the overrides actually given. The data
    is checked here (`check_data`: one line naming the file, value and rule), before anything is sampled; the
    option's own check at configure ran the same, so this costs a folder walk (the content checks are memoized)."""
    check_data(data)
    d: dict[str, Any] = {"data": str(data), "out": str(out)}
    if steps:
        d["steps"] = int(steps)
    if size:
        d["size"] = tuple(int(x) for x in str(size).lower().split("x"))
    if flow_shift is not None:
        d["flow_shift"] = float(flow_shift)
    return d


def config_of(settings: ClaimSettings) -> VBVRConfig | None:
    """The session's VBVR-Bench config, or None when no --cos-vbvr was given."""
    d = settings.extra.get("vbvr")
    return None if not d else VBVRConfig(**d)


def round16(n: int) -> int:
    return max(16, int(n / 16 + 0.5) * 16)


def round4k1(n: int) -> int:
    return int((n - 1) / 4 + 0.5) * 4 + 1


@dataclass
class VBVRItem:
    """One VBVR-Bench sample as a batch row (what `make_batch`, `conditioning` and the store read of an
    instance). The first frame is read when needed: 500 decoded 1024² frames would not fit in memory."""

    dir: Path
    split: str
    task: str
    idx: str
    prompt: str
    num_frames: int          # frames to generate
    gt_frames: int
    fps: Fraction
    height: int
    width: int
    negative_prompt: str
    digest: str              # prompt, negative prompt and first frame by content: keys the stored runs

    @property
    def id(self) -> str:
        return f"vbvr:{self.split}/{self.task}/{self.idx}:{self.digest}"

    def first_frame(self, height: int, width: int) -> torch.Tensor:
        img = _png(self.dir / "first_frame.png")
        if img.shape[1:] == (height, width):
            return img
        return torch.nn.functional.interpolate(img[None], size=(height, width), mode="bilinear", antialias=True,
                                               align_corners=False)[0].clamp(0, 1)

    def out_path(self, root: Path) -> Path:
        return root / self.split / self.task / f"{int(self.idx):05d}.mp4"


def items(cfg: VBVRConfig) -> list[VBVRItem]:
    """The data's samples with their generation sizes (checked against EvalKit's task table first)."""
    from cos.vbvr_eval import check_tasks

    root = Path(cfg.data)
    dirs = check_data(root)     # every sample checked before the first is generated
    check_tasks(d.relative_to(root).parts[:2] for d in dirs)
    out = []
    for d in dirs:
        split, task, idx = d.relative_to(root).parts
        prompt = read_prompt(d / "prompt.txt")
        n, fps = video_info(d / "ground_truth.mp4")
        if cfg.size:
            h, w, f = cfg.size
        else:
            h0, w0 = _png(d / "first_frame.png").shape[1:]
            h, w, f = round16(h0), round16(w0), round4k1(n)
        digest = hashlib.sha256(prompt.encode() + b"\0" + cfg.negative_prompt.encode() + b"\0"
                                + read_regular(d / "first_frame.png", PNG_LIMIT)).hexdigest()[:16]
        out.append(VBVRItem(d, split, task, idx, prompt, f, n, fps, h, w, cfg.negative_prompt, digest))
    return out


def with_flow_shift(system, shift: float):
    """The system with its scheduler's flow shift set (same experts; the fingerprint changes with it)."""
    sch = system.scheduler
    cfg = dict(getattr(sch, "config", None) or {})
    key = "flow_shift" if "flow_shift" in cfg else "shift" if "shift" in cfg else None
    if key is None or float(cfg[key]) == float(shift):
        return system
    return replace(system, scheduler=type(sch).from_config({**cfg, key: float(shift)}),
                   extra={**system.extra, "flow_shift": float(shift)})


def sample_settings(settings: ClaimSettings, cfg: VBVRConfig, item: VBVRItem, seeds: Sequence[int]) -> ClaimSettings:
    """One sample's settings (what the store keys on): its size and frames, the config's sampling."""
    return replace(settings, tasks=(), instances=1, first_instance=0, seeds=tuple(seeds), steps=cfg.steps,
                   num_frames=item.num_frames, height=item.height, width=item.width,
                   guidance_scale=cfg.guidance_scale, split="vbvr", instance_cap=None, batch_size=len(seeds))


def generate(ctx, system, settings: ClaimSettings, cfg: VBVRConfig, name: str = "vbvr-videos",
             extra_seeds: int = 0, interventions: Callable[[Any], list] | None = None) -> Path:
    """Every sample (this host's shard of them) generated and written to `{cfg.out}/{name}/`; returns that folder.
    `extra_seeds`: rows beside the config's seed (seed+1, ...) that share the batch (an ensemble); the written
    video is always the config's seed's row. `interventions(system)` gives the batch's interventions."""
    from cos.runner import videos
    from cos.taskrun import make_batch

    root = Path(cfg.out) / name
    shifted = with_flow_shift(system, cfg.flow_shift)
    seeds = [cfg.seed + k for k in range(extra_seeds + 1)]
    for k, it in enumerate(items(cfg)):
        if ctx.shard is not None and k % ctx.shard[1] != ctx.shard[0]:
            continue
        s = sample_settings(settings, cfg, it, seeds)
        batch = make_batch([it], seeds, it.height, it.width)
        res = ctx.run(shifted, s, batch, interventions=interventions(shifted) if interventions else ())
        write_video(it.out_path(root), videos(shifted, res.latents[:1])[0], it.fps)
    (root / "generation.json").write_text(json.dumps(cfg.record(system), indent=1, default=str))
    return root


def scores(ctx, cfg: VBVRConfig, videos_dir: Path):
    """EvalKit's per-sample scores of a generated folder, once per session and folder content."""
    from cos.vbvr_eval import score_videos

    files = sorted(videos_dir.glob("*/*/*.mp4"))
    key = ("vbvr-scores", str(videos_dir), tuple((str(p), p.stat().st_mtime_ns) for p in files))
    return ctx.remember(key, lambda: score_videos(cfg.data, videos_dir))


def baseline_scores(cfg: VBVRConfig) -> dict[str, dict]:
    """The trivial baselines' score documents, cached in `{out}/vbvr-baselines.json` (keyed by the data's samples
    and the scorer's version: they do not depend on the model)."""
    from cos.vbvr_eval import baselines, evalkit_version

    dirs = sample_dirs(cfg.data)
    key = hashlib.sha256(json.dumps([str(Path(cfg.data).resolve()), evalkit_version(),
                                     [(str(d), (d / "ground_truth.mp4").stat().st_size) for d in dirs]]).encode()).hexdigest()
    path = Path(cfg.out) / "vbvr-baselines.json"
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("key") == key:
            return doc["baselines"]
    docs = baselines(cfg.data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "baselines": docs}, default=float))
    return json.loads(json.dumps(docs, default=float))


def on_task_suite(res):
    """Mark a row measured on cos's own task suite (no --cos-vbvr), in its details and its reason."""
    res.details["benchmark"] = "cos task suite (not VBVR-Bench: no --cos-vbvr given)"
    note = "on the cos task suite, not VBVR-Bench (pass --cos-vbvr DIR)"
    res.reason = f"{res.reason}; {note}" if res.reason else note
    return res

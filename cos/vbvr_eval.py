"""VBVR-Bench scores with VBVR-EvalKit: per sample, aggregated with intervals, and the trivial baselines.

The paper's numbers (Table 1) are EvalKit's *task-specific* score (`task_specific_only=True`, what its
`vbvr-run-evaluation` uses), so that is the only score computed here. EvalKit turns an evaluator's exception into
score 0.0 with an `error` field; here such a sample keeps `score: null` and its error, and aggregates count it as
0.0 *and* report how many errors they hold (the paper's means were computed EvalKit's way).

Intervals: a benchmark has a few samples per task (5 in VBVR-Bench), and samples of one task share an evaluator
and a generator, so they are not independent; aggregates over several tasks use a cluster bootstrap over tasks
(scipy.stats.bootstrap on the task indices, statistic = the pooled sample mean), a single task a bootstrap over
its samples.

Layouts: data `{split}/{task}/{idx}/...` (cos.tasks.vbvr), videos `{split}/{task}/{idx:05d}.mp4`. Hidden folders
are ignored; the split comes from the folder, and a folder that disagrees with EvalKit's own task table is
reported in the provenance (EvalKit itself silently takes the table's split).
"""
from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from cos.errors import CosError, InputError

if TYPE_CHECKING:
    from cos.stats import Estimate

# numpy, scipy and cos.tasks (torch) are imported where used: `cos` builds its parser from `add_cli` below, and a
# refused argument of any verb should not wait seconds for them

EVALKIT_REF = "Video-Reason/VBVR-EvalKit@275472f"   # the revision whose scores the tests check
INSTALL = f'pip install "vbvr-bench @ git+https://github.com/{EVALKIT_REF}"'
SPLIT_FOLDERS = {"In_Domain": "In-Domain_50", "Out_of_Domain": "Out-of-Domain_50"}
BASELINES = ("static", "ground_truth", "other_sample")


@dataclass
class SampleScore:
    split: str
    task: str
    idx: str
    score: float | None      # None when the evaluator failed (see `error`)
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.split, self.task, self.idx


def evalkit():
    """The `vbvr_bench` module; a one-line CosError with the install command when it is missing."""
    try:
        return importlib.import_module("vbvr_bench")
    except ImportError as e:
        raise CosError(f"VBVR-EvalKit (`vbvr_bench`) is not importable ({e}); install it: {INSTALL}") from None


def evalkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vbvr-bench")
    except PackageNotFoundError:
        return "unknown"


def task_table() -> dict[str, tuple[str, str]]:
    """EvalKit's tasks: name → (split folder, category)."""
    ev = importlib.import_module(evalkit().__name__ + ".evaluators")
    return {t: (SPLIT_FOLDERS[ev.get_split(t)], ev.get_task_category(t)) for t in ev.TASK_EVALUATOR_MAP}


def check_tasks(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """(split folder, task) pairs → the split mismatches with EvalKit's table, in words. Unknown task names
    (EvalKit would crash on them mid-run) are a one-line InputError before any scoring or generation."""
    table, pairs = task_table(), sorted(set(pairs))
    for _, t in pairs:   # a surrogate-escaped name could not even be printed in the message below
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"task folder {ascii(t)}: the name is not valid UTF-8; rename it (VBVR-Bench names "
                             "are ASCII)") from None
    unknown = sorted({t for _, t in pairs if t not in table})
    if unknown:
        raise InputError(f"{len(unknown)} task folder(s) unknown to VBVR-EvalKit ({EVALKIT_REF}): "
                         f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}; task folders must be "
                         "named exactly as EvalKit's (e.g. O-47_sliding_puzzle_data-generator)")
    return [f"{t}: in folder {s}, EvalKit's table says {table[t][0]}" for s, t in pairs if table[t][0] != s]


def video_entries(videos: str | Path) -> list[tuple[str, str, str, Path]]:
    """(split, task, idx, path) of every `{split}/{task}/{idx}.mp4` under videos (hidden folders skipped)."""
    videos = Path(videos)
    if not videos.is_dir():
        raise InputError(f"{videos}: videos folder does not exist")
    out = [(*p.relative_to(videos).parts[:2], p.stem, p) for p in sorted(videos.glob("*/*/*.mp4"))
           if not any(part.startswith(".") for part in p.relative_to(videos).parts)]
    if not out:
        raise InputError(f"{videos}: no videos of the form split/task/idx.mp4")
    return out


def score_videos(data: str | Path, videos: str | Path, device: str = "cpu") -> list[SampleScore]:
    """EvalKit's task-specific score of every video under `videos` against its ground truth in `data`."""
    vb = evalkit()
    from vbvr_bench.evaluators import get_evaluator

    entries = video_entries(videos)
    check_tasks((s, t) for s, t, _, _ in entries)
    missing = [p for s, t, i, p in entries if not (Path(data) / s / t / i).is_dir()]
    if missing:
        raise InputError(f"{missing[0]}: no ground-truth sample folder {Path(data) / missing[0].parent.relative_to(videos) / missing[0].stem}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = vb.VBVRBench(str(data), output_path=tmp, device=device)
        for split, task in sorted({(s, t) for s, t, _, _ in entries}):
            # EvalKit's own eval_info (paths, prompt), so a sample is scored exactly as `evaluate` would
            infos = {i["video_idx"]: i for i in bench.build_evaluation_info(str(videos), [task], split)}
            evaluator = get_evaluator(task, device)
            for s, t, idx, _ in (e for e in entries if e[:2] == (split, task)):
                try:
                    r = evaluator.evaluate(infos[idx], task_specific_only=True)
                    err = r.get("error")
                except Exception as e:   # EvalKit's evaluate() would make this a silent 0.0
                    r, err = {}, f"{type(e).__name__}: {e}"
                out.append(SampleScore(s, t, idx, None if err else float(r["score"]), str(err) if err else None))
    return out


# ---------------------------------------------------------------- aggregates
def cluster_ci(scores: Sequence[float], clusters: Sequence[str], confidence: float = 0.95,
               n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of `scores` with a CI that resamples whole clusters (tasks); one cluster: a bootstrap over samples."""
    import numpy as np
    from scipy import stats

    from cos.stats import Estimate, bootstrap_ci

    x = np.asarray(scores, dtype=np.float64)
    names = sorted(set(clusters))
    if len(names) < 2:
        return bootstrap_ci(x, confidence=confidence, n_resamples=n_resamples, seed=seed)
    c = np.array([names.index(k) for k in clusters])
    sums, counts = np.bincount(c, weights=x), np.bincount(c).astype(np.float64)
    value = float(x.mean())
    if np.allclose(sums / counts, sums[0] / counts[0]):   # every cluster alike: no spread to resample
        return Estimate(value, value, value, len(x), confidence, decidable=False)

    def pooled(idx, axis=-1):
        idx = np.asarray(idx, dtype=int)
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

    ci = None
    for method in ("BCa", "percentile"):    # BCa can fail on few clusters: fall back
        res = stats.bootstrap((np.arange(len(names)),), pooled, confidence_level=confidence, n_resamples=n_resamples,
                              method=method, random_state=np.random.default_rng(seed), vectorized=True)
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        if all(np.isfinite(ci)):
            break
    return Estimate(value, *ci, len(x), confidence)


def _agg(rows: list[SampleScore]) -> dict[str, Any]:
    import numpy as np

    vals = [0.0 if r.score is None else r.score for r in rows]   # EvalKit's convention; errors counted beside
    tasks = [r.task for r in rows]
    d: dict[str, Any] = {"score": float(np.mean(vals)), "ci_low": None, "ci_high": None, "n": len(rows),
                         "n_tasks": len(set(tasks)), "errors": sum(r.score is None for r in rows)}
    if len(rows) > 1:
        e = cluster_ci(vals, tasks)
        d.update(ci_low=e.ci_low, ci_high=e.ci_high, decidable=e.decidable)
    return d


def aggregate(rows: list[SampleScore]) -> dict[str, Any]:
    """overall / by_split / by_category (split/category, as Table 1) / by_task aggregates of sample scores."""
    table = task_table()
    groups: dict[str, dict[str, list[SampleScore]]] = {"by_split": {}, "by_category": {}, "by_task": {}}
    for r in rows:
        groups["by_split"].setdefault(r.split, []).append(r)
        groups["by_category"].setdefault(f"{r.split}/{table.get(r.task, ('', 'Unknown'))[1]}", []).append(r)
        groups["by_task"].setdefault(r.task, []).append(r)
    return {"overall": _agg(rows), **{g: {k: _agg(v) for k, v in sorted(d.items())} for g, d in groups.items()}}


def report(rows: list[SampleScore], data: str | Path, videos: str | Path | None, device: str = "cpu",
           **prov: Any) -> dict[str, Any]:
    """The score document: aggregates, samples and provenance."""
    from cos.tasks.vbvr import sample_dirs

    data_keys = {d.relative_to(data).parts for d in sample_dirs(data)}
    return {**aggregate(rows), "samples": [asdict(r) for r in rows], "provenance": {
        "scorer": f"VBVR-EvalKit {evalkit_version()} ({EVALKIT_REF})", "score": "task-specific (task_specific_only=True)",
        "errors": "score null per sample; counted as 0.0 in aggregates (EvalKit's convention) and in 'errors'",
        "interval": "95% cluster bootstrap over tasks (scipy.stats.bootstrap, BCa); one task: over its samples",
        "data": str(data), "videos": str(videos) if videos else None, "device": device,
        "split_mismatches": check_tasks((r.split, r.task) for r in rows),
        "unscored_samples": sorted("/".join(k) for k in data_keys - {r.key for r in rows}),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **prov}}


def score(data: str | Path, videos: str | Path, device: str = "cpu") -> dict[str, Any]:
    return report(score_videos(data, videos, device), data, videos, device)


# ---------------------------------------------------------------- trivial baselines
def write_baselines(data: str | Path, out: str | Path, names: Sequence[str] = BASELINES) -> dict[str, Path]:
    """The trivial baselines' videos in the scorer's layout under out/<name>/: `static` (the ground truth's first
    frame as decoded, repeated for its frame count at its fps), `ground_truth` (replayed), `other_sample` (the ground truth of
    the task's next sample, cyclically: right format, wrong answer). The static video copies the decoded frame,
    not first_frame.png: a model's first frame is never pixel-exact, and EvalKit gives a pixel-exact copy of the
    PNG full marks on some tasks (O-30: 1.0 against 0.3 for the decoded frame)."""
    from cos.tasks.vbvr import sample_dirs, video_info, write_video

    data, out = Path(data), Path(out)
    dirs = sample_dirs(data)
    check_tasks(d.relative_to(data).parts[:2] for d in dirs)
    for d in dirs:
        rel = d.relative_to(data)
        dest = Path(*rel.parts[:2], f"{int(rel.parts[2]):05d}.mp4")
        if "ground_truth" in names:
            (out / "ground_truth" / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(d / "ground_truth.mp4", out / "ground_truth" / dest)
        if "other_sample" in names:
            same = [x for x in dirs if x.parent == d.parent]
            if len(same) > 1:   # a task with one sample has no other sample: left unscored (listed in provenance)
                (out / "other_sample" / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(same[(same.index(d) + 1) % len(same)] / "ground_truth.mp4", out / "other_sample" / dest)
        if "static" in names:
            n, fps = video_info(d / "ground_truth.mp4")
            write_video(out / "static" / dest, first_decoded(d / "ground_truth.mp4")[None].expand(n, -1, -1, -1), fps)
    return {k: out / k for k in names}


def first_decoded(path: Path):
    """The first frame of an mp4 as decoded, (3, H, W) in [0, 1]."""
    import av
    import torch

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return torch.from_numpy(frame).permute(2, 0, 1).float() / 255


def baselines(data: str | Path, device: str = "cpu", work: str | Path | None = None,
              names: Sequence[str] = BASELINES) -> dict[str, dict[str, Any]]:
    """{baseline: score document} for the trivial baselines, scored exactly as a model's videos are."""
    evalkit()
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_baselines(data, work or tmp, names)
        return {k: report(score_videos(data, p, device), data, p if work else None, device, baseline=k)
                for k, p in folders.items()}


# ---------------------------------------------------------------- command line (`cos vbvr ...`)
def add_cli(sub) -> None:
    """The `cos vbvr score|baselines` verbs on cos's argparse subparsers."""
    p = sub.add_parser("vbvr", help="VBVR-Bench: score videos with VBVR-EvalKit, or its trivial baselines")
    vs = p.add_subparsers(dest="vbvr_verb", required=True)
    s = vs.add_parser("score", help="EvalKit's task-specific score of a folder of {split}/{task}/{idx:05d}.mp4")
    s.add_argument("--videos", required=True, help="the videos, laid out {split}/{task}/{idx:05d}.mp4")
    b = vs.add_parser("baselines", help="scores of the static / ground-truth / other-sample baselines")
    b.add_argument("--keep", default=None, help="keep the baselines' videos in this folder")
    for q in (s, b):
        q.add_argument("--data", required=True, help="VBVR-Bench data: {split}/{task}/{idx}/ground_truth.mp4, ...")
        q.add_argument("--json", required=True, help="where to write the scores (JSON)")
        q.add_argument("--device", default="cpu", help="EvalKit's device (its evaluators are rule-based)")
    s.set_defaults(fn=_cli_score)
    b.set_defaults(fn=_cli_baselines)


def _write(doc: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, default=float))


def _summary(name: str, doc: dict) -> str:
    o = doc["overall"]
    splits = ", ".join(f"{k} {v['score']:.3f}" for k, v in doc["by_split"].items())
    return f"{name}: overall {o['score']:.3f} [{o['ci_low'] or float('nan'):.3f}, {o['ci_high'] or float('nan'):.3f}] " \
           f"(n={o['n']}, errors {o['errors']}); {splits}"


def _cli_score(a) -> None:
    doc = score(a.data, a.videos, a.device)
    _write(doc, a.json)
    for m in doc["provenance"]["split_mismatches"]:
        print(f"warning: {m}", file=sys.stderr)
    print(_summary("score", doc) + f"\nwritten: {a.json}")


def _cli_baselines(a) -> None:
    docs = baselines(a.data, a.device, a.keep)
    _write(docs, a.json)
    print("\n".join(_summary(k, d) for k, d in docs.items()) + f"\nwritten: {a.json}")

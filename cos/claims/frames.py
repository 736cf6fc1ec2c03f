"""frames.count (App. B, Table 3): more frames help up to a point; a single generated frame (ChronoEdit-style:
the answer with no intermediate frames) is worst. Paired per instance: the mean score over the multi-frame
settings minus the single-frame score; every multi-frame setting must also score above the single frame."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from cos.controls import SMALL, ref
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, register
from cos.runner import RunContext, videos
from cos.stats import bootstrap_ci, interval


@dataclass(frozen=True)
class FramesSizing:
    """Multi-frame settings and the single-frame one (for the Wan VAE, 5 frames = the first + one latent frame)."""

    counts: tuple[int, ...]
    single: int


@dataclass
class FramesDetails(Details):
    score_per_frame_count: dict = field(default_factory=dict)
    score_per_frame_count_ci: dict = field(default_factory=dict)
    single_frame: int | None = None
    spearman_rise_to_17: float | None = None


def frames_settings(settings):
    return replace(settings, instances=max(2, settings.instances // 2))


class FramesCount(Claim):
    spec = ClaimSpec(
        id="frames.count", title="More frames help up to ~17-33; single frame is worst", paper_ref="App B, Table 3",
        paper_value="1f 0.581; 5f 0.619; 9f 0.632; 17f 0.663; 33f 0.685; 65f 0.675",
        measured_quantity="score per frame count", threshold=0.0, direction=">",
        paper={"1": 0.581, "5": 0.619, "9": 0.632, "17": 0.663, "33": 0.685, "65": 0.675})
    Details = FramesDetails
    sizing = {"cpu": FramesSizing((5, 9, 17), 2), "gpu": FramesSizing((5, 9, 17, 33), 2),
              "full": FramesSizing((9, 17, 33, 65, 81), 5)}

    def measure(self, ctx: RunContext, system, settings, sizing: FramesSizing | None = None):
        if sizing is None:
            sizing, settings = self.sizing_for(settings), frames_settings(settings)
        counts = sorted(set(sizing.counts))
        per = {c: self._scores_at(ctx, system, settings, c) for c in [sizing.single, *counts]}
        ids = sorted(per[sizing.single])
        multi = [np.mean([per[c][i] for c in counts]) for i in ids]
        est = bootstrap_ci(np.array(multi) - np.array([per[sizing.single][i] for i in ids]))
        means = {c: float(np.mean(list(per[c].values()))) for c in per}
        rise = [c for c in counts if c <= 17]
        rho = spearmanr(rise, [means[c] for c in rise]).statistic if len(rise) >= 3 else None
        res = self.result(est, system, settings, FramesDetails(
            measured=f"mean score over {counts} frames minus the {sizing.single}-frame score (paired)",
            score_per_frame_count={str(c): v for c, v in means.items()},
            score_per_frame_count_ci={str(c): interval(list(per[c].values())) for c in per},
            single_frame=sizing.single, spearman_rise_to_17=None if rho is None or np.isnan(rho) else float(rho)))
        worse = [c for c in counts if means[c] <= means[sizing.single]]
        return also_requires(res, not worse, f"single frame is not worst: {worse} frames score no higher")

    @staticmethod
    def _scores_at(ctx, system, settings, frames: int) -> dict[str, float]:
        s = replace(settings, num_frames=frames)
        out = {}
        for batch in ctx.batches(s):
            for inst, v in zip(batch.instances, videos(system, ctx.run(system, s, batch).latents)):
                out.setdefault(inst.id, []).append(inst.score(v))
        return {k: float(np.mean(v)) for k, v in out.items()}

    def controls(self) -> list[Control]:
        return [Control("reference", "negative",
                        lambda: self.measure(RunContext(progress=False), ref(), replace(SMALL, instances=2),
                                             FramesSizing((5, 9), 2)),
                        "the reference is exact at every length: more frames cannot help")]

    def figures(self, d: FramesDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import curves

        s = d.score_per_frame_count
        if not s:
            return []
        x = sorted(s, key=int)
        v = [s[k] for k in x]
        ci = np.array([d.score_per_frame_count_ci.get(k, [s[k], s[k]]) for k in x])
        return [(curves([int(k) for k in x], {"measured": (v, ci[:, 0], ci[:, 1])}, fig_dir / "frames.png",
                        xlabel="frames", ylabel="score",
                        title="score against frame count (Table 3; the smallest is the single-frame setting)"),
                 "score per frame count")]

    def cost(self, settings, system) -> int:
        sz, s = self.sizing_for(settings), frames_settings(settings)
        rows = len(s.tasks) * s.instances * len(s.seeds)
        return int(rows * s.steps * sum([*sz.counts, sz.single]) / s.num_frames)


CLAIM = register(FramesCount())

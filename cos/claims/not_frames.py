"""cos.not_frames (Sec. 3.1-3.2, 4.2): the answer commits in all frames at once (along the steps), not frame by
frame. Per instance, the step from which each deciding frame shows the final answer (`commit_step`); the claim
is that their spread is below a quarter of the schedule. Spearman ρ(frame, commit step) is recorded beside it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from cos.controls import SMALL, ref
from cos.readouts import commit_step, shows_answer, weights_per_step
from cos.registry import Claim, ClaimSpec, Control, Details, register
from cos.runner import RunContext
from cos.stats import bootstrap_ci, interval
from cos.tasks.base import deciding_frames


@dataclass
class NotFramesDetails(Details):
    spearman_frame_vs_commit: float | None = None
    commit_per_frame: dict | None = None      # frame → [mean, ci_low, ci_high] commitment step (fraction)


class NotFrames(Claim):
    spec = ClaimSpec(
        id="cos.not_frames", title="Commitment is global across frames, not frame by frame",
        paper_ref="Sec 3.1-3.2, 4.2", paper_value="qualitative: commitment is global across frames",
        measured_quantity="spread of per-frame commitment steps; Spearman ρ(frame, step)",
        threshold=0.25,    # all frames commit within this fraction of the schedule
        direction="<")
    Details = NotFramesDetails

    def measure(self, ctx: RunContext, system, settings):
        spreads, pairs = {}, []
        frames = lambda inst: [f for f in deciding_frames(inst) if f > 0]
        for batch in ctx.batches(settings):
            whole, per_frame = weights_per_step(ctx, system, settings, batch, frames)
            for inst, steps, w in zip(batch.instances, per_frame, whole):
                fs = frames(inst)
                if len(fs) < 2:
                    continue
                answer = int(torch.argmax(w[-1]))
                commits = {f: commit_step([shows_answer(inst, st[f], f, answer) for st in steps]) for f in fs}
                n = len(steps)
                spreads.setdefault(inst.id, []).append((max(commits.values()) - min(commits.values())) / n)
                pairs += [(f, c / n) for f, c in commits.items()]
        est = bootstrap_ci([np.mean(v) for v in spreads.values()])
        rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
        per = {}
        for f, c in pairs:
            per.setdefault(f, []).append(c)
        return self.result(est, system, settings, NotFramesDetails(
            measured="spread of per-frame commitment steps, fraction of the schedule",
            spearman_frame_vs_commit=None if np.isnan(rho) else float(rho),
            commit_per_frame={str(f): [float(np.mean(v)), *interval(v)] for f, v in sorted(per.items())}))

    def controls(self) -> list[Control]:
        s = replace(SMALL, seeds=(0, 1, 2, 3))
        return [
            Control("global-reference", "positive", lambda: self.measure(RunContext(progress=False), ref(), s),
                    "one posterior over whole videos: every frame commits at the same step"),
            Control("per-frame-reference", "negative",
                    lambda: self.measure(RunContext(progress=False), ref(per_frame=True), s),
                    "each frame takes its own posterior: frames commit independently"),
        ]

    def figures(self, d: NotFramesDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import bars

        c = d.commit_per_frame or {}
        if not c:
            return []
        m = np.array(list(c.values()))
        return [(bars(list(c), m[:, 0], m[:, 1], m[:, 2], fig_dir / "not_frames.png", ylabel="commit step (fraction)",
                      title="mean commitment step per frame"), "commitment step per frame")]


CLAIM = register(NotFrames())

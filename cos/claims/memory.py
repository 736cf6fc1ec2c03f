"""memory.persistence (Sec. 4.1, Fig. 4a-b): the anchor (start cell, occluded object) is kept through the steps
and restored at the end. Share of anchor-task instances (Wilson CI) whose anchor fidelity stays ≥ 0.8 from 20%
of the schedule on and in the final video (x̂0 at σ≈1 is the blurred mean, so the first steps are not read).

Anchor fidelity is that of the *worst* anchor cell (1 − its mean |colour error|): a video that gets one anchor
cell wrong has not kept the anchor. (Averaged over the cells, every wrong return-to-origin candidate scored
0.889 and an all-black video 0.778.) On the task suite every wrong candidate, a black, a grey and a static video
score ≤ 0.667 this way and the ground truth 1 (tests/test_claim_readouts.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cos.controls import SMALL, TINY, random_organism, ref, scripted
from cos.readouts import clean_batch_rows
from cos.registry import Claim, ClaimSpec, Control, Details, register
from cos.runner import RunContext
from cos.stats import interval, share_ci

ANCHOR_TASKS = ("return_to_origin", "occlusion")
KEEP_FIDELITY = 0.8      # worst-anchor-cell fidelity counted as "kept": above every wrong or trivial video (≤ 0.667)
KEEP_FROM = 0.2          # ...from this fraction of the schedule on


@dataclass
class MemoryDetails(Details):
    tasks: list[str] = field(default_factory=list)
    anchor_fidelity_per_step: list[float] = field(default_factory=list)
    anchor_fidelity_per_step_ci: list[list[float]] = field(default_factory=list)


def anchor_fidelity(inst, video) -> float:
    """1 − the largest mean-over-channels |cell colour − ground truth| among the anchor cells of the frames that
    hold them (the worst-kept anchor cell)."""
    cells = inst.cells(video.clamp(0, 1))                      # (F, 3, G, G)
    m = inst.masks["anchor"]                                   # (F, G, G)
    err = (cells - inst.video).abs().mean(1)[m]
    return float(1 - err.max())


class Memory(Claim):
    spec = ClaimSpec(
        id="memory.persistence", title="The anchor is kept through the steps", paper_ref="Sec 4.1, Fig 4a-b",
        paper_value="qualitative: anchor kept", measured_quantity="share of anchor-task instances whose anchor is kept",
        threshold=0.5,     # the "stated share" of anchor instances
        direction=">", statistic="share of anchor-task instances, Wilson 95% CI (seeds: bootstrap over instances)",
        version=3, effect=0.3,
        effect_note="chosen: the paper shows anchors kept (Fig 4a-b) without a rate; a share of 0.8, 0.3 above the "
                    "threshold, is the smallest we would call kept")
    Details = MemoryDetails

    def max_units(self, settings, system) -> int:
        return settings.instances * len(set(ANCHOR_TASKS) & set(settings.tasks))

    def measure_batch(self, ctx: RunContext, system, settings, batch) -> list[dict]:
        read = lambda inst, steps, final: ([anchor_fidelity(inst, v) for v in steps], anchor_fidelity(inst, final))
        out = []
        for inst, seed, (fid, end) in clean_batch_rows(ctx, system, settings, batch, read, ANCHOR_TASKS):
            start = int(KEEP_FROM * len(fid))
            out.append({"instance": inst.id, "seed": seed, "fidelity": fid, "final_fidelity": end,
                        "kept": float(min(fid[start:]) >= KEEP_FIDELITY and end >= KEEP_FIDELITY)})
        return out

    def conclude(self, records: list[dict], system, settings):
        kept, per_step = {}, []
        for r in records:
            kept.setdefault(r["instance"], []).append(r["kept"])
            per_step.append(r["fidelity"])
        if len(kept) < 2:
            return self.skipped(f"needs ≥ 2 instances of {ANCHOR_TASKS}; settings give {len(kept)}", system, settings)
        est = share_ci(list(kept.values()))
        return self.result(est, system, settings, MemoryDetails(
            measured=f"share of anchor instances whose anchor fidelity stays ≥ {KEEP_FIDELITY} from "
                     f"{KEEP_FROM:.0%} of the schedule on and in the final video", tasks=list(ANCHOR_TASKS),
            anchor_fidelity_per_step=np.mean(per_step, axis=0).round(4).tolist(),
            anchor_fidelity_per_step_ci=[interval(c) for c in np.array(per_step).T]),
            samples={k: {"kept": v} for k, v in kept.items()})

    def controls(self) -> list[Control]:
        return [
            Control("oracle", "positive", lambda d: ref(prior="oracle"), replace(SMALL, tasks=ANCHOR_TASKS),
                    "committed to the ground truth from step 0: the anchor is exact at every step"),
            Control("lapse-mid-way", "negative", lambda d: scripted("anchor_lapse", SMALL.steps),
                    replace(SMALL, tasks=ANCHOR_TASKS),
                    "planted null: the ground truth at every step but 40-60% of the schedule, where the anchor cells "
                    "are lost (fidelity 0.5); the final video is exact. The anchor is not kept through the steps"),
            # 12 instances per task: 24 anchor instances × 2 seeds, a share with draw-to-draw noise (SE ≈ 0.07)
            # that a too-narrow interval would call above 0.5; a scripted run of 48 rows takes well under a second
            Control("half-lapse", "negative", lambda d: scripted("anchor_lapse", SMALL.steps, share=0.5),
                    replace(SMALL, tasks=ANCHOR_TASKS, instances=12),
                    "the boundary null: the anchor lapses mid-way (as lapse-mid-way) in a random half of the rows, "
                    "drawn per row, and is exact at every step in the others: the true share of kept rows is exactly "
                    "the threshold 0.5, so each draw's share is noise around it and must not hold"),
            Control("untrained", "negative", lambda d: random_organism(seed=d, num_layers=2),
                    replace(TINY, tasks=ANCHOR_TASKS, instances=3), "random weights draw no anchor"),
        ]

    def figures(self, d: MemoryDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import curves

        a = d.anchor_fidelity_per_step
        if not a:
            return []
        ci = np.array(d.anchor_fidelity_per_step_ci) if d.anchor_fidelity_per_step_ci else None
        return [(curves(np.arange(len(a)), {"anchor fidelity (mean, 95% CI)": (
                    a, None if ci is None else ci[:, 0], None if ci is None else ci[:, 1])}, fig_dir / "memory.png",
                        hlines={f"kept: fidelity ≥ {KEEP_FIDELITY}": KEEP_FIDELITY},
                        spans={f"read from {KEEP_FROM:.0%} of the schedule": (int(KEEP_FROM * len(a)) - 0.5,
                                                                             len(a) - 0.5)},
                        xlabel="denoising step", ylabel="anchor fidelity (1 − colour error)",
                        title="fidelity of the worst-kept anchor cell along the steps"),
                 f"Anchor fidelity along the steps (mean of instances). An instance keeps its anchor when its own "
                 f"fidelity stays ≥ {KEEP_FIDELITY} through the shaded window and in the final video; the claim holds "
                 f"when the share of instances that keep it has a CI above {self.spec.threshold:g}.")]

    def readouts(self, settings, system) -> dict[str, int]:
        return {"decode": len(ANCHOR_TASKS) * settings.instances * len(settings.seeds) * settings.steps}


CLAIM = register(Memory())

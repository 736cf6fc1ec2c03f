"""layers.swap_flip (Sec. 5.2, Fig. 6b): swapping a middle layer's vision tokens with those of an alternative
configuration (the answer on another object) at the first step flips the grounding outcome; outer layers do
not. Flip rate per swapped block; the claim: middle-depth swaps minus outer swaps > 0, peak at middle depth.

Reading of "Ũ^(k) ← U_alt^(k), U^(l≠k) = U_orig^(l)": block k's own update (output − input) at step 0, cond
pass, comes from the alternative run (`SwapBlock(what="update")`); every other block keeps its own. Swapping
block k's whole output instead would hand every later block the alternative's residual stream, and since the
two configurations differ only in the first frame (which enters once, through the patch embedding), the result
would be the alternative's forward at every k: the same intervention at every block (version 1 did that)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cos.controls import TINY, answer_at, random_organism
from cos.errors import InputError
from cos.interventions import CaptureBlocks, SwapBlock
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, register
from cos.readouts import final_scores
from cos.runner import RunContext
from cos.settings import ClaimSettings
from cos.stats import Estimate, argmax_ci, bootstrap_ci, in_window, interval
from cos.taskrun import make_batch

MIDDLE_SWAP, OUTER = (0.35, 0.65), 0.2
# planted controls: 16 grounding instances, every block of 8 swapped (a few seconds on 2 CPU cores)
PLANTED = ClaimSettings(tasks=("grounding",), instances=16, seeds=(0,), steps=3, num_frames=5)


@dataclass(frozen=True)
class SwapSizing:
    """Every `stride`-th block is swapped, on `instances` grounding instances."""

    stride: int
    instances: int


@dataclass
class SwapDetails(Details):
    flip_rate_per_block: dict = field(default_factory=dict)
    flip_rate_per_block_ci: dict = field(default_factory=dict)
    middle_blocks: list[int] = field(default_factory=list)
    outer_blocks: list[int] = field(default_factory=list)
    peak_block: int | None = None
    peak_depth: float | None = None
    peak_depth_ci: list[float] | None = None


def outcome(inst, video) -> int:
    """Which object the video marks: the argmax of its candidate mixture (candidate k marks object k)."""
    return int(torch.argmax(inst.candidate_weights(video)))


class SwapFlip(Claim):
    spec = ClaimSpec(
        id="layers.swap_flip", title="Swapping a middle layer flips the grounding outcome", paper_ref="Sec 5.2, Fig 6b",
        paper_value="layer 20 of 40 flips the outcome", measured_quantity="flip rate, middle-depth minus outer swapped blocks",
        threshold=0.0, direction=">", version=2)
    Details = SwapDetails
    conditions = (f"the flip-rate peak lies in depth {list(MIDDLE_SWAP)}, its bootstrap interval over instances "
                  "included",)
    sizing = {"cpu": SwapSizing(stride=2, instances=8), "gpu": SwapSizing(stride=1, instances=64),
              "full": SwapSizing(stride=1, instances=5)}

    def sizing_for(self, settings) -> SwapSizing:
        s = super().sizing_for(settings)
        return replace(s, instances=settings.capped(s.instances))

    def measure(self, ctx: RunContext, system, settings, sizing: SwapSizing | None = None, identity: bool = False):
        """At step 0, replace block k's vision tokens with those of the alternative configuration and see
        whether the final outcome flips. `identity=True` swaps in the run's own tokens (nothing can flip)."""
        sizing = sizing or self.sizing_for(settings)
        L = system.num_layers
        blocks = list(range(0, L, sizing.stride))
        s = replace(settings, tasks=("grounding",), instances=sizing.instances)
        flips = {b: {} for b in blocks}
        for batch in ctx.batches(s):
            src_batch = batch if identity else make_batch([i.alternative for i in batch.instances], [0], s.height,
                                                          s.width)
            src_batch.seeds = list(batch.seeds)
            cap = CaptureBlocks(blocks=blocks, steps=[0], cfg_pass="cond", what="update")
            ctx.run(system, s, src_batch, interventions=[cap], until=1)
            base = final_scores(ctx, system, ctx.run(system, s, batch), batch.instances, outcome, "outcome")
            for b in blocks:
                res = ctx.run(system, s, batch, interventions=[SwapBlock(b, cap[0, b], steps=[0], what="update")])
                for row, (inst, o) in enumerate(zip(batch.instances, final_scores(ctx, system, res, batch.instances,
                                                                                   outcome, "outcome"))):
                    flips[b].setdefault(inst.id, []).append(float(o != base[row]))
        depth = {b: b / max(1, L - 1) for b in blocks}
        mid = [b for b in blocks if MIDDLE_SWAP[0] <= depth[b] <= MIDDLE_SWAP[1]]
        outer = [b for b in blocks if depth[b] < OUTER or depth[b] > 1 - OUTER]
        if not mid or not outer:
            raise InputError(f"layers.swap_flip: blocks {blocks} of {L} give no middle-depth {MIDDLE_SWAP} or outer "
                             f"block; use a deeper model or stride 1")
        ids = sorted(flips[blocks[0]])
        rate = lambda bs, i: np.mean([np.mean(flips[b][i]) for b in bs])
        est = bootstrap_ci([rate(mid, i) - rate(outer, i) for i in ids])
        per_inst = {b: [float(np.mean(flips[b][i])) for i in ids] for b in blocks}
        per_block = {b: float(np.mean(v)) for b, v in per_inst.items()}
        peak = max(per_block, key=per_block.get)
        loc = argmax_ci(np.array([per_inst[b] for b in blocks]).T)
        peak_est = Estimate(depth[peak], depth[blocks[int(loc.ci_low)]], depth[blocks[int(loc.ci_high)]], loc.n)
        res = self.result(est, system, s, SwapDetails(
            measured="flip rate of the grounding outcome, middle-depth swaps minus outer swaps (step 0, cond pass)",
            flip_rate_per_block={str(b): v for b, v in per_block.items()},
            flip_rate_per_block_ci={str(b): interval(v) for b, v in per_inst.items()},
            middle_blocks=mid, outer_blocks=outer, peak_block=peak, peak_depth=depth[peak],
            peak_depth_ci=[peak_est.ci_low, peak_est.ci_high]),
            samples={i: {"flips_per_block": {str(b): flips[b][i] for b in blocks}} for i in ids})
        return also_requires(res, in_window(peak_est, *MIDDLE_SWAP),
                             f"middle swaps flip more than outer ones but the peak is at depth {depth[peak]:.2f} "
                             f"[{peak_est.ci_low:.2f}, {peak_est.ci_high:.2f}]", "peak")

    def controls(self) -> list[Control]:
        every_block = lambda d: {"sizing": SwapSizing(stride=1, instances=PLANTED.instances)}
        return [Control("identity-swap", "negative", lambda d: random_organism(seed=d, num_layers=8), TINY,
                        "swapping in the run's own tokens cannot flip anything",
                        kwargs=lambda d: {"sizing": SwapSizing(stride=1, instances=3), "identity": True}, check=lambda r: r.measured == 0.0),
                Control("answer-at-middle", "positive", lambda d: answer_at({3: 0.5, 4: 0.5}, sigma_seed=0.1),
                        PLANTED,
                        "planted: only blocks 3 and 4 of 8 (depth 0.43, 0.57) write the answer, half each, at step "
                        "0 (planted DiT, decided there). Swapping either in from the alternative configuration ties "
                        "the two answers and the seed's noise (σ 0.1 per block) breaks the tie: about half the "
                        "middle swaps flip; every other block writes only the scene and its swap cannot flip",
                        kwargs=every_block),
                Control("answer-at-outer", "negative", lambda d: answer_at({0: 0.5, 7: 0.5}, sigma_seed=0.1),
                        PLANTED, "planted null: the same answer writing at the first and the last block; only "
                        "outer swaps flip, so middle minus outer is below 0", kwargs=every_block),
                Control("answer-mostly-middle", "sensitivity",
                        lambda d: answer_at({0: 0.2, 3: 0.4, 4: 0.4}, sigma_seed=0.3), PLANTED,
                        "smaller effect: blocks 3 and 4 write 0.4 of the answer each, block 0 the other 0.2; a middle "
                        "swap leaves 0.6 against 0.4 and flips only where the seed's noise (σ 0.3 per block) "
                        "overturns it, about a fifth of the swaps", kwargs=every_block)]

    def figures(self, d: SwapDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import bars

        f = d.flip_rate_per_block
        if not f:
            return []
        return [(bars(list(f), list(f.values()), [d.flip_rate_per_block_ci.get(b) for b in f],
                      fig_dir / "swap_flip.png", ylabel="flip rate (share of instances)",
                      title="grounding outcome flips per swapped block (step 0, 95% CI)"),
                 f"Flip rate per swapped block (middle blocks {d.middle_blocks}, outer {d.outer_blocks}). Holds when "
                 f"the middle-minus-outer flip rate has a CI above {self.spec.threshold:g} and the peak's interval "
                 "lies in depth [0.35, 0.65].")]

    def shared_runs(self, settings, system) -> dict[str, int]:
        return {}      # its own runs only

    def cost(self, settings, system) -> int:
        sz = self.sizing_for(settings)
        return sz.instances * len(settings.seeds) * (1 + (1 + system.num_layers // sz.stride) * settings.steps)

    def readouts(self, settings, system) -> dict[str, int]:
        sz = self.sizing_for(settings)
        n = sz.instances * len(settings.seeds) * (1 + len(range(0, system.num_layers, sz.stride)))
        return {"decode": n, "weights": n}


CLAIM = register(SwapFlip())

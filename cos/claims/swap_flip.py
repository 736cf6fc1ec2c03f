"""layers.swap_flip (Sec. 5.2, Fig. 6b): swapping a middle layer's vision tokens with those of an alternative
configuration (the answer on another object) at the first step flips the grounding outcome; outer layers do
not. Flip rate per swapped block; the claim: middle-depth swaps minus outer swaps > 0, peak at middle depth.

Reading of "Ũ^(k) ← U_alt^(k), U^(l≠k) = U_orig^(l)": block k's own update (output − input) at step 0, cond
pass, comes from the alternative run (`SwapBlock(what="update")`); every other block keeps its own. Swapping
block k's whole output instead would hand every later block the alternative's residual stream, and since the
two configurations differ only in the first frame (which enters once, through the patch embedding), the result
would be the alternative's forward at every k: the same intervention at every block (version 1 did that).

Leverage (version 3). Before the per-block swaps are read, the same intervention at its maximum is run on the
model under test: block 0's whole output at step 0 (both CFG passes) taken from the alternative run, which on a
Wan-shaped model makes every later block, and so step 0's velocity and x̂0, exactly the alternative's (the
ceiling: no swap of one block's update at step 0 hands the model more of the alternative). Its flip rate
(share of instances whose outcome flips, Wilson / bootstrap 95% CI over instances) is details["leverage"].
Rule, fixed before the ceiling was first run on the organism and derived from the claim's n, not from the
organism's numbers: leverage is shown when that CI lies wholly above LEVERAGE_MIN = 0.05. Why 0.05: a block's
swap hands the model a part of what the ceiling hands it; where the alternative's whole step-0 forward flips
fewer than one instance in twenty, a middle − outer difference can hardly be larger, and no tier's n (8-64
instances) could tell it from 0; 0.05 is also the least the CPU tier's 8 instances can show (2 flips of 8:
Wilson lower bound 0.07). Without leverage the row is `inconclusive` with a reason starting "no leverage:",
whatever the swaps measured: a step-0 swap says nothing about the layers of a model that step 0 cannot move,
and the row must never say `fails` there. With leverage the claim decides as before.

Readings. The paper runs the swap "at the first diffusion step" without saying whether it acts there only or
throughout a run begun there; the decision is the step-0 reading (the swap at step 0 only). The every-step
reading, the same update swapped at every step (the alternative's update captured along the alternative's own
trajectory), is a declared second reading: its own estimate, interval, n and status (same rule, the peak
sought among the blocks it sweeps: the middle and outer ones its estimate reads) are in
details["readings"]["every_step"], it never sets the row.
It is not run on the full tier (every block's update at every step of a 14B model does not fit in memory).

Nulls: swapping in the run's own updates (identity: nothing can flip, exactly); the answer written by the outer
blocks (middle − outer < 0); the answer written by every block in equal parts, each with its own seed noise
(the noisy null: every depth flips with the same probability, middle − outer is 0 in expectation and not
identically); and a model that decides after step 0 (no leverage: must say so)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cos.controls import TINY, answer_after_step0, answer_at, random_organism
from cos.errors import InputError
from cos.interventions import CaptureBlocks, SwapBlock
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, decide, register
from cos.readouts import final_scores
from cos.runner import RunContext
from cos.settings import ClaimSettings
from cos.stats import Estimate, argmax_ci, bootstrap_ci, in_window, interval, share_ci
from cos.taskrun import make_batch

MIDDLE_SWAP, OUTER = (0.35, 0.65), 0.2
# the leverage rule (see the module doc): the step-0 ceiling's flip-rate CI must lie wholly above this
LEVERAGE_MIN = 0.05
CEILING = ("block 0's whole output at step 0 (both CFG passes) from the alternative run: step 0's forward, and "
           "so its x̂0, become the alternative's")
# planted controls: 16 grounding instances, every block of 8 swapped (a few seconds on 2 CPU cores)
PLANTED = ClaimSettings(tasks=("grounding",), instances=16, seeds=(0,), steps=3, num_frames=5)


@dataclass(frozen=True)
class SwapSizing:
    """Every `stride`-th block is swapped, on `instances` grounding instances; `every_step`: also the every-step
    reading (captures every swept block's update at every step of the alternative run)."""

    stride: int
    instances: int
    every_step: bool = True


@dataclass
class SwapDetails(Details):
    flip_rate_per_block: dict = field(default_factory=dict)
    flip_rate_per_block_ci: dict = field(default_factory=dict)
    middle_blocks: list[int] = field(default_factory=list)
    outer_blocks: list[int] = field(default_factory=list)
    peak_block: int | None = None
    peak_depth: float | None = None
    peak_depth_ci: list[float] | None = None
    leverage: dict | None = None     # the step-0 ceiling (see the module doc)
    readings: dict = field(default_factory=dict)   # "step0" (decides) and "every_step" (reported)


def outcome(inst, video) -> int:
    """Which object the video marks: the argmax of its candidate mixture (candidate k marks object k)."""
    return int(torch.argmax(inst.candidate_weights(video)))


def leverage(ceiling_flips: dict[str, list[float]]) -> dict:
    """The step-0 ceiling's flip rate per instance (its seeds averaged) → details["leverage"]: estimate, CI, n and
    whether leverage is shown (the CI wholly above LEVERAGE_MIN)."""
    ids = sorted(ceiling_flips)
    est = share_ci([ceiling_flips[i] for i in ids])
    flips = sum(sum(v) for v in ceiling_flips.values())
    rows = sum(len(v) for v in ceiling_flips.values())
    return {"intervention": CEILING, "quantity": "flip rate of the grounding outcome", "estimate": est.value,
            "ci": [est.ci_low, est.ci_high], "n": est.n, "flips": f"{flips:g}/{rows}", "threshold": LEVERAGE_MIN,
            "rule": f"leverage when the ceiling's 95% CI lies wholly above {LEVERAGE_MIN:g}",
            "shown": bool(est.ci_low > LEVERAGE_MIN)}


def gate_on_leverage(res, lev: dict, note: str = ""):
    """No leverage: the row is `inconclusive`, its reason starting "no leverage:" (the swaps' own reason after
    it); with leverage, the row as decided. An `error` row stays one."""
    if lev["shown"] or res.status == "error":
        return res
    why = (f"no leverage: the step-0 ceiling ({CEILING}) flips {lev['flips']} = {lev['estimate']:.3g} "
           f"[{lev['ci'][0]:.3g}, {lev['ci'][1]:.3g}], not wholly above {LEVERAGE_MIN:g}: it is not shown that step 0 "
           "can move this model, so its step-0 swaps say nothing about its layers")
    res.status, res.reason = "inconclusive", "; ".join(t for t in (why, note, res.reason) if t)
    return res


def read_flips(flips: dict, blocks: list[int], depth: dict, mid: list[int], outer: list[int]) -> dict:
    """One reading's statistics from {block: {instance: [flip per seed]}}: middle − outer (`bootstrap_ci` over
    instances), the per-block rates, the peak and its interval, and the reading's status by the claim's rule."""
    ids = sorted(flips[blocks[0]])
    rate = lambda bs, i: np.mean([np.mean(flips[b][i]) for b in bs])
    est = bootstrap_ci([rate(mid, i) - rate(outer, i) for i in ids])
    per_inst = {b: [float(np.mean(flips[b][i])) for i in ids] for b in blocks}
    per_block = {b: float(np.mean(v)) for b, v in per_inst.items()}
    peak = max(per_block, key=per_block.get)
    loc = argmax_ci(np.array([per_inst[b] for b in blocks]).T)
    peak_est = Estimate(depth[peak], depth[blocks[int(loc.ci_low)]], depth[blocks[int(loc.ci_high)]], loc.n)
    status = decide(est.ci_low, est.ci_high, 0.0, ">") if est.decidable else "inconclusive"
    where = in_window(peak_est, *MIDDLE_SWAP)
    if status == "holds" and where != "holds":
        status = "fails" if where == "fails" else "inconclusive"
    return {"est": est, "per_inst": per_inst, "per_block": per_block, "peak": peak, "peak_est": peak_est,
            "status": status, "ids": ids}


class SwapFlip(Claim):
    spec = ClaimSpec(
        id="layers.swap_flip", title="Swapping a middle layer flips the grounding outcome", paper_ref="Sec 5.2, Fig 6b",
        paper_value="layer 20 of 40 flips the outcome", measured_quantity="flip rate, middle-depth minus outer swapped blocks",
        threshold=0.0, direction=">",
        version=4,   # 3: the step-0 leverage gate and the every-step reading; 4: written as records
        effect=0.25, effect_note="chosen: the paper shows layer 20 of 40 flipping outcomes (Sec 5) without a rate "
                                 "against the outer blocks; middle blocks flipping a quarter more")
    Details = SwapDetails
    conditions = (f"the flip-rate peak lies in depth {list(MIDDLE_SWAP)}, its bootstrap interval over instances "
                  "included",
                  f"leverage: the step-0 ceiling ({CEILING}) flips a share whose 95% CI lies above {LEVERAGE_MIN:g}, "
                  "else inconclusive (no leverage)")
    sizing = {"cpu": SwapSizing(stride=2, instances=8), "gpu": SwapSizing(stride=1, instances=64),
              "full": SwapSizing(stride=1, instances=5, every_step=False)}

    def sizing_for(self, settings) -> SwapSizing:
        s = super().sizing_for(settings)
        return replace(s, instances=settings.capped(s.instances))

    def measure(self, ctx: RunContext, system, settings, sizing: SwapSizing | None = None, identity: bool = False):
        """First the leverage ceiling, then at step 0 (and, as the second reading, at every step) replace block
        k's update with the alternative configuration's and see whether the final outcome flips.
        `identity=True` swaps in the run's own (nothing can flip)."""
        sizing = sizing or self.sizing_for(settings)
        blocks, _, mid, outer, _ = self._layout(system, sizing)
        if not mid or not outer:
            raise InputError(f"layers.swap_flip: blocks {blocks} of {system.num_layers} give no middle-depth "
                             f"{MIDDLE_SWAP} or outer block; use a deeper model or stride 1")
        if sizing.instances < 2:    # undecidable before any sampling (a full model's sweep takes hours)
            return self._too_few(sizing.instances, system, settings)
        s = replace(settings, tasks=("grounding",), instances=sizing.instances)
        return ctx.measure_records(self, system, s, sizing=sizing, identity=identity)

    def _too_few(self, n: int, system, settings):
        return self.empty_row("inconclusive", f"{n} grounding instance(s) swapped: the flip rates' interval over "
                              "instances needs at least 2 (more --cos-instances)", system, settings)

    @staticmethod
    def _layout(system, sizing: SwapSizing):
        """Blocks swapped at step 0, their depths, the middle and outer ones, and those of the every-step reading
        (the middle and outer blocks, which its estimate reads, to hold its cost down)."""
        L = system.num_layers
        blocks = list(range(0, L, sizing.stride))
        depth = {b: b / max(1, L - 1) for b in blocks}
        mid = [b for b in blocks if MIDDLE_SWAP[0] <= depth[b] <= MIDDLE_SWAP[1]]
        outer = [b for b in blocks if depth[b] < OUTER or depth[b] > 1 - OUTER]
        return blocks, depth, mid, outer, sorted(mid + outer) if sizing.every_step else []

    def measure_batch(self, ctx: RunContext, system, settings, batch, sizing: SwapSizing,
                      identity: bool = False) -> list[dict]:
        """Per row: whether the outcome flips under the ceiling, under each block's step-0 swap and (every-step
        reading) each swept block's every-step swap, against the row's own unswapped outcome."""
        s = settings
        blocks, _, _, _, blocks_every = self._layout(system, sizing)
        every = list(range(s.steps))
        src_batch = batch if identity else make_batch([i.alternative for i in batch.instances], [0], s.height,
                                                      s.width)
        src_batch.seeds = list(batch.seeds)
        cap = CaptureBlocks(blocks=blocks, steps=every if sizing.every_step else [0], cfg_pass="cond",
                            what="update")
        top = CaptureBlocks(blocks=[0], steps=[0], cfg_pass="both", what="output")
        ctx.run(system, s, src_batch, interventions=[cap, top], until=None if sizing.every_step else 1)
        out = lambda res: final_scores(ctx, system, res, batch.instances, outcome, "outcome")
        base = out(ctx.run(system, s, batch))
        flip = lambda ivs: [float(o != b0) for o, b0 in zip(out(ctx.run(system, s, batch, interventions=ivs)), base)]
        # the ceiling first: the alternative's whole step-0 forward
        ceiling = flip([SwapBlock(0, top, steps=[0], cfg_pass="both", what="output")])
        flips = {b: flip([SwapBlock(b, cap, steps=[0], what="update")]) for b in blocks}
        flips_every = {b: flip([SwapBlock(b, cap, steps=every, what="update")]) for b in blocks_every}
        return [{"instance": inst.id, "seed": seed, "ceiling": ceiling[row],
                 "flips": {str(b): f[row] for b, f in flips.items()},
                 "flips_every": {str(b): f[row] for b, f in flips_every.items()}}
                for row, (inst, seed) in enumerate(zip(batch.instances, batch.seeds))]

    def conclude(self, records: list[dict], system, settings, sizing: SwapSizing, identity: bool = False):
        s = settings
        blocks, depth, mid, outer, blocks_every = self._layout(system, sizing)
        ceiling: dict[str, list[float]] = {}
        flips = {b: {} for b in blocks}
        flips_every = {b: {} for b in blocks_every}
        for r in records:
            ceiling.setdefault(r["instance"], []).append(r["ceiling"])
            for b in blocks:
                flips[b].setdefault(r["instance"], []).append(r["flips"][str(b)])
            for b in blocks_every:
                flips_every[b].setdefault(r["instance"], []).append(r["flips_every"][str(b)])
        if len(ceiling) < 2:    # an interval over instances needs two; one is undecidable, not an error
            return self._too_few(len(ceiling), system, settings)
        lev = leverage(ceiling)
        r0 = read_flips(flips, blocks, depth, mid, outer)
        est, peak, peak_est, ids = r0["est"], r0["peak"], r0["peak_est"], r0["ids"]
        summary = lambda r, steps: {
            "steps": steps, "estimate": r["est"].value, "ci": [r["est"].ci_low, r["est"].ci_high], "n": r["est"].n,
            "status": r["status"], "flip_rate_per_block": {str(b): v for b, v in r["per_block"].items()},
            "peak_depth": depth[r["peak"]], "peak_depth_ci": [r["peak_est"].ci_low, r["peak_est"].ci_high]}
        readings = {"step0": {**summary(r0, "0"), "decides": True}}
        if sizing.every_step:
            readings["every_step"] = {**summary(read_flips(flips_every, blocks_every, depth, mid, outer), "every"),
                                      "blocks": blocks_every, "decides": False}
        else:
            readings["every_step"] = {"steps": "every", "status": "skipped", "decides": False,
                                      "reason": "not run on this tier (every block's update at every step)"}
        res = self.result(est, system, s, SwapDetails(
            measured="flip rate of the grounding outcome, middle-depth swaps minus outer swaps (step 0, cond pass)",
            flip_rate_per_block={str(b): v for b, v in r0["per_block"].items()},
            flip_rate_per_block_ci={str(b): interval(v) for b, v in r0["per_inst"].items()},
            middle_blocks=mid, outer_blocks=outer, peak_block=peak, peak_depth=depth[peak],
            peak_depth_ci=[peak_est.ci_low, peak_est.ci_high], leverage=lev, readings=readings),
            samples={i: {"flips_per_block": {str(b): flips[b][i] for b in blocks}, "ceiling_flips": ceiling[i],
                         **({"flips_per_block_every_step": {str(b): flips_every[b][i] for b in blocks_every}}
                            if sizing.every_step else {})} for i in ids})
        res = also_requires(res, in_window(peak_est, *MIDDLE_SWAP),
                            f"middle swaps flip more than outer ones but the peak is at depth {depth[peak]:.2f} "
                            f"[{peak_est.ci_low:.2f}, {peak_est.ci_high:.2f}]", "peak")
        e = readings["every_step"]
        note = (f"every-step reading (reported, not the decision): {e['estimate']:.3g} [{e['ci'][0]:.3g}, "
                f"{e['ci'][1]:.3g}] {e['status']}") if "estimate" in e else ""
        res = gate_on_leverage(res, lev, note)
        res.details.setdefault("conditions", {})["leverage"] = "holds" if lev["shown"] else "inconclusive"
        return res

    def controls(self) -> list[Control]:
        # the every-step reading only where it differs from step 0: the planted blocks of `answer_at` write at step
        # 0 alone (there the reading repeats the step-0 one at twice the cost)
        every_block = lambda d: {"sizing": SwapSizing(stride=1, instances=PLANTED.instances, every_step=False)}
        every_other_block_every_step = lambda d: {"sizing": SwapSizing(stride=2, instances=8)}
        no_leverage = lambda r: (r.status == "inconclusive" and r.reason.startswith("no leverage") and
                                 r.measured == 0.0 and r.details["readings"]["every_step"]["estimate"] > 0)
        return [Control("identity-swap", "negative", lambda d: random_organism(seed=d, num_layers=8), TINY,
                        "swapping in the run's own tokens cannot flip anything (and its ceiling, the run's own "
                        "block-0 output, moves nothing: no leverage)",
                        kwargs=lambda d: {"sizing": SwapSizing(stride=1, instances=3, every_step=False),
                                          "identity": True},
                        check=lambda r: r.measured == 0.0 and r.reason.startswith("no leverage")),
                Control("answer-at-middle", "positive", lambda d: answer_at({3: 0.5, 4: 0.5}, sigma_seed=0.1),
                        PLANTED,
                        "planted: only blocks 3 and 4 of 8 (depth 0.43, 0.57) write the answer, half each, at step "
                        "0 (planted DiT, decided there). Swapping either in from the alternative configuration ties "
                        "the two answers and the seed's noise (σ 0.1 per block) breaks the tie: about half the "
                        "middle swaps flip; every other block writes only the scene and its swap cannot flip. The "
                        "ceiling (the alternative's block-0 output carries its answer to every block) flips all",
                        kwargs=every_block, check=lambda r: r.details["leverage"]["shown"]),
                Control("answer-at-outer", "negative", lambda d: answer_at({0: 0.5, 7: 0.5}, sigma_seed=0.1),
                        PLANTED, "planted null: the same answer writing at the first and the last block; only "
                        "outer swaps flip, so middle minus outer is below 0", kwargs=every_block),
                Control("answer-at-every-depth", "negative",
                        lambda d: answer_at({k: 0.125 for k in range(8)}, sigma_seed=2.5), PLANTED,
                        "noisy null: every block of 8 writes an eighth of the answer with its own seed noise (σ 2.5 "
                        "per block), so a swap at any depth flips with the same probability: middle minus outer is 0 "
                        "in expectation, not identically (some swaps flip)",
                        kwargs=every_block, check=lambda r: r.ci_high > r.ci_low),
                Control("decides-after-step-0", "negative",
                        lambda d: answer_after_step0({3: 0.5, 4: 0.5}, sigma_seed=0.1), PLANTED,
                        "no leverage: blocks 3 and 4 write the answer at every step but step 0, where the model's "
                        "x̂0 is the candidates' mean whatever its blocks say; the step-0 ceiling flips nothing, so "
                        "the row must say `no leverage` (step-0 swaps measure exactly 0), while the every-step "
                        "reading sees the middle block (4 of blocks 0, 2, 4, 6) flip",
                        kwargs=every_other_block_every_step, check=no_leverage),
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
                      spans={"middle": [i for i, b in enumerate(f) if int(b) in d.middle_blocks],
                             "outer": [i for i, b in enumerate(f) if int(b) in d.outer_blocks]},
                      title="grounding outcome flips per swapped block (step 0, 95% CI)"),
                 f"Flip rate per swapped block (middle blocks {d.middle_blocks}, outer {d.outer_blocks}). Holds when "
                 f"the middle-minus-outer flip rate has a CI above {self.spec.threshold:g} and the peak's interval "
                 f"lies in depth [0.35, 0.65], and the step-0 ceiling's flip rate is above {LEVERAGE_MIN:g}"
                 + (f" (here {d.leverage['estimate']:.3g} [{d.leverage['ci'][0]:.3g}, {d.leverage['ci'][1]:.3g}])"
                    if d.leverage else "") + ".")]

    def shared_runs(self, settings, system) -> dict[str, int]:
        return {}      # its own runs only

    def cost(self, settings, system) -> int:
        sz = self.sizing_for(settings)
        if sz.instances < 2:    # decided inconclusive before sampling (`measure`)
            return 0
        swept, every = self._swept(sz, system.num_layers)
        # the alternative's run (to the end for the every-step reading), the base, the ceiling, the swaps
        runs = (2 + swept + every) * settings.steps + (settings.steps if sz.every_step else 1)
        return sz.instances * len(settings.seeds) * runs

    @staticmethod
    def _swept(sz: SwapSizing, num_layers: int) -> tuple[int, int]:
        """Blocks swept at step 0, and at every step (the middle and outer ones)."""
        blocks = range(0, num_layers, sz.stride)
        depth = lambda b: b / max(1, num_layers - 1)
        every = [b for b in blocks if MIDDLE_SWAP[0] <= depth(b) <= MIDDLE_SWAP[1] or depth(b) < OUTER
                 or depth(b) > 1 - OUTER]
        return len(blocks), len(every) if sz.every_step else 0

    def readouts(self, settings, system) -> dict[str, int]:
        sz = self.sizing_for(settings)
        if sz.instances < 2:
            return {}
        swept, every = self._swept(sz, system.num_layers)
        n = sz.instances * len(settings.seeds) * (2 + swept + every)
        return {"batch_decode": n, "weights": n}


CLAIM = register(SwapFlip())

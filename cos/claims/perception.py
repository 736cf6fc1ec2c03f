"""perception.before_action (Sec. 4.3, Fig. 5): the target is singled out (grounding) before it moves (action)
along the steps. Per row: the half-rise step of the motion curve minus that of the grounding curve (the raw
statistic), minus the same statistic of the row's natural null; decided on that difference (version 2).

The readouts. Grounding is a share (of x̂0's departure from the still first frame, the part on the target's
cells): it is scale-free, so any faint departure that lies mostly on the target reads as full grounding. Motion
is an amplitude (the target cells' change across frames): it rises with x̂0's contrast. A model whose x̂0 moves
grounding and motion together, by one common factor, therefore reads "grounding first" by construction of the
readouts: faded towards the still first frame the share is exactly constant (x̂0 − static = a_s·(final − static))
while the amplitude rises with a_s.

The null, and why. Per row, the one-factor path from the row's own step-0 x̂0 to its final one,
P(a) = a·final + (1 − a)·x̂0(0), read with the same readouts on a grid of a (GRID points); at each step a_s is
the first a where the path's grounding is closest to the row's, and the null's curves are the path's at a_s. The
null therefore has the row's own grounding curve wherever the path can reach it (the same endpoints, the same
grounding half-rise) and the motion a one-factor path shows at that much grounding, so

    d = [half-rise(motion) − half-rise(grounding)](x̂0) − [the same](null) = half-rise(motion) − half-rise(null motion)

averaged over an instance's seeds, `cos.stats.bootstrap_ci` over instances, holds when the CI lies above 0: x̂0
moves later than a one-factor path grounded as much would. Two fits were rejected. a_s by least squares on x̂0(s)
absorbs the planted positive entirely (ground-then-move reads d = 0 on every row: its grounded, still footprint
is, in least squares, a faint answer, which the share reads as grounded and the amplitude as not moving); the
still first frame as the path's start (the brief's first suggestion) leaves the share flat, half-rise undefined,
on every row. Rows where the raw or the null curve does not rise (grounding already at its final value at step 0,
or falling) carry no half-rise and are left out, counted in the details (rows_without_rise). The threshold (0, as
in version 1) is the null's value.

Known limit (left open): the noisy null (scripted `committed`, faded towards the still frame, x̂0 noise drawn
per row and step) is not zero in expectation under this null: it reads d = −0.31 [−0.35, −0.26] (9 instances).
The path's noise is a blend of its endpoints' (smaller mid-path than a step's own), so the path reaches the
row's noisier grounding at a smaller a and its motion rises later: the null is conservative on noisy x̂0, so this
control cannot measure a false-positive rate; a noise-matched path is the next step.

The posterior sampler. The reference denoiser (uniform prior) has no notion of grounding before action: its x̂0 is
a mixture of whole candidate videos. Its raw statistic is measured on the same instances and seeds and reported
beside the row (details.reference: raw, null and d with intervals): the readouts' own bias on a model with none
of the effect."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cos.controls import SMALL, ref, scripted
from cos.readouts import clean_batch_rows
from cos.registry import Claim, ClaimSpec, Control, Details, decide, register
from cos.runner import RunContext
from cos.stats import bootstrap_ci, interval

MOTION_TASKS = ("object_to_target", "maze", "return_to_origin")


@dataclass
class PerceptionDetails(Details):
    tasks: list[str] = field(default_factory=list)
    grounding_per_step: list[float] = field(default_factory=list)
    motion_per_step: list[float] = field(default_factory=list)
    grounding_per_step_ci: list[list[float]] = field(default_factory=list)
    motion_per_step_ci: list[list[float]] = field(default_factory=list)
    raw: float | None = None                      # the raw statistic (version 1's quantity), CI over instances
    raw_ci: list[float] | None = None
    null: float | None = None                     # the one-factor null's statistic: the readouts' bias
    null_ci: list[float] | None = None
    rows_without_rise: int = 0                    # rows left out: a raw or null curve that does not rise
    reference: dict | None = None                 # the posterior sampler (ref(), uniform prior) on the same rows
    null_grounding_per_step: list[float] = field(default_factory=list)
    null_motion_per_step: list[float] = field(default_factory=list)


def half_rise(curve: np.ndarray) -> float | None:
    """First step (as a fraction of the schedule) where the curve has covered half of its rise; None if flat."""
    lo, hi = curve[0], curve[-1]
    if hi - lo <= 1e-6:
        return None
    return float(np.argmax(curve >= lo + 0.5 * (hi - lo)) / len(curve))


def grounding_and_motion(inst, steps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per step: share of x̂0's departure from the static first frame that lies on the target (grounding), and
    how much the target cells change across frames (action)."""
    tgt = inst.masks["target"]                                            # (F, G, G)
    static = inst.video[:1]
    if not len(steps):
        return np.array([]), np.array([])
    # every step at once (the null's path reads 101 of them a row; a step at a time was 576 calls, 8 s of the gpu
    # tier's host time on an H200 host): cells read back as one call per step would (`cells_of`), each step's sums
    # still one row's
    cells = inst.cells_of(steps.clamp(0, 1))                              # (S, F, 3, G, G)
    dev = (cells - static).abs().sum(2)                                   # (S, F, G, G)
    g = dev[:, tgt].sum(1) / dev.reshape(len(steps), -1).sum(1).clamp_min(1e-8)
    m = (cells[:, 1:] - cells[:, :1]).abs().sum(2)[:, tgt[1:]].mean(1)
    return g.double().numpy(), m.double().numpy()


GRID = 101    # blend factors a in [0, 1] on which the one-factor path is read


def toward_step0(inst, steps: torch.Tensor, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row's null curves (module doc): along the one-factor path a·final + (1 − a)·x̂0(0), a on a grid of
    GRID values, the grounding and motion readouts; per step, a_s is the first a where the path's grounding is
    closest to the row's (`g`), and the null's curves are the path's at a_s (grounding equal to the row's wherever
    the path reaches it)."""
    gp, mp = grounding_and_motion(inst, null_path(steps))
    at = [int(np.argmin(np.abs(gp - v))) for v in g]
    return gp[at], mp[at]


def null_path(steps: torch.Tensor) -> torch.Tensor:
    """The one-factor path a·final + (1 − a)·x̂0(0) at the GRID blend factors a in [0, 1]: (GRID, F, 3, H, W)."""
    start, final = steps[0].double(), null_final(steps).double()
    # every blend at once: the same float64 products and sum per element as one blend at a time
    a = torch.from_numpy(np.linspace(0.0, 1.0, GRID)).view(-1, *[1] * final.dim())
    return (a * final + (1 - a) * start).float()


def null_final(steps: torch.Tensor) -> torch.Tensor:
    """The end of the null's path: the row's own last x̂0."""
    return steps[-1]


def statistic(g: np.ndarray, m: np.ndarray) -> float | None:
    """half-rise(motion) − half-rise(grounding), None where either curve does not rise."""
    hg, hm = half_rise(g), half_rise(m)
    return None if hg is None or hm is None else hm - hg


def null_statistic(g: np.ndarray, m: np.ndarray) -> float | None:
    """The statistic on the null's curves (the readouts' bias on the row)."""
    return statistic(g, m)


class Perception(Claim):
    spec = ClaimSpec(
        id="perception.before_action", title="Grounding precedes motion along the steps", paper_ref="Sec 4.3, Fig 5",
        paper_value="qualitative: grounding first, motion later",
        measured_quantity="half-rise step of motion minus of grounding, minus the same on the row's one-factor "
                          "null (its step-0 and final x̂0 blended)", threshold=0.0, direction=">",
        version=3,    # 3: written as records (measure_batch + conclude), the same quantity as 2
        statistic="mean over task instances of the paired (row) difference, seeds averaged; bootstrap CI",
        effect=0.1, effect_note="chosen: the paper shows grounding before motion (Fig 5) without a lead; a tenth "
                                "of the schedule (5 of 50 steps)")
    Details = PerceptionDetails

    def measure_batch(self, ctx: RunContext, system, settings, batch, reference: bool = True) -> list[dict]:
        """Per row of the motion tasks: the grounding and motion curves of x̂0 and of the row's null; with
        `reference`, the same of the posterior sampler (ref(), uniform prior) on the same rows, marked "ref"."""
        def read(inst, steps, final):
            g, m = grounding_and_motion(inst, steps)
            return (g, m), toward_step0(inst, steps, g)

        def rows(sys, tag):
            return [{"instance": inst.id, "seed": seed, "ref": tag, "g": g, "m": m, "gn": gn, "mn": mn}
                    for inst, seed, ((g, m), (gn, mn)) in clean_batch_rows(ctx, sys, settings, batch, read,
                                                                           MOTION_TASKS)]
        out = rows(system, False)
        if reference and not system.name.startswith("reference"):
            out += rows(ref(), True)
        return out

    def conclude(self, records: list[dict], system, settings, reference: bool = True):
        diffs, raws, nulls, curves, left = {}, {}, {}, [], 0
        for r in records:
            if r["ref"]:
                continue
            g, m, gn, mn = (np.array(r[k], dtype=np.float64) for k in ("g", "m", "gn", "mn"))
            raw, null = statistic(g, m), null_statistic(gn, mn)
            if raw is None or null is None:
                left += 1
                continue
            diffs.setdefault(r["instance"], []).append(raw - null)
            raws.setdefault(r["instance"], []).append(raw)
            nulls.setdefault(r["instance"], []).append(null)
            curves.append((g, m, gn, mn))
        if len(diffs) < 2:
            return self.skipped(f"fewer than 2 instances of {MOTION_TASKS} with rising grounding and motion curves "
                                f"(raw and null; {left} rows without a rise)", system, settings)
        per = lambda d: [float(np.mean(v)) for v in d.values()]
        est, r_est, n_est = bootstrap_ci(per(diffs)), bootstrap_ci(per(raws)), bootstrap_ci(per(nulls))
        ref_row = None
        if reference and not system.name.startswith("reference"):
            r = self.conclude([{**x, "ref": False} for x in records if x["ref"]], ref(), settings, reference=False)
            ref_row = {"model": r.model, "status": r.status, "difference": r.measured,
                       "difference_ci": [r.ci_low, r.ci_high], "reason": r.reason,
                       **{k: r.details.get(k) for k in ("raw", "raw_ci", "null", "null_ci")}}
        c = [np.array([x[i] for x in curves]) for i in range(4)]
        res = self.result(est, system, settings, PerceptionDetails(
            measured="paired per row: half-rise step of motion minus of grounding (fraction of the schedule), minus "
                     "the same on the row's null (x̂0 blended from its step 0 to its final by one factor)",
            tasks=list(MOTION_TASKS), grounding_per_step=c[0].mean(0).round(4).tolist(),
            motion_per_step=c[1].mean(0).round(4).tolist(), grounding_per_step_ci=[interval(x) for x in c[0].T],
            motion_per_step_ci=[interval(x) for x in c[1].T], raw=r_est.value, raw_ci=[r_est.ci_low, r_est.ci_high],
            null=n_est.value, null_ci=[n_est.ci_low, n_est.ci_high], rows_without_rise=left, reference=ref_row,
            null_grounding_per_step=c[2].mean(0).round(4).tolist(), null_motion_per_step=c[3].mean(0).round(4).tolist()),
            samples={k: {"motion_minus_grounding_half_rise": raws[k], "null": nulls[k], "difference": v}
                     for k, v in diffs.items()})
        ref_txt = ""
        if ref_row and ref_row["raw"] is not None:
            ref_txt = (f"; posterior sampler (ref) raw {ref_row['raw']:.3f} [{ref_row['raw_ci'][0]:.3f}, "
                       f"{ref_row['raw_ci'][1]:.3f}], difference {ref_row['difference']:.3f}")
        res.reason = f"raw {r_est}, null (one-factor path) {n_est}, difference {est}{ref_txt}" + \
            (f"; {res.reason}" if res.reason else "")
        return res

    def controls(self) -> list[Control]:
        motion = replace(SMALL, tasks=MOTION_TASKS)
        cells = replace(motion, height=8, width=8)   # scripted on the cells: 8x8 px reads them back exactly
        quiet = lambda d: {"reference": False}
        lagged = lambda lags: (lambda d: scripted("grounding_lag", cells.steps, lags=lags))
        return [Control("reference", "negative", lambda d: ref(), motion,
                        "the reference's grounding and motion are one posterior weight: they rise together",
                        kwargs=quiet),
                Control("committed-blurred", "negative",
                        lambda d: scripted("committed", cells.steps, fade=(0.0, 0.3), noise=(0.02, 0.1)), cells,
                        "the noisy null: one candidate (drawn per row) from step 0, faded towards the still first "
                        "frame (contrast rising from 0-0.3 to 1) with x̂0 noise at every step: grounding and "
                        "motion move by one factor, its raw statistic holds by the readouts' bias alone; the "
                        "difference must not (it reads -0.31: the null is conservative on noisy x̂0, see the "
                        "module doc)", kwargs=quiet,
                        check=lambda r: decide(r.ci_low, r.ci_high, self.spec.threshold, ">") != "holds"),
                Control("ground-then-move", "positive", lagged((2, 3, 4)), cells,
                        "scripted x̂0 (cos.models.scripted.grounding_lag): the candidates' faint blend, then the "
                        "answer's footprint on the target alone, the same in every frame (grounded, still), then "
                        "2-4 steps later (drawn per row) the answer moving: motion's half-rise follows grounding's "
                        "by exactly that lag", kwargs=quiet),
                Control("move-then-ground", "negative", lagged((-2, -3, -4)), cells,
                        "the two factors swapped: the target moves while the wrong candidates' footprints still "
                        "hold the cells off it, and x̂0 concentrates on the target 2-4 steps later", kwargs=quiet),
                Control("half-step-lead", "sensitivity", lagged((-1, 0, 1, 2)), cells,
                        "grounding leads by half a step on average (0.05 of the schedule), the lag drawn per row "
                        "from -1, 0, 1, 2 steps: how often the claim's n sees a lead this small", kwargs=quiet)]

    def figures(self, d: PerceptionDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import curves

        if not d.grounding_per_step:
            return []
        series = {}
        for label, v, ci in (("grounding (target share)", d.grounding_per_step, d.grounding_per_step_ci),
                             ("motion (target change)", d.motion_per_step, d.motion_per_step_ci)):
            c = np.array(ci) if ci else None
            series[label] = (v, None if c is None else c[:, 0], None if c is None else c[:, 1])
        return [(curves(np.arange(len(d.grounding_per_step)), series, fig_dir / "perception_before_action.png",
                        xlabel="denoising step", ylabel="share of the video (0–1)",
                        title="grounding and motion along the steps (means, 95% bands)"),
                 "Grounding and motion along the steps. Holds when motion's half-rise step minus grounding's has a "
                 f"CI above {self.spec.threshold:g} (grounding rises first).")]

    def readouts(self, settings, system) -> dict[str, int]:
        return {"decode": len(MOTION_TASKS) * settings.instances * len(settings.seeds) * settings.steps}


CLAIM = register(Perception())

"""ensemble.mid_layers (Sec. 6, Tables 1-2): averaging the block states of 3 seeds over the middle layer window
at the first step raises the score. Paired per instance: score with the mid-window ensemble minus without; the
mid window must also be no worse than the early and the all-layer windows (Table 2: paired CI of the difference
not wholly below 0).

Reading: at each block of the window every seed keeps its own input and adds the mean of the three seeds' own
updates (`EnsembleAverage(what="update")`). Averaging the hidden states themselves (version 1) made the seeds
identical after the window's first block, so every window collapsed to its first block. Beside the ensemble,
from the same three seeds: the mean single-seed score (the baseline arm) and the oracle best-of-3 (what three
samples buy with a perfect picker, the equal-compute comparison).

Leverage (version 4, on the task suite). Before the windows are read, the same intervention at its maximum is
run on the model under test: every block's whole output averaged over the 3 seeds at step 0 (both CFG passes),
so that from block 0 on the seeds share one residual stream and step 0's velocity is the same for the three (the
ceiling: no window of averaged updates makes the seeds share more of step 0). Recorded in details["leverage"]:
the mean absolute paired score change it causes per instance (|ceiling − baseline| of each seed, averaged; 95%
CI over instances, `cos.stats.bootstrap_ci`), its signed paired score change, and the relative change of the
final latents (‖Δ‖/‖baseline‖ per row; the mid window's too). Rule, fixed before the ceiling was first run on
the organism and derived from the claim, not from the organism's numbers: leverage is shown when the CI of the
mean absolute score change lies wholly above LEVERAGE_MIN = 0.005, the claim's own threshold, the smallest gain
the claim counts. When making the whole step-0 forward common to the seeds moves no instance's
score by that much, no window of it can produce such a gain, and a gain CI below 0.005 says nothing about the
layers. Without leverage the row is `inconclusive` with a reason starting "no leverage:", never `fails`; with it
the claim decides as before.

Readings. The paper says s = 0: the step-0 reading decides. The every-step reading, the mid window's updates
averaged at every step, is reported beside it (details["readings"]["every_step"]: estimate, CI, n, and the status
the same rule would give) and never sets the row.

Nulls: three identical seeds (averaging is a no-op: exactly 0, and no leverage); the seeds' noisy code written
by an early block (the mid window averages nothing that decides: exactly 0); the noisy null, a mid-window code
that is seed noise only, with no answer in it (averaging changes which candidate wins, not how often it is
right: 0 in expectation, not identically); and a model that decides after step 0 (no leverage: must say so).

On VBVR-Bench (--cos-vbvr DIR, version 3): every sample is generated at VBVR-Wan2.2's settings with seed s (the
baseline, the same run bench.table1 scores) and with seeds s, s+1, s+2 under the mid-window ensemble, whose seed-s
row is the ensemble's video; VBVR-EvalKit scores both, and the gain is paired per sample with a cluster bootstrap
over tasks. Only the mid window is run there (4 arms × 500 samples × 50 steps is out of reach); neither the
leverage ceiling nor the every-step reading is run there (another 3-seed generation of every sample each), so a
VBVR row carries no leverage check: its reason says so."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cos.controls import TINY, answer_after_step0, answer_at, random_organism
from cos.interventions import EnsembleAverage
from cos.registry import DRAW_STRIDE, Claim, ClaimSpec, Control, Details, also_requires, decide, register
from cos.readouts import final_scores
from cos.runner import RunContext
from cos.settings import ClaimSettings
from cos.stats import bootstrap_ci, paired_difference_ci

WINDOWS = {"mid": (0.50, 0.75), "early": (0.0, 0.25), "all": (0.0, 1.0)}   # paper: 20-29, 0-9, 0-39 of 40
ARMS = 2 + len(WINDOWS) + 1     # baseline, the ceiling, the step-0 windows, the every-step reading
SEEDS = (0, 1, 2)
# the leverage rule (see the module doc): the step-0 ceiling's mean |score change| CI must lie wholly above this
LEVERAGE_MIN = 0.005
CEILING = ("every block's whole output averaged over the 3 seeds at step 0 (both CFG passes): the seeds share "
           "step 0's stream from block 0 on, so its velocity is the same for the three")
# planted controls: 40 instances × 3 seeds × 5 arms of 3 steps (6 with the every-step reading)
PLANTED = ClaimSettings(tasks=("grounding", "pattern", "rotation", "object_to_target"), instances=10, seeds=(0,),
                        steps=3, num_frames=5)


@dataclass
class EnsembleDetails(Details):
    score_baseline: dict | None = None
    score_mid: dict | None = None
    score_early: dict | None = None
    score_all: dict | None = None
    mid_minus_early: float | None = None
    mid_minus_all: float | None = None
    mid_minus_early_ci: list[float] | None = None
    mid_minus_all_ci: list[float] | None = None
    score_best_of_3: dict | None = None
    windows_blocks: dict = field(default_factory=dict)
    benchmark: str = "cos task suite"
    vbvr_samples: list | None = None   # VBVR-Bench: [split, task, idx, baseline, mid] per sample (None: scorer error)
    leverage: dict | None = None       # the step-0 ceiling (see the module doc); None on VBVR-Bench
    readings: dict = field(default_factory=dict)   # "step0" (decides) and "every_step" (reported)


def window(depth: tuple[float, float], num_layers: int) -> list[int]:
    lo, hi = depth
    return list(range(int(round(lo * num_layers)), max(int(round(lo * num_layers)) + 1, int(round(hi * num_layers)))))


def leverage(per: dict, rel: dict) -> dict:
    """The step-0 ceiling → details["leverage"]: from the per-instance scores of the baseline and ceiling arms (per
    seed) and the per-instance relative changes of the final latents (`rel`: arm → instance → per seed), the mean
    absolute paired score change with its CI and whether leverage is shown (the CI wholly above LEVERAGE_MIN)."""
    ids = sorted(per["baseline"])
    absd = [float(np.mean(np.abs(np.subtract(per["ceiling"][k], per["baseline"][k])))) for k in ids]
    signed = [float(np.mean(per["ceiling"][k]) - np.mean(per["baseline"][k])) for k in ids]
    est, sgn = bootstrap_ci(absd), bootstrap_ci(signed)
    rc = lambda arm: bootstrap_ci([float(np.mean(rel[arm][k])) for k in ids])
    ceil_rel, mid_rel = rc("ceiling"), rc("mid")
    return {"intervention": CEILING, "quantity": "mean |score change| per instance (its seeds averaged)",
            "estimate": est.value, "ci": [est.ci_low, est.ci_high], "n": est.n,
            "score_change": sgn.value, "score_change_ci": [sgn.ci_low, sgn.ci_high],
            "relative_latent_change": ceil_rel.value,
            "relative_latent_change_ci": [ceil_rel.ci_low, ceil_rel.ci_high],
            "mid_relative_latent_change": mid_rel.value,
            "mid_relative_latent_change_ci": [mid_rel.ci_low, mid_rel.ci_high],
            "threshold": LEVERAGE_MIN, "rule": f"leverage when the CI of the ceiling's mean |score change| lies "
                                               f"wholly above {LEVERAGE_MIN:g}",
            "shown": bool(est.decidable and est.ci_low > LEVERAGE_MIN)}


def gate_on_leverage(res, lev: dict, note: str = ""):
    """No leverage: the row is `inconclusive`, its reason starting "no leverage:" (the row's own reason after it);
    with leverage, the row as decided. An `error` row stays one."""
    if lev["shown"] or res.status == "error":
        return res
    why = (f"no leverage: the step-0 ceiling ({CEILING}) moves the score by {lev['estimate']:.3g} "
           f"[{lev['ci'][0]:.3g}, {lev['ci'][1]:.3g}] per instance (mean |change|; final latents by "
           f"{lev['relative_latent_change']:.2g} relative), not wholly above {LEVERAGE_MIN:g}: it is not shown that "
           "step 0 can move this model's score, so the step-0 gain says nothing about its layers")
    res.status, res.reason = "inconclusive", "; ".join(t for t in (why, note, res.reason) if t)
    return res


def ensemble_settings(settings):
    """ARMS arms × 3 seeds: a quarter of the instances on a small tier (one per task on the CPU), half otherwise."""
    n = settings.instances // 4 if settings.instances <= 4 else settings.instances // 2
    return replace(settings, instances=max(1, n))


class Ensemble(Claim):
    spec = ClaimSpec(
        id="ensemble.mid_layers", title="Averaging mid-layer states of 3 seeds at step 0 improves the score",
        paper_ref="Sec 6, Tables 1-2", paper_value="0.685 → 0.716 (layers 20-29); 0-9 → 0.688; 0-39 → 0.690",
        measured_quantity="score, mid-window ensemble minus baseline (paired)",
        threshold=0.005,   # score points; the paper's gain is 0.031
        direction=">", paper={"baseline": 0.685, "mid": 0.716, "early": 0.688, "all": 0.690},
        version=5,   # 3: with --cos-vbvr, on VBVR-Bench scored by VBVR-EvalKit; 4: the step-0 leverage gate and
                     # the every-step reading (task suite); 5: the task suite written as records
        effect=0.026, effect_note="paper: Table 1, 0.716 − 0.685 = 0.031 on VBVR-Bench, 0.026 above the threshold")
    Details = EnsembleDetails
    conditions = ("mid − early and mid − all: paired CIs not wholly below 0",
                  f"leverage (task suite): the step-0 ceiling ({CEILING}) moves the score by a mean |change| whose "
                  f"95% CI lies above {LEVERAGE_MIN:g}, else inconclusive (no leverage)")

    def measure(self, ctx: RunContext, system, settings, seeds=SEEDS, sized: bool = False, every_step: bool = True):
        """`every_step=False` leaves out the every-step reading (a control whose model writes at step 0 only, where
        it repeats the step-0 reading)."""
        from cos.vbvr_run import config_of, on_task_suite

        if config_of(settings) is not None:
            return self._measure_vbvr(ctx, system, settings, config_of(settings))
        return on_task_suite(self._measure_suite(ctx, system, settings, seeds, sized, every_step))

    def _measure_vbvr(self, ctx: RunContext, system, settings, cfg):
        from cos.tasks.vbvr import scorer_status
        from cos.vbvr_eval import cluster_ci
        from cos.vbvr_run import generate, scores

        if scorer_status():
            return self.skipped(f"--cos-vbvr given but {scorer_status()}", system, settings)
        blocks = window(WINDOWS["mid"], system.num_layers)
        base = scores(ctx, cfg, generate(ctx, system, settings, cfg))
        mid = scores(ctx, cfg, generate(ctx, system, settings, cfg, "vbvr-videos-ensemble-mid", extra_seeds=len(SEEDS) - 1,
                                        interventions=lambda s: [EnsembleAverage(blocks=blocks, steps=[0],
                                                                                 groups=[0] * len(SEEDS))]))
        by = {r.key: r for r in mid}
        pairs = [(b, by[b.key]) for b in base if b.key in by]
        z = lambda r: 0.0 if r.score is None else r.score    # EvalKit's convention for a failed evaluation
        tasks = [b.task for b, _ in pairs]
        ci = lambda xs: cluster_ci(xs, tasks).__dict__
        d = EnsembleDetails(
            measured="VBVR-EvalKit score with the mid-window ensemble of 3 seeds minus seed 1 alone (paired per "
                     "sample, cluster bootstrap over tasks)",
            score_baseline=ci([z(b) for b, _ in pairs]), score_mid=ci([z(m) for _, m in pairs]),
            windows_blocks={"mid": blocks}, benchmark=f"VBVR-Bench ({cfg.data})",
            vbvr_samples=[[b.split, b.task, b.idx, b.score, m.score] for b, m in pairs])
        res = self.result(cluster_ci([z(m) - z(b) for b, m in pairs], tasks), system, settings, d)
        errors = sum(b.score is None or m.score is None for b, m in pairs)
        if errors:
            res.reason = (res.reason + "; " if res.reason else "") + f"{errors} pair(s) with a scorer error (scored 0)"
        res.reason = (res.reason + "; " if res.reason else "") + "leverage not measured on VBVR-Bench"
        return res

    def _measure_suite(self, ctx: RunContext, system, settings, seeds=SEEDS, sized: bool = False,
                       every_step: bool = True):
        settings = replace(settings if sized else ensemble_settings(settings), seeds=tuple(seeds))
        return ctx.measure_records(self, system, settings, every_step=every_step)

    @staticmethod
    def _arms(every_step: bool) -> list[str]:
        # the ceiling first, then the step-0 windows; the every-step reading last
        return ["baseline", "ceiling", *WINDOWS] + (["every_step"] if every_step else [])

    def measure_batch(self, ctx: RunContext, system, settings, batch, every_step: bool = True) -> list[dict]:
        """Per row (an instance's seed): the final score under every arm, and the relative change of the final
        latents under the ceiling and the mid window against the baseline."""
        arms = self._arms(every_step)
        every = list(range(settings.steps))
        ids = [inst.id for inst in batch.instances]
        group = [sorted(set(ids)).index(x) for x in ids]
        ivs = {"baseline": [],
               "ceiling": [EnsembleAverage(blocks="all", steps=[0], groups=group, what="output")],
               **{w: [EnsembleAverage(blocks=window(WINDOWS[w], system.num_layers), steps=[0], groups=group)]
                  for w in WINDOWS},
               "every_step": [EnsembleAverage(blocks=window(WINDOWS["mid"], system.num_layers), steps=every,
                                              groups=group)]}
        out = [{"instance": inst.id, "seed": seed, "scores": {}, "rel": {}}
               for inst, seed in zip(batch.instances, batch.seeds)]
        base = None
        for name in arms:
            res = ctx.run(system, settings, batch, interventions=ivs[name])
            for rec, sc in zip(out, final_scores(ctx, system, res, batch.instances)):
                rec["scores"][name] = sc
            if name == "baseline":
                base = res.latents.flatten(1).double()
            if name in ("ceiling", "mid"):
                d = (res.latents.flatten(1).double() - base).norm(dim=1) / base.norm(dim=1).clamp_min(1e-12)
                for rec, r in zip(out, d.tolist()):
                    rec["rel"][name] = r
        return out

    def conclude(self, records: list[dict], system, settings, every_step: bool = True):
        per = {name: {} for name in self._arms(every_step)}
        rel = {name: {} for name in ("ceiling", "mid")}     # relative change of the final latents, per row
        for rec in records:
            for name in per:
                per[name].setdefault(rec["instance"], []).append(rec["scores"][name])
            for name in rel:
                rel[name].setdefault(rec["instance"], []).append(rec["rel"][name])
        lev = leverage(per, rel)
        mean = {name: [np.mean(v) for _, v in sorted(d.items())] for name, d in per.items()}
        best = [max(v) for _, v in sorted(per["baseline"].items())]
        est = paired_difference_ci(mean["mid"], mean["baseline"])
        score = {k: bootstrap_ci(v).__dict__ if len(v) > 1 else None for k, v in mean.items()}
        vs = {k: paired_difference_ci(mean["mid"], mean[k]) for k in ("early", "all")}
        d = EnsembleDetails(
            measured="score with the mid-window ensemble minus without (paired per instance, 3 seeds)",
            score_baseline=score["baseline"], score_mid=score["mid"], score_early=score["early"], score_all=score["all"],
            mid_minus_early=vs["early"].value, mid_minus_all=vs["all"].value,
            mid_minus_early_ci=[vs["early"].ci_low, vs["early"].ci_high],
            mid_minus_all_ci=[vs["all"].ci_low, vs["all"].ci_high],
            score_best_of_3=bootstrap_ci(best).__dict__ if len(best) > 1 else None,
            windows_blocks={k: window(w, system.num_layers) for k, w in WINDOWS.items()})
        th = self.spec.threshold
        reading = lambda e, steps: {"steps": steps, "estimate": e.value, "ci": [e.ci_low, e.ci_high], "n": e.n,
                                    "status": decide(e.ci_low, e.ci_high, th, ">") if e.decidable else "inconclusive"}
        d.readings = {"step0": {**reading(est, "0"), "decides": True}}
        if every_step:
            d.readings["every_step"] = {**reading(paired_difference_ci(mean["every_step"], mean["baseline"]), "every"),
                                        "decides": False}
        d.leverage = lev
        res = self.result(est, system, settings, d, samples={k: {arm: per[arm][k] for arm in per} for k in per["baseline"]})
        worse = [k for k, e in vs.items() if e.ci_high < 0]
        res = also_requires(res, not worse, f"the mid window beats the baseline but is worse than {worse} "
                            f"({', '.join(f'{k} {vs[k]}' for k in worse)})", "mid_not_worse")
        e = d.readings.get("every_step")
        note = (f"every-step reading (reported, not the decision): {e['estimate']:.3g} [{e['ci'][0]:.3g}, "
                f"{e['ci'][1]:.3g}] {e['status']}") if e else ""
        res = gate_on_leverage(res, lev, note)
        res.details.setdefault("conditions", {})["leverage"] = "holds" if lev["shown"] else "inconclusive"
        return res

    def controls(self) -> list[Control]:
        # the claim's 3 seeds, shifted with the draw as `at_draw` shifts settings.seeds (the kwarg replaces them)
        # the every-step reading only where it differs from step 0 (`answer_at` writes at step 0 alone)
        three = lambda d: {"seeds": tuple(DRAW_STRIDE * d + s for s in SEEDS), "sized": True, "every_step": False}
        three_every_step = lambda d: {**three(d), "every_step": True}
        no_leverage = lambda r: (r.status == "inconclusive" and r.reason.startswith("no leverage") and
                                 r.measured == 0.0 and r.details["readings"]["every_step"]["estimate"] > 0)
        return [Control("identical-seeds", "negative", lambda d: random_organism(seed=d, num_layers=4), TINY,
                        "three identical seeds: averaging them is a no-op, gain exactly 0, and so is the ceiling "
                        "(no leverage)",
                        kwargs=lambda d: {"seeds": (7 + d,) * 3, "sized": True, "every_step": False},
                        check=lambda r: abs(r.measured) < 1e-6 and r.reason.startswith("no leverage")),
                Control("seed-noise-at-mid", "positive", lambda d: answer_at({4: 1.0}, sigma_seed=0.8), PLANTED,
                        "planted: block 4 of 8 (in the mid window 4-5) writes the answer's code plus noise from the "
                        "seed (σ 0.8, read from its own input); the decision is the code's argmax. Averaging 3 "
                        "seeds' updates there shrinks the noise by √3: score ≈ 0.69 → 0.90. The early window (0-1) "
                        "holds no code (no gain), the all-block window the same code (the same gain)", kwargs=three,
                        check=lambda r: r.details["leverage"]["shown"]),
                Control("seed-noise-early", "negative", lambda d: answer_at({1: 1.0}, sigma_seed=0.8), PLANTED,
                        "planted null: the same noisy code written by block 1 (early window): the mid-window "
                        "ensemble averages nothing that decides, gain exactly 0", kwargs=three),
                Control("seed-noise-without-answer", "negative",
                        lambda d: answer_at({4: 1.0}, mu=0.0, sigma_seed=0.8), PLANTED,
                        "noisy null: block 4 (mid window) writes the seed's noise and no answer (μ 0): averaging 3 "
                        "seeds there makes them agree on a candidate drawn as blindly as each seed's own, so "
                        "outcomes change but the expected score does not (0 in expectation, not identically)",
                        kwargs=three, check=lambda r: r.ci_high > r.ci_low),
                Control("decides-after-step-0", "negative",
                        lambda d: answer_after_step0({4: 1.0}, sigma_seed=0.8), replace(PLANTED, instances=4),
                        "no leverage: block 4 writes the noisy code at every step but step 0, where the model's x̂0 "
                        "is the candidates' mean whatever its blocks say; the step-0 ceiling changes nothing, so the "
                        "row must say `no leverage` (the step-0 gain is exactly 0), while the every-step reading "
                        "averages the noise and gains", kwargs=three_every_step, check=no_leverage),
                Control("paper-size", "sensitivity",
                        lambda d: answer_at({4: 1.0}, sigma_inst=0.675, sigma_seed=0.375), PLANTED,
                        "the paper's size: mostly instance noise (σ 0.675, shared by the seeds, which no ensemble "
                        "removes) and a little seed noise (σ 0.375): 0.685 → 0.716 on these tasks (Monte Carlo of "
                        "the code's argmax)",
                        kwargs=three)]

    def figures(self, d: EnsembleDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import bars, decision

        names = ["baseline", "mid", "early", "all"] + (["best_of_3"] if d.score_best_of_3 else [])
        e = [getattr(d, f"score_{n}") for n in names]
        if not all(e):
            return []
        out = [(bars(names, [x["value"] for x in e], [(x["ci_low"], x["ci_high"]) for x in e], fig_dir / "ensemble.png",
                     ylabel="task-suite score",
                     title="score per ensemble window (best_of_3: oracle pick of the baseline's seeds)"),
                "Score per ensemble window with 95% CIs (unpaired intervals; the decision uses paired differences, "
                f"below). Holds when the paired mid − baseline difference has a CI above {self.spec.threshold:g}. "
                "The paper's Table 2 (VBVR-Bench, another benchmark): "
                + ", ".join(f"{n} {v:g}" for n in names if (v := self.spec.paper.get(n)) is not None) + ".")]
        rows = [(f"{a} − {b}", v, ci) for a, b, v, ci in (("mid", "early", d.mid_minus_early, d.mid_minus_early_ci),
                                                          ("mid", "all", d.mid_minus_all, d.mid_minus_all_ci))
                if v is not None]
        if rows:
            out.append((decision(rows, fig_dir / "ensemble-paired.png", threshold=0.0, direction=">",
                                 xlabel="paired score difference", title="further conditions: mid window vs the others"),
                        "Paired differences of the mid window against the early and all-block windows. The condition "
                        "holds unless a CI lies wholly below 0."))
        return out

    def shared_runs(self, settings, system) -> dict[str, int]:
        return {}      # its own runs only

    def cost(self, settings, system) -> int:
        from cos.vbvr_run import config_of

        cfg = config_of(settings)
        if cfg is not None:   # the 3-seed ensemble batch per sample (the baseline is bench.table1's run)
            from cos.tasks.vbvr import sample_dirs

            return len(SEEDS) * len(sample_dirs(cfg.data)) * cfg.steps
        s = ensemble_settings(settings)
        return ARMS * len(s.tasks) * s.instances * len(SEEDS) * s.steps

    def readouts(self, settings, system) -> dict[str, int]:
        from cos.vbvr_run import config_of

        if config_of(settings) is not None:
            return {}
        s = ensemble_settings(settings)
        n = ARMS * len(s.tasks) * s.instances * len(SEEDS)
        return {"batch_decode": n, "score": n}


CLAIM = register(Ensemble())

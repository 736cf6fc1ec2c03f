"""distill.four_step (App. C): a 4-step distilled model (reasoning LoRA + distillation LoRA at 0.5 each, given
with --cos-lora; else the model's own distilled LoRA declared in its cos_model.json, as the organism ships one)
scores lower than the full schedule but still shows reasoning activity (several candidates) at
its first step. Paired per (instance, seed): full-schedule score minus the 4-step score."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cos.controls import SMALL, answer_prior, ref
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, decide, register
from cos.readouts import final_scores
from cos.runner import RunContext, videos
from cos.stats import bootstrap_ci
from cos.tasks import entropy

FAST_STEPS = 4
FAST_GUIDANCE = 1.0        # a DMD-distilled student (Phased DMD, App. C) is sampled without CFG
MIN_FIRST_ENTROPY = 0.05   # nats, as cos.superposition


@dataclass
class DistillDetails(Details):
    fast_model: str = ""
    fast_steps: int = FAST_STEPS
    fast_guidance: float = FAST_GUIDANCE
    first_step_entropy: float | None = None
    first_step_entropy_ci: list[float] | None = None
    score_full: dict | None = None      # Estimate as a dict: full-schedule score per instance (for the figure)
    score_fast: dict | None = None      # Estimate as a dict: the 4-step model's score per instance


class FourStep(Claim):
    spec = ClaimSpec(
        id="distill.four_step", title="A 4-step distilled model scores lower but still reasons at step 0",
        paper_ref="App C", paper_value="0.685 → 0.605", measured_quantity="full-schedule score minus the 4-step distilled score",
        threshold=0.0, direction=">", paper={"full": 0.685, "four_step": 0.605}, version=3,
        effect=0.08, effect_note="paper: App C, 0.685 − 0.605 on VBVR-Bench")
    Details = DistillDetails
    conditions = (f"first-step candidate entropy of the fast model: CI above {MIN_FIRST_ENTROPY} nats",
                  f"the fast model runs its own schedule: {FAST_STEPS} steps, guidance {FAST_GUIDANCE}")
    needs_distilled = True

    def measure(self, ctx: RunContext, system, settings, fast=None):
        fast = fast if fast is not None else ctx.distilled
        if fast is None:
            return self.skipped("no 4-step distilled model: pass --cos-lora REASONING:0.5 --cos-lora DISTILL:0.5 "
                                "(LoRA pair of App. C); the model declares none of its own (cos_model.json "
                                "\"distilled\")", system, settings)
        return ctx.measure_records(self, system, settings, fast=fast)

    def measure_batch(self, ctx: RunContext, system, settings, batch, fast=None) -> list[dict]:
        fs = replace(settings, steps=FAST_STEPS, guidance_scale=FAST_GUIDANCE)
        a = final_scores(ctx, system, ctx.clean_run(system, settings, batch), batch.instances)
        rb = ctx.run(fast, fs, batch, record=("x0",))
        b = final_scores(ctx, fast, rb, batch.instances)
        # step 0's x̂0 only (step_videos decoded all FAST_STEPS of a row to keep the first: a full model's VAE, 3 of
        # 4 decodes a row for nothing)
        h0 = [entropy(inst.candidate_weights(videos(fast, rb["x0"][0][row:row + 1], clamp=False)[0]))
              for row, inst in enumerate(batch.instances)]
        return [{"instance": inst.id, "seed": seed, "score_full": a[row], "score_fast": b[row],
                 "first_step_entropy": h0[row]} for row, (inst, seed) in enumerate(zip(batch.instances, batch.seeds))]

    def conclude(self, records: list[dict], system, settings, fast=None):
        drop, first_h, full, four = {}, [], {}, {}
        for r in records:
            sa, sb = r["score_full"], r["score_fast"]
            drop.setdefault(r["instance"], []).append(sa - sb)
            full.setdefault(r["instance"], []).append(sa), four.setdefault(r["instance"], []).append(sb)
            first_h.append(r["first_step_entropy"])
        est = bootstrap_ci([np.mean(v) for v in drop.values()])
        h = bootstrap_ci(first_h) if len(first_h) > 1 else None
        res = self.result(est, system, settings, DistillDetails(
            measured=f"full-schedule score minus {FAST_STEPS}-step distilled score (paired)", fast_model=fast.name,
            first_step_entropy=float(np.mean(first_h)), first_step_entropy_ci=[h.ci_low, h.ci_high] if h else None,
            score_full=bootstrap_ci([np.mean(v) for v in full.values()]).__dict__,
            score_fast=bootstrap_ci([np.mean(v) for v in four.values()]).__dict__),
            samples={k: {"full_minus_fast_score": v} for k, v in drop.items()})
        h_status = decide(h.ci_low, h.ci_high, MIN_FIRST_ENTROPY, ">") if h and h.decidable else "inconclusive"
        return also_requires(res, h_status, f"scores lower but first-step entropy {h} is not above "
                             f"{MIN_FIRST_ENTROPY} nats", "first_step_entropy")

    def controls(self) -> list[Control]:
        # the paper's fast model is the organism / Wan with a distillation LoRA (--cos-lora); these controls test
        # the measurement (paired drop, first-step entropy), not the loading of LoRAs. Both models are the
        # reference denoiser (uniform, or a prior leaning on the answer), sampled from the same noise (paired)
        return [Control("fast-as-good-as-full", "negative", lambda d: ref(), replace(SMALL, instances=2),
                        "the 'fast' model is the reference itself: nothing is lost", kwargs=lambda d: {"fast": ref()}),
                Control("lost-the-answer", "positive", lambda d: answer_prior(0.9), replace(SMALL, instances=2),
                        "full: the reference with prior 0.9 on the answer (lands on it in ~0.93 of the rows); "
                        "fast: the uniform reference at 4 steps (a random candidate) whose first x̂0 is the prior's "
                        "even blend (entropy log K): lower score, still superposing. Tests the measurement, not "
                        "LoRA loading (the paper's fast model is the organism/Wan with a distillation LoRA)",
                        kwargs=lambda d: {"fast": answer_prior(None)}),
                Control("paper-drop", "sensitivity", lambda d: answer_prior(0.65), replace(SMALL, instances=9),
                        "the paper's drop 0.685 → 0.605: priors 0.65 (10 steps) and 0.46 (4 steps) on the answer, "
                        "which land on it in 0.687 and 0.605 of 800 rows of these tasks (few-step sampling is "
                        "mode-seeking: it lands on the prior's favourite more often than the prior says)",
                        kwargs=lambda d: {"fast": answer_prior(0.46)})]

    def figures(self, d: DistillDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import bars, decision

        out = []
        if d.score_full and d.score_fast:
            e = [d.score_full, d.score_fast]
            out.append((bars(["full schedule", f"{d.fast_steps}-step"], [x["value"] for x in e],
                             [(x["ci_low"], x["ci_high"]) for x in e], fig_dir / "distill.png", ylabel="task-suite score",
                             title=f"score of the full schedule and of {d.fast_model or 'the distilled model'} "
                                   f"({d.fast_steps} steps, guidance {d.fast_guidance:g})"),
                        f"Scores of the two models (unpaired 95% CIs; the decision uses the paired drop). Holds when "
                        f"the paired drop has a CI above {self.spec.threshold:g}. The paper's App. C (VBVR-Bench, "
                        f"another benchmark): full {self.spec.paper['full']:g}, 4-step {self.spec.paper['four_step']:g}."))
        if d.first_step_entropy is not None:
            ci = tuple(d.first_step_entropy_ci) if d.first_step_entropy_ci else None
            out.append((decision([("first-step entropy", d.first_step_entropy, ci)], fig_dir / "distill-entropy.png",
                                 threshold=MIN_FIRST_ENTROPY, direction=">", xlabel="candidate entropy (nats)",
                                 title="the fast model's candidate entropy at its first step"),
                        f"Further condition (still reasons at step 0): holds when this CI lies above "
                        f"{MIN_FIRST_ENTROPY} nats."))
        return out

    def cost(self, settings, system) -> int:
        # the fast model's runs, when --cos-lora gives one (the full-schedule run is the shared clean run)
        return settings.rows * FAST_STEPS

    def readouts(self, settings, system) -> dict[str, int]:
        n = settings.rows
        return {"batch_decode": 2 * n, "decode": n, "score": 2 * n, "weights": n}


CLAIM = register(FourStep())

"""cos.superposition (Sec. 3.1, Fig. 1-2): several candidate answers are alive early along the denoising steps,
one late. Read off the decoded x̂0 of the shared clean run: the entropy of its candidate mixture (NNLS weights
over the task's candidate videos), first 20% of the steps minus the last 20%."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cos.controls import SMALL, ref
from cos.readouts import weights_per_step
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, decide, register
from cos.runner import RunContext, step_videos
from cos.stats import bootstrap_ci, interval, share_ci
from cos.tasks import entropy, live_candidates

EARLY, LATE = 0.2, 0.2          # fractions of the schedule compared
MIN_LIVE_SHARE = 0.5            # the catalogue's "stated share" of rows with ≥ 2 live candidates early
TRACE_STEPS = 8                 # steps kept per x̂0 filmstrip (evenly spaced, first and last included)


@dataclass
class SuperpositionDetails(Details):
    unit: str = "instance (seeds averaged)"
    share_two_live_early: float | None = None
    share_two_live_early_ci: list[float] | None = None
    entropy_per_step: list[float] = field(default_factory=list)
    entropy_per_step_ci: list[list[float]] = field(default_factory=list)
    traces: list[dict] = field(default_factory=list)     # {task, instance, seed, prompt, key, confidence, which}


class Superposition(Claim):
    spec = ClaimSpec(
        id="cos.superposition", title="Several candidate answers early, one late", paper_ref="Sec 3.1, Fig 1-2",
        paper_value="qualitative: several candidates early, one late",
        measured_quantity="candidate entropy of decoded x̂0, first 20% minus last 20% of steps (nats)",
        threshold=0.05,    # nats: smaller differences are float noise, not superposition
        direction=">", version=2)
    Details = SuperpositionDetails
    conditions = (f"≥ 2 live candidates (mass ≥ 0.1) in the first 20% of steps on a share of instances whose "
                  f"Wilson CI lies above {MIN_LIVE_SHARE}",)

    def measure(self, ctx: RunContext, system, settings, trace: bool = True):
        diffs, early_live, curves, candidates = {}, {}, [], {}
        for batch in ctx.batches(settings):
            for row, (inst, steps) in enumerate(zip(batch.instances, weights_per_step(ctx, system, settings, batch)[0])):
                n = len(steps)
                k_early, k_late = max(1, round(EARLY * n)), max(1, round(LATE * n))
                h = [entropy(w) for w in steps]
                curves.append(h)
                if trace:   # confidence: the final mixture's largest weight (whichever candidate it is)
                    candidates.setdefault(inst.task, []).append((float(steps[-1].max()), inst, batch, row, steps))
                diffs.setdefault(inst.id, []).append(np.mean(h[:k_early]) - np.mean(h[-k_late:]))
                early_live.setdefault(inst.id, []).append(float(max(live_candidates(w) for w in steps[:k_early]) >= 2))
        arrays, traces = self._traces(ctx, system, settings, candidates, ctx.report_instances) if trace else ({}, [])
        est = bootstrap_ci([np.mean(v) for v in diffs.values()])
        live = share_ci(list(early_live.values()))
        res = self.result(est, system, settings, SuperpositionDetails(
            measured="mean candidate entropy (nats), first 20% minus last 20% of steps",
            share_two_live_early=live.value, share_two_live_early_ci=[live.ci_low, live.ci_high],
            entropy_per_step=np.mean(curves, axis=0).round(4).tolist(),
            entropy_per_step_ci=[interval(c) for c in np.array(curves).T], traces=traces), arrays,
            samples={k: {"entropy_drop": v, "two_live_early": early_live[k]} for k, v in diffs.items()})
        return also_requires(res, decide(live.ci_low, live.ci_high, MIN_LIVE_SHARE, ">"),
                             f"entropy drops, but the share of instances with ≥ 2 live candidates early is {live}, "
                             f"not above {MIN_LIVE_SHARE}", "live_candidates_early")

    @staticmethod
    def _traces(ctx, system, settings, candidates: dict, per_task: int) -> tuple[dict, list[dict]]:
        """x̂0 filmstrips of every task: its most and least confident instances (alternately, `per_task` of
        them), decoded at ≤ TRACE_STEPS steps as uint8 (small arrays), with the mixture at every step."""
        arrays, traces = {}, []
        for task in sorted(candidates):
            rows = sorted(candidates[task], key=lambda c: -c[0])
            picked, seen = [], set()
            for c in (x for pair in zip(rows, rows[::-1]) for x in pair):   # most, least, 2nd most, ...
                if len(picked) < per_task and c[1].id not in seen:
                    picked.append(c), seen.add(c[1].id)
            for rank, (conf, inst, batch, row, steps) in enumerate(picked):
                res = ctx.clean_run(system, settings, batch)
                n = len(steps)
                at = sorted(set(np.linspace(0, n - 1, min(n, TRACE_STEPS)).round().astype(int).tolist()))
                key = f"trace.{inst.id}.s{batch.seeds[row]}"
                order = [inst.answer] + [k for k in range(len(steps[0])) if k != inst.answer]
                x0 = step_videos(system, res, row)[at].clamp(0, 1).permute(0, 1, 3, 4, 2)
                arrays[f"{key}.x0"] = (x0 * 255).round().to(torch.uint8).numpy()
                arrays[f"{key}.steps"] = np.asarray(at, dtype=np.int64)
                arrays[f"{key}.weights"] = torch.stack([w[order] for w in steps]).numpy()
                arrays[f"{key}.sigmas"] = np.asarray(res.sigmas, dtype=np.float64)
                traces.append({"task": inst.task, "instance": inst.seed, "seed": batch.seeds[row], "prompt": inst.prompt,
                               "key": key, "confidence": round(conf, 4),
                               "which": "most confident" if rank % 2 == 0 else "least confident"})
        return arrays, traces

    def controls(self) -> list[Control]:
        untraced = lambda d: {"trace": False}
        return [
            Control("reference", "positive", lambda d: ref(), SMALL,
                    "the closed-form denoiser's posterior superposes the candidates early and commits late",
                    kwargs=untraced),
            Control("committed-oracle", "negative", lambda d: ref(prior="oracle"), SMALL,
                    "all prior mass on the answer: one candidate from step 0, entropy drop exactly 0", kwargs=untraced,
                    check=lambda r: abs(r.measured) < 1e-6),
        ]

    def figures(self, d: SuperpositionDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import curves, filmstrip

        out = []
        if d.entropy_per_step:
            h = d.entropy_per_step
            ci = np.array(d.entropy_per_step_ci) if d.entropy_per_step_ci else None
            n = len(h)
            k_e, k_l = max(1, round(EARLY * n)), max(1, round(LATE * n))
            out.append((curves(np.arange(n), {"candidate entropy (mean, 95% CI)": (
                h, None if ci is None else ci[:, 0], None if ci is None else ci[:, 1])},
                fig_dir / "superposition.png", xlabel="denoising step", ylabel="candidate entropy (nats)",
                spans={"first 20% of steps": (-0.5, k_e - 0.5), "last 20% of steps": (n - k_l - 0.5, n - 0.5)},
                title="entropy of the candidate mixture of decoded x̂0 along the steps"),
                f"Candidate entropy per step (mean over instances, 95% band). Holds when the early window's mean "
                f"entropy exceeds the late window's by more than {self.spec.threshold:g} nats (whole CI), and ≥ 2 "
                f"candidates are live early on a share of instances with a CI above {MIN_LIVE_SHARE}."))
        for t in d.traces:
            x0, w, sig = (arrays.get(f"{t['key']}.{k}") for k in ("x0", "weights", "sigmas"))
            if x0 is None:
                continue
            steps = arrays.get(f"{t['key']}.steps")
            if steps is None:   # runs before the arrays kept ≤ 8 steps: every step was recorded
                steps = sorted(set(np.linspace(0, len(x0) - 1, min(len(x0), 8)).round().astype(int).tolist()))
                x0 = x0[steps]
            steps = [int(i) for i in steps]
            k = w.shape[1]
            which = f" ({t['which']}, final max weight {t['confidence']:.2f})" if t.get("which") else ""
            p = filmstrip(x0, fig_dir / f"{t['key'].replace('.', '-')}.png", weights=w[steps],
                          row_labels=[f"step {i}\nσ={sig[i]:.2f}" for i in steps],
                          candidate_labels=["ans"] + [f"c{i}" for i in range(1, k)],
                          title=f"{t['task']} #{t['instance']}{which}: decoded x̂0 per step (rows) and frame "
                                "(columns), candidate mixture at right")
            out.append((p, f"x̂0 filmstrip, {t['task']} instance {t['instance']}{which}. Superposition looks like "
                           "several high bars early and one late; the claim holds on the intervals of the entropy "
                           "drop and the live-candidate share, not on one instance."))
        return out

    def readouts(self, settings, system) -> dict[str, int]:
        n = settings.rows * settings.steps
        return {"decode": n, "weights": n}


CLAIM = register(Superposition())

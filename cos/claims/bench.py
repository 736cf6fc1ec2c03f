"""bench.table1 (Table 1): the model's benchmark score per split and category on the task suite, beside the
paper's numbers (which are VBVR-Bench scores: a different quantity). Off VBVR-Bench the assertion is that the
model beats choosing a random candidate in each split (pooling hid an out-of-domain score below the random
candidate in version 1); its own score is recorded as the baseline later runs are gated on. Comparing with
Table 1 within a tolerance needs VBVR-Bench itself: with --cos-vbvr DIR (version 3) the model generates the
benchmark's samples at VBVR-Wan2.2's settings, VBVR-EvalKit scores them, and each split's score must lie within
cos.vbvr_run.TABLE1_TOLERANCE of Table 1 (its interval wholly inside: holds; wholly outside: fails), with the
trivial baselines (static first frame, ground truth, another sample's ground truth) scored beside."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cos.controls import TINY, random_organism, scripted
from cos.registry import Claim, ClaimSpec, Control, Details, also_requires, decide, register
from cos.readouts import final_scores
from cos.runner import RunContext
from cos.stats import bootstrap_ci


@dataclass
class BenchDetails(Details):
    score: dict = field(default_factory=dict)
    category: dict = field(default_factory=dict)
    random_candidate: float | None = None
    above_random: dict = field(default_factory=dict)     # split → [value, ci_low, ci_high] of score − 1/K
    benchmark: str = "cos task suite"
    vbvr: dict | None = None          # VBVR-Bench: the score document (cos.vbvr_eval) of the generated videos
    baselines: dict | None = None     # VBVR-Bench: baseline → {overall, by_split} scores
    paper_minus: dict | None = None   # VBVR-Bench: split → [value, ci_low, ci_high] of score − Table 1


CATS = ("Abst.", "Know.", "Perc.", "Spat.", "Trans.")   # Table 1's categories



def _above_random_ci(rows: list[dict], ids: list[str]):
    """Interval of the mean (score − 1/K) over instances `ids`. The random-candidate score 1/K is fixed by each
    instance's design, so only the score varies. Where every score is 0 or 1 (a task suite scored right/wrong),
    the score's mean is a share: its Wilson interval (cos.stats.share_ci over instances, seeds grouped), shifted by
    the mean 1/K. A bootstrap-t of the tied values it replaces gave [-0.15, 0.81] for 13 of 15 right at 1/K ≈ 0.3
    (Hall's fallback on two values), and no interval at all (every value equal) when all 15 were right, which a
    suite right 90% of the time shows in 0.9^15 = 21% of draws: the answer-90 control held in 9 of 50."""
    from cos.stats import Estimate, share_ci

    scores = {k: [r["score"] for r in rows if r["instance"] == k] for k in ids}
    offset = float(np.mean([np.mean([1.0 / r["candidates"] for r in rows if r["instance"] == k]) for k in ids]))
    if all(v in (0.0, 1.0) for vs in scores.values() for v in vs):
        e = share_ci(list(scores.values()))
        return Estimate(e.value - offset, e.ci_low - offset, e.ci_high - offset, e.n, e.confidence)
    above = [float(np.mean([r["score"] - 1.0 / r["candidates"] for r in rows if r["instance"] == k])) for k in ids]
    return bootstrap_ci(above)


class Bench(Claim):
    spec = ClaimSpec(
        id="bench.table1", title="VBVR-Bench score", paper_ref="Table 1",
        paper_value="overall 0.685 / ID 0.760 / OOD 0.610; ensemble 0.716 / 0.780 / 0.650",
        measured_quantity="score minus the random-candidate score (1/K), both splits pooled", threshold=0.0, direction=">",
        paper={"all": 0.685, "id": 0.760, "ood": 0.610, "ensemble/all": 0.716, "ensemble/id": 0.780,
               "ensemble/ood": 0.650, "Wan2.2-I2V-A14B/all": 0.371,
               **{f"id/{c}": v for c, v in zip(CATS, (0.724, 0.750, 0.782, 0.745, 0.833))},
               **{f"ood/{c}": v for c, v in zip(CATS, (0.768, 0.572, 0.547, 0.618, 0.615))},
               **{f"ensemble/id/{c}": v for c, v in zip(CATS, (0.760, 0.744, 0.809, 0.749, 0.858))},
               **{f"ensemble/ood/{c}": v for c, v in zip(CATS, (0.803, 0.705, 0.531, 0.639, 0.716))}},
        version=5, effect=0.1,
        effect_note="chosen: the paper's 0.685 is a VBVR-Bench score, not a score above the random candidate on this "
                    "suite; 0.1 above it")   # 3: with --cos-vbvr, VBVR-Bench scores against Table 1; 4: the task suite written as records;
                     # 5: a split scored right/wrong is decided on the Wilson interval of its share right
    Details = BenchDetails
    conditions = ("in-domain and out-of-domain separately: score − 1/K with a CI above 0",)

    def measure(self, ctx: RunContext, system, settings):
        from cos.vbvr_run import config_of, on_task_suite

        if config_of(settings) is not None:
            return self._measure_vbvr(ctx, system, settings, config_of(settings))
        return on_task_suite(ctx.measure_records(self, system, settings))

    def _measure_vbvr(self, ctx: RunContext, system, settings, cfg):
        from cos.stats import Estimate, in_window
        from cos.tasks.vbvr import scorer_status
        from cos.vbvr_eval import SampleScore, cluster_ci, report
        from cos.vbvr_run import TABLE1_TOLERANCE, baseline_scores, generate, scores

        if scorer_status():
            return self.skipped(f"--cos-vbvr given but {scorer_status()}", system, settings)
        folder = generate(ctx, system, settings, cfg)
        rows: list[SampleScore] = scores(ctx, cfg, folder)
        doc = report(rows, cfg.data, folder, generation=cfg.record(system))
        vals = lambda sp: [(0.0 if r.score is None else r.score, r.task) for r in rows if sp in ("all", r.split)]
        keys = {"all": "all", "In-Domain_50": "id", "Out-of-Domain_50": "ood"}
        est = {sp: cluster_ci(*zip(*vals(sp))) for sp in keys if len(vals(sp)) > 1}
        diff = {keys[sp]: Estimate(e.value - self.spec.paper[keys[sp]], e.ci_low - self.spec.paper[keys[sp]],
                                   e.ci_high - self.spec.paper[keys[sp]], e.n) for sp, e in est.items()}
        base = baseline_scores(cfg)
        d = BenchDetails(
            measured="VBVR-EvalKit task-specific score of the generated videos (cluster bootstrap over tasks)",
            score={keys[sp]: e.__dict__ for sp, e in est.items()},
            category={k: v["score"] for k, v in doc["by_category"].items()},
            benchmark=f"VBVR-Bench ({cfg.data})", vbvr=doc, paper_minus={k: [e.value, e.ci_low, e.ci_high]
                                                                         for k, e in diff.items()},
            baselines={k: {"overall": b["overall"]["score"], **{keys[s]: v["score"] for s, v in b["by_split"].items()}}
                       for k, b in base.items()})
        res = self.result(est["all"], system, settings, d)
        # the decision is agreement with Table 1 per split, not the task-suite rule of the spec
        st = {k: in_window(e, -TABLE1_TOLERANCE, TABLE1_TOLERANCE) for k, e in diff.items() if k != "all"}
        res.details.update(rule=f"holds when, in each split, the 95% CI of the VBVR-Bench score minus Table 1 lies "
                                f"within ±{TABLE1_TOLERANCE}; fails when it lies wholly outside", p_value=None)
        res.status = "fails" if "fails" in st.values() else "inconclusive" if "inconclusive" in st.values() else "holds"
        res.reason = "" if res.status == "holds" else "; ".join(
            f"{k} {diff[k].value + self.spec.paper[k]:.3f} vs Table 1 {self.spec.paper[k]:.3f}: {v}" for k, v in st.items())
        res.reason += (("; " if res.reason else "") + "baselines: " + ", ".join(
            f"{k} {v['overall']:.3f}" for k, v in d.baselines.items()))
        if doc["overall"]["errors"]:
            res.reason += f"; {doc['overall']['errors']} sample(s) the scorer failed on (scored 0)"
        return res

    def batch_settings(self, settings, **kw) -> list:
        """Both splits of the task suite: in-domain (the shared clean run) and out-of-domain."""
        return [replace(settings, split=split) for split in ("id", "ood")]

    def measure_batch(self, ctx: RunContext, system, settings, batch) -> list[dict]:
        """The final score of every row of one split's batch, with what the conclusion groups it by."""
        res = ctx.clean_run(system, settings, batch) if settings.split == "id" else \
            ctx.memo("final", system, settings, batch, lambda: ctx.run(system, settings, batch))
        return [{"instance": inst.id, "seed": seed, "split": inst.split, "category": inst.category,
                 "candidates": int(inst.candidates.shape[0]), "score": sc}
                for inst, seed, sc in zip(batch.instances, batch.seeds,
                                          final_scores(ctx, system, res, batch.instances))]

    def conclude(self, records: list[dict], system, settings):
        """The task-suite row (score − 1/K pooled, with the per-split condition) from the rows' scores."""
        # the in-domain rows first, then the out-of-domain ones, each in batch order (the units interleave them)
        rows = [r for sp in ("id", "ood") for r in records if r["split"] == sp]
        above = lambda r: r["score"] - 1.0 / r["candidates"]
        per = {}
        for r in rows:
            per.setdefault(r["instance"], []).append(above(r))
        est = _above_random_ci(rows, list(per))
        ci = lambda xs: bootstrap_ci(xs).__dict__ if len(xs) > 1 else None
        split = {}
        for sp in ("id", "ood"):
            ids = sorted({r["instance"] for r in rows if r["split"] == sp})
            vals = [np.mean([above(r) for r in rows if r["instance"] == k]) for k in ids]
            split[sp] = _above_random_ci(rows, ids) if len(vals) > 1 else None
        res = self.result(est, system, settings, BenchDetails(
            measured="score minus the random-candidate score (1/K), per instance, both splits",
            score={k: ci([r["score"] for r in rows if k == "all" or r["split"] == k]) for k in ("all", "id", "ood")},
            category={f"{sp}/{c}": float(np.mean([r["score"] for r in rows if r["split"] == sp and r["category"] == c]))
                      for sp in ("id", "ood") for c in sorted({r["category"] for r in rows})},
            random_candidate=float(np.mean([1 / r["candidates"] for r in rows])),
            above_random={sp: [e.value, e.ci_low, e.ci_high] if e else None for sp, e in split.items()}),
            samples={k: {"score_minus_random": v} for k, v in per.items()})
        st = [decide(e.ci_low, e.ci_high, 0.0, ">") if e is not None and e.decidable else "inconclusive"
              for e in split.values()]
        return also_requires(res, "fails" if "fails" in st else "inconclusive" if "inconclusive" in st else "holds",
                             "above the random candidate pooled, not in every split: " + ", ".join(
                                 f"{sp} {e}" for sp, e in split.items()), "per_split")

    def controls(self) -> list[Control]:
        # three tasks of different candidate counts K (grounding 3/4, pattern 3-5, rotation 4), 5 instances each
        # per split: 15 per split (at 3 each, 9 per split, the in-domain-only null held in 2 of 100 draws)
        suite = replace(TINY, tasks=("grounding", "pattern", "rotation"), instances=5)
        pick = lambda right: (lambda d: scripted("pick", suite.steps, right=right))
        return [Control("untrained", "negative", lambda d: random_organism(seed=d, num_layers=2),
                        replace(TINY, instances=3), "random weights score no better than a random candidate",
                        check=lambda r: r.measured < 0.05),
                Control("answer-90", "positive", pick(0.9), suite,
                        "scripted x̂0 (cos.models.scripted.pick): ends on the answer in 0.9 of the rows and on a "
                        "random wrong candidate otherwise (score 1 or 0), in both splits: 0.9 − 1/K above the random "
                        "candidate in each"),
                Control("in-domain-only", "negative", pick({"id": 0.9, "ood": None}), suite,
                        "right in 0.9 of the in-domain rows, a uniformly random candidate out of domain (exactly the "
                        "random-candidate score): the pooled score is above random, the per-split condition must "
                        "stop it", check=lambda r: r.details["conditions"]["per_split"] != "holds"),
                Control("answer-50", "sensitivity", pick(0.5), suite,
                        "right in half the rows, a random wrong candidate otherwise: 0.5 − 1/K (0.17-0.30) above "
                        "the random candidate in each split")]

    def figures(self, d: BenchDetails, fig_dir: Path, arrays) -> list:
        from cos.figures import bars

        a = {k: v for k, v in (d.above_random or {}).items() if v}
        if not a:
            return []
        s = d.score
        scores = "; ".join(f"{n} {s[n]['value']:.3g} [{s[n]['ci_low']:.3g}, {s[n]['ci_high']:.3g}]"
                           for n in ("all", "id", "ood") if s.get(n))
        cats = "; ".join(f"{k} {v:.2f}" for k, v in sorted((d.category or {}).items()))
        paper = ", ".join(f"{n} {self.spec.paper[n]:g}" for n in ("all", "id", "ood"))
        # the paper's numbers are VBVR-Bench scores, another quantity: in words here, never as bars to compare
        return [(bars(list(a), [v[0] for v in a.values()], [v[1:] for v in a.values()],
                      fig_dir / "bench-above-random.png", ylabel="score − 1/K", threshold=self.spec.threshold,
                      direction=">", title="task-suite score minus the random-candidate score, per split (95% CI)"),
                 f"Score above the random candidate ({d.random_candidate or 0:.2f}) pooled and per split: decided. "
                 f"Holds when the pooled CI and both splits' CIs lie wholly above 0. Task-suite scores: {scores}."
                 + (f" Per split and category (means, no interval): {cats}." if cats else "")
                 + f" The paper's Table 1 (VBVR-Bench, another benchmark, not comparable): {paper}.")]

    def cost(self, settings, system) -> int:
        from cos.vbvr_run import config_of

        cfg = config_of(settings)
        if cfg is not None:   # one row per VBVR-Bench sample (the sample count is what the folder holds)
            from cos.tasks.vbvr import sample_dirs

            return len(sample_dirs(cfg.data)) * cfg.steps
        return settings.rows * settings.steps   # the ood split

    def shared_runs(self, settings, system) -> dict[str, int]:
        from cos.vbvr_run import config_of

        return {} if config_of(settings) is not None else super().shared_runs(settings, system)   # VBVR: own runs

    def readouts(self, settings, system) -> dict[str, int]:
        from cos.vbvr_run import config_of

        if config_of(settings) is not None:
            return {}
        n = 2 * settings.rows
        return {"batch_decode": n, "score": n}


CLAIM = register(Bench())

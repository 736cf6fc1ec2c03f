"""Sec. 6: the training-free ensemble. Averaging the block outputs of 3 seeds over the middle layer window at
the first step raises the score (ensemble.mid_layers)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cos import claimkit as ck
from cos.interventions import EnsembleAverage
from cos.stats import bootstrap_ci, paired_difference_ci

WINDOWS = {"mid": (0.50, 0.75), "early": (0.0, 0.25), "all": (0.0, 1.0)}   # paper: 20-29, 0-9, 0-39 of 40
SEEDS = (0, 1, 2)
MIN_GAIN = 0.005   # score points; the paper's gain is 0.031


def window(depth: tuple[float, float], num_layers: int) -> list[int]:
    lo, hi = depth
    return list(range(int(round(lo * num_layers)), max(int(round(lo * num_layers)) + 1, int(round(hi * num_layers)))))


def measure_ensemble(system, settings, seeds=SEEDS):
    settings = replace(settings, seeds=tuple(seeds))
    per = {name: {} for name in ["baseline", *WINDOWS]}
    for batch in ck.batches(settings, ck.instances(settings)):
        ids = [inst.id for inst in batch.instances]
        group = [sorted(set(ids)).index(x) for x in ids]
        for name in per:
            ivs = [] if name == "baseline" else [EnsembleAverage(blocks=window(WINDOWS[name], system.num_layers),
                                                                 steps=[0], groups=group)]
            res = ck.run(system, settings, batch, interventions=ivs)
            for inst, v in zip(batch.instances, ck.videos(system, res.latents)):
                per[name].setdefault(inst.id, []).append(inst.score(v))
    mean = {name: [np.mean(v) for _, v in sorted(d.items())] for name, d in per.items()}
    est = paired_difference_ci(mean["mid"], mean["baseline"])
    details = {f"score_{k}": bootstrap_ci(v).__dict__ if len(v) > 1 else None for k, v in mean.items()}
    details["mid_minus_early"] = float(np.mean(mean["mid"]) - np.mean(mean["early"]))
    details["mid_minus_all"] = float(np.mean(mean["mid"]) - np.mean(mean["all"]))
    details["windows_blocks"] = {k: window(w, system.num_layers) for k, w in WINDOWS.items()}
    details["measured"] = "score with the mid-window ensemble minus without (paired per instance, 3 seeds)"
    res = ck.result("ensemble.mid_layers", est, MIN_GAIN, ">", system, settings, details)
    return ck.also_requires(res, min(details["mid_minus_early"], details["mid_minus_all"]) >= 0,
                            "the mid window beats the baseline but not the early or all-layer window")


@pytest.mark.claims
@pytest.mark.claim("ensemble.mid_layers")
def test_ensemble_mid_layers(cos_claim, cos_system, cos_settings):
    # 4 arms × 3 seeds: on the CPU tier one instance per task (8 instances, 24 rows per arm)
    n = cos_settings.instances // 4 if cos_settings.instances <= 4 else cos_settings.instances // 2
    cos_claim.report(measure_ensemble(cos_system, replace(cos_settings, instances=max(1, n))))

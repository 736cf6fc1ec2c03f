"""One task instance through the shared sampler with x̂0 recorded at every step: the decoded x̂0 per step and
its candidate distribution, drawn as a filmstrip (steps × frames) — the picture of Fig. 1-2 for any model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cos.runner import RunContext, videos
from cos.settings import ClaimSettings, settings_for
from cos.models.system import WanSystem
from cos.tasks import make_instance


@dataclass
class Trace:
    task: str
    instance: int
    seed: int
    sigmas: list[float]
    x0: np.ndarray          # (steps, F, H, W, 3) in [0, 1]
    weights: np.ndarray     # (steps, K): candidate mixture of each step's x̂0, the answer first
    final_score: float

    def draw(self, path: str | Path, every: int = 1) -> Path:
        from cos.figures import filmstrip

        rows = list(range(0, len(self.sigmas), every))
        if rows[-1] != len(self.sigmas) - 1:
            rows.append(len(self.sigmas) - 1)
        labels = [f"step {s} σ={self.sigmas[s]:.2f}" for s in rows]
        k = self.weights.shape[1]
        return filmstrip(self.x0[rows], path, row_labels=labels, weights=self.weights[rows],
                         candidate_labels=["ans"] + [f"c{i}" for i in range(1, k)],
                         title=f"{self.task} #{self.instance} seed {self.seed}: decoded x̂0 per step "
                               f"(final score {self.final_score:.2f})")


@torch.no_grad()
def trace(system: WanSystem, task: str, instance: int = 0, seed: int = 0, split: str = "id",
          settings: ClaimSettings | None = None) -> Trace:
    """Sample one (instance, seed) with x̂0 recorded at every step, at the model's default settings."""
    settings = settings or settings_for(system, "cpu")
    inst = make_instance(task, instance, settings.num_frames, split)
    ctx = RunContext(progress=False)
    batch = next(ctx.batches(settings, [inst]))
    batch.seeds = [seed]
    batch.instances = [inst]
    res = ctx.run(system, settings, batch, record=("x0",))
    frames, weights = [], []
    order = [inst.answer] + [k for k in range(inst.candidates.shape[0]) if k != inst.answer]
    for s in range(len(res.steps)):
        v = videos(system, res["x0"][s][:1], clamp=False)[0]          # (F, 3, H, W)
        weights.append(inst.candidate_weights(v).numpy()[order])
        frames.append(v.clamp(0, 1).permute(0, 2, 3, 1).numpy())
    final = videos(system, res.latents[:1])[0]
    return Trace(task, instance, seed, [float(x) for x in res.sigmas], np.stack(frames), np.stack(weights),
                 inst.score(final))

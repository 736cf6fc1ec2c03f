"""Tasks meet the sampler: conditionings for batches of (instance, seed), decoding and scoring."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from cos.models.system import WanSystem
from cos.sampler import Conditioning
from cos.tasks import TaskInstance


@dataclass
class TaskBatch:
    """Rows of one sampler batch: row i is (instances[i], seeds[i])."""

    instances: list[TaskInstance]
    seeds: list[int]
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return self.instances[0].num_frames


def make_batch(instances: Sequence[TaskInstance], seeds: Sequence[int], height: int, width: int) -> TaskBatch:
    """Every instance × every seed, instance-major."""
    frames = {i.num_frames for i in instances}
    if len(frames) != 1:
        raise ValueError(f"one batch needs one frame count, got {sorted(frames)}")
    rows = [(i, s) for i in instances for s in seeds]
    return TaskBatch([r[0] for r in rows], [int(r[1]) for r in rows], height, width)


def conditioning(batch: TaskBatch, encode_prompt: Callable[[list[str]], torch.Tensor] | None,
                 text_dim: int = 32, negative: bool = False) -> Conditioning:
    """First frames in [-1, 1], prompt embeddings (zeros when the model has no prompt encoder)."""
    images = torch.stack([i.first_frame(batch.height, batch.width) for i in batch.instances]) * 2 - 1
    prompts = [i.prompt for i in batch.instances]
    pe = encode_prompt(prompts) if encode_prompt else torch.zeros(len(prompts), 1, text_dim)
    # a row may carry its own negative prompt (a VBVR-Bench sample: Wan2.2's); the task suite's is empty
    neg = [getattr(i, "negative_prompt", "") for i in batch.instances]
    npe = (encode_prompt(neg) if encode_prompt else torch.zeros_like(pe)) if negative else None
    return Conditioning(image=images, prompt_embeds=pe, num_frames=batch.num_frames, negative_prompt_embeds=npe)


def candidate_latents(batch: TaskBatch, system: WanSystem) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, C, F', h, w) candidate videos of each row encoded to latents, and a (B, K) mask of real ones
    (rows with fewer candidates are padded with copies of their answer, masked out)."""
    k = max(i.candidates.shape[0] for i in batch.instances)
    rows, valid = [], torch.zeros(len(batch.instances), k, dtype=torch.bool)
    for r, inst in enumerate(batch.instances):
        vids = inst.render_candidates(batch.height, batch.width) * 2 - 1          # (K, F, 3, H, W)
        valid[r, : len(vids)] = True
        vids = torch.cat([vids, vids[inst.answer:inst.answer + 1].expand(k - len(vids), -1, -1, -1, -1)])
        rows.append(system.vae.encode(vids.permute(0, 2, 1, 3, 4)))
    return torch.stack(rows), valid


def decode(system: WanSystem, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Latents (B, C, F', h, w) → videos (B, F, 3, H, W) in [0, 1] (unclamped with clamp=False)."""
    v = (system.vae.decode(latents).cpu() + 1) / 2      # a real VAE decodes on its GPU; scoring is on the CPU
    return (v.clamp(0, 1) if clamp else v).permute(0, 2, 1, 3, 4)


def scores(batch: TaskBatch, videos: torch.Tensor) -> list[float]:
    return [inst.score(v) for inst, v in zip(batch.instances, videos)]

"""Noise perturbations of the latent trajectory (paper Sec. 3.2, Fig. 3a)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention


@dataclass
class NoiseAtStep(Intervention):
    """"Noise at step": every frame of x_s ← N(0, I) at one denoising step."""

    step: int

    @property
    def first_step(self) -> int:  # type: ignore[override]
        return self.step

    def before_forward(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        if ctx.step != self.step:
            return latents
        return ctx.sample_noise(("noise_at_step", self.step), tuple(latents.shape[1:]), latents.device).to(latents.dtype)


@dataclass
class NoiseAtFrame(Intervention):
    """"Noise at frame": one latent frame ← N(0, I) before every denoising step (fresh noise each step)."""

    frame: int
    first_step: int = 0

    def before_forward(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        n_frames = latents.shape[2]
        f = self.frame + n_frames if self.frame < 0 else self.frame
        if not 0 <= f < n_frames:
            raise ValueError(f"NoiseAtFrame(frame={self.frame}): the latent has {n_frames} frames")
        shape = (latents.shape[1],) + tuple(latents.shape[3:])
        out = latents.clone()
        out[:, :, f] = ctx.sample_noise(("noise_at_frame", f, ctx.step), shape, latents.device).to(latents.dtype)
        return out

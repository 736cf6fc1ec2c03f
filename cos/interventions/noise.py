"""Noise perturbations of the latent trajectory (paper Sec. 3.2, Fig. 3a), in the readings the paper's two
formulas admit: "noise at step" literal (`NoiseAtStep`: x_s ← N(0, I)) or re-noised to the step's own level
(`RenoiseAtStep`: x_s ← (1 − σ_s)·x̂0 + σ_s·ε), and "noise at frame" seen by the model only (`NoiseAtFrame`) or
written into the trajectory state (`NoiseAtFrame(into_state=True)`). `NoiseAtStep(0)` is a reseed."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention


@dataclass
class _AtStep(Intervention):
    """A replacement of the whole trajectory state at one step (`_state`). Returning a new tensor makes the
    sampler restart a multistep solver's history there, so the trajectory continues from the new x_s alone."""

    step: int

    @property
    def first_step(self) -> int:  # type: ignore[override]
        return self.step

    def before_forward(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return latents if ctx.step != self.step else self._state(ctx, latents).to(latents.dtype)

    def _state(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class NoiseAtStep(_AtStep):
    """"Noise at step": every frame of x_s ← N(0, I) at one denoising step.

    The noise replaces the trajectory state, so the sampler restarts the scheduler's history at this step: the
    trajectory continues from the injected x_s alone, whatever the solver, as with the first-order
    flow-matching Euler sampler the paper's model was run with (DiffSynth). Without the restart UniPC's
    corrector rebuilds x_s from the clean prefix and the injection survives only through the model's
    prediction on the noised input. The noise is seeded per sample by (seed, step).
    """

    def _state(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return ctx.sample_noise(("noise_at_step", self.step), tuple(latents.shape[1:]), latents.device)


@dataclass
class RenoiseAtStep(_AtStep):
    """"Noise at step" re-noised to the step's own level: x_s ← (1 − σ_s)·x̂0 + σ_s·ε at one step, where x̂0 is
    the model's last estimate of the clean video (the previous step's x̂0, `StepContext.prev_x0`) and ε fresh
    N(0, I) seeded per sample by (seed, step).

    Flow matching's x_s = (1 − σ_s)·x_0 + σ_s·x_1: this keeps what the trajectory has committed to x̂0 and
    replaces only its noise, at the scale the model expects at step s. The literal x_s ← N(0, I) is off the
    model's input distribution at every σ_s < 1 and cannot be denoised in the steps left late in the schedule,
    so its late injections hurt any model; the re-noised state can be recovered from where the model had
    committed, and is lost only where the decision still rode on the noise. The history restarts as for
    `NoiseAtStep` (the state is replaced).
    """

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"RenoiseAtStep(step={self.step}): needs a previous step's x̂0 (step >= 1)")

    def _state(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        if ctx.prev_x0 is None:
            raise ValueError(f"RenoiseAtStep(step={self.step}): the sampler passed no previous x̂0")
        eps = ctx.sample_noise(("renoise_at_step", self.step), tuple(latents.shape[1:]), latents.device)
        return (1 - ctx.sigma) * ctx.prev_x0.to(latents.device) + ctx.sigma * eps


@dataclass
class NoiseAtFrame(Intervention):
    """"Noise at frame": what the model sees of one latent frame ← N(0, I) at every step but the last (fresh
    noise each step).

    Reading of the paper's x_{∀s,f} ← N(0, I) implemented here: the noise corrupts the model's *observation*
    of frame f at every denoising step but the last, and it is not written into the trajectory
    state and does not enter the scheduler's history (no restart). The scheduler steps the un-noised x_s with
    the velocity the model predicted from the corrupted input, so frame f's state moves only as the model,
    seeing the other frames through bidirectional attention, predicts it: the "recovery from neighbouring
    frames" the paper invokes. Writing the noise into the state instead would be undone by no later step:
    with injection at every step the returned latent frame is the last step's noise minus σ_last·v (its
    correlation with that noise was 0.95 under UniPC and 1.00 under Euler on the tiny test model), i.e. the
    video would contain the noise itself rather than the model's answer to it. The last step is spared for
    the same reason: there x_0 = x_s − σ·v, and a velocity predicted from a noised input carries that input
    into x_0 (for a model whose x̂0 ignores its input, v = (x' − x̂0)/σ returns x̂0 + (x_s − x'): the noise
    itself). At the last step the model sees the state it produced, so the returned frame is its answer.
    Noise is seeded per sample by (seed, frame, step).

    The second reading, `into_state=True`, writes the noise into the trajectory state instead (x_s's frame f ←
    N(0, I) at every step but the last, the solver's history restarted each time, as for any replaced state):
    the paper's x_{∀s,f} ← N(0, I) taken literally. It is reported beside the model-input reading, not decided
    on: the frame the video returns is then mostly the noise itself (see above), and since the state is replaced
    at every step, a multistep solver (UniPC) runs first-order for the whole video from then on: a second confound
    of this reading.
    """

    frame: int
    first_step: int = 0
    into_state: bool = False

    def before_forward(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return self._noised(ctx, latents) if self.into_state else latents

    def model_input(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.into_state else self._noised(ctx, latents)

    def _noised(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        if ctx.step == ctx.num_steps - 1:
            return latents
        n_frames = latents.shape[2]
        f = self.frame + n_frames if self.frame < 0 else self.frame
        if not 0 <= f < n_frames:
            raise ValueError(f"NoiseAtFrame(frame={self.frame}): the latent has {n_frames} frames")
        shape = (latents.shape[1],) + tuple(latents.shape[3:])
        out = latents.clone()
        out[:, :, f] = ctx.sample_noise(("noise_at_frame", f, ctx.step), shape, latents.device).to(latents.dtype)
        return out

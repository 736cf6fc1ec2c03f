"""The closed-form reference denoiser: exact flow-matching velocity for a finite set of candidate videos.

With data x0 ∈ {c_k} (prior weights π_k) and x_s = (1−s)·x0 + s·ε, the posterior over k given x_s is
softmax_k(log π_k − ‖x_s − (1−s)c_k‖² / (2s²)), E[x0 | x_s] = Σ_k w_k c_k, and v = (x_s − x̂0)/s.
Its x̂0 superposes the candidates early and commits late, analytically. The per-frame-independent variant
takes the posterior of each latent frame on its own, so no frame can repair another (a negative control).

It quacks like a `WanTransformer3DModel` for the shared sampler (no blocks, so block interventions see
nothing). s is read from the timestep as t/1000: exact with `FlowMatchEulerDiscreteScheduler` (float
timesteps), within 0.001 with UniPC (which rounds timesteps to integers).
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch


class ClosedFormModel(torch.nn.Module):
    """What the shared sampler and `HookSession` need of a transformer, for the models computed in closed form
    here and in cos/models/planted.py and scripted.py: a Wan-like config (x_s, mask and condition in, velocity
    out), float32, no cache, and the noise level s = t / T of a timestep."""

    def __init__(self, channels: int = 3, patch_size: tuple[int, int, int] = (1, 1, 1),
                 num_train_timesteps: int = 1000):
        super().__init__()
        self.channels, self.T = channels, num_train_timesteps
        self.config = SimpleNamespace(patch_size=patch_size, in_channels=2 * channels + 1, out_channels=channels)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def cache_context(self, name: str):
        return contextlib.nullcontext()

    def level(self, timestep: torch.Tensor) -> torch.Tensor:
        """s = t / T per row, float64, kept off 0 (the velocity divides by it)."""
        return (timestep.to(torch.float64) / self.T).clamp_min(1e-6)


class ReferenceDenoiser(ClosedFormModel):
    def __init__(self, channels: int = 3, per_frame: bool = False, patch_size: tuple[int, int, int] = (1, 1, 1),
                 num_train_timesteps: int = 1000):
        super().__init__(channels, patch_size, num_train_timesteps)
        self.per_frame = per_frame
        self.blocks = torch.nn.ModuleList()
        self.patch_embedding = torch.nn.Identity()
        self._anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # gives the module a device
        self.candidates: torch.Tensor | None = None
        self.log_prior: torch.Tensor | None = None
        self.history: list[torch.Tensor] = []   # posterior of every forward since set_candidates

    def set_candidates(self, candidates: torch.Tensor, weights: torch.Tensor | None = None) -> "ReferenceDenoiser":
        """candidates (B, K, C, F, H, W) in latent space; weights (B, K) prior (uniform if None)."""
        if candidates.dim() != 6 or candidates.shape[2] != self.channels:
            raise ValueError(f"candidates: expected (B, K, {self.channels}, F, H, W), got {tuple(candidates.shape)}")
        b, k = candidates.shape[:2]
        w = torch.full((b, k), 1.0 / k) if weights is None else weights.to(torch.float64)
        if w.shape != (b, k) or (w < 0).any():
            raise ValueError(f"weights: expected non-negative (B, K) = {(b, k)}, got {tuple(w.shape)}")
        self.candidates = candidates.to(self._anchor.device, torch.float32)
        self.log_prior = torch.log(w / w.sum(1, keepdim=True)).to(self._anchor.device)
        self.history = []
        return self

    def posterior(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """(B, K) or, per frame, (B, K, F) posterior weights of the candidates given x_s."""
        c = self._rows(x.shape[0])
        lp = self._rows_prior(x.shape[0])
        scaled = (1 - s).view(-1, 1, 1, 1, 1, 1) * c
        sq = (x[:, None].double() - scaled.double()).pow(2)             # (B, K, C, F, H, W)
        sq = sq.sum(dim=(2, 4, 5)) if self.per_frame else sq.sum(dim=(2, 3, 4, 5))
        s2 = (2 * s.double() ** 2).view(-1, *([1] * (sq.dim() - 1)))
        logits = (lp.view(*lp.shape, *([1] * (sq.dim() - 2))) - sq / s2)
        return torch.softmax(logits, dim=1)

    def _rows(self, b: int) -> torch.Tensor:
        if self.candidates is None:
            raise RuntimeError("ReferenceDenoiser: call set_candidates(...) before sampling")
        n = self.candidates.shape[0]
        if b % n:
            raise ValueError(f"ReferenceDenoiser: batch of {b} rows for {n} candidate sets")
        return self.candidates.repeat(b // n, 1, 1, 1, 1, 1)   # batched CFG doubles the batch

    def _rows_prior(self, b: int) -> torch.Tensor:
        return self.log_prior.repeat(b // self.log_prior.shape[0], 1)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states=None,
                encoder_hidden_states_image=None, attention_kwargs=None, return_dict: bool = False):
        x = hidden_states[:, : self.channels].float()
        s = self.level(timestep)
        w = self.posterior(x, s)
        self.history.append(w.detach().cpu())
        c = self._rows(x.shape[0]).double()
        if self.per_frame:
            x0 = torch.einsum("bkf,bkcfhw->bcfhw", w, c)
        else:
            x0 = torch.einsum("bk,bkcfhw->bcfhw", w, c)
        v = (x.double() - x0) / s.view(-1, 1, 1, 1, 1)
        return (v.float(),)


PRIORS = ("uniform", "oracle")


def bind_candidates(prior: str = "uniform"):
    """A `WanSystem.batch_binder` giving the reference denoiser each batch's candidate set. `uniform`: every
    real candidate equally likely; `oracle`: all mass on the right answer (committed from step 0)."""
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r}: expected one of {PRIORS}")

    def bind(system, batch) -> None:
        from cos.taskrun import candidate_latents

        cands, valid = candidate_latents(batch, system)
        weights = valid.double()
        if prior == "oracle":
            weights = torch.zeros_like(weights)
            weights[torch.arange(len(batch.instances)), [i.answer for i in batch.instances]] = 1.0
        system.transformer.set_candidates(cands, weights)
    return bind


def reference_system(channels: int = 3, per_frame: bool = False, shift: float = 3.0, prior: str = "uniform"):
    """A pixel-space `WanSystem` driven by the reference denoiser and the Euler flow scheduler."""
    from cos.models.system import IdentityVAE, WanSystem
    from cos.models.tiny import euler

    name = ("reference-per-frame" if per_frame else "reference") + ("" if prior == "uniform" else f"-{prior}")
    return WanSystem(transformer=ReferenceDenoiser(channels, per_frame), scheduler=euler(shift), vae=IdentityVAE(channels),
                     name=name, batch_binder=bind_candidates(prior))

"""`WanSystem`: the components the shared sampler drives, with a uniform latent-space VAE interface."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import torch

# annotations only (typing.get_type_hints needs diffusers' names in scope): a session that loads no model (a toy
# claim, `cos report`) skips diffusers' import
if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel


class LatentCodec(Protocol):
    """What the sampler needs from a VAE: normalized latents in, pixels out."""

    z_dim: int
    scale_temporal: int
    scale_spatial: int

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class WanVAE:
    """`AutoencoderKLWan` with the (z - mean) / std normalization exactly as `WanImageToVideoPipeline` applies it."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae = vae
        # AutoencoderKLWan keeps its causal feature cache on the module for the length of one call: two threads
        # (--cos-overlap's readouts beside the sampling) must not decode through it at once
        self._lock = threading.Lock()
        self.z_dim = vae.config.z_dim
        self.scale_temporal = vae.config.scale_factor_temporal
        self.scale_spatial = vae.config.scale_factor_spatial

    def _stats(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.vae.config.latents_mean).view(1, self.z_dim, 1, 1, 1).to(ref.device, ref.dtype)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, self.z_dim, 1, 1, 1).to(ref.device, ref.dtype)
        return mean, inv_std

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] → normalized latents (B, z, F', H/s, W/s) in float32."""
        dev = next(self.vae.parameters()).device
        with self._lock:
            lat = self.vae.encode(video.to(dev, self.vae.dtype)).latent_dist.mode()  # the pipeline's "argmax"
        lat = lat.to(video.device, torch.float32)
        mean, inv_std = self._stats(lat)
        return (lat - mean) * inv_std

    @torch.no_grad()   # AutoencoderKLWan.decode keeps the graph otherwise; claims read the pixels as numpy
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents → video (B, 3, F, H, W) in [-1, 1]."""
        dev = next(self.vae.parameters()).device
        lat = latents.to(dev, self.vae.dtype)
        mean, inv_std = self._stats(lat)
        with self._lock:
            return self.vae.decode(lat / inv_std + mean, return_dict=False)[0].float()


class IdentityVAE:
    """Pixel space as latent space (the model organism): no compression, no normalization."""

    def __init__(self, channels: int = 3):
        self.z_dim = channels
        self.scale_temporal = 1
        self.scale_spatial = 1

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.float()


def _parameter_hash(modules: list) -> str:
    """For systems built in memory (no weight files): the bytes of every parameter and buffer."""
    h = hashlib.sha256()
    for m in modules:
        if not isinstance(m, torch.nn.Module):
            h.update(repr(m).encode())
            continue
        for name, t in m.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


@dataclass
class WanSystem:
    """One or two Wan experts, their scheduler, a latent codec and an optional prompt encoder.

    As in `WanImageToVideoPipeline`: the first expert handles timesteps t >= boundary_ratio * T,
    the second the rest; with no second expert the first handles every step.
    """

    transformer: WanTransformer3DModel
    scheduler: object
    vae: LatentCodec
    transformer_2: WanTransformer3DModel | None = None
    boundary_ratio: float | None = None
    encode_prompt: Callable[[list[str]], torch.Tensor] | None = None
    name: str = "unnamed"
    path: str | None = None
    weights_hash: str | None = None
    extra: dict = field(default_factory=dict)
    offload: bool = False          # experts wait on the CPU; the one in use is moved to `execution_device`
    execution_device: str | None = None
    # a model that must see each batch before sampling it (a reference denoiser's candidate set): called as
    # batch_binder(system, batch) by the runner; None for every real model
    batch_binder: Callable[["WanSystem", object], None] | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)   # (content hash, weight) applied to the experts

    @property
    def fingerprint(self) -> str:
        """Identity of every trajectory this system can produce: weights by content, LoRAs by content and weight,
        scheduler class and config (flow shift included), expert boundary and dtype. Key stored results by it."""
        cfg = {k: v for k, v in dict(getattr(self.scheduler, "config", None) or {}).items() if not k.startswith("_")}
        desc = {"weights": self.weights_hash or _parameter_hash(self.experts),
                "scheduler": type(self.scheduler).__name__, "scheduler_config": cfg,
                "boundary_ratio": self.boundary_ratio, "dtype": str(getattr(self.transformer, "dtype", None)),
                "loras": [[h, float(w)] for h, w in self.loras]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=repr).encode()).hexdigest()[:32]

    def __post_init__(self) -> None:
        if self.transformer_2 is not None and self.boundary_ratio is None:
            raise ValueError(f"{self.name}: two experts need a boundary_ratio")

    @property
    def experts(self) -> list[WanTransformer3DModel]:
        return [m for m in (self.transformer, self.transformer_2) if m is not None]

    @property
    def num_layers(self) -> int:
        return len(self.transformer.blocks)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        if self.offload and self.execution_device:
            return torch.device(self.execution_device)
        return next(self.transformer.parameters()).device

    def activate(self, expert: int) -> None:
        """With offload, put `expert` on the execution device and every other expert back on the CPU (two
        A14B experts in bf16 need ~57 GB; one fits beside the activations of an 81-frame 480p video)."""
        if not self.offload:
            return
        for i, m in enumerate(self.experts):
            if i != expert and next(m.parameters()).device.type != "cpu":
                m.to("cpu")
        m = self.experts[expert]
        if next(m.parameters()).device != self.device:
            m.to(self.device)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(self.transformer.config.patch_size)

    def expert_for(self, t: torch.Tensor) -> int:
        """Index of the expert the pipeline would use at timestep t."""
        if self.transformer_2 is None or self.boundary_ratio is None:
            return 0
        boundary = self.boundary_ratio * self.scheduler.config.num_train_timesteps
        return 0 if t >= boundary else 1

    def to(self, device: torch.device | str) -> "WanSystem":
        for m in self.experts:
            m.to(device)
        if isinstance(self.vae, WanVAE):
            self.vae.vae.to(device)
        return self

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        st, ss = self.vae.scale_temporal, self.vae.scale_spatial
        return (batch, self.vae.z_dim, (num_frames - 1) // st + 1, height // ss, width // ss)

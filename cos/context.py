"""`StepContext`: what interventions and hooks may know about the forward pass they are in."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


def mix_seed(seed: int, *tag: object) -> int:
    """A stable 63-bit seed derived from a sample seed and a tag (independent of batch layout)."""
    h = hashlib.blake2b(repr((int(seed),) + tag).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class StepContext:
    """Where the sampler is: step, timestep, sigma, expert, and which batch rows belong to which CFG pass.

    `passes` maps "cond"/"uncond" to the rows of the current forward's batch that carry that pass;
    a separate-pass forward holds one key, a batched cond+uncond forward holds both.
    `block_input` is the residual stream entering the block whose `on_block` hooks are running (None
    elsewhere), so that hooks can read or patch a block's own update, output − input. `prev_x0` is the previous
    step's x̂0 (None at step 0).
    """

    step: int
    num_steps: int
    t: torch.Tensor
    sigma: float
    expert: int
    seeds: list[int]
    passes: dict[str, slice] = field(default_factory=dict)
    grid: tuple[int, int, int] | None = None
    block_input: torch.Tensor | None = None
    # x̂0 = x_s − σ_s·v of the previous step's forward (float32, (B, C, F, H, W)); None at the first step of a
    # trajectory. What `RenoiseAtStep` re-noises: the model's last estimate of the clean video before step s
    prev_x0: torch.Tensor | None = None

    @property
    def fraction(self) -> float:
        """Position in the schedule in [0, 1)."""
        return self.step / self.num_steps

    def rows(self, cfg_pass: str) -> list[slice]:
        """Row slices of the current forward for `cfg_pass` ("cond", "uncond" or "both")."""
        if cfg_pass == "both":
            return list(self.passes.values())
        return [self.passes[cfg_pass]] if cfg_pass in self.passes else []

    def sample_noise(self, tag: tuple, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """N(0, I) of `shape` per sample, seeded by (sample seed, tag): identical across batching and forks."""
        out = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(mix_seed(s, *tag))) for s in self.seeds]
        return torch.stack(out).to(device)

"""The intervention protocol: data that says what to change or record, applied by the sampler."""
from __future__ import annotations

from typing import Iterable

import torch

from cos.context import StepContext

CFG_PASSES = ("cond", "uncond", "both")


class Intervention:
    """Base class. Override only the hooks you need; the sampler calls them at the right moments.

    - `hooked_blocks(num_layers)`: block indices whose outputs `on_block` must see.
    - `before_forward(ctx, latents)`: may replace the trajectory state x_s (float32, (B, C, F, H, W)). Returning
      a different object than `latents` means "x_s is now this": the sampler continues the trajectory from it
      and restarts a multistep solver's history at this step (see `cos.sampler.restart_history`). Return
      `latents` itself to leave the state alone.
    - `model_input(ctx, latents)`: may change what the forward sees of x_s without touching the state
      (the scheduler still steps the state, with the velocity computed on this input).
    - `on_block(ctx, block, hidden)`: may return a replacement for a block output (B_fwd, N, D);
      `ctx.block_input` holds the block's input there, so `hidden - ctx.block_input` is its update.
    - `first_step`: the earliest step this intervention changes anything (prefix sharing relies on it).
    - `close()`: move results off the device once sampling ends.
    """

    first_step: int = 0
    modifies: bool = True

    def hooked_blocks(self, num_layers: int) -> Iterable[int]:
        return ()

    def before_forward(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def model_input(self, ctx: StepContext, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> torch.Tensor | None:
        return None

    def close(self) -> None:
        pass


def check_pass(cfg_pass: str) -> str:
    if cfg_pass not in CFG_PASSES:
        raise ValueError(f"cfg_pass={cfg_pass!r}: expected one of {CFG_PASSES}")
    return cfg_pass


def resolve_blocks(blocks: Iterable[int] | str, num_layers: int) -> list[int]:
    """Block indices; "all" means every block; negative indices count from the end."""
    if blocks == "all":
        return list(range(num_layers))
    out = []
    for b in blocks:
        k = b + num_layers if b < 0 else b
        if not 0 <= k < num_layers:
            raise ValueError(f"block {b} out of range for a model with {num_layers} blocks")
        out.append(k)
    return out

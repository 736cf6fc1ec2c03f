"""Capturing block outputs or block updates (vision tokens) reshaped onto the (f, h, w) token grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention, check_pass, resolve_blocks
from cos.metrics import token_energy

REDUCTIONS = ("none", "energy")
WHAT = ("output", "update")


def tag(x: torch.Tensor, what: str) -> torch.Tensor:
    """Mark a captured tensor with what it holds, so that `SwapBlock` can refuse an output where it needs an
    update (the two have the same shape). The mark is a plain attribute: slicing or `.to()` drops it."""
    x.cos_what = what
    return x


@dataclass
class CaptureBlocks(Intervention):
    """Record the output of chosen blocks at chosen steps for one CFG pass.

    `what="output"` records the block output (the residual stream after the block); `what="update"` records
    the block's own contribution, output − input (what `SwapBlock` swaps by default).
    `reduce="none"` keeps (B, f, h, w, D); `reduce="energy"` keeps the per-token L2 norm (B, f, h, w),
    computed on the device so that capturing every block stays cheap. Results stay on the device
    during sampling and move to `device` when the session closes. Read them with `capture[step, block]`.
    """

    blocks: Iterable[int] | str = "all"
    steps: Iterable[int] | None = None
    cfg_pass: str = "cond"
    reduce: str = "none"
    device: str | torch.device = "cpu"
    what: str = "output"
    store: dict = field(default_factory=dict, repr=False)
    first_step: int = 10**9
    modifies: bool = False

    def __post_init__(self) -> None:
        check_pass(self.cfg_pass)
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce={self.reduce!r}: expected one of {REDUCTIONS}")
        if self.what not in WHAT:
            raise ValueError(f"what={self.what!r}: expected one of {WHAT}")
        self._steps = None if self.steps is None else set(self.steps)

    def hooked_blocks(self, num_layers: int) -> list[int]:
        return resolve_blocks(self.blocks, num_layers)

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> None:
        if self._steps is not None and ctx.step not in self._steps:
            return None
        f, h, w = ctx.grid
        if self.what == "update":
            # in float32: output − input of two bf16 streams is exact there, not in bf16
            hidden = hidden.float() - ctx.block_input.float()
        for name in (["cond", "uncond"] if self.cfg_pass == "both" else [self.cfg_pass]):
            for rows in ctx.rows(name):
                x = hidden[rows].detach().reshape(-1, f, h, w, hidden.shape[-1])
                self.store[(ctx.step, block, name)] = tag(token_energy(x) if self.reduce == "energy" else x.clone(),
                                                          self.what)
        return None

    def close(self) -> None:
        self.fill(self.store)

    def fill(self, captured: dict) -> None:
        """Hold `captured` ((step, block, pass) -> tensor) as what this capture saw: on `device`, marked with what
        it holds, and read-only from here (a store key naming this capture hashes each tensor once:
        `cos.store.freeze`). At the session's close, and when a stored run hands its captures back."""
        from cos.store import freeze

        self.store = {k: tag(v.to(self.device), self.what) for k, v in captured.items()}
        freeze(*self.store.values())

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        step, block = key
        return self.get(step, block)

    def get(self, step: int, block: int, cfg_pass: str = "cond") -> torch.Tensor:
        try:
            return self.store[(step, block, cfg_pass)]
        except KeyError:
            raise KeyError(f"nothing captured at step {step}, block {block}, pass {cfg_pass!r}") from None

    def captured(self) -> list[tuple[int, int, str]]:
        return sorted(self.store)

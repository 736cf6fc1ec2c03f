"""Activation patching on block outputs: layer swap (Sec. 5.2) and the multi-seed ensemble (Sec. 6)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention, check_pass, resolve_blocks


@dataclass
class SwapBlock(Intervention):
    """Replace the vision tokens output by one block with tokens from another run.

    `source` is (B|1, f, h, w, D) or (B|1, N, D), or a mapping step → such a tensor.
    """

    block: int
    source: torch.Tensor | Mapping[int, torch.Tensor]
    steps: Iterable[int] = (0,)
    cfg_pass: str = "cond"

    def __post_init__(self) -> None:
        check_pass(self.cfg_pass)
        self._steps = set(self.steps)
        self.first_step = min(self._steps)

    def hooked_blocks(self, num_layers: int) -> list[int]:
        return resolve_blocks([self.block], num_layers)

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if ctx.step not in self._steps:
            return None
        src = self.source[ctx.step] if isinstance(self.source, Mapping) else self.source
        src = src.reshape(src.shape[0], -1, src.shape[-1]).to(hidden.device, hidden.dtype)
        out = hidden.clone()
        for rows in ctx.rows(self.cfg_pass):
            n = rows.stop - rows.start
            if src.shape[0] not in (1, n) or src.shape[1:] != hidden.shape[1:]:
                raise ValueError(f"SwapBlock(block={self.block}): source {tuple(src.shape)} does not fit block output "
                                 f"{(n,) + tuple(hidden.shape[1:])}")
            out[rows] = src.expand(n, -1, -1)
        return out


@dataclass
class EnsembleAverage(Intervention):
    """Average block outputs across the seeds of a group over a layer window at chosen steps.

    `groups[i]` names the group of batch row i (e.g. the task instance); None puts every row in one group.
    """

    blocks: Iterable[int] | str
    steps: Iterable[int] = (0,)
    groups: list[int] | None = None
    cfg_pass: str = "both"

    def __post_init__(self) -> None:
        check_pass(self.cfg_pass)
        self._steps = set(self.steps)
        self.first_step = min(self._steps)

    def hooked_blocks(self, num_layers: int) -> list[int]:
        return resolve_blocks(self.blocks, num_layers)

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if ctx.step not in self._steps:
            return None
        out = hidden.clone()
        for rows in ctx.rows(self.cfg_pass):
            h = hidden[rows]
            g = torch.zeros(h.shape[0], dtype=torch.long) if self.groups is None else torch.as_tensor(self.groups)
            if g.numel() != h.shape[0]:
                raise ValueError(f"EnsembleAverage: {g.numel()} group labels for a batch of {h.shape[0]}")
            _, idx = torch.unique(g, return_inverse=True)
            idx = idx.to(h.device)
            sums = torch.zeros((int(idx.max()) + 1,) + h.shape[1:], dtype=torch.float32, device=h.device)
            sums.index_add_(0, idx, h.float())
            counts = torch.bincount(idx).to(torch.float32).view(-1, *([1] * (h.dim() - 1)))
            out[rows] = (sums / counts)[idx].to(h.dtype)
        return out

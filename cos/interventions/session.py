"""`HookSession`: registers the forward hooks interventions need and always removes them (TransformerLens style)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention


class HookSession:
    """Context manager: hooks on the blocks the interventions ask for, and on `patch_embedding` for the grid."""

    def __init__(self, experts: Sequence[torch.nn.Module], interventions: Sequence[Intervention],
                 context: Callable[[], StepContext]):
        self.experts, self.interventions, self.context = list(experts), list(interventions), context
        self.handles: list = []

    def _block_hook(self, block: int, users: list[Intervention]):
        def hook(module, args, output):
            ctx = self.context()
            for iv in users:
                new = iv.on_block(ctx, block, output)
                if new is not None:
                    output = new
            return output
        return hook

    def _grid_hook(self, module, args, output):
        self.context().grid = tuple(output.shape[2:])

    def __enter__(self) -> "HookSession":
        try:
            for expert in self.experts:
                n = len(expert.blocks)
                users: dict[int, list[Intervention]] = {}
                for iv in self.interventions:
                    for k in iv.hooked_blocks(n):
                        users.setdefault(k, []).append(iv)
                if users:
                    self.handles.append(expert.patch_embedding.register_forward_hook(self._grid_hook))
                for k, ivs in sorted(users.items()):
                    self.handles.append(expert.blocks[k].register_forward_hook(self._block_hook(k, ivs)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()
        for iv in self.interventions:
            iv.close()

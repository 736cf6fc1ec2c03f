"""`HookSession`: registers the forward hooks interventions need and always removes them (TransformerLens style)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention


class HookedBlock(torch.nn.Module):
    """Stands in for a block during a session: calls it, then hands its output to the interventions.

    A wrapper rather than `register_forward_hook` because `compile_repeated_blocks` compiles a block's
    `_call_impl` with its hooks; Python-stateful hooks (step counters, stores) would then recompile the
    block every call. The wrapped block stays compiled; the interventions run eagerly around it.
    """

    def __init__(self, block: torch.nn.Module, hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.block, self.hook = block, hook

    def forward(self, *args, **kwargs):
        # Wan calls blocks as block(hidden_states, encoder_hidden_states, temb, rotary_emb); the hook gets
        # the block's input too, so that interventions can work on the block's update (output − input).
        block_input = args[0] if args else kwargs["hidden_states"]
        return self.hook(self.block(*args, **kwargs), block_input)


class HookSession:
    """Context manager: wraps the blocks the interventions ask for, hooks `patch_embedding` for the grid,
    and restores everything on exit, also after an exception."""

    def __init__(self, experts: Sequence[torch.nn.Module], interventions: Sequence[Intervention],
                 context: Callable[[], StepContext]):
        self.experts, self.interventions, self.context = list(experts), list(interventions), context
        self.handles: list = []
        self.wrapped: list[tuple[torch.nn.ModuleList, int, torch.nn.Module]] = []

    def _block_hook(self, block: int, users: list[Intervention]):
        def hook(output: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
            ctx = self.context()
            ctx.block_input = block_input
            try:
                for iv in users:
                    new = iv.on_block(ctx, block, output)
                    if new is not None:
                        output = new
            finally:
                ctx.block_input = None   # valid only inside this block's hooks
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
                    orig = expert.blocks[k]
                    expert.blocks[k] = HookedBlock(orig, self._block_hook(k, ivs))
                    self.wrapped.append((expert.blocks, k, orig))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for blocks, k, orig in reversed(self.wrapped):
            blocks[k] = orig
        self.wrapped.clear()

    def __exit__(self, *exc) -> None:
        self.remove()
        for iv in self.interventions:
            iv.close()

"""Activation patching on block updates: layer swap (Sec. 5.2) and the multi-seed ensemble (Sec. 6).

Both act on a block's *update* (its output − its input, the block's own write to the residual stream) by
default, not on its output. On Wan2.2-I2V the residual stream after any block is a function of the first
frame (entering once, through `patch_embedding`), the shared prompt and the timestep; so replacing or averaging
whole block outputs makes every later block recompute the replacement: a whole-output swap at block 0, 5 or 11
gives exactly the alternative run's x̂0, and an output-averaging window collapses to its first block. Patching
updates keeps each block's own input, so the intervention depends on the block it is applied at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from cos.context import StepContext
from cos.interventions.base import Intervention, check_pass, resolve_blocks
from cos.interventions.capture import CaptureBlocks

WHAT = ("update", "output")


def _check_what(what: str, who: str) -> str:
    if what not in WHAT:
        raise ValueError(f"{who}: what={what!r}: expected one of {WHAT}")
    return what


def _pass_names(cfg_pass: str) -> list[str]:
    return ["cond", "uncond"] if cfg_pass == "both" else [cfg_pass]


def _token_mask(tokens: torch.Tensor, n_rows: int, n_tokens: int, device: torch.device) -> torch.Tensor:
    """A (n_rows|1, N, 1) bool mask from (N,), (f, h, w), (B|1, N) or (B|1, f, h, w)."""
    m = tokens.to(device=device, dtype=torch.bool)
    m = m.reshape(1, -1) if m.dim() in (1, 3) else m.reshape(m.shape[0], -1)
    if m.shape[1] != n_tokens or m.shape[0] not in (1, n_rows):
        raise ValueError(f"token mask {tuple(tokens.shape)} does not fit {n_rows} rows of {n_tokens} tokens")
    return m.unsqueeze(-1)


@dataclass
class SwapBlock(Intervention):
    """Layer swap: at block k, put the alternative run's contribution in place of this run's.

    Reading of the paper's Ũ^(k) ← U_alt^(k), U^(l≠k) = U_orig^(l) implemented here (`what="update"`, the
    default): block k's update (output − input) is replaced by the alternative run's update at block k,
    optionally only on the tokens of `tokens` (e.g. the target object's vision tokens); the residual stream
    entering block k, and the computation of every other block, stay this run's. Block k's output becomes
    input_orig + update_alt. Why not the literal whole-output swap (`what="output"`, kept for comparison):
    the alternative configuration differs only in the first frame, which enters once through
    `patch_embedding`, so after a whole-output swap at any k the later blocks recompute the alternative's
    forward exactly; the result cannot depend on k and cannot locate a layer. Block indices are 0-based (the
    paper's text says layer 20, its Fig. 6 caption layer 21: possibly the same block counted from 0 and
    from 1); a claim should sweep blocks rather than fix one.

    `source`: (B|1, f, h, w, D) or (B|1, N, D), a mapping step → such a tensor, or a `CaptureBlocks` of the
    alternative run (read at (step, block, pass)); it must hold what `what` names: capture with
    `CaptureBlocks(..., what="update")` for the default swap. `tokens`: bool (N,), (f, h, w), (B|1, N) or
    (B|1, f, h, w); None swaps every vision token.
    """

    block: int
    source: torch.Tensor | Mapping[int, torch.Tensor] | CaptureBlocks
    steps: Iterable[int] = (0,)
    cfg_pass: str = "cond"
    what: str = "update"
    tokens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_pass(self.cfg_pass)
        _check_what(self.what, f"SwapBlock(block={self.block})")
        if isinstance(self.source, CaptureBlocks) and self.source.what != self.what:
            raise ValueError(f"SwapBlock(block={self.block}, what={self.what!r}): the capture holds block "
                             f"{self.source.what}s; capture with CaptureBlocks(..., what={self.what!r})")
        self._steps = set(self.steps)
        self.first_step = min(self._steps)

    def hooked_blocks(self, num_layers: int) -> list[int]:
        return resolve_blocks([self.block], num_layers)

    def _source(self, step: int, block: int, cfg_pass: str) -> torch.Tensor:
        if isinstance(self.source, CaptureBlocks):
            return self.source.get(step, block, cfg_pass)
        src = self.source[step] if isinstance(self.source, Mapping) else self.source
        held = getattr(src, "cos_what", None)   # set by CaptureBlocks; a hand-made tensor carries none
        if held is not None and held != self.what:
            raise ValueError(f"SwapBlock(block={self.block}, what={self.what!r}) was given a captured block "
                             f"{held}; capture with CaptureBlocks(..., what={self.what!r})")
        return src

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if ctx.step not in self._steps:
            return None
        out = hidden.clone()
        for name in _pass_names(self.cfg_pass):
            for rows in ctx.rows(name):
                n = rows.stop - rows.start
                src = self._source(ctx.step, block, name)
                src = src.reshape(src.shape[0], -1, src.shape[-1]).to(hidden.device, torch.float32)
                if src.shape[0] not in (1, n) or src.shape[1:] != hidden.shape[1:]:
                    raise ValueError(f"SwapBlock(block={self.block}): source {tuple(src.shape)} does not fit block "
                                     f"output {(n,) + tuple(hidden.shape[1:])}")
                h = hidden[rows].float()
                if self.what == "output":
                    new = src.expand(n, -1, -1)
                else:
                    # output + (update_alt − update_own) = input + update_alt; written this way so that swapping
                    # in the run's own update adds an exact zero (a bitwise no-op)
                    new = h + (src - (h - ctx.block_input[rows].float()))
                if self.tokens is not None:
                    new = torch.where(_token_mask(self.tokens, n, h.shape[1], h.device), new, h)
                out[rows] = new.to(hidden.dtype)
        return out


@dataclass
class EnsembleAverage(Intervention):
    """Multi-seed ensemble: over a window of blocks at chosen steps, each seed's block update is replaced by the
    mean update of its group (`what="update"`, the default).

    Each seed keeps its own residual stream: at every block of the window its output becomes its own input +
    the group's mean of (output − input), so every block of the window contributes an average of the seeds'
    computations and windows 0-2 and 0-11 are different interventions. Averaging block outputs instead
    (`what="output"`, the earlier implementation, kept for comparison) makes the seeds identical after the
    window's first block, so the rest of the window averages identical tensors. `groups[i]` names the group of
    batch row i (e.g. the task instance); None puts every row in one group.
    """

    blocks: Iterable[int] | str
    steps: Iterable[int] = (0,)
    groups: list[int] | None = None
    cfg_pass: str = "both"
    what: str = "update"

    def __post_init__(self) -> None:
        check_pass(self.cfg_pass)
        _check_what(self.what, "EnsembleAverage")
        self._steps = set(self.steps)
        self.first_step = min(self._steps)

    def hooked_blocks(self, num_layers: int) -> list[int]:
        return resolve_blocks(self.blocks, num_layers)

    def on_block(self, ctx: StepContext, block: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if ctx.step not in self._steps:
            return None
        out = hidden.clone()
        for rows in ctx.rows(self.cfg_pass):
            h = hidden[rows].float()
            g = torch.zeros(h.shape[0], dtype=torch.long) if self.groups is None else torch.as_tensor(self.groups)
            if g.numel() != h.shape[0]:
                raise ValueError(f"EnsembleAverage: {g.numel()} group labels for a batch of {h.shape[0]}")
            _, idx = torch.unique(g, return_inverse=True)
            idx = idx.to(h.device)
            x = h - ctx.block_input[rows].float() if self.what == "update" else h
            sums = torch.zeros((int(idx.max()) + 1,) + x.shape[1:], dtype=torch.float32, device=h.device)
            sums.index_add_(0, idx, x)
            counts = torch.bincount(idx).to(torch.float32).view(-1, *([1] * (x.dim() - 1)))
            mean = (sums / counts)[idx]
            # own output + (mean update − own update): a group of identical seeds adds an exact zero
            out[rows] = (h + (mean - x) if self.what == "update" else mean).to(hidden.dtype)
        return out

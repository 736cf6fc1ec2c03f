"""CUDA graphs for the transformer blocks of small, launch-bound models (`--cos-cuda-graphs`, issue 26).

The organism's forwards on an H200 are bound by kernel launches, not arithmetic: ~26 ms a forward, ~1.8 ms of it
per block for ~60 small kernels, each paying Python, dispatcher and launch overhead. A block replayed from a CUDA
graph launches once. A full model's forwards are bound by arithmetic instead, and a graph would pin a block's
activations per input shape, so `auto` turns this on for the `gpu` tier (the organism) only.

Written by hand because `torch.cuda.make_graphed_callables` captures forward and backward graphs for training from
sample inputs given up front, and `torch.compile(mode="reduce-overhead")` recompiles on the interventions' Python
state. Here a block's own `forward` is captured lazily, once per input signature, under no_grad, and is replayed
only while nothing the graph cannot see has changed:
- the block's modules (identity and class), attention processors and parameter/buffer storage: LoRA layers
  injected, weights moved or replaced, or processors swapped capture anew (the key includes them);
- hooks on any module inside the block, global module hooks, peft layers (their scales are Python floats a graph
  would freeze), grad mode, training mode, CPU tensors, a capture already in progress: the eager forward runs.
Interventions are untouched: `HookSession` wraps a block from outside (`HookedBlock`) and the wrapped block's
`forward` is this object, so hooks see the replayed output. Each replay's output is a fresh copy (a capture may
keep it; the graph's own buffer is overwritten by the next replay). Replays run the captured kernels on the same
inputs, so outputs equal the eager forward's up to the nondeterminism the kernels already have.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

#: signatures kept per block; the least recently used graph beyond this is freed
MAX_GRAPHS = 16


class _Graph:
    __slots__ = ("graph", "inputs", "outputs", "out_spec")

    def __init__(self, graph, inputs, outputs, out_spec):
        self.graph, self.inputs, self.outputs, self.out_spec = graph, inputs, outputs, out_spec


def _leaf_key(x: Any):
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.stride(), x.dtype, x.device)
    hash(x)     # an unhashable argument cannot key a graph (TypeError: the caller runs eagerly)
    return ("V", type(x), x)


class GraphedForward:
    """Stands in for `block.forward` (an instance attribute: the module tree and state dict are unchanged)."""

    def __init__(self, block: torch.nn.Module, pool=None, max_graphs: int = MAX_GRAPHS):
        self.block = block
        self.eager = type(block).forward.__get__(block)
        self.pool = pool
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()
        self.captures = self.replays = self.eager_calls = 0

    def __deepcopy__(self, memo):
        # a copied block (copy.deepcopy of a model) gets its own wrapper and no graphs: a graph holds the original's
        # buffers and cannot be copied
        import copy

        return GraphedForward(copy.deepcopy(self.block, memo), self.pool, self.max_graphs)

    def _structure(self) -> tuple | None:
        """What the graph bakes in, or None when the block must run eagerly (hooks, peft, training)."""
        g = torch.nn.modules.module
        if g._global_forward_hooks or g._global_forward_pre_hooks or g._global_forward_hooks_always_called:
            return None
        parts: list = []
        for m in self.block.modules():
            if (m.training or m._forward_hooks or m._forward_pre_hooks or getattr(m, "_hf_hook", None) is not None
                    or type(m).__module__.startswith("peft")):
                return None
            parts.append((id(m), type(m), id(getattr(m, "processor", None))))
            for p in m._parameters.values():
                if p is not None:
                    parts.append((p.data_ptr(), p.dtype, tuple(p.shape)))
            for b in m._buffers.values():
                if b is not None:
                    parts.append((b.data_ptr(), b.dtype, tuple(b.shape)))
        return tuple(parts)

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._eager(args, kwargs)
        flat, spec = tree_flatten((args, kwargs))
        tensors = [x for x in flat if isinstance(x, torch.Tensor)]
        if not tensors or any(not t.is_cuda for t in tensors) or len({t.device for t in tensors}) != 1:
            return self._eager(args, kwargs)
        if torch.cuda.is_current_stream_capturing():    # (asked only with CUDA tensors: a CPU build cannot answer)
            return self._eager(args, kwargs)
        structure = self._structure()
        if structure is None:
            return self._eager(args, kwargs)
        try:
            key = (spec, tuple(_leaf_key(x) for x in flat), structure)
        except TypeError:
            return self._eager(args, kwargs)
        if key in self.graphs:
            self.graphs.move_to_end(key)
            g = self.graphs[key]
            if g is None:                       # this signature failed to capture once: it stays eager
                return self._eager(args, kwargs)
            for s, x in zip(g.inputs, flat):
                if isinstance(s, torch.Tensor):
                    s.copy_(x)
        else:
            g = self._capture(flat, spec, tensors[0].device)
            self.graphs[key] = g
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
            if g is None:
                return self._eager(args, kwargs)
        g.graph.replay()
        self.replays += 1
        return tree_unflatten([t.clone() for t in g.outputs], g.out_spec)

    def _eager(self, args, kwargs):
        self.eager_calls += 1
        return self.eager(*args, **kwargs)

    def _capture(self, flat: list, spec, device: torch.device) -> _Graph | None:
        # torch.cuda.graph() would collect garbage and empty the cache at every capture (hundreds of ms each with a
        # run's objects alive); the capture API below does only what a block needs: inputs copied before, one
        # warm-up on a side stream (lazy cuBLAS/attention initialisation must not happen inside the capture),
        # thread-local capture mode so that --cos-overlap's decoding thread may use the GPU meanwhile.
        inputs = [x.clone() if isinstance(x, torch.Tensor) else x for x in flat]
        args, kwargs = tree_unflatten(inputs, spec)
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.stream(side):
                    self.eager(*args, **kwargs)
                    graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
                    try:
                        out = self.eager(*args, **kwargs)
                    finally:
                        graph.capture_end()
            except Exception:   # noqa: BLE001 - an op a graph cannot hold (a sync, a CPU branch on data): stay eager
                torch.cuda.current_stream().wait_stream(side)
                return None
            torch.cuda.current_stream().wait_stream(side)
        outputs, out_spec = tree_flatten(out)
        if not all(isinstance(t, torch.Tensor) for t in outputs):
            return None
        if self.pool is None:
            self.pool = graph.pool()
        self.captures += 1
        return _Graph(graph, inputs, outputs, out_spec)


def enable_block_graphs(experts: Iterable[torch.nn.Module]) -> list[GraphedForward]:
    """Replay every block of `experts` from CUDA graphs where it can (see the module docstring); returns the
    wrappers (their counters say how often each replayed, captured or ran eagerly). One memory pool is shared by
    all blocks: their replays never overlap in time (one forward runs its blocks in order)."""
    pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
    out = []
    for e in experts:
        for block in e.blocks:
            if isinstance(block.__dict__.get("forward"), GraphedForward):
                out.append(block.__dict__["forward"])
                continue
            gf = GraphedForward(block, pool)
            block.forward = gf
            out.append(gf)
    return out


def disable_block_graphs(experts: Iterable[torch.nn.Module]) -> None:
    """Undo `enable_block_graphs` (frees the graphs)."""
    for e in experts:
        for block in e.blocks:
            if isinstance(block.__dict__.get("forward"), GraphedForward):
                del block.forward


def graph_counts(wrappers: Iterable[GraphedForward]) -> dict[str, int]:
    """Captures, replays and eager calls summed over `enable_block_graphs`' wrappers (provenance, benchmarks)."""
    return {k: sum(getattr(gf, k) for gf in wrappers) for k in ("captures", "replays", "eager_calls")}

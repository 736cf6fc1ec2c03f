"""Off-by-default timing of the transformer forwards, for benchmarks (issue 26: does the GPU wait for Python?).

Set `COS_FORWARD_TIMING=DIR` and every `Sampler` forward is timed: on CUDA with a pair of CUDA events around it
(the span from the forward's first kernel to its last, launch gaps inside the forward included), elsewhere with
the host clock. Times are summed per pytest test (`PYTEST_CURRENT_TEST`, read at each forward) and written at
exit to `DIR/forward-timing-<pid>.json`: {"total_ms", "forwards", "per_test": {test: {"ms", "forwards"}},
"since_import_s"}. Unset (the default) it costs one module-level check per forward and changes nothing.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from pathlib import Path

import torch

_DIR = os.environ.get("COS_FORWARD_TIMING")
_OFF = contextlib.nullcontext()


class _Timer:
    def __init__(self, out: Path):
        self.out, self.t0 = out, time.perf_counter()
        self.pending: list = []            # (test, start event, end event) not yet read
        self.ms: dict[str, float] = {}
        self.n: dict[str, int] = {}

    @contextlib.contextmanager
    def span(self, x: torch.Tensor):
        test = os.environ.get("PYTEST_CURRENT_TEST", "")
        self.n[test] = self.n.get(test, 0) + 1
        if x.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.pending.append((test, start, end))
            if len(self.pending) >= 256:
                self._read(wait=False)
        else:
            t = time.perf_counter()
            yield
            self.ms[test] = self.ms.get(test, 0.0) + (time.perf_counter() - t) * 1e3

    def _read(self, wait: bool) -> None:
        keep = []
        for test, s, e in self.pending:
            if wait:
                e.synchronize()
            if wait or e.query():
                self.ms[test] = self.ms.get(test, 0.0) + s.elapsed_time(e)
            else:
                keep.append((test, s, e))
        self.pending = keep

    def dump(self) -> None:
        try:
            self._read(wait=True)
        except Exception:  # noqa: BLE001 - a dead CUDA context at exit: write what was read
            pass
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"forward-timing-{os.getpid()}.json").write_text(json.dumps({
            "total_ms": round(sum(self.ms.values()), 3), "forwards": sum(self.n.values()),
            "since_import_s": round(time.perf_counter() - self.t0, 3),
            "per_test": {k: {"ms": round(self.ms.get(k, 0.0), 3), "forwards": self.n[k]} for k in self.n}}, indent=1))


_TIMER = _Timer(Path(_DIR)) if _DIR else None
if _TIMER is not None:
    atexit.register(_TIMER.dump)


def span(x: torch.Tensor):
    """A context around one forward of input `x`: timed when COS_FORWARD_TIMING is set, else a no-op."""
    return _OFF if _TIMER is None else _TIMER.span(x)

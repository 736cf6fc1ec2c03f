"""Fixtures several test modules share."""
from __future__ import annotations

import signal

import pytest
# torch and diffusers before any test: pytester restores sys.modules after each test, so a torch module first
# imported inside one (e.g. by get_claim registering the claims) would be dropped and re-imported by a later test,
# which torch's C extension does not survive ("SystemError: bad call flags", "Only a single TORCH_LIBRARY", or a
# segfault). Neither the cos plugin (it stays out of sessions that collect no claims) nor cos.runner (diffusers is
# imported where a run needs it) imports them any more, so this suite imports what they used to: torch,
# torch._dynamo and diffusers' model and scheduler modules (a test building a tiny model inside pytester would
# otherwise load them first, and a later test crash on their re-import).
import cos.runner  # noqa: F401,E402
from diffusers import (AutoencoderKLWan, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,  # noqa: F401,E402
                       UniPCMultistepScheduler, WanTransformer3DModel)
from diffusers.utils.torch_utils import randn_tensor  # noqa: F401,E402


def _share_the_cores() -> int:
    """Under pytest-xdist each worker, and every process its tests start (pytester subprocesses, launched ranks,
    `cos run`: they inherit OMP_NUM_THREADS), takes its share of the cores for torch's intra-op threads
    (`cos.pytest_plugin.share_worker_cores`, which a claims session calls too). With torch's default (every core in
    every process) two workers on 2 cores ran 4+ spinning OpenMP threads, and one test that runs every claim in a
    subprocess took 842 s inside `pytest -n 2` against ~100 s alone. Returns the thread count set (0: left alone)."""
    import os

    from cos.pytest_plugin import share_worker_cores

    return share_worker_cores(os.environ.get("PYTEST_XDIST_WORKER"))


_share_the_cores()


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) when a case blocks for 20 s."""
    def boom(*_):
        raise TimeoutError("hung: blocked for 20 s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)

"""Fixtures several test modules share."""
from __future__ import annotations

import signal

import pytest
# torch and diffusers before any test: pytester restores sys.modules after each test, so a torch module first
# imported inside one (e.g. by get_claim registering the claims) would be dropped and re-imported by a later test,
# which torch's C extension does not survive ("SystemError: bad call flags", "Only a single TORCH_LIBRARY", or a
# segfault). The cos plugin no longer imports them at configure (it stays out of sessions that collect no
# claims), so this suite imports what it used to: cos.runner (torch, torch._dynamo, diffusers).
import cos.runner  # noqa: F401,E402


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

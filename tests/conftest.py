"""Fixtures several test modules share."""
from __future__ import annotations

import signal

import pytest


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

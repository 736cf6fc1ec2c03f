"""Exceptions with one-line messages that name the offending file or value."""
from __future__ import annotations


class CosError(Exception):
    """Base class: the message is one line and says what is wrong and where."""


class ModelLoadError(CosError):
    """A model directory is missing, malformed, truncated or inconsistent."""


class NonFiniteTrajectoryError(CosError):
    """NaN or Inf appeared in a sampled trajectory."""

    def __init__(self, step: int, what: str, samples: list[int]):
        self.step, self.what, self.samples = step, what, samples
        super().__init__(f"non-finite values (NaN/Inf) in {what} at denoising step {step}, samples {samples}")


class InputError(CosError, ValueError):
    """A bad argument (shape, range, name) caught before any expensive work."""

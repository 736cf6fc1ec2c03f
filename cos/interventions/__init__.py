"""Interventions as data: what to perturb, patch or record; the sampler applies them."""
from cos.interventions.base import Intervention
from cos.interventions.capture import CaptureBlocks
from cos.interventions.noise import NoiseAtFrame, NoiseAtStep, RenoiseAtStep
from cos.interventions.patching import EnsembleAverage, SwapBlock
from cos.interventions.session import HookSession

__all__ = ["Intervention", "NoiseAtStep", "NoiseAtFrame", "RenoiseAtStep", "CaptureBlocks", "SwapBlock", "EnsembleAverage", "HookSession"]

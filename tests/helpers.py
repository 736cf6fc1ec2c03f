"""Shared builders for the tests: tiny random Wan systems and conditionings."""
from __future__ import annotations

import torch

from cos.sampler import Conditioning


def tiny_conditioning(batch: int = 1, num_frames: int = 9, height: int = 32, width: int = 32, seed: int = 0,
                      text_len: int = 8, text_dim: int = 32) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=g) * 2 - 1
    pe = torch.randn(batch, text_len, text_dim, generator=g)
    npe = torch.randn(batch, text_len, text_dim, generator=g)
    return Conditioning(image=image, prompt_embeds=pe, num_frames=num_frames, negative_prompt_embeds=npe)

"""Shared builders for the tests: tiny random Wan systems and conditionings."""
from __future__ import annotations

import json

import torch

from cos.models import tiny_system
from cos.sampler import Conditioning


def tiny_conditioning(batch: int = 1, num_frames: int = 9, height: int = 32, width: int = 32, seed: int = 0,
                      text_len: int = 8, text_dim: int = 32) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=g) * 2 - 1
    pe = torch.randn(batch, text_len, text_dim, generator=g)
    npe = torch.randn(batch, text_len, text_dim, generator=g)
    return Conditioning(image=image, prompt_embeds=pe, num_frames=num_frames, negative_prompt_embeds=npe)


def write_wan_dir(root, two_experts=True, num_layers=2):
    s = tiny_system(two_experts=two_experts, num_layers=num_layers)
    s.transformer.save_pretrained(root / "transformer")
    if two_experts:
        s.transformer_2.save_pretrained(root / "transformer_2")
    s.vae.vae.save_pretrained(root / "vae")
    s.scheduler.save_pretrained(root / "scheduler")
    index = {"_class_name": "WanImageToVideoPipeline", "_diffusers_version": "0.42.1",
             "boundary_ratio": s.boundary_ratio if two_experts else None}
    (root / "model_index.json").write_text(json.dumps(index))
    return s


def small_cfg():
    """The organism's training config, shrunk to seconds on a CPU."""
    cfg = json.loads(open("fixtures/organism_train.json").read())
    cfg["model"]["num_layers"] = 2
    cfg["data"].update(pool_per_task=2, tasks=["pattern", "maze"])
    cfg["train"].update(batch=4, bf16=False, ckpt_every=2, warmup=2)
    return cfg


class ThreadWorld:
    """Ranks as threads of one process (cos.parallel.World's interface): `gather` meets through a barrier, as a gloo
    all_gather does. Each thread must sample its own copy of the model: hooks live on the modules."""

    def __new__(cls, rank: int, size: int, box: dict, barrier):
        from cos.parallel import World

        class _ThreadWorld(World):
            def gather(self, obj):
                box[self.rank] = obj
                barrier.wait()
                out = [box[r] for r in range(self.size)]
                barrier.wait()
                return out
        return _ThreadWorld(rank, size, connected=True)

"""Tiny random-weight Wan components built from config, no network (diffusers' own test configs)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cos.models.system import WanSystem, WanVAE

if TYPE_CHECKING:   # imported in the builders: importing cos.models must not import diffusers (cos.models.system)
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel


def tiny_transformer(seed: int = 0, num_layers: int = 2, in_channels: int = 36, out_channels: int = 16) -> WanTransformer3DModel:
    """A 2-block Wan transformer with random weights (the config diffusers tests Wan with)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def unipc(flow_shift: float = 3.0) -> UniPCMultistepScheduler:
    """The scheduler Wan2.2-I2V ships with (flow prediction, flow sigmas)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def euler(shift: float = 3.0) -> FlowMatchEulerDiscreteScheduler:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift)


def tiny_system(two_experts: bool = True, boundary_ratio: float = 0.875, scheduler: str = "unipc",
                num_layers: int = 2, seed: int = 0) -> WanSystem:
    """A complete tiny I2V system: 36-channel experts, a tiny `AutoencoderKLWan`, and a Wan scheduler."""
    sched = unipc() if scheduler == "unipc" else euler()
    return WanSystem(
        transformer=tiny_transformer(seed, num_layers),
        transformer_2=tiny_transformer(seed + 1, num_layers) if two_experts else None,
        boundary_ratio=boundary_ratio if two_experts else None,
        scheduler=sched,
        vae=WanVAE(tiny_vae(seed)),
        name="tiny-random-wan",
    )

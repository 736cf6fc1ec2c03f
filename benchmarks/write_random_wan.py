"""Write a diffusers-format Wan I2V directory with random weights: `--shape a14b` (one Wan2.2-A14B-shaped expert,
bf16, ~28 GB; a random `AutoencoderKLWan` of the real config) for full-model cost runs on a GPU, or `--shape tiny`
for a CPU check of the same path. No text encoder: prompts are zero embeddings (cost is unaffected).

    python benchmarks/write_random_wan.py --shape a14b --out /tmp/a14b --device cuda
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from cos.models.tiny import tiny_transformer, tiny_vae, unipc

A14B = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["a14b", "tiny", "layout"], default="tiny",
                    help="layout: the A14B block count (40) and real VAE config on a tiny width: what `cos plan` counts, without 28 GB of weights")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out, t0 = Path(args.out), time.time()
    torch.manual_seed(0)
    if args.shape == "a14b":
        with torch.device(args.device):
            prev = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            t = WanTransformer3DModel(**A14B).eval()
            torch.set_default_dtype(prev)
        vae = AutoencoderKLWan()            # the Wan2.1/2.2-A14B VAE config (z_dim 16, base_dim 96)
    elif args.shape == "layout":
        t, vae = tiny_transformer(0, A14B["num_layers"]), AutoencoderKLWan()
    else:
        t, vae = tiny_transformer(0, 4), tiny_vae(0)
    t.save_pretrained(out / "transformer", max_shard_size="10GB")
    vae.save_pretrained(out / "vae")
    unipc(5.0).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline",
                                                      "_diffusers_version": "0.42.1", "boundary_ratio": None}))
    print(f"wrote {out} ({args.shape}) in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()

"""Where the organism's forward spends its GPU time (issue 26), on one GPU: the top CUDA kernels of two forwards at
the gpu tier's shape (torch.profiler), then ms per forward under variants that change only how the same
arithmetic runs (SDPA backend, TF32 matmuls) or its precision (bf16 autocast), each with its largest difference
from the default's output. Prints a table and writes organism-kernels.json under --out.

    python benchmarks/organism_kernels.py --out DIR
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/organism-kernels")
    ap.add_argument("--rows", type=int, default=128)
    a = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from cos.models import load_system
    from cos.pytest_plugin import DEFAULT_MODEL
    from cos.settings import settings_for

    system = load_system(DEFAULT_MODEL, device="cuda")
    st = settings_for(system, "gpu")
    model = system.experts[0]
    b = a.rows
    g = torch.Generator().manual_seed(0)
    shape = system.latent_shape(b, st.num_frames, st.height, st.width)
    x = torch.randn(shape[0], model.config.in_channels, *shape[2:], generator=g).cuda()   # latents + I2V condition
    t = torch.full((b,), 500.0, device="cuda")
    pe = torch.randn(b, 8, model.config.text_dim, generator=g).cuda()
    res: dict = {"device_name": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": b,
                 "input": list(x.shape), "dtype": str(next(model.parameters()).dtype)}

    def fwd():
        return model(hidden_states=x, timestep=t, encoder_hidden_states=pe, return_dict=False)[0]

    def ms(fn, reps=10):
        with torch.no_grad():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            out = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                out.append(1000 * (time.perf_counter() - t0))
        return statistics.median(out)

    with torch.no_grad():
        ref = fwd().float()
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fwd(), fwd()
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70)
    print(table)
    res["profile_top"] = table

    @contextlib.contextmanager
    def tf32():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    variants = {
        "default": contextlib.nullcontext,
        "sdpa math": lambda: sdpa_kernel([SDPBackend.MATH]),
        "sdpa efficient": lambda: sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]),
        "bf16 autocast": lambda: torch.autocast("cuda", dtype=torch.bfloat16),
        "tf32 matmul": tf32,
    }
    res["variants"] = {}
    for name, ctx in variants.items():
        try:
            with ctx():
                m = ms(fwd)
                with torch.no_grad():
                    d = float((fwd().float() - ref).abs().max())
            res["variants"][name] = {"ms_per_forward": round(m, 3), "max_abs_diff": d}
        except Exception as e:  # noqa: BLE001 - a backend this input cannot use
            res["variants"][name] = {"error": str(e)[:200]}
        print(name, res["variants"][name], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "organism-kernels.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

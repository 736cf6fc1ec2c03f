"""Issue 26's speed numbers on one GPU, printed in one run (each part also writes JSON under --out as it goes).

    python benchmarks/gpu_speed.py tier  --out DIR    # organism `gpu` tier inside pytest: cold (empty store), warm
    python benchmarks/gpu_speed.py block --out DIR    # one A14B-shaped block at 480x832x81: eager / compiled / floor
    python benchmarks/gpu_speed.py all   --out DIR

tier: `pytest -m "claims and gpu"` on the shipped organism twice into one --cos-out, first into an empty out dir
(cold), then again with --cos-overwrite (warm). The organism's tiers keep no result store unless asked: pass
--store (--cos-store beside the out dir) for a warm run whose runs and records are served by the store; without
it the second run samples everything again. --root runs another checkout (a before/after of host-side code),
--label names its files. Each run is timed from outside (the subprocess) and inside (provenance wall_s); with
COS_FORWARD_TIMING set, `cos.forward_timing` sums CUDA-event time around every transformer forward per test, so
the GPU busy fraction is (forward time) / (wall time inside pytest) and a claim's host seconds are its pytest
duration minus its forwards' time (host work that overlaps a forward is not counted as host time).

block: one `WanTransformerBlock` of the A14B config (benchmarks/write_random_wan.py's A14B, random weights, bf16
with the fp32 modules diffusers keeps in fp32 on loading) on its real inputs at 480x832x81 (21x60x104 latents,
32,760 tokens, 512 text tokens), captured from a 1-layer model's forward; median of CUDA-event timings after a
warm-up: eager, `torch.compile` (default), `torch.compile(mode="max-autotune-no-cudagraphs")`; the floor is the
block's matmul + attention FLOPs at this card's measured bf16 matmul rate (a large product timed here); SDPA alone
is timed too. A compiled output is compared with the eager one (relative L2; bf16 rounding is ~1e-2).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(*a) -> None:
    print(*a, flush=True)


def save(out: Path, name: str, data) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------------ the organism's gpu tier
DUR = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")


class GpuBusy:
    """The GPU's utilisation sampled by nvidia-smi (NVML: the share of each sample period in which a kernel ran)
    while a run goes on: busy seconds = sum of utilisation x the samples' spacing (the span sampled over their
    number: nvidia-smi's loop runs a little slower than asked). Unlike CUDA events around each
    process's forwards, it does not count a forward's wait while another process's kernels hold the GPU, so it is
    the busy fraction of several processes sharing one GPU (and, for one process, a check of the events' figure)."""

    def __init__(self, path: Path, interval_ms: int = 100):
        import shutil
        self.path, self.proc = path, None
        if shutil.which("nvidia-smi"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:      # the child keeps its own handle
                self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu",
                                              "--format=csv,noheader,nounits", f"-lms={interval_ms}", "-i", "0"],
                                             stdout=f, stderr=subprocess.DEVNULL)
        self.t0 = time.perf_counter()

    def stop(self) -> float | None:
        """Busy seconds over the sampled span (None without nvidia-smi or samples)."""
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        vals = [float(x) for x in self.path.read_text().split() if x.replace(".", "", 1).isdigit()]
        span = time.perf_counter() - self.t0
        return round(sum(vals) / 100 * span / len(vals), 2) if vals else None


def tier_once(phase: str, run_dir: Path, out: Path, timeout: int, root: Path = ROOT, label: str = "",
              store: bool = False, extra: tuple[str, ...] = (), procs: int = 1, xdist: int = 0,
              dist: str = "loadgroup") -> dict:
    tag = f"{label}-{phase}" if label else phase
    tdir = Path("/tmp/cos-gpu-speed") / f"timing-{tag}"
    if tdir.exists():   # a warm machine keeps an earlier call's timings under the same label: not this run's
        import shutil

        shutil.rmtree(tdir)
    env = dict(os.environ, COS_FORWARD_TIMING=str(tdir), PYTHONUNBUFFERED="1")
    # procs > 1: that many processes launched by torchrun on this one GPU (the plugin gives every local rank the
    # one visible GPU); each takes its share of the units of every claim and of the host cores
    launch = [sys.executable, "-m", "pytest"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "pytest"]
    # xdist > 0: that many pytest-xdist workers on the one GPU, the claims (not their units) shared out
    split = ["-n", str(xdist), "--dist", dist] if xdist else ["-p", "no:xdist"]
    cmd = [*launch, "-p", "cos.pytest_plugin", "-m", "claims and gpu", "-p", "no:cacheprovider",
           *split, "claims/test_claims.py", f"--cos-out={run_dir}", "-q", "--durations=0"]
    if phase != "cold":
        cmd.append("--cos-overwrite")
    if store:       # the organism's tiers keep no store unless asked: warm then means runs and records served
        cmd.append(f"--cos-store={run_dir.parent / (run_dir.name + '-store')}")
    cmd += list(extra)
    busy = GpuBusy(out / f"util-{tag}.txt")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:       # report what it printed; the table is then missing
        text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        p = subprocess.CompletedProcess(cmd, 124, text(e.stdout), text(e.stderr) + f"\ntimed out after {timeout} s")
    wall = time.perf_counter() - t0
    busy_s = busy.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tier-{tag}.log").write_text(p.stdout + p.stderr)
    durations: dict[str, float] = {}
    # several processes each print their own durations: the per-rank phases of provenance say it instead
    for line in p.stdout.splitlines() if procs == 1 else ():
        m = DUR.match(line)
        if m:
            durations[m.group(3)] = durations.get(m.group(3), 0.0) + float(m.group(1))
    fwd = {"total_ms": 0.0, "forwards": 0, "per_test": {}}
    for f in tdir.glob("forward-timing-*.json"):
        d = json.loads(f.read_text())
        fwd["total_ms"] += d["total_ms"]
        fwd["forwards"] += d["forwards"]
        for k, v in d["per_test"].items():
            node = k.rsplit(" (", 1)[0]
            e = fwd["per_test"].setdefault(node, {"ms": 0.0, "forwards": 0})
            e["ms"] += v["ms"]
            e["forwards"] += v["forwards"]
    status = run_dir / "claims-status.json"
    prov = json.loads(status.read_text())["provenance"] if status.exists() else {}
    inside = prov.get("wall_s")
    per_claim = {}
    for node, secs in sorted(durations.items(), key=lambda kv: -kv[1]):
        gpu_s = fwd["per_test"].get(node, {}).get("ms", 0.0) / 1e3
        per_claim[node] = {"pytest_s": round(secs, 2), "forward_s": round(gpu_s, 2), "host_s": round(secs - gpu_s, 2),
                           "forwards": fwd["per_test"].get(node, {}).get("forwards", 0)}
    res = {"phase": phase, "label": label, "root": str(root), "store": store, "pytest_args": list(extra),
           "rc": p.returncode, "wall_outside_s": round(wall, 1), "wall_inside_pytest_s": inside,
           "forward_s": round(fwd["total_ms"] / 1e3, 2), "forwards": fwd["forwards"],
           # several processes' forwards overlap in time: their events' sum is not the GPU's busy time
           "gpu_busy_fraction": round(fwd["total_ms"] / 1e3 / inside, 3) if inside and procs == 1 and not xdist
           else None,
           "procs": procs, "xdist": xdist, "dist": dist if xdist else None, "nvml_busy_s": busy_s,
           # the GPU was idle while the processes imported: the sampled busy seconds over the time inside pytest
           "nvml_busy_fraction": round(busy_s / inside, 3) if inside and busy_s is not None else None,
           "eta_s": prov.get("eta_s"), "eta_at_s": prov.get("eta_at_s"), "claims_end_s": prov.get("claims_end_s"),
           "eta_xdist": prov.get("eta_xdist"),     # xdist: no ETA line; the plan's one-process price
           "rank_phases_s": prov.get("rank_phases_s"),
           "device_name": prov.get("device_name"), "git_commit": prov.get("git_commit"), "per_claim": per_claim,
           "summary_line": (p.stdout.strip().splitlines() or [""])[-1]}
    return res


def tier(out: Path, timeout: int, warm_timeout: int, root: Path = ROOT, label: str = "", store: bool = False,
         phases: tuple[str, ...] = ("cold", "warm"), extra: tuple[str, ...] = (), procs: int = 1, xdist: int = 0,
         dist: str = "loadgroup") -> None:
    import shutil

    run_dir = Path("/tmp/cos-gpu-speed") / f"organism-gpu{'-' + label if label else ''}"
    for d in (run_dir, run_dir.parent / (run_dir.name + "-store")):
        if d.exists():
            shutil.rmtree(d)
    results = []
    for phase, limit in (("cold", timeout), ("warm", warm_timeout)):
        if phase not in phases:
            continue
        r = tier_once(phase, run_dir, out, limit, root, label, store, extra, procs, xdist, dist)
        results.append(r)
        save(out, f"tier{'-' + label if label else ''}.json", results)
        log(f"\n== organism gpu tier, {label + ' ' if label else ''}{phase}, store {'on' if store else 'off'} "
            f"({r['device_name']}, commit {str(r['git_commit'])[:7]}): "
            f"{r['wall_inside_pytest_s']} s inside pytest, {r['wall_outside_s']} s outside, rc {r['rc']}; "
            f"{r['forwards']} forwards, {r['forward_s']} s in forwards (CUDA events), GPU busy "
            f"{r['gpu_busy_fraction']} of the wall inside pytest (nvidia-smi: {r['nvml_busy_fraction']}); "
            f"{r['procs']} process(es), {r['xdist']} xdist worker(s) ({r['dist']}); ETA {r['eta_s']} s at {r['eta_at_s']} s, claims end {r['claims_end_s']} s; "
            f"{r['summary_line']}")
        log(f"{'test':60s} {'pytest_s':>9s} {'forward_s':>9s} {'host_s':>8s} {'forwards':>9s}")
        for node, c in r["per_claim"].items():
            if c["pytest_s"] >= 0.05:
                log(f"{node[-60:]:60s} {c['pytest_s']:9.2f} {c['forward_s']:9.2f} {c['host_s']:8.2f} {c['forwards']:9d}")
    for f in ("claims-status.json", "claims-status.md"):
        if (run_dir / f).exists():
            (out / f"{label + '-' if label else ''}{f}").write_text((run_dir / f).read_text())


# ------------------------------------------------------------------ one A14B-shaped block
def bench(fn, warmup: int = 3, reps: int = 10) -> float:
    """Median milliseconds of fn() by CUDA events (after `warmup` calls)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def block(out: Path, modes: list[str]) -> None:
    import torch
    import torch.nn.functional as F
    from diffusers import WanTransformer3DModel

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from write_random_wan import A14B

    torch.manual_seed(0)
    dev = torch.device("cuda")
    res: dict = {"device_name": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": "480x832x81",
                 "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in A14B.items()}}
    # the card's bf16 matmul rate: a large square product and the block's own product shapes
    rates = {}
    for m, k, n in ((8192, 8192, 8192), (32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)):
        a, b = torch.randn(m, k, device=dev, dtype=torch.bfloat16), torch.randn(k, n, device=dev, dtype=torch.bfloat16)
        ms = bench(lambda: a @ b, 3, 20)
        rates[f"{m}x{k}x{n}"] = round(2 * m * k * n / ms / 1e9, 1)
    res["matmul_tflops"] = rates
    peak = max(rates.values())
    log(f"bf16 matmul TFLOP/s on {res['device_name']}: {rates}")

    cfg = dict(A14B, num_layers=1)
    with dev:
        model = WanTransformer3DModel(**cfg)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    for name, p in model.named_parameters():
        p.data = p.data.float() if any(k in name.split(".") for k in keep) else p.data.to(torch.bfloat16)
    model.eval().requires_grad_(False)
    lat = torch.randn(1, 36, 21, 60, 104, device=dev, dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16)
    grabbed = {}
    blk = model.blocks[0]
    h = blk.register_forward_pre_hook(lambda m, a: grabbed.setdefault("args", a))
    with torch.no_grad():
        model(hidden_states=lat, timestep=torch.tensor([500.0], device=dev), encoder_hidden_states=text,
              return_dict=False)
    h.remove()
    args = grabbed["args"]
    hs, enc = args[0], args[1]
    n_tok, d, L, ffn = hs.shape[1], hs.shape[2], enc.shape[1], A14B["ffn_dim"]
    heads, hd = A14B["num_attention_heads"], A14B["attention_head_dim"]
    mm = 8 * n_tok * d * d + 2 * n_tok * d * d * 2 + 2 * 2 * L * d * d + 2 * 2 * n_tok * d * ffn   # self qkvo, cross q,o, cross k,v, ffn
    att = 4 * n_tok * n_tok * d + 4 * n_tok * L * d
    res.update(tokens=n_tok, text_tokens=L, matmul_gflop=round(mm / 1e9, 1), attention_gflop=round(att / 1e9, 1))
    q = torch.randn(1, heads, n_tok, hd, device=dev, dtype=torch.bfloat16)
    k_, v_ = torch.randn_like(q), torch.randn_like(q)
    sdpa_ms = bench(lambda: F.scaled_dot_product_attention(q, k_, v_), 2, 10)
    res["sdpa_self_attention_ms"] = round(sdpa_ms, 2)
    res["sdpa_tflops"] = round(4 * n_tok * n_tok * d / sdpa_ms / 1e9, 1)
    res["floor_ms_at_peak_matmul"] = round((mm + att) / peak / 1e9, 2)
    res["floor_ms_matmul_at_peak_plus_measured_sdpa"] = round(mm / peak / 1e9 + sdpa_ms, 2)
    log(f"block at {n_tok} tokens: {res['matmul_gflop']} GFLOP matmul + {res['attention_gflop']} GFLOP attention; "
        f"SDPA self-attention {sdpa_ms:.2f} ms ({res['sdpa_tflops']} TFLOP/s); floor {res['floor_ms_at_peak_matmul']} ms "
        f"at {peak} TFLOP/s ({res['floor_ms_matmul_at_peak_plus_measured_sdpa']} ms with SDPA as measured)")
    save(out, "block.json", res)

    with torch.no_grad():
        ref = blk(*args).float()
        variants = {}
        for mode in modes:
            torch._dynamo.reset()
            if mode == "eager":
                fn = blk
            elif mode == "compile-default":
                fn = torch.compile(blk)
            elif mode == "compile-max-autotune-no-cudagraphs":
                fn = torch.compile(blk, mode="max-autotune-no-cudagraphs")
            else:
                raise SystemExit(f"unknown mode {mode}")
            t0 = time.perf_counter()
            y = fn(*args)
            torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
            err = float((y.float() - ref).norm() / ref.norm())
            ms = bench(lambda: fn(*args), 3, 10)
            again = bench(lambda: fn(*args), 1, 10)
            variants[mode] = {"ms": round(ms, 2), "ms_repeat": round(again, 2), "first_call_s": round(first_s, 1),
                              "rel_err_vs_eager": err, "of_floor": round(res["floor_ms_at_peak_matmul"] / ms, 3)}
            res["variants"] = variants
            save(out, "block.json", res)
            log(f"  {mode:36s} {ms:8.2f} ms (repeat {again:.2f}), first call {first_s:.1f} s, rel err {err:.2e}, "
                f"floor/time {variants[mode]['of_floor']}")
    e = variants.get("eager", {}).get("ms")
    if e:
        for mode, v in variants.items():
            v["speedup_vs_eager"] = round(e / v["ms"], 3)
        save(out, "block.json", res)
        log("speed-up vs eager: " + ", ".join(f"{m} {v['speedup_vs_eager']}x" for m, v in variants.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["tier", "block", "all"])
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu-speed"))
    ap.add_argument("--tier-timeout", type=int, default=330, help="seconds for the cold pytest run")
    ap.add_argument("--warm-timeout", type=int, default=200, help="seconds for the warm pytest run")
    ap.add_argument("--root", default=str(ROOT), help="the checkout pytest runs in (another code version)")
    ap.add_argument("--label", default="", help="names this tier run's files")
    ap.add_argument("--store", action="store_true", help="keep a result store (--cos-store): warm serves from it")
    ap.add_argument("--phases", default="cold,warm")
    ap.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                    help="passed on to pytest (repeat it), e.g. --pytest-arg=--cos-overlap=off")
    ap.add_argument("--procs", type=int, default=1, help="tier: processes on the one GPU (torchrun), default 1")
    ap.add_argument("--xdist", type=int, default=0, help="tier: pytest-xdist workers on the one GPU, default 0 (none)")
    ap.add_argument("--dist", default="loadgroup", help="tier: xdist's --dist with --xdist, default loadgroup")
    ap.add_argument("--modes", default="eager,compile-default,compile-max-autotune-no-cudagraphs")
    a = ap.parse_args()
    out = Path(a.out)
    if a.part in ("tier", "all"):
        tier(out, a.tier_timeout, a.warm_timeout, Path(a.root), a.label, a.store, tuple(a.phases.split(",")),
             tuple(a.pytest_arg), a.procs, a.xdist, a.dist)
    if a.part in ("block", "all"):
        block(out, a.modes.split(","))


if __name__ == "__main__":
    main()

"""Benchmark: the host-side readouts of records claims on one batch of a tier, the runs already sampled.

Samples the claims' runs of one batch once (the session memo keeps them), then times each claim's
`measure_batch` again `--repeats` times: what is left is its readouts (decoding, cell read-back, NNLS mixtures,
scores). A claim whose runs the memo does not keep (frames.count's `ctx.run` without a store) samples again each
time: its "readouts" are then its sampling too (first ≈ readouts says so). Prints seconds per claim and a hash of its records, so two trees' runs can be compared for identical
records (`--json` writes both).

  python benchmarks/readout_speed.py --tier gpu --rows 32 --claims cos.superposition,cos.not_frames
  python benchmarks/readout_speed.py --tier gpu --device cuda          # the whole 128-row batch
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

import cos.claims  # noqa: F401 - registers the claims
from cos.models.loading import load_system
from cos.pytest_plugin import DEFAULT_MODEL
from cos.registry import get_claim
from cos.runner import RunContext, records_call
from cos.settings import settings_for

DEFAULT = ("cos.superposition,cos.not_frames,noise.step_vs_frame,selfcorrection.rate,memory.persistence,"
           "perception.before_action,bench.table1")


def _exact(o):
    """Arrays and tensors as lists of Python numbers (json writes floats round-trip exact; repr would print
    numpy arrays at 8 digits and tensors at 4 decimals, blind to a last-bit change)."""
    if isinstance(o, torch.Tensor):
        o = o.detach().cpu().numpy()
    if isinstance(o, (np.ndarray, np.generic)):
        return o.tolist()
    return repr(o)


def records_hash(records: list[dict]) -> str:
    """Of the records' exact values."""
    return hashlib.sha256(json.dumps(records, sort_keys=True, default=_exact).encode()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="gpu", choices=["cpu", "gpu"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=None, help="keep ROWS rows spread evenly over the batch, every task's (default: all)")
    ap.add_argument("--claims", default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    system = load_system(DEFAULT_MODEL, a.device)
    settings = settings_for(system, a.tier)
    ctx = RunContext(progress=False, sequential=True)     # the gpu and full tiers' batches (task-interleaved)
    import cos
    print(f"cos from {cos.__file__}", flush=True)
    out = {"cos": cos.__file__, "tier": a.tier, "device": a.device, "torch_threads": torch.get_num_threads(), "claims": {}}
    for cid in a.claims.split(","):
        claim = get_claim(cid)
        call = records_call(claim, system, settings, sequential=True)
        if call is None:
            print(f"{cid:28s} not a records claim at this tier: skipped", flush=True)
            continue
        cs, kw = call
        unit = []       # the claim's first unit (every phase's first batch), ROWS rows of each
        for s, batch in ctx.units_of(claim, cs, **kw)[0]:
            if a.rows:
                keep = [round(i * len(batch.instances) / a.rows) for i in range(min(a.rows, len(batch.instances)))]
                batch = replace(batch, instances=[batch.instances[i] for i in keep],
                                seeds=[batch.seeds[i] for i in keep])
            unit.append((s, batch))
        measure = lambda: [r for s, batch in unit for r in claim.measure_batch(ctx, system, s, batch, **kw)]
        t = time.perf_counter()
        first = measure()
        cold = time.perf_counter() - t
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            again = measure()
            times.append(time.perf_counter() - t)
            assert records_hash(again) == records_hash(first), f"{cid}: records differ between repeats"
        med = statistics.median(times)
        rows = sum(len(b.instances) for _, b in unit)
        out["claims"][cid] = {"rows": rows, "records_n": len(first), "first_s": round(cold, 3),
                              "readout_s": round(med, 4), "readout_s_all": [round(x, 4) for x in times],
                              "records": records_hash(first)}
        print(f"{cid:28s} rows {rows:4d}  records {len(first):4d}  first {cold:8.2f} s  readouts {med:7.3f} s "
              f"(median of {a.repeats})  hash {records_hash(first)}", flush=True)
        if a.json:      # after every claim: a run cut short keeps what it measured
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    print(f"readouts in all: {sum(c['readout_s'] for c in out['claims'].values()):.3f} s")


if __name__ == "__main__":
    main()

"""Held-out evaluation of a model on the task suite through the shared sampler.

    python -m cos.evaluate --model fixtures/organism --n 32 [--steps 12] [--frames 17] [--json out.json]
    python -m cos.evaluate --model fixtures/organism --distilled      # the model's own 4-step LoRA, its schedule
    python -m cos.evaluate --model fixtures/organism --lora L.safetensors:1.0 --steps 4
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cos.runner import RunContext, videos
from cos.settings import ClaimSettings
from cos.models.system import WanSystem
from cos.stats import bootstrap_ci
from cos.tasks import TASKS


def defaults(system: WanSystem) -> dict:
    """The model's own sampling defaults (from cos_model.json), else Wan-like ones."""
    return {"num_frames": 9, "height": 16, "width": 16, "steps": 12, "guidance_scale": 1.0,
            **system.extra.get("defaults", {})}


@torch.no_grad()
def evaluate(system: WanSystem, tasks: Sequence[str] | None = None, splits: Sequence[str] = ("id", "ood"),
             n: int = 32, seeds: Sequence[int] = (0,), batch_size: int = 64, progress: bool = True,
             first: int = 0, **overrides) -> list[dict]:
    """Score n held-out instances (seeds first..first+n−1) of every task and split; one row per (instance, seed)."""
    cfg = {**defaults(system), **overrides}
    rows, ctx = [], RunContext(progress=False)
    for split in splits:
        settings = ClaimSettings(tasks=tuple(tasks or sorted(TASKS)), instances=n, seeds=tuple(seeds),
                                    split=split, batch_size=batch_size, first_instance=first, **cfg)
        for batch in tqdm(list(ctx.batches(settings)), disable=not progress,
                          desc=f"evaluate {split}"):
            vids = videos(system, ctx.run(system, settings, batch).latents)
            for inst, seed, v in zip(batch.instances, batch.seeds, vids):
                rows.append({"task": inst.task, "split": inst.split, "instance": inst.seed, "seed": seed,
                             "score": inst.score(v), "passed": inst.passed(v), "candidates": inst.candidates.shape[0]})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean score with a bootstrap CI per task × split, per split and overall; trivial baselines beside."""
    groups = defaultdict(list)
    for r in rows:
        for key in (f"{r['task']}/{r['split']}", f"all/{r['split']}", "all/all"):
            groups[key].append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        est = bootstrap_ci([r["score"] for r in rs])
        out[key] = {"mean": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                    "pass_rate": float(np.mean([r["passed"] for r in rs])),
                    "random_candidate_baseline": float(np.mean([1.0 / r["candidates"] for r in rs])),
                    "static_first_frame_baseline": 0.0}
    return out


def _check(args: argparse.Namespace) -> None:
    """One line (cos.errors.InputError) for a bad value, before the model is loaded."""
    from cos.errors import InputError
    from cos.validation import check_device, positive_int

    if positive_int("--n", args.n) < 2:
        raise InputError(f"--n {args.n}: must be at least 2 (a bootstrap interval needs two instances per task)")
    if args.steps is not None:
        positive_int("--steps", args.steps)
    if args.frames is not None and positive_int("--frames", args.frames) < 2:
        raise InputError(f"--frames {args.frames}: must be at least 2 (the first frame and a generated one)")
    if args.distilled and args.lora:
        raise InputError("--distilled and --lora: give one (--distilled is the model's own LoRA stack)")
    check_device("--device", args.device)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    from cos.models import load_system

    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model directory, or with --snapshots a folder of them")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--first", type=int, default=0, help="first instance seed (validation uses a range of its own)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None, help="frame count (default: the model's)")
    ap.add_argument("--lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                    help="a LoRA applied to the model (repeat to stack; weight 0.5 by default)")
    ap.add_argument("--distilled", action="store_true",
                    help="the model's own distilled LoRA (cos_model.json \"distilled\") at its steps and guidance")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--snapshots", action="store_true", help="evaluate every model directory under --model")
    args = ap.parse_args(argv)
    _check(args)
    from cos.models.lora import parse_lora_spec

    over = {"steps": args.steps} if args.steps else {}
    if args.frames:
        over["num_frames"] = args.frames
    loras = [parse_lora_spec(x) for x in args.lora]
    if args.distilled:
        from cos.errors import InputError
        from cos.models.loading import shipped_distilled

        decl = shipped_distilled(args.model)
        if decl is None:
            raise InputError(f"--distilled: {args.model} declares no distilled LoRA (cos_model.json \"distilled\")")
        loras = decl["loras"]
        over = {"steps": decl["steps"], "guidance_scale": decl["guidance_scale"], **over}
    if args.snapshots:
        from pathlib import Path
        dirs = sorted(p.parent for p in Path(args.model).glob("*/cos_model.json"))
        if not dirs:
            raise SystemExit(f"{args.model}: no model directories (*/cos_model.json) under it")
        table = {}
        for d in dirs:
            s = summarize(evaluate(load_system(d, device=args.device), n=args.n, first=args.first,
                                   progress=False, **over))
            table[d.name] = {k: v["mean"] for k, v in s.items()}
            print(d.name, " ".join(f"{k}={v:.3f}" for k, v in table[d.name].items() if k.startswith("all/")),
                  "| min task", f"{min(v for k, v in table[d.name].items() if not k.startswith('all/')):.3f}",
                  flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"first": args.first, "n": args.n, "snapshots": table}, indent=1))
        return
    system = load_system(args.model, device=args.device, loras=loras)
    t0 = time.time()
    rows = evaluate(system, n=args.n, first=args.first, **over)
    summary = summarize(rows)
    for k, v in summary.items():
        print(f"{k:28s} {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}] n={v['n']} pass={v['pass_rate']:.2f} "
              f"random={v['random_candidate_baseline']:.2f}")
    print(f"wall {time.time() - t0:.1f}s on {args.device}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows, "model": system.name, "weights_hash": system.weights_hash,
                       "loras": [[str(p), w] for p, w in loras], "device": args.device,
                       "settings": {**defaults(system), **over, "n": args.n, "first": args.first}}, f)

if __name__ == "__main__":
    import sys

    from cos.cli import main as cli_main

    sys.exit(cli_main(["evaluate", *sys.argv[1:]]))

"""Train the model organism: a small Wan-architecture video DiT on the synthetic task suite.

    python -m cos.train --config fixtures/organism_train.json --out runs/organism [--steps N] [--device cuda]

Rectified flow as in the paper (x_s = (1−s)·x0 + s·x1, target v = x1 − x0, logit-normal s), I2V
conditioning exactly as the sampler builds it (mask + first frame), the prompt through a learned token
table. Deterministic given the config's seed; resumes from `<out>/ckpt.pt`; stops at `steps` or at the
time budget, whichever comes first, and always leaves a loadable model directory in `<out>/model`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import multiprocessing
import pickle  # only for its exception type: checkpoints load with weights_only=True
from pathlib import Path

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from tqdm.auto import tqdm

from cos.errors import CosError
from cos.models.prompt import TokenPromptEncoder, words
from cos.models.system import IdentityVAE
from cos.models.tiny import unipc
from cos.sampler import i2v_condition
from cos.tasks import make_instance


def _worker_init() -> None:
    torch.set_num_threads(1)


def _gen(args):
    task, seed, split, f, h, w = args
    inst = make_instance(task, seed, f, split)
    # numpy, not torch: torch tensors cross process boundaries as shared-memory fds and exhaust them
    return (inst.render(h, w) * 255).round().to(torch.uint8).numpy(), inst.prompt


def build_pool(data: dict, workers: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Rendered ground-truth videos (N, F, 3, H, W) uint8 and prompts, for training seeds only."""
    jobs = [(t, data["train_seed_offset"] + i, data["split"], data["num_frames"], data["height"], data["width"])
            for t in data["tasks"] for i in range(data["pool_per_task"])]
    if workers > 1:
        # spawn, not fork: forking after torch has started its thread pools can deadlock the workers
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as p:
            out = list(tqdm(p.imap(_gen, jobs, chunksize=64), total=len(jobs), desc="task pool"))
    else:
        out = [_gen(j) for j in tqdm(jobs, desc="task pool")]
    return torch.from_numpy(np.stack([o[0] for o in out])), [o[1] for o in out]


def vocabulary(tasks: list[str], n: int = 60) -> list[str]:
    """Every word the task prompts use (read off many seeds of both splits), sorted."""
    vocab = set()
    for t in tasks:
        for s in range(n):
            for split in ("id", "ood"):
                vocab.update(words(make_instance(t, s, 2, split).prompt))
    return sorted(vocab)


def save_model(folder: Path, cfg: dict, model: WanTransformer3DModel, enc: TokenPromptEncoder, extra: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "transformer")
    unipc(cfg["sampler"]["flow_shift"]).save_pretrained(folder / "scheduler")
    enc.save(folder)
    d = cfg["data"]
    meta = {"name": cfg["name"], "vae": {"type": "identity", "channels": 3},
            "defaults": {"num_frames": d["num_frames"], "height": d["height"], "width": d["width"],
                         "steps": cfg["sampler"]["steps"], "guidance_scale": cfg["sampler"]["guidance_scale"]},
            "training": extra}
    (folder / "cos_model.json").write_text(json.dumps(meta, indent=1))


def train(cfg: dict, out: Path, device: str = "cuda", steps: int | None = None, workers: int = 0,
          snapshot_every: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tc, d = cfg["train"], cfg["data"]
    total = steps or tc["steps"]
    torch.manual_seed(cfg["seed"])
    model = WanTransformer3DModel(**cfg["model"]).to(device)
    enc = TokenPromptEncoder(vocabulary(d["tasks"]), cfg["model"]["text_dim"], cfg["prompt"]["max_len"]).to(device)
    params = list(model.parameters()) + list(enc.parameters())
    opt = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"], betas=(0.9, 0.99))
    lr_at = lambda s: tc["lr"] * min(1.0, (s + 1) / tc["warmup"]) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    state = {"step": 0, "losses": [], "wall_s": 0.0}
    ckpt = out / "ckpt.pt"
    # random numbers drawn on the device: host-side draws and copies bounded the H100 at ~8 steps/s
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    if ckpt.exists():
        # weights_only: a checkpoint is tensors and plain containers; nothing in it may run code
        try:
            c = torch.load(ckpt, map_location=device, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CosError(f"{ckpt}: refused to load, it holds more than tensors and plain containers "
                           f"({str(e).splitlines()[0][:160]})") from None
        model.load_state_dict(c["model"]), enc.load_state_dict(c["enc"]), opt.load_state_dict(c["opt"])
        state = c["state"]
        gen.set_state(c["gen"].cpu())
        print(f"resumed from {ckpt} at step {state['step']}")
    videos, prompts = build_pool(d, workers)
    ids = enc.ids(prompts).to(device)
    videos = videos.to(device)
    empty = enc.ids([""]).to(device)
    vae = IdentityVAE(3)
    n, t0, start_wall = videos.shape[0], time.time(), state["wall_s"]

    def save_ckpt():
        torch.save({"model": model.state_dict(), "enc": enc.state_dict(), "opt": opt.state_dict(),
                    "state": state, "gen": gen.get_state()}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    model.train()
    bar = tqdm(total=total, initial=state["step"], desc="train")
    while state["step"] < total and time.time() - t0 < tc["time_budget_s"]:
        idx = torch.randint(n, (tc["batch"],), generator=gen, device=device)
        x0 = videos[idx].float().div(255).mul(2).sub(1).permute(0, 2, 1, 3, 4)        # (B, 3, F, H, W)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        s = torch.sigmoid(torch.randn(x0.shape[0], generator=gen, device=device) * tc["logit_normal_std"])
        drop = torch.rand(x0.shape[0], generator=gen, device=device) < tc["prompt_dropout"]
        tok = torch.where(drop[:, None], empty.expand_as(ids[idx]), ids[idx])
        xs = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise
        cond = i2v_condition(vae, x0[:, :, 0], x0.shape[2], x0.shape[0], device)
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"])
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                            enabled=tc["bf16"]):
            v = model(hidden_states=torch.cat([xs, cond], 1), timestep=s * 1000,
                      encoder_hidden_states=enc.embedding(tok), return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(v.float(), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["step"] += 1
        state["losses"].append(loss.item())
        bar.update(1)
        if state["step"] % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(state['losses'][-50:]):.4f}")
        if state["step"] % tc["ckpt_every"] == 0:
            state["wall_s"] = start_wall + time.time() - t0
            save_ckpt()
        if snapshot_every and state["step"] % snapshot_every == 0:
            # kept so that a model that is not yet saturated can be chosen on validation seeds afterwards
            snap = {"steps": state["step"], "final_loss": float(np.mean(state["losses"][-200:])), "config": cfg}
            save_model(out / "snapshots" / f"step{state['step']:06d}", cfg, model, enc, snap)
    bar.close()
    state["wall_s"] = start_wall + time.time() - t0
    save_ckpt()
    model.eval()
    extra = {"steps": state["step"], "wall_s": round(state["wall_s"], 1),
             "final_loss": float(np.mean(state["losses"][-200:])), "config": cfg,
             "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
             "data_seeds": f"tasks × [{d['train_seed_offset']}, {d['train_seed_offset'] + d['pool_per_task']}) split {d['split']}"}
    save_model(out / "model", cfg, model.float(), enc, extra)
    return extra


def _check(args: argparse.Namespace) -> None:
    """One line (cos.errors.InputError) for a bad value, before the task pool is rendered."""
    from cos.validation import check_device, check_writable_dir, positive_int

    for flag in ("steps", "pool_per_task", "batch"):
        if getattr(args, flag) is not None:
            positive_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    check_device("--device", args.device)
    check_writable_dir("--out", args.out)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=None, help="override the config's step count")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=0, help="processes that render the task pool")
    ap.add_argument("--pool-per-task", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--snapshot-every", type=int, default=0, help="also save the model every N steps (snapshots/)")
    args = ap.parse_args(argv)
    _check(args)
    path = Path(args.config)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CosError(f"{path}: cannot read training config ({e})") from None
    if args.pool_per_task:
        cfg["data"]["pool_per_task"] = args.pool_per_task
    if args.time_budget:
        cfg["train"]["time_budget_s"] = args.time_budget
    if args.batch:
        cfg["train"]["batch"] = args.batch
    if not args.device.startswith("cuda"):
        cfg["train"]["bf16"] = False  # bf16 autocast on a CPU is far slower than float32
    print(json.dumps(train(cfg, Path(args.out), args.device, args.steps, args.workers, args.snapshot_every), default=str)[:2000])


if __name__ == "__main__":
    import sys

    from cos.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))

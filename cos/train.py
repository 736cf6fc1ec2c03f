"""Train the model organism: a small Wan-architecture video DiT on the synthetic task suite.

    python -m cos.train --config fixtures/organism_train.json --out runs/organism [--steps N] [--device cuda]
        [--init fixtures/organism-v1]

Rectified flow as in the paper (x_s = (1−s)·x0 + s·x1, target v = x1 − x0, logit-normal s), I2V
conditioning exactly as the sampler builds it (mask + first frame), the prompt through a learned token
table. Deterministic given the config's seed; resumes from `<out>/ckpt.pt`; stops at `steps` or at the
time budget, whichever comes first, and always leaves a loadable model directory in `<out>/model`.

`data.num_frames` is one frame count or a list of them: every batch holds videos of one count, and step k
takes the list's entry k mod len (a fixed schedule; repeat a count in the list to weight it). The sampling
default written to cos_model.json is `data.default_num_frames` (else 9 when trained at 9, else the first).
`train.init` (or --init) names a model directory whose transformer and prompt table a fresh run starts from
(a fine-tune); a run that resumes `ckpt.pt` ignores it.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import multiprocessing
import pickle  # only for its exception type: checkpoints load with weights_only=True
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from cos.errors import CosError
from cos.models.prompt import TokenPromptEncoder, words
from cos.models.system import IdentityVAE
from cos.models.tiny import unipc
from cos.sampler import i2v_condition
from cos.tasks import make_instance

if TYPE_CHECKING:   # imported by `train`: a refused `cos train` does not wait for diffusers
    from diffusers import WanTransformer3DModel


def _worker_init() -> None:
    torch.set_num_threads(1)


def _gen(args):
    task, seed, split, f, h, w = args
    inst = make_instance(task, seed, f, split)
    # numpy, not torch: torch tensors cross process boundaries as shared-memory fds and exhaust them
    return (inst.render(h, w) * 255).round().to(torch.uint8).numpy(), inst.prompt


def frame_counts(data: dict) -> list[int]:
    """The schedule of frame counts, one per step in turn: `data.num_frames` as a list (an int is [int])."""
    nf = data["num_frames"]
    counts = [nf] if isinstance(nf, int) else list(nf)
    if not counts or not all(isinstance(c, int) and c >= 2 for c in counts):
        raise CosError(f"data.num_frames={nf!r}: a frame count (an int of at least 2) or a non-empty list of them")
    return counts


def default_frames(data: dict) -> int:
    """The sampling default written to cos_model.json: data.default_num_frames, else 9 if trained at 9, else the
    first count."""
    counts = frame_counts(data)
    return int(data.get("default_num_frames", 9 if 9 in counts else counts[0]))


def build_pool(data: dict, workers: int = 0, num_frames: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Rendered ground-truth videos (N, F, 3, H, W) uint8 and prompts, for training seeds only (F: `num_frames`,
    else the config's only frame count)."""
    f = num_frames if num_frames is not None else data["num_frames"]
    jobs = [(t, data["train_seed_offset"] + i, data["split"], f, data["height"], data["width"])
            for t in data["tasks"] for i in range(data["pool_per_task"])]
    if workers > 1:
        # spawn, not fork: forking after torch has started its thread pools can deadlock the workers
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as p:
            out = list(tqdm(p.imap(_gen, jobs, chunksize=64), total=len(jobs), desc=f"task pool ({f} frames)"))
    else:
        out = [_gen(j) for j in tqdm(jobs, desc=f"task pool ({f} frames)")]
    return torch.from_numpy(np.stack([o[0] for o in out])), [o[1] for o in out]


def subsample_index(longest: int, f: int) -> list[int] | None:
    """Frames of a `longest`-frame video that form the `f`-frame one, when the spacing is whole (17 → 9: every
    second); None otherwise."""
    if f == longest:
        return list(range(longest))
    if (longest - 1) % (f - 1):
        return None
    return list(range(0, longest, (longest - 1) // (f - 1)))


def build_pools(data: dict, workers: int = 0, check: int = 2) -> tuple[dict[int, torch.Tensor], list[str]]:
    """One pool per frame count of the schedule, same instance seeds (the prompt does not depend on the count).

    Every task renders its trajectory at t = i/(F−1), so a count whose spacing divides the longest count's is
    taken from the longest render (17 → 9, 5, 2); that this equals a render at that count is checked on the
    first `check` seeds of every task (exactly, after the uint8 rounding), and a count that fails the check or
    does not divide is rendered on its own."""
    counts = sorted(set(frame_counts(data)))
    longest = counts[-1]
    videos, prompts = build_pool(data, workers, longest)
    pools = {longest: videos}
    for f in counts[:-1]:
        idx = subsample_index(longest, f)
        if idx is not None:
            probe = [(t, data["train_seed_offset"] + i, data["split"], f, data["height"], data["width"])
                     for t in data["tasks"] for i in range(min(check, data["pool_per_task"]))]
            rows = [k * data["pool_per_task"] + i for k in range(len(data["tasks"]))
                    for i in range(min(check, data["pool_per_task"]))]
            if all(np.array_equal(_gen(j)[0], videos[r, idx].numpy()) for j, r in zip(probe, rows)):
                pools[f] = videos[:, idx].contiguous()
                continue
        pools[f] = build_pool(data, workers, f)[0]
    return pools, prompts


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
            "defaults": {"num_frames": default_frames(d), "height": d["height"], "width": d["width"],
                         "steps": cfg["sampler"]["steps"], "guidance_scale": cfg["sampler"]["guidance_scale"]},
            "trained_num_frames": sorted(set(frame_counts(d))),
            "training": extra}
    (folder / "cos_model.json").write_text(json.dumps(meta, indent=1))


def load_init(folder: Path, cfg: dict, model: WanTransformer3DModel, enc: TokenPromptEncoder) -> None:
    """Start from a trained model directory's transformer and prompt table (same architecture and vocabulary)."""
    from safetensors.torch import load_file

    from cos.models.files import check_safetensors

    folder = Path(folder)
    f = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    if not f.exists():
        raise CosError(f"{folder}: no transformer/diffusion_pytorch_model.safetensors to start from (train.init)")
    check_safetensors(f)
    have = json.loads((folder / "transformer" / "config.json").read_text())
    diff = {k: (have.get(k), v) for k, v in cfg["model"].items() if have.get(k) != (list(v) if isinstance(v, tuple) else v)}
    if diff:
        raise CosError(f"{folder}: its transformer differs from the config's model ({diff}); cannot start from it")
    model.load_state_dict(load_file(f, device=str(next(model.parameters()).device)))
    init = TokenPromptEncoder.load(folder)
    if init.vocab != enc.vocab:
        raise CosError(f"{folder}: its prompt vocabulary differs from the tasks' ({len(init.vocab)} vs "
                       f"{len(enc.vocab)} words); cannot start from it")
    enc.load_state_dict(init.state_dict())


def train(cfg: dict, out: Path, device: str = "cuda", steps: int | None = None, workers: int = 0,
          snapshot_every: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tc, d = cfg["train"], cfg["data"]
    total = steps or tc["steps"]
    schedule = frame_counts(d)
    torch.manual_seed(cfg["seed"])
    from diffusers import WanTransformer3DModel

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
    elif tc.get("init"):
        load_init(Path(tc["init"]), cfg, model, enc)
        print(f"starting from {tc['init']}")
    pools, prompts = build_pools(d, workers)
    ids = enc.ids(prompts).to(device)
    pools = {f: v.to(device) for f, v in pools.items()}
    empty = enc.ids([""]).to(device)
    vae = IdentityVAE(3)
    n, t0, start_wall = len(prompts), time.time(), state["wall_s"]
    state.setdefault("frames", [])
    state.setdefault("seconds_per_frame_count", {})     # wall time of the steps of each count (loss.item() syncs)

    def save_ckpt():
        torch.save({"model": model.state_dict(), "enc": enc.state_dict(), "opt": opt.state_dict(),
                    "state": state, "gen": gen.get_state()}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    model.train()
    bar = tqdm(total=total, initial=state["step"], desc="train")
    while state["step"] < total and time.time() - t0 < tc["time_budget_s"]:
        frames, t_step = schedule[state["step"] % len(schedule)], time.time()
        idx = torch.randint(n, (tc["batch"],), generator=gen, device=device)
        x0 = pools[frames][idx].float().div(255).mul(2).sub(1).permute(0, 2, 1, 3, 4)        # (B, 3, F, H, W)
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
        state["frames"].append(frames)
        sec = state["seconds_per_frame_count"]
        sec[str(frames)] = sec.get(str(frames), 0.0) + time.time() - t_step
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
    # per frame count: the mean loss of its last 50 steps (counts differ in difficulty; a mix hides which lags)
    m = min(len(state["losses"]), len(state["frames"]), 200 * len(schedule))     # aligned from the end
    tail = list(zip(state["losses"][len(state["losses"]) - m:], state["frames"][len(state["frames"]) - m:]))
    by_count = {f: [l for l, g in tail if g == f][-50:] for f in sorted(set(schedule))}
    extra = {"steps": state["step"], "wall_s": round(state["wall_s"], 1),
             "final_loss": float(np.mean(state["losses"][-200:])), "config": cfg,
             "final_loss_per_frame_count": {str(f): float(np.mean(v)) for f, v in by_count.items() if v},
             "steps_per_frame_count": {str(f): state["frames"].count(f) for f in sorted(set(schedule))},
             "seconds_per_frame_count": {k: round(v, 1) for k, v in state["seconds_per_frame_count"].items()},
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
    ap.add_argument("--init", default=None, help="start from this model directory's weights (a fine-tune; "
                                                 "overrides the config's train.init)")
    ap.add_argument("--lr", type=float, default=None, help="override the config's peak learning rate")
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
    if args.init:
        cfg["train"]["init"] = args.init
    if args.lr:
        cfg["train"]["lr"] = args.lr
    if not args.device.startswith("cuda"):
        cfg["train"]["bf16"] = False  # bf16 autocast on a CPU is far slower than float32
    print(json.dumps(train(cfg, Path(args.out), args.device, args.steps, args.workers, args.snapshot_every), default=str)[:2000])


if __name__ == "__main__":
    import sys

    from cos.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))

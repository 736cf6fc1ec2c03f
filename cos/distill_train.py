"""Train a model's 4-step distilled LoRA (the fast model of distill.four_step, App. C) by regression on the
teacher's own samples from the same noise.

    python -m cos.distill_train --model fixtures/organism --out runs/distill [--steps 2000] [--install]

Distillation, in one paragraph: the teacher is the model at its defaults (cos_model.json: 12 UniPC steps,
guidance 1). For training instances (the teacher's own training seeds, never the held-out ones) it samples
x̂ = teacher(ε) from recorded noise ε. The student is the same model with a LoRA, sampled by the same scheduler
at 4 steps (timesteps t_0..t_3, sigmas σ_0..σ_3), guidance 1. It is trained so that its x̂0 at each of its own
four steps is the teacher's sample: at x_0 = ε (exactly the sampler's start) and at x_k = (1 − σ_k)·x̂ + σ_k·ε
for k ≥ 1, the velocity target is (x_k − x̂)/σ_k (= ε − x̂ on the line), MSE. This is rectified flow's reflow
on the teacher's (ε, x̂) couplings, restricted to the student's four timesteps: where the student's x̂0 equals x̂
at every step, UniPC's update (data prediction, which combines x̂0s) keeps the state on the line from ε to x̂, so
the 4-step sample is the teacher's 12-step sample from the same noise. How far the student gets there is what
the held-out evaluation measures (`cos evaluate --lora`); what it keeps of the candidates at its first step is
what distill.four_step measures.

With --install the LoRA is copied to <model>/distill/ and declared in <model>/cos_model.json ("distilled"),
where the pytest plugin and `cos run` find it when no --cos-lora is given.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cos.errors import CosError

FAST_STEPS = 4
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2", "proj_out",
           "condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
           "condition_embedder.time_proj")
LORA_FILE = "four_step_lora.safetensors"


def teacher_pairs(system, images: torch.Tensor, prompts: list[str], num_frames: int, steps: int, seeds: list[int],
                  batch: int = 1024, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, x̂): the noise the shared sampler draws for each seed and the teacher's sample from it."""
    from cos.sampler import Conditioning, Sampler

    eps, out = [], []
    for a in tqdm(range(0, len(prompts), batch), disable=not progress, desc="teacher samples"):
        b = slice(a, a + batch)
        cond = Conditioning(image=images[b], prompt_embeds=system.encode_prompt(prompts[b]), num_frames=num_frames)
        sampler = Sampler(system)
        state = sampler.prepare(cond, seeds[b], steps)
        eps.append(state.latents.clone())
        out.append(sampler.run(state, guidance_scale=1.0).latents)
    return torch.cat(eps), torch.cat(out)


def fast_schedule(system, steps: int = FAST_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps and sigmas the shared sampler uses at `steps` steps with the model's scheduler."""
    sched = copy.deepcopy(system.scheduler)
    sched.set_timesteps(steps, device=system.device)
    return sched.timesteps[:steps].float(), sched.sigmas[:steps].float().to(system.device)


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter's matrices in the diffusers Wan LoRA format ("transformer.<module>.lora_A/B.weight")."""
    from peft.utils import get_peft_model_state_dict

    return {f"transformer.{k}": v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def install(model_dir: Path, lora: Path, meta: dict) -> Path:
    """Copy the LoRA into <model_dir>/distill/ and declare it in cos_model.json ("distilled")."""
    dest = model_dir / "distill" / LORA_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lora, dest)
    cfg_path = model_dir / "cos_model.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["distilled"] = {"loras": [{"path": f"distill/{LORA_FILE}", "weight": 1.0}], "steps": meta["fast_steps"],
                        "guidance_scale": 1.0, "training": meta}
    cfg_path.write_text(json.dumps(cfg, indent=1))
    return dest


def distill(model_dir: Path, out: Path, device: str = "cuda", steps: int = 2000, batch: int = 256,
            lr: float = 1e-3, rank: int = 16, pairs_per_task: int = 2000, num_frames: int | None = None,
            teacher_batch: int = 1024, workers: int = 0, seed: int = 0, time_budget_s: float = 1e9,
            bf16: bool = True, progress: bool = True) -> dict:
    from peft import LoraConfig

    from cos.models import load_system
    from cos.models.system import IdentityVAE
    from cos.sampler import i2v_condition
    from cos.train import build_pool

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    torch.manual_seed(seed)
    teacher = load_system(model_dir, device=device)
    defaults = teacher.extra.get("defaults", {})
    if float(defaults.get("guidance_scale", 1.0)) != 1.0:
        raise CosError(f"{model_dir}: the teacher's default guidance is {defaults['guidance_scale']}; this "
                       "distillation regresses on guidance-1 samples only")
    teacher_steps = int(defaults.get("steps", 12))
    f = int(num_frames or defaults.get("num_frames", 9))
    tcfg = teacher.extra.get("training", {}).get("config", {})
    if not tcfg.get("data"):
        raise CosError(f"{model_dir}: cos_model.json has no training.config.data (which tasks and seeds it was "
                       "trained on): the distillation draws its instances from the teacher's training seeds")
    data = {**tcfg["data"], "pool_per_task": pairs_per_task}
    # the first frame and prompt are all a row needs; the first frame does not depend on the count: render 2
    t0 = time.time()
    vids, prompts = build_pool(data, workers, 2)
    images = (vids[:, 0].float() / 255 * 2 - 1).to(device)
    render_s = time.time() - t0
    seeds = [1_000_000 + i for i in range(len(prompts))]
    t0 = time.time()
    with torch.no_grad():
        eps, x_hat = teacher_pairs(teacher, images, prompts, f, teacher_steps, seeds, teacher_batch, progress)
        emb = teacher.encode_prompt(prompts).to(device)
        cond_all = i2v_condition(IdentityVAE(3), images, f, len(prompts), device)
    teacher_s = time.time() - t0

    student = teacher.transformer
    student.requires_grad_(False)
    student.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=list(TARGETS)))
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warm = min(100, max(1, steps // 10))
    lr_at = lambda s: lr * min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    ts, sig = fast_schedule(teacher)
    gen = torch.Generator(device=device).manual_seed(seed)
    n, losses, loss_k = len(prompts), [], {k: [] for k in range(FAST_STEPS)}
    student.train()
    t0 = time.time()
    bar = tqdm(total=steps, disable=not progress, desc="distill")
    step = 0
    while step < steps and time.time() - t0 < time_budget_s:
        idx = torch.randint(n, (batch,), generator=gen, device=device)
        k = torch.randint(FAST_STEPS, (batch,), generator=gen, device=device)
        e, xh, s = eps[idx], x_hat[idx], sig[k].view(-1, 1, 1, 1, 1)
        x = torch.where(k.view(-1, 1, 1, 1, 1) == 0, e, (1 - s) * xh + s * e)     # step 0: the sampler's ε itself
        target = (x - xh) / s
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16,
                            enabled=bf16):
            v = student(hidden_states=torch.cat([x, cond_all[idx]], 1), timestep=ts[k],
                        encoder_hidden_states=emb[idx], return_dict=False)[0]
        per = (v.float() - target).pow(2).flatten(1).mean(1)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        for j in range(FAST_STEPS):     # per student step: which of the four is hardest to match
            if (k == j).any():
                loss_k[j].append(per[k == j].mean().item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    train_s = time.time() - t0
    student.eval()
    sd = lora_state(student)
    from safetensors.torch import save_file

    lora_path = out / LORA_FILE
    save_file(sd, str(lora_path), metadata={"format": "pt"})
    # the saved file, loaded the way the harness loads it, must give the student's own velocities
    with torch.no_grad():
        probe = slice(0, min(8, n))
        x = torch.cat([eps[probe], cond_all[probe]], 1)
        t = ts[:1].expand(x.shape[0])
        v_student = student(hidden_states=x, timestep=t, encoder_hidden_states=emb[probe], return_dict=False)[0]
        loaded = load_system(model_dir, device=device, loras=[(lora_path, 1.0)])
        v_loaded = loaded.transformer(hidden_states=x, timestep=t, encoder_hidden_states=emb[probe], return_dict=False)[0]
        reload_diff = float((v_student - v_loaded).abs().max())
    if reload_diff > 1e-3:
        raise CosError(f"{lora_path}: loaded through cos.models.load_system it gives velocities {reload_diff:.2e} "
                       "away from the trained student's (format or scaling mismatch)")
    meta = {"method": "regression on the teacher's samples from the same noise, at the student's own timesteps "
                      "(reflow on the teacher's couplings; cos.distill_train)",
            "teacher": str(model_dir), "teacher_name": teacher.extra.get("name"), "teacher_steps": teacher_steps,
            "fast_steps": FAST_STEPS, "fast_timesteps": ts.tolist(), "fast_sigmas": sig.tolist(),
            "guidance_scale": 1.0, "num_frames": f, "pairs": n, "pairs_per_task": pairs_per_task,
            "instance_seeds": f"tasks × [{data['train_seed_offset']}, {data['train_seed_offset'] + pairs_per_task}) "
                              f"split {data['split']} (the teacher's training seeds)",
            "noise_seeds": f"[{seeds[0]}, {seeds[-1]}]", "rank": rank, "lora_alpha": rank, "targets": list(TARGETS),
            "lora_parameters": int(sum(v.numel() for v in sd.values())), "steps": step, "batch": batch, "lr": lr,
            "seed": seed, "bf16": bf16, "final_loss": float(np.mean(losses[-200:])),
            "final_loss_per_step": {str(j): float(np.mean(v[-50:])) for j, v in loss_k.items() if v},
            "render_s": round(render_s, 1), "teacher_s": round(teacher_s, 1), "train_s": round(train_s, 1),
            "wall_s": round(time.time() - t_start, 1), "reload_max_abs_diff": reload_diff,
            "device": torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu"}
    (out / "distill.json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the teacher: a cos model directory (the organism)")
    ap.add_argument("--out", required=True, help="folder for the LoRA and distill.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--pairs-per-task", type=int, default=2000)
    ap.add_argument("--teacher-batch", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=0, help="processes that render the instances")
    ap.add_argument("--time-budget", type=float, default=1e9, help="stop training after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--install", action="store_true", help="copy the LoRA into <model>/distill/ and declare it")
    args = ap.parse_args(argv)
    from cos.validation import check_device, check_writable_dir, positive_int

    for flag in ("steps", "batch", "rank", "pairs_per_task", "teacher_batch"):
        positive_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    check_device("--device", args.device)
    check_writable_dir("--out", args.out)
    meta = distill(Path(args.model), Path(args.out), args.device, args.steps, args.batch, args.lr, args.rank,
                   args.pairs_per_task, teacher_batch=args.teacher_batch, workers=args.workers, seed=args.seed,
                   time_budget_s=args.time_budget, bf16=not args.no_bf16)
    if args.install:
        print(f"installed: {install(Path(args.model), Path(args.out) / LORA_FILE, meta)}")
    print(json.dumps(meta)[:2000])


if __name__ == "__main__":
    main()

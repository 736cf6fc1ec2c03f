"""The shared sampler: the one denoising loop every claim runs through.

It reproduces `WanImageToVideoPipeline(..., output_type="latent")` (same condition, same expert
switch, same CFG, same scheduler calls), applies interventions given as data, records per-step
quantities by name, and can stop at a step and fork continuations from that prefix.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from cos import forward_timing
from cos.context import StepContext
from cos.errors import InputError, NonFiniteTrajectoryError
from cos.interventions.base import Intervention
from cos.interventions.session import HookSession
from cos.models.system import WanSystem

RECORDABLE = ("x0", "latents", "velocity", "model_input")


def restart_history(scheduler) -> None:
    """Make `scheduler` forget the trajectory before the current step, in place.

    After an intervention replaces x_s ("x_s ← N(0, I)"), the trajectory must continue from that x_s alone,
    as with a first-order flow-matching sampler (DiffSynth's Euler). A multistep solver would otherwise
    mix the discarded prefix back in: UniPC's corrector rebuilds x_s from `last_sample` and ignores the
    sample passed to `step` (the next state moved by ≤ 2.4e-7 after replacing x_s by noise), and both
    UniPC and DPM-Solver extrapolate from earlier x̂0s. Dropping the history makes the next `step` a fresh
    first-order step (UniPC/DPM-Solver++ order 1 with flow sigmas = DDIM = the flow Euler step), and the
    orders warm up again afterwards as from step 0. The step index is kept (the schedule goes on).
    Schedulers with no history (flow-matching Euler) need nothing; any other scheduler raises rather than
    silently keeping a history we do not know how to drop.
    """
    # diffusers is imported where a run needs it, not with the module: importing cos.runner (every claims
    # session, `cos report`) must not cost diffusers' eager import of every model (~5-10 s)
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return  # x_{s+1} = x_s + (σ_{s+1} − σ_s)·v: no state besides the step index
    order = scheduler.config.get("solver_order", 1)
    if isinstance(scheduler, UniPCMultistepScheduler):
        # new lists, not in-place edits: forks (deepcopy) and the caller's copies stay independent
        scheduler.model_outputs = [None] * order
        scheduler.timestep_list = [None] * order
        scheduler.lower_order_nums = 0
        scheduler.last_sample = None          # no corrector at this step: it would rebuild x_s from the prefix
        return
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        scheduler.model_outputs = [None] * order
        scheduler.lower_order_nums = 0
        return
    raise InputError(f"{type(scheduler).__name__}: cannot restart its history after an intervention replaced x_s; "
                     f"teach cos.sampler.restart_history this scheduler (UniPC, DPM-Solver multistep and "
                     f"flow-matching Euler are known)")


@dataclass
class Conditioning:
    """The inputs of one I2V batch: first frames, prompt embeddings and the frame count.

    `image` is (B|1, 3, H, W) in [-1, 1]; embeddings are (B|1, L, text_dim). Rows of size 1 broadcast.
    """

    image: torch.Tensor
    prompt_embeds: torch.Tensor
    num_frames: int
    negative_prompt_embeds: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.image.dim() != 4 or self.image.shape[1] != 3:
            raise InputError(f"Conditioning.image: expected (B, 3, H, W), got {tuple(self.image.shape)}")
        if self.num_frames < 1:
            raise InputError(f"Conditioning.num_frames={self.num_frames}: must be >= 1")
        if self.prompt_embeds.dim() != 3:
            raise InputError(f"Conditioning.prompt_embeds: expected (B, L, D), got {tuple(self.prompt_embeds.shape)}")

    @property
    def height(self) -> int:
        return self.image.shape[2]

    @property
    def width(self) -> int:
        return self.image.shape[3]

    def expand(self, batch: int) -> "Conditioning":
        """Broadcast rows of size 1 to `batch` rows."""
        def ex(x):
            if x is None or x.shape[0] == batch:
                return x
            if x.shape[0] != 1:
                raise InputError(f"Conditioning: {x.shape[0]} rows cannot serve a batch of {batch} seeds")
            return x.expand(batch, *x.shape[1:])
        return Conditioning(ex(self.image), ex(self.prompt_embeds), self.num_frames, ex(self.negative_prompt_embeds))


@dataclass
class SamplerState:
    """Everything needed to continue a trajectory: x_s, the I2V condition, the scheduler and the next step."""

    latents: torch.Tensor
    condition: torch.Tensor
    scheduler: object
    next_step: int
    num_steps: int
    seeds: list[int]
    cond: Conditioning
    last_x0: torch.Tensor | None = None     # x̂0 of the last step run (StepContext.prev_x0 of the next)

    def fork(self) -> "SamplerState":
        """An independent copy: continuing it leaves this state untouched (the scheduler, solver history
        included, is deep-copied, so a fork that restarts the history leaves the trunk's intact)."""
        return SamplerState(self.latents.clone(), self.condition, copy.deepcopy(self.scheduler), self.next_step,
                            self.num_steps, list(self.seeds), self.cond, self.last_x0)


@dataclass
class SampleResult:
    """Final latents, the recorded trajectory (name → (steps, B, ...)) and the state where sampling stopped."""

    latents: torch.Tensor
    state: SamplerState
    steps: list[int]
    timesteps: list[float]
    sigmas: list[float]
    trajectory: dict[str, torch.Tensor] = field(default_factory=dict)
    forwards: int = 0
    # the result store's key of this run (branch included), set when it was served through the store: what the
    # claims' readouts of it are keyed by (cos.runner.RunContext.readout)
    key: str | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.trajectory:
            raise KeyError(f"{name!r} was not recorded; pass record=({name!r},) to the sampler")
        return self.trajectory[name]

    def after(self, prefix: "SampleResult") -> "SampleResult":
        """This continuation with `prefix`'s recorded steps put in front (one trajectory from step 0)."""
        traj = {k: torch.cat([prefix.trajectory[k], v]) if prefix.steps else v
                for k, v in self.trajectory.items() if k in prefix.trajectory or not prefix.steps}
        return SampleResult(self.latents, self.state, prefix.steps + self.steps, prefix.timesteps + self.timesteps,
                            prefix.sigmas + self.sigmas, traj, prefix.forwards + self.forwards)


@torch.no_grad()
def i2v_condition(vae, image: torch.Tensor, num_frames: int, batch: int, device: torch.device | str) -> torch.Tensor:
    """mask (scale_temporal channels) + normalized latent of [image, zeros × (F−1)], as the pipeline builds it.

    A single first frame is encoded once and repeated (as the pipeline does), so batch size does not
    change its latent.
    """
    h, w = image.shape[-2:]
    st, ss = vae.scale_temporal, vae.scale_spatial
    h_lat, w_lat = h // ss, w // ss
    img = image.to(device, torch.float32).unsqueeze(2)
    video = torch.cat([img, img.new_zeros(img.shape[0], 3, num_frames - 1, h, w)], dim=2)
    latent_condition = vae.encode(video).to(device, torch.float32)
    if latent_condition.shape[0] == 1:
        latent_condition = latent_condition.repeat(batch, 1, 1, 1, 1)
    elif latent_condition.shape[0] != batch:
        raise InputError(f"Conditioning: {latent_condition.shape[0]} first frames for {batch} seeds")
    mask = torch.ones(batch, 1, num_frames, h_lat, w_lat)
    mask[:, :, list(range(1, num_frames))] = 0
    first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=st)
    mask = torch.concat([first, mask[:, :, 1:]], dim=2).view(batch, -1, st, h_lat, w_lat).transpose(1, 2)
    return torch.concat([mask.to(device), latent_condition], dim=1)


class Sampler:
    """Drives a `WanSystem` through the denoising loop.

    Args:
        batch_cfg: run cond and uncond in one forward of twice the batch (faster; not bitwise equal
            to the pipeline's two calls). Hooks see which rows are which pass through `StepContext.passes`.
        record_device: where recorded per-step tensors are kept.
        check_finite: raise `NonFiniteTrajectoryError` naming the step where NaN/Inf first appears.
    """

    def __init__(self, system: WanSystem, *, batch_cfg: bool = False, record_device: str | torch.device = "cpu",
                 check_finite: bool = True, progress: bool = False):
        self.system, self.batch_cfg, self.record_device = system, batch_cfg, record_device
        self.check_finite, self.progress = check_finite, progress
        self.forward_count = 0

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def prepare(self, cond: Conditioning, seeds: Sequence[int], num_steps: int) -> SamplerState:
        """Initial noise (one CPU generator per sample seed, as the pipeline's generator list) and the condition."""
        if num_steps < 1:
            raise InputError(f"num_steps={num_steps}: must be >= 1")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise InputError("seeds: at least one seed is needed")
        sysm, device = self.system, self.system.device
        ss = sysm.vae.scale_spatial * sysm.patch_size[1]
        if cond.height % ss or cond.width % ss:
            raise InputError(f"image size {cond.height}x{cond.width}: height and width must be multiples of {ss}")
        scheduler = copy.deepcopy(sysm.scheduler)
        scheduler.set_timesteps(num_steps, device=device)
        shape = sysm.latent_shape(len(seeds), cond.num_frames, cond.height, cond.width)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        from diffusers.utils.torch_utils import randn_tensor   # (see restart_history: diffusers where a run needs it)

        latents = randn_tensor(shape, generator=gens, device=device, dtype=torch.float32)
        condition = i2v_condition(sysm.vae, cond.image, cond.num_frames, shape[0], device)
        return SamplerState(latents, condition, scheduler, 0, num_steps, seeds, cond.expand(len(seeds)))

    # ------------------------------------------------------------------ loop
    def sample(self, cond: Conditioning, seeds: Sequence[int], num_steps: int, **kw) -> SampleResult:
        """Sample from noise; keyword arguments as in `run`."""
        return self.run(self.prepare(cond, seeds, num_steps), **kw)

    @torch.no_grad()
    def run(self, state: SamplerState, *, guidance_scale: float = 5.0, guidance_scale_2: float | None = None,
            interventions: Sequence[Intervention] = (), record: Iterable[str] = (),
            record_steps: Iterable[int] | None = None, until: int | None = None) -> SampleResult:
        """Continue `state` (which is advanced in place) up to step `until` (default: the end).

        `record` names what to keep per step: "x0" (x̂0 = x_s − σ_s·v, eq. 2), "latents" (x_s before the
        step, after interventions that replace it), "model_input" (what the forward saw of x_s; differs from
        "latents" only under `model_input` interventions such as `NoiseAtFrame`) and "velocity" (the guided v).

        An intervention whose `before_forward` returns a new tensor replaces x_s: the scheduler's history is
        restarted at that step (`restart_history`), so the trajectory continues from the new x_s alone.
        """
        record = tuple(record)
        bad = [r for r in record if r not in RECORDABLE]
        if bad:
            raise InputError(f"record={bad}: can record only {RECORDABLE}")
        sysm, sched = self.system, state.scheduler
        end = state.num_steps if until is None else until
        if not state.next_step <= end <= state.num_steps:
            raise InputError(f"until={until}: must lie in [{state.next_step}, {state.num_steps}]")
        gs2 = guidance_scale if guidance_scale_2 is None else guidance_scale_2
        do_cfg = guidance_scale > 1.0
        if do_cfg and state.cond.negative_prompt_embeds is None:
            raise InputError("guidance_scale > 1 needs negative_prompt_embeds in the Conditioning")
        rec_steps = None if record_steps is None else set(record_steps)
        dtype, device = sysm.dtype, sysm.device
        pe = state.cond.prompt_embeds.to(device, dtype)
        npe = state.cond.negative_prompt_embeds.to(device, dtype) if do_cfg else None
        b = state.latents.shape[0]
        traj: dict[str, list[torch.Tensor]] = {k: [] for k in record}
        steps, ts, sigmas = [], [], []
        forwards0 = self.forward_count
        ctx = StepContext(0, state.num_steps, sched.timesteps[0], 0.0, 0, state.seeds)

        with HookSession(sysm.experts, interventions, lambda: ctx):
            for i in tqdm(range(state.next_step, end), disable=not self.progress, desc="denoising", leave=False):
                t = sched.timesteps[i]
                expert = sysm.expert_for(t)
                sysm.activate(expert)
                model = sysm.experts[expert]
                g = guidance_scale if expert == 0 else gs2
                sigma_t = sched.sigmas[i]
                ctx = StepContext(i, state.num_steps, t, float(sigma_t), expert, state.seeds, prev_x0=state.last_x0)
                latents = state.latents
                replaced = False
                for iv in interventions:
                    new = iv.before_forward(ctx, latents)
                    replaced |= new is not latents
                    latents = new
                if replaced:
                    restart_history(sched)   # sched is this state's own copy (forks deep-copy it)
                seen = latents
                for iv in interventions:
                    seen = iv.model_input(ctx, seen)
                x_in = torch.cat([seen, state.condition], dim=1).to(dtype)
                if do_cfg and self.batch_cfg:
                    ctx.passes = {"cond": slice(0, b), "uncond": slice(b, 2 * b)}
                    out = self._forward(model, torch.cat([x_in, x_in]), t, torch.cat([pe, npe]), "batched")
                    cond_v, uncond_v = out.chunk(2)
                    v = uncond_v + g * (cond_v - uncond_v)
                else:
                    ctx.passes = {"cond": slice(0, b)}
                    v = self._forward(model, x_in, t, pe, "cond")
                    if do_cfg:
                        ctx.passes = {"uncond": slice(0, b)}
                        uncond_v = self._forward(model, x_in, t, npe, "uncond")
                        v = uncond_v + g * (v - uncond_v)
                if rec_steps is None or i in rec_steps:
                    steps.append(i), ts.append(float(t)), sigmas.append(float(sigma_t))
                    for name in record:
                        val = {"latents": lambda: latents, "velocity": lambda: v, "model_input": lambda: seen,
                               "x0": lambda: latents - sigma_t * v}[name]()
                        traj[name].append(val.detach().float().to(self.record_device))
                state.last_x0 = (latents - sigma_t * v).float()
                state.latents = sched.step(v, t, latents, return_dict=False)[0]
                state.next_step = i + 1
                if self.check_finite:
                    self._check(state.latents, i, "latents")
        stacked = {k: torch.stack(v) if v else torch.empty(0) for k, v in traj.items()}
        return SampleResult(state.latents, state, steps, ts, sigmas, stacked, self.forward_count - forwards0)

    def _forward(self, model, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, name: str) -> torch.Tensor:
        self.forward_count += 1
        with model.cache_context(name), forward_timing.span(x):
            return model(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=embeds,
                         encoder_hidden_states_image=None, attention_kwargs=None, return_dict=False)[0]

    @staticmethod
    def _check(x: torch.Tensor, step: int, what: str) -> None:
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        if not bool(finite.all()):
            raise NonFiniteTrajectoryError(step, what, (~finite).nonzero().flatten().tolist())

    # ------------------------------------------------------------------ forks
    def sweep(self, cond: Conditioning, seeds: Sequence[int], num_steps: int,
              branches: Mapping[str, Sequence[Intervention]], *, clean: str | None = "clean",
              **kw) -> dict[str, SampleResult]:
        """Run many branches that share a clean prefix, computing that prefix once.

        A branch forks at the earliest step any of its modifying interventions acts on; every branch gets
        the trunk's recorded prefix in front of its own steps. With `clean` set, the unperturbed run is
        returned under that name. Captures inside a branch see only the branch's own steps.
        """
        forks: dict[int, list[str]] = {}
        for name, ivs in branches.items():
            s = min([iv.first_step for iv in ivs if iv.modifies] or [num_steps])
            forks.setdefault(min(s, num_steps), []).append(name)
        trunk = self.prepare(cond, seeds, num_steps)
        prefix: SampleResult | None = None
        out: dict[str, SampleResult] = {}
        for s in sorted(forks):
            seg = self.run(trunk, until=s, **kw)
            prefix = seg if prefix is None else seg.after(prefix)
            for name in forks[s]:
                out[name] = self.run(trunk.fork(), interventions=branches[name], **kw).after(prefix)
        if clean is not None:
            seg = self.run(trunk, **kw)
            out[clean] = seg if prefix is None else seg.after(prefix)
        return out

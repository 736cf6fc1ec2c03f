"""Readouts several claims share: candidate mixtures along the clean x̂0 trajectory, per-frame commitment, and
the noise sweep (one per batch, read by both noise claims). Claims live in `cos/claims/`; this module names none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from cos.interventions import NoiseAtFrame, NoiseAtStep, RenoiseAtStep
from cos.models.system import WanSystem
from cos.runner import RunContext, step_videos, videos
from cos.settings import ClaimSettings
from cos.taskrun import TaskBatch
from cos.tasks import TaskInstance


def weights_per_step(ctx: RunContext, system: WanSystem, settings: ClaimSettings, batch: TaskBatch,
                     frames: Callable[[TaskInstance], list[int]] | None = None):
    """Candidate distributions of the decoded x̂0 at every step, from the shared clean run: a list over rows of
    lists over steps of (K,) whole-video weights, and, when `frames(inst)` is given, of {frame: (K,)} too."""
    res = ctx.clean_run(system, settings, batch)

    def compute():
        whole, per_frame = [], []
        for row, inst in enumerate(batch.instances):
            pf = []
            fs = None if frames is None else frames(inst)
            # every step read back at once, once: the whole video's and every frame's weights
            cells = inst.cells_of(step_videos(system, res, row))
            w = inst.cell_weights_of(cells)
            if fs is not None:
                by_frame = {f: inst.cell_weights_of(cells, [f]) for f in fs}
                pf = [{f: by_frame[f][s] for f in fs} for s in range(len(cells))]
            whole.append(w)
            per_frame.append(pf)
        return whole, per_frame
    return compute()


def final_scores(ctx: RunContext, system: WanSystem, run, instances: Sequence[TaskInstance],
                 fn: Callable[[TaskInstance, torch.Tensor], Any] | None = None, name: str = "scores") -> list:
    """`fn(instance, decoded final video)` (default: the instance's score) for every row of a run (`name` is kept
    for callers; a records claim calls this in `measure_batch`, once, on the rank that sampled the run)."""
    fn = fn or (lambda inst, v: inst.score(v))
    return [fn(i, v) for i, v in zip(instances, videos(system, run.latents))]


def final_scores_of(ctx: RunContext, system: WanSystem, runs: Mapping[str, Any],
                    instances: Sequence[TaskInstance]) -> dict[str, list[float]]:
    """`final_scores` of several runs of the same rows (a sweep's branches): name → the rows' scores, the same
    numbers. Each run is decoded and read back onto the cells in turn (a full model's decoded videos are not all
    held at once), then each row's videos of every run are scored at once (`TaskInstance.cell_scores`)."""
    cells = {name: [inst.cells(v) for inst, v in zip(instances, videos(system, run.latents))]
             for name, run in runs.items()}
    out: dict[str, list[float]] = {name: [] for name in runs}
    for row, inst in enumerate(instances):
        for name, sc in zip(runs, inst.cell_scores(torch.stack([cells[name][row] for name in runs]))):
            out[name].append(sc)
    return out


def commit_step(shows: list[bool]) -> int:
    """First step from which a frame shows the video's final answer and keeps showing it; len(shows) when
    the frame does not end on it (a frame that decided on its own counts as never committing)."""
    n = len(shows)
    if not shows[-1]:
        return n
    s = n - 1
    while s > 0 and shows[s - 1]:
        s -= 1
    return s


def lookalikes(inst: TaskInstance, frame: int, answer: int) -> list[int]:
    """The candidates that look like `answer` in this frame (itself included)."""
    c = inst.candidates[:, frame]
    return [k for k in range(c.shape[0]) if (c[k] - c[answer]).abs().amax() <= 1e-6]


def shows_answer(inst: TaskInstance, weights: torch.Tensor, frame: int, answer: int,
                 same: list[int] | None = None) -> bool:
    """Most of the frame's candidate mass lies on candidates that look like `answer` in this frame
    (candidates sharing a frame, e.g. a common maze prefix, cannot be told apart there). `same`: the frame's
    `lookalikes`, when the caller asks about many steps of one frame."""
    same = lookalikes(inst, frame, answer) if same is None else same
    return float(weights[same].sum()) > 0.5


def clean_rows(ctx: RunContext, system: WanSystem, settings: ClaimSettings,
               read: Callable[[TaskInstance, torch.Tensor, torch.Tensor], Any],
               tasks: Sequence[str] | None = None) -> Iterator[tuple[TaskInstance, int, Any]]:
    """(instance, seed, `read(instance, per-step decoded x̂0 (S, F, 3, H, W), final video)`) for every row of the
    shared clean run (of `tasks`), for a claim that loops over `ctx.batches` itself. `read` should return what the
    claim keeps of the row, not the videos."""
    for batch in ctx.batches(settings):
        yield from clean_batch_rows(ctx, system, settings, batch, read, tasks)


def clean_batch_rows(ctx: RunContext, system: WanSystem, settings: ClaimSettings, batch: TaskBatch,
                     read: Callable[[TaskInstance, torch.Tensor, torch.Tensor], Any],
                     tasks: Sequence[str] | None = None) -> list[tuple[TaskInstance, int, Any]]:
    """`clean_rows` of one batch (a claim written as records reads its batch with this in `measure_batch`)."""
    mine = [tasks is None or inst.task in tasks for inst in batch.instances]
    if not any(mine):       # a batch of other tasks only: nothing to read, nothing to sample
        return []
    res = ctx.clean_run(system, settings, batch)

    def compute():
        final = videos(system, res.latents) if any(mine) else None
        return [read(inst, step_videos(system, res, row), final[row]) if m else None
                for row, (inst, m) in enumerate(zip(batch.instances, mine))]
    return [(inst, batch.seeds[row], out) for row, (inst, m, out)
            in enumerate(zip(batch.instances, mine, compute())) if m]


# ---------------------------------------------------------------- the noise sweep (Sec. 3.2)
@dataclass(frozen=True)
class NoiseSizing:
    """Where noise is injected: steps as fractions of the schedule, and latent frames."""

    step_fractions: tuple[float, ...]
    frames: tuple[int, ...]


NOISE_SIZING = {
    # the CPU: 5 injection steps spread over the schedule (the sensitivity peak needs ≥ 5 points), 2 frames
    "cpu": NoiseSizing((0.1, 0.3, 0.5, 0.7, 0.85), (1, 8)),
    "gpu": NoiseSizing(tuple(i / 10 for i in range(1, 10)), (1, 4, 8)),
    "full": NoiseSizing(tuple(i / 10 for i in range(1, 10)), (1, 5, 10, 15, 20)),
}


def noise_settings(settings: ClaimSettings) -> ClaimSettings:
    """Both noise claims read the same sweep; on a small tier it runs on half the instances."""
    from dataclasses import replace

    return replace(settings, instances=max(2, settings.instances // 2)) if settings.instances <= 4 else settings


def noise_injection_steps(settings: ClaimSettings, sizing: NoiseSizing) -> list[int]:
    """The noise-at-step injection steps. Never step 0: there the latents are pure noise already, and
    "noise at step 0" only redraws the seed."""
    s = settings.steps
    return sorted({min(s - 1, max(1, int(f * s))) for f in sizing.step_fractions})


def noise_frames(system: WanSystem, settings: ClaimSettings, sizing: NoiseSizing) -> list[int]:
    """The latent frames noised, within the video's latent frames (a --cos-size override can shorten it); never
    frame 0, the conditioning frame."""
    n = (settings.num_frames - 1) // system.vae.scale_temporal + 1
    return sorted({min(f, n - 1) for f in sizing.frames if n > 1})


# the branches of the noise sweep, by reading (cos.interventions.noise): name prefix → intervention at an index
STEP_READINGS = {"step": NoiseAtStep, "renoise": RenoiseAtStep}
FRAME_READINGS = {"frame": lambda f: NoiseAtFrame(f), "framestate": lambda f: NoiseAtFrame(f, into_state=True)}
RESEED = "reseed"     # NoiseAtStep(0): x_0 redrawn, the natural null of "a perturbation propagates"


def noise_sweep(ctx: RunContext, system: WanSystem, settings: ClaimSettings, batch: TaskBatch,
                sizing: NoiseSizing) -> dict:
    """Clean run plus every noise branch, x̂0 recorded, computed once per batch and session: "step{s}" (x_s ←
    N(0, I)), "renoise{s}" (x_s ← (1 − σ_s)·x̂0 + σ_s·ε), "frame{f}" (the model's view of frame f noised),
    "framestate{f}" (frame f of the state noised) and "reseed" (x_0 redrawn)."""
    steps = noise_injection_steps(settings, sizing)
    frames = noise_frames(system, settings, sizing)
    branches = {RESEED: [NoiseAtStep(0)],
                **{f"{r}{s}": [make(s)] for r, make in STEP_READINGS.items() for s in steps},
                **{f"{r}{f}": [make(f)] for r, make in FRAME_READINGS.items() for f in frames}}
    return ctx.memo(("noise-sweep", sizing, tuple(branches)), system, settings, batch,
                    lambda: ctx.sweep(system, settings, batch, branches, record=("x0",)))


def noise_sweep_runs(settings: ClaimSettings, sizing: NoiseSizing) -> dict[str, int]:
    """The noise sweep, read by both noise claims (their `shared_runs`): its own clean trunk (not the shared
    clean run; the branches fork from it) and its branches."""
    s = noise_settings(settings)
    return {"noise sweep": s.rows * s.steps + noise_sweep_cost(settings, sizing)}


def noise_sweep_cost(settings: ClaimSettings, sizing: NoiseSizing) -> int:
    """Row-forwards of the branches of one noise sweep beyond the shared clean prefix."""
    s = noise_settings(settings)
    return s.rows * (len(STEP_READINGS) * sum(s.steps - k for k in noise_injection_steps(s, sizing))
                     + (len(FRAME_READINGS) * len(sizing.frames) + 1) * s.steps)

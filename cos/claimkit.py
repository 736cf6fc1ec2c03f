"""What claims share: tier settings from one place, batched task runs through the shared sampler, and
turning an interval into a `ClaimResult`. Claims themselves (in `claims/`) only say what to measure."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch

from cos.interventions.base import Intervention
from cos.models.system import WanSystem
from cos.registry import ClaimResult, decide
from cos.sampler import Sampler, SampleResult
from cos.stats import Estimate
from cos.taskrun import TaskBatch, candidate_latents, conditioning, decode, make_batch
from cos.tasks import TASKS, TaskInstance, make_instance


@dataclass(frozen=True)
class ClaimSettings:
    """How much to run. `instances` per task; instance seeds are first_instance.. (held out from training)."""

    tasks: tuple[str, ...] = tuple(sorted(TASKS))
    instances: int = 4
    first_instance: int = 0
    seeds: tuple[int, ...] = (0,)
    steps: int = 12
    num_frames: int = 9
    height: int = 16
    width: int = 16
    guidance_scale: float = 1.0
    split: str = "id"
    batch_size: int = 64
    noise_step_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    noise_frames: tuple[int, ...] = (1, 4, 8)
    extra: dict = field(default_factory=dict)


TIERS = {
    # the CI tier: the organism on 2 CPU cores, the whole claims run within ~10 minutes
    "cpu": ClaimSettings(),
    # the organism on a GPU at full statistics
    "gpu": ClaimSettings(instances=32, seeds=(0, 1, 2), noise_step_fractions=tuple(i / 10 for i in range(10))),
    # a full Wan model with the paper's settings (50 steps; frames and size from the data)
    "full": ClaimSettings(instances=5, steps=50, num_frames=81, height=480, width=832, guidance_scale=5.0,
                          batch_size=1, noise_step_fractions=tuple(i / 10 for i in range(10)),
                          noise_frames=(1, 5, 10, 15, 20)),
}


def settings_for(system: WanSystem, tier: str) -> ClaimSettings:
    """The tier's settings, with the model's own sampling defaults (cos_model.json) where it has them."""
    s = TIERS[tier]
    d = system.extra.get("defaults", {})
    keys = {"num_frames", "height", "width", "steps", "guidance_scale"}
    return replace(s, **{k: v for k, v in d.items() if k in keys}) if tier != "full" else s


def instances(settings: ClaimSettings, tasks: Sequence[str] | None = None) -> list[TaskInstance]:
    return [make_instance(t, i, settings.num_frames, settings.split)
            for t in (tasks or settings.tasks)
            for i in range(settings.first_instance, settings.first_instance + settings.instances)]


def batches(settings: ClaimSettings, insts: list[TaskInstance]) -> Iterator[TaskBatch]:
    per = max(1, settings.batch_size // len(settings.seeds))
    for b in range(0, len(insts), per):
        yield make_batch(insts[b:b + per], settings.seeds, settings.height, settings.width)


def bind(system: WanSystem, batch: TaskBatch) -> None:
    """Reference denoisers need the batch's candidate set (prior from system.extra['prior'])."""
    model = system.transformer
    if hasattr(model, "set_candidates"):
        cands, valid = candidate_latents(batch, system)
        prior = valid.double()
        if system.extra.get("prior") == "oracle":   # all mass on the right answer: committed from step 0
            prior = torch.zeros_like(prior)
            prior[torch.arange(len(batch.instances)), [i.answer for i in batch.instances]] = 1.0
        model.set_candidates(cands, prior)


def _bound_conditioning(system: WanSystem, settings: ClaimSettings, batch: TaskBatch):
    bind(system, batch)
    return conditioning(batch, system.encode_prompt, negative=settings.guidance_scale > 1)


def run(system: WanSystem, settings: ClaimSettings, batch: TaskBatch, record: Sequence[str] = (),
        interventions: Sequence[Intervention] = ()) -> SampleResult:
    """One batch from noise to the end, with the claim's records and interventions."""
    return Sampler(system).sample(_bound_conditioning(system, settings, batch), batch.seeds, settings.steps,
                                  guidance_scale=settings.guidance_scale, record=record, interventions=interventions)


def sweep(system: WanSystem, settings: ClaimSettings, batch: TaskBatch, branches: dict,
          record: Sequence[str] = ()) -> dict[str, SampleResult]:
    """Branches of one batch sharing their clean prefix (see `Sampler.sweep`); the clean run is "clean"."""
    return Sampler(system).sweep(_bound_conditioning(system, settings, batch), batch.seeds, settings.steps, branches,
                                 guidance_scale=settings.guidance_scale, record=record)


def videos(system: WanSystem, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    return decode(system, latents.cpu(), clamp=clamp)


def result(claim_id: str, est: Estimate, threshold: float, direction: str, system: WanSystem,
           settings: ClaimSettings, details: dict | None = None) -> ClaimResult:
    """A ClaimResult whose status comes from the interval against the threshold."""
    d = {"threshold": threshold, "direction": direction, "weights_hash": system.weights_hash,
         "settings": {k: v for k, v in settings.__dict__.items() if k != "extra"}, **(details or {})}
    return ClaimResult.for_claim(claim_id, measured=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n=est.n,
                                 status=decide(est.ci_low, est.ci_high, threshold, direction), model=system.name,
                                 seeds=list(settings.seeds), details=d)

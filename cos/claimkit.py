"""What claims share: tier settings from one place, batched task runs through the shared sampler, and
turning an interval into a `ClaimResult`. Claims themselves (in `claims/`) only say what to measure."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch

from tqdm.auto import tqdm

from cos.interventions.base import Intervention
from cos.models.system import WanSystem
from cos.registry import ClaimResult, decide
from cos.sampler import Sampler, SampleResult
from cos.stats import Estimate
from cos.store import ResultStore, key_of
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
    frame_counts: tuple[int, ...] = (5, 9, 17)      # frames.count: multi-frame settings
    single_frame: int = 2                            # frames.count: the single generated frame (ChronoEdit-style)
    swap_stride: int = 1                             # layers.swap_flip: swap every k-th block
    swap_instances: int = 8                          # layers.swap_flip: grounding instances
    extra: dict = field(default_factory=dict)


TIERS = {
    # the CI tier: the organism on 2 CPU cores, the whole claims run within ~10 minutes
    # (sparse sweeps: 3 injection steps, 2 noised frames, every other block swapped; prefixes and the clean
    # x̂0 run are shared between claims)
    "cpu": ClaimSettings(noise_step_fractions=(0.0, 0.25, 0.5), noise_frames=(1, 8), swap_stride=2),
    # the organism on a GPU at full statistics
    "gpu": ClaimSettings(instances=32, seeds=(0, 1, 2), noise_step_fractions=tuple(i / 10 for i in range(10)),
                         frame_counts=(5, 9, 17, 33), swap_instances=64),
    # a full Wan model with the paper's settings (50 steps, Table 3's frame counts; a 5-frame video is two
    # latent frames: the first plus one generated, the ChronoEdit-style single-frame setting)
    "full": ClaimSettings(instances=5, steps=50, num_frames=81, height=480, width=832, guidance_scale=5.0,
                          batch_size=1, noise_step_fractions=tuple(i / 10 for i in range(10)),
                          noise_frames=(1, 5, 10, 15, 20), frame_counts=(9, 17, 33, 65, 81), single_frame=5,
                          swap_stride=1, swap_instances=5),
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


STORE: ResultStore | None = None          # set by the plugin (--cos-store): finished runs on disk
SHARD: tuple[int, int] | None = None      # set by the plugin (--cos-shard i/n): this host's share of batches
PROGRESS = True


def batches(settings: ClaimSettings, insts: list[TaskInstance], desc: str = "batches") -> Iterator[TaskBatch]:
    """The batches of (instance × seed) rows; under a shard i/n only every n-th batch, from the i-th. Batches
    are formed before sharding, so a merged store serves the unsharded run batch for batch."""
    per = max(1, settings.batch_size // len(settings.seeds))
    starts = list(range(0, len(insts), per))
    if SHARD is not None:
        starts = [b for k, b in enumerate(starts) if k % SHARD[1] == SHARD[0]]
    for b in tqdm(starts, desc=desc, disable=not PROGRESS or len(starts) < 2, leave=False):
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
    return conditioning(batch, system.encode_prompt, text_dim=getattr(system.transformer.config, "text_dim", 32),
                        negative=settings.guidance_scale > 1)


def run(system: WanSystem, settings: ClaimSettings, batch: TaskBatch, record: Sequence[str] = (),
        interventions: Sequence[Intervention] = (), until: int | None = None) -> SampleResult:
    """One batch from noise to the end (or to step `until`), with the claim's records and interventions.
    Runs whose interventions only modify (no captures to fill) are served from / saved to the result store."""
    def compute():
        sampler = Sampler(system)
        state = sampler.prepare(_bound_conditioning(system, settings, batch), batch.seeds, settings.steps)
        return sampler.run(state, guidance_scale=settings.guidance_scale, record=record,
                           interventions=interventions, until=until)
    if not all(iv.modifies for iv in interventions):
        return compute()
    return _stored("run", system, settings, batch, compute, record=list(record), interventions=list(interventions),
                   until=until)


def _stored(kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute, **what):
    if STORE is None:
        return compute()
    key = key_of(kind=kind, model=system.weights_hash or system.name, name=system.name, settings=settings,
                 rows=[(i.id, i.num_frames, s) for i, s in zip(batch.instances, batch.seeds)],
                 size=(batch.height, batch.width), **what)
    hit = STORE.get(key)
    if hit is not None:
        return _from_disk(hit)
    out = compute()
    STORE.put(key, _to_disk(out))
    return out


def _to_disk(res):
    if isinstance(res, dict):
        return {k: _to_disk(v) for k, v in res.items()}
    return {"latents": res.latents.cpu(), "steps": res.steps, "timesteps": res.timesteps, "sigmas": res.sigmas,
            "trajectory": {k: v.cpu() for k, v in res.trajectory.items()}, "forwards": res.forwards}


def _from_disk(d):
    if "latents" not in d:
        return {k: _from_disk(v) for k, v in d.items()}
    return SampleResult(d["latents"], None, d["steps"], d["timesteps"], d["sigmas"], d["trajectory"], d["forwards"])


_MEMO: dict = {}


def memo(kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute):
    """Compute once per process what several claims read (the clean run with x̂0 recorded, a noise sweep):
    keyed by the model, the settings, the batch's (instance, seed) rows and `kind`."""
    key = (kind, id(system), system.weights_hash, repr(settings), tuple(i.id for i in batch.instances),
           tuple(batch.seeds))
    if key not in _MEMO:
        if len(_MEMO) > 64:   # a long session with many models: keep memory bounded
            _MEMO.clear()
        _MEMO[key] = compute()
    return _MEMO[key]


def clean_run(system: WanSystem, settings: ClaimSettings, batch: TaskBatch) -> SampleResult:
    """The batch's unperturbed run with x̂0 recorded at every step, shared by every claim that reads it."""
    return memo("clean-x0", system, settings, batch, lambda: run(system, settings, batch, record=("x0",)))


def step_videos(system: WanSystem, res: SampleResult, row: int) -> torch.Tensor:
    """Decoded x̂0 of one row at every recorded step: (steps, F, 3, H, W), unclamped."""
    return torch.stack([videos(system, res["x0"][s][row:row + 1], clamp=False)[0] for s in range(len(res.steps))])


def sweep(system: WanSystem, settings: ClaimSettings, batch: TaskBatch, branches: dict,
          record: Sequence[str] = ()) -> dict[str, SampleResult]:
    """Branches of one batch sharing their clean prefix (see `Sampler.sweep`); the clean run is "clean"."""
    def compute():
        return Sampler(system).sweep(_bound_conditioning(system, settings, batch), batch.seeds, settings.steps,
                                     branches, guidance_scale=settings.guidance_scale, record=record)
    return _stored("sweep", system, settings, batch, compute, record=list(record), branches=branches)


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


def also_requires(res: ClaimResult, ok: bool, reason: str) -> ClaimResult:
    """A claim with a second condition beside its interval: `holds` becomes `fails`, with the reason, when the
    condition is not met (the interval alone cannot make the claim hold)."""
    if res.status == "holds" and not ok:
        res.status, res.reason = "fails", reason
    return res


def noise_injection_steps(settings: ClaimSettings) -> list[int]:
    """The tier's noise-at-step injection steps. Never step 0: there the latents are pure noise already, and
    "noise at step 0" only redraws the seed."""
    s = settings.steps
    return sorted({min(s - 1, max(1, int(f * s))) for f in settings.noise_step_fractions})


def skipped(claim_id: str, reason: str, system: WanSystem, settings: ClaimSettings) -> ClaimResult:
    """A row for a claim that cannot be measured on this model or with these inputs, with its one-line reason."""
    return ClaimResult.for_claim(claim_id, measured=None, ci_low=None, ci_high=None, n=None, status="skipped",
                                 reason=reason, model=system.name, seeds=list(settings.seeds),
                                 details={"weights_hash": system.weights_hash})


def estimate_forwards(system: WanSystem, settings: ClaimSettings, claim_ids: Sequence[str]) -> dict:
    """Row-forwards (one sample through one expert once) the claims will need at these settings, and the ETA
    from one measured forward (batch of one row) at the tier's shape. An upper bound where batches share."""
    import time

    S, cfg = settings.steps, 2 if settings.guidance_scale > 1 else 1
    rows = len(settings.tasks) * settings.instances * len(settings.seeds)
    steps = noise_injection_steps(settings)
    cost = {"clean": rows * S}
    per = {
        "bench.table1": rows * S,                                       # the ood split (id is the shared run)
        "noise.step_vs_frame": rows * (sum(S - s for s in steps) + len(settings.noise_frames) * S),
        "ensemble.mid_layers": 4 * rows * 3 * S // max(1, len(settings.seeds)),
        "layers.energy_profile": rows,
        "layers.swap_flip": settings.swap_instances * len(settings.seeds) * (1 + (1 + system.num_layers // settings.swap_stride) * S),
        "frames.count": int(rows * S * sum([*settings.frame_counts, settings.single_frame]) / settings.num_frames),
    }
    total = (cost["clean"] + sum(v for k, v in per.items() if k in claim_ids)) * cfg
    one = replace(settings, tasks=settings.tasks[:1], instances=1, seeds=settings.seeds[:1])
    batch = next(batches(one, instances(one)))
    sampler = Sampler(system)                       # not through the store: this is a timing
    state = sampler.prepare(_bound_conditioning(system, one, batch), batch.seeds, one.steps)
    t0 = time.perf_counter()
    sampler.run(state, guidance_scale=one.guidance_scale, until=1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = (time.perf_counter() - t0) / cfg
    return {"row_forwards": int(total), "seconds_per_row_forward": t, "eta_s": total * t}


ARTIFACTS: "Path | None" = None    # set by the plugin: <cos-out>/artifacts, where claims leave what the report draws


def save_trace(name: str, inst: TaskInstance, step_videos: torch.Tensor, weights: Sequence[torch.Tensor],
               sigmas: Sequence[float]) -> None:
    """Keep one row's decoded x̂0 per step (S, F, H, W, 3) and candidate mixtures (answer first) for the report."""
    if ARTIFACTS is None:
        return
    import numpy as np

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    order = [inst.answer] + [k for k in range(len(weights[0])) if k != inst.answer]
    np.savez_compressed(ARTIFACTS / f"{name}.npz", x0=step_videos.clamp(0, 1).permute(0, 1, 3, 4, 2).numpy(),
                        weights=torch.stack([w[order] for w in weights]).numpy(), sigmas=np.asarray(sigmas),
                        task=inst.task, instance=inst.seed, prompt=inst.prompt)

"""Running a claim's batches through the shared sampler: the `RunContext` a claims session hands every claim.

It owns what used to be module globals: the result store, this host's shard of the batches, the shared
in-process runs (the clean x̂0 run, the noise sweep) and the loader of the distilled model. The plugin makes
one per session; a control or a script makes its own (`RunContext()`: no store, no shard).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from cos.interventions.base import Intervention
from cos.models.system import WanSystem
from cos.sampler import Sampler, SampleResult
from cos.settings import ClaimSettings, instances
from cos.store import ResultStore, key_of
from cos.taskrun import TaskBatch, conditioning, decode, make_batch


# bumped whenever an intervention's meaning changes (stored results of the old meaning must not be served)
ENGINE = 2


@dataclass
class RunContext:
    """Where a claims session keeps its state. `shard=(i, n)`: only every n-th batch from the i-th."""

    store: ResultStore | None = None
    shard: tuple[int, int] | None = None
    progress: bool = True
    report_instances: int = 2       # x̂0 filmstrips per task in the report (--cos-report-instances)
    distilled_loader: Callable[[], WanSystem | None] | None = None
    _memo: dict = field(default_factory=dict, repr=False)
    # every stored run read or written: {"key", "kind", "rows": [(instance id, seed)]} (samples.jsonl names them)
    key_log: list = field(default_factory=list, repr=False)
    _distilled: Any = field(default=None, repr=False)

    @property
    def distilled(self) -> WanSystem | None:
        """The --cos-lora model (App. C's 4-step model), loaded on first use; None when none is given."""
        if self._distilled is None and self.distilled_loader is not None:
            self._distilled = self.distilled_loader()
        return self._distilled

    # ---------------------------------------------------------------- batches
    def batches(self, settings: ClaimSettings, insts: list | None = None, desc: str = "batches") -> Iterator[TaskBatch]:
        """The batches of (instance × seed) rows; under a shard i/n only every n-th batch, from the i-th.
        Batches are formed before sharding, so a merged store serves the unsharded run batch for batch."""
        insts = instances(settings) if insts is None else insts
        per = max(1, settings.batch_size // len(settings.seeds))
        starts = list(range(0, len(insts), per))
        if self.shard is not None:
            starts = [b for k, b in enumerate(starts) if k % self.shard[1] == self.shard[0]]
        for b in tqdm(starts, desc=desc, disable=not self.progress or len(starts) < 2, leave=False):
            yield make_batch(insts[b:b + per], settings.seeds, settings.height, settings.width)

    # ---------------------------------------------------------------- sampling
    def run(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, record: Sequence[str] = (),
            interventions: Sequence[Intervention] = (), until: int | None = None) -> SampleResult:
        """One batch from noise to the end (or to step `until`), with the claim's records and interventions.
        Runs whose interventions only modify (no captures to fill) are served from / saved to the store."""
        def compute():
            sampler = Sampler(system)
            state = sampler.prepare(bound_conditioning(system, settings, batch), batch.seeds, settings.steps)
            return sampler.run(state, guidance_scale=settings.guidance_scale, record=record,
                               interventions=interventions, until=until)
        if not all(iv.modifies for iv in interventions):
            return compute()
        return self._stored("run", system, settings, batch, compute, record=list(record),
                            interventions=list(interventions), until=until)

    def sweep(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, branches: dict,
              record: Sequence[str] = ()) -> dict[str, SampleResult]:
        """Branches of one batch sharing their clean prefix (see `Sampler.sweep`); the clean run is "clean"."""
        def compute():
            return Sampler(system).sweep(bound_conditioning(system, settings, batch), batch.seeds, settings.steps,
                                         branches, guidance_scale=settings.guidance_scale, record=record)
        return self._stored("sweep", system, settings, batch, compute, record=list(record), branches=branches)

    def memo(self, kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute: Callable):
        """Compute once per session what several claims read (the clean run with x̂0 recorded, a noise sweep):
        keyed by the model, the settings, the batch's (instance, seed) rows and `kind`."""
        key = (kind, id(system), system.fingerprint, repr(settings), tuple(i.id for i in batch.instances),
               tuple(batch.seeds))
        if key not in self._memo:
            if len(self._memo) > 64:   # a long session with many models: keep memory bounded
                self._memo.clear()
            self._memo[key] = compute()
        return self._memo[key]

    def clean_run(self, system: WanSystem, settings: ClaimSettings, batch: TaskBatch) -> SampleResult:
        """The batch's unperturbed run with x̂0 recorded at every step, shared by every claim that reads it."""
        return self.memo("clean-x0", system, settings, batch, lambda: self.run(system, settings, batch, record=("x0",)))

    def _stored(self, kind: str, system: WanSystem, settings: ClaimSettings, batch: TaskBatch, compute, **what):
        if self.store is None:
            return compute()
        # the system's fingerprint: weights and LoRAs by content, scheduler config (flow shift), boundary, dtype;
        # ENGINE names the meaning of the interventions, so a store filled by an older engine is not served
        key = key_of(kind=kind, engine=ENGINE, model=system.fingerprint, name=system.name, settings=settings.record(),
                     rows=[(i.id, i.num_frames, s) for i, s in zip(batch.instances, batch.seeds)],
                     size=(batch.height, batch.width), **what)
        self.key_log.append({"key": key, "kind": kind, "rows": [(i.id, s) for i, s in zip(batch.instances, batch.seeds)]})
        hit = self.store.get(key)
        if hit is not None:
            return _from_disk(hit)
        with self.store.computing(key):     # a failed computation releases the key for other processes
            out = compute()
            self.store.put(key, _to_disk(out))
        return out


def bound_conditioning(system: WanSystem, settings: ClaimSettings, batch: TaskBatch):
    """The batch's conditioning; a model that needs the batch itself (a reference denoiser's candidate set)
    gets it through `system.batch_binder` first."""
    if system.batch_binder is not None:
        system.batch_binder(system, batch)
    return conditioning(batch, system.encode_prompt, text_dim=getattr(system.transformer.config, "text_dim", 32),
                        negative=settings.guidance_scale > 1)


def videos(system: WanSystem, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Decoded videos (B, F, 3, H, W) in [0, 1] (unclamped with clamp=False)."""
    return decode(system, latents.cpu(), clamp=clamp)


def step_videos(system: WanSystem, res: SampleResult, row: int) -> torch.Tensor:
    """Decoded x̂0 of one row at every recorded step: (steps, F, 3, H, W), unclamped."""
    return torch.stack([videos(system, res["x0"][s][row:row + 1], clamp=False)[0] for s in range(len(res.steps))])


def _to_disk(res):
    if isinstance(res, dict):
        return {k: _to_disk(v) for k, v in res.items()}
    return {"latents": res.latents.cpu(), "steps": res.steps, "timesteps": res.timesteps, "sigmas": res.sigmas,
            "trajectory": {k: v.cpu() for k, v in res.trajectory.items()}, "forwards": res.forwards}


def _from_disk(d):
    if "latents" not in d:
        return {k: _from_disk(v) for k, v in d.items()}
    return SampleResult(d["latents"], None, d["steps"], d["timesteps"], d["sigmas"], d["trajectory"], d["forwards"])


def estimate_forwards(ctx: RunContext, system: WanSystem, settings: ClaimSettings, claims: Sequence[Any]) -> dict:
    """Row-forwards the claims will need at these settings (the shared clean run plus each claim's `cost`), and
    the ETA from one measured forward (batch of one row) at the tier's shape. An upper bound where batches share."""
    cfg = 2 if settings.guidance_scale > 1 else 1
    rows = len(settings.tasks) * settings.instances * len(settings.seeds)
    per = {c.id: c.cost(settings, system) for c in claims}
    total = (rows * settings.steps + sum(per.values())) * cfg
    one = replace(settings, tasks=settings.tasks[:1], instances=1, seeds=settings.seeds[:1])
    batch = next(RunContext(progress=False).batches(one))
    sampler = Sampler(system)                       # not through the store: this is a timing
    state = sampler.prepare(bound_conditioning(system, one, batch), batch.seeds, one.steps)
    t0 = time.perf_counter()
    sampler.run(state, guidance_scale=one.guidance_scale, until=1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = (time.perf_counter() - t0) / cfg
    return {"row_forwards": int(total), "per_claim": per, "seconds_per_row_forward": t, "eta_s": total * t}

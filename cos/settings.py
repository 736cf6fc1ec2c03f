"""Generic claim settings per tier (what every claim shares: tasks, instances, seeds, sampling). A claim's own
sizes (sweep points, swapped blocks, frame counts) live in the claim's module, keyed by the same tier names."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from cos.tasks import TASKS, TaskInstance, make_instance


@dataclass(frozen=True)
class ClaimSettings:
    """How much to run. `instances` per task; instance seeds are first_instance.. (held out from training).
    `instance_cap` is set by --cos-instances: claims with instance counts of their own take at most this."""

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
    tier: str = "cpu"
    instance_cap: int | None = None
    # set by --cos-budget's fit: claims with instance counts of their own take this share of them (as the tier's
    # instances a task were scaled), so every claim is sized down in proportion
    instance_scale: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Sampled rows: every task × instance × noise seed."""
        return len(self.tasks) * self.instances * len(self.seeds)

    def capped(self, n: int) -> int:
        """A claim's own instance count under --cos-budget's fit (`instance_scale`) and --cos-instances."""
        if self.instance_scale is not None:
            n = max(1, round(n * self.instance_scale))
        return n if self.instance_cap is None else min(n, self.instance_cap)

    def record(self) -> dict[str, Any]:
        """The settings as written into a row's details (and into store keys: `instance_scale` only where set, so
        the keys of every run without it are those of before it existed)."""
        return {k: v for k, v in self.__dict__.items()
                if k != "extra" and not (k == "instance_scale" and v is None)}


TIERS = {
    # the CI tier: the organism on 2 CPU cores, the whole claims run within ~10 minutes
    "cpu": ClaimSettings(tier="cpu"),
    # the organism on a GPU at full statistics. At most 128 rows a forward (42 instances × 3 seeds, 126): in one call
    # on one H200 the tier took 114.8 s at 128 rows and 124.3 s at 64 with the same code (1553 forwards against
    # 2899; benchmarks/results/gpu/ab-h200/). Beyond ~64 rows a forward costs more (45.8 ms at 264 against 15.6 ms
    # at 64 in benchmarks/results/gpu/batch-h200/), and larger batches leave a sequential claim fewer looks to
    # stop at (7 units at 128, 3 at 264: layers.swap_flip would have none)
    "gpu": ClaimSettings(instances=32, seeds=(0, 1, 2), batch_size=128, tier="gpu"),
    # a full Wan model with the paper's settings (50 steps, 480×832×81, guidance 5)
    "full": ClaimSettings(instances=5, steps=50, num_frames=81, height=480, width=832, guidance_scale=5.0,
                          batch_size=1, tier="full"),
}


def settings_for(system: Any, tier: str) -> ClaimSettings:
    """The tier's settings, with the model's own sampling defaults (cos_model.json) where it has them."""
    s = TIERS[tier]
    d = system.extra.get("defaults", {})
    keys = {"num_frames", "height", "width", "steps", "guidance_scale"}
    return replace(s, **{k: v for k, v in d.items() if k in keys}) if tier != "full" else s


def instances(settings: ClaimSettings, tasks: Sequence[str] | None = None) -> list[TaskInstance]:
    """Task instances of the settings: every task × instance seeds first_instance.., split and frame count."""
    return [make_instance(t, i, settings.num_frames, settings.split, cached=True)
            for t in (tasks or settings.tasks)
            for i in range(settings.first_instance, settings.first_instance + settings.instances)]

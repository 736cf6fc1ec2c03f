"""This process's place among the processes of one claims run: `accelerate launch` / `torchrun` (one process per
device, data parallel inside every claim), `--cos-shard I/N` (separate hosts that never talk; `cos merge`), or
alone.

The launcher's environment names the place (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT).
Ranks exchange only small things (a barrier per claim, the rows each rank ran): over a gloo process group of
their own, on the CPU, whatever the devices, with a long timeout. Why not the launcher's NCCL group: one rank
may wait hours at a barrier while another finishes its share of a claim, far past NCCL's watchdog; and nothing
big travels between ranks anyway (results meet in the shared result store, see `cos.runner`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

TIMEOUT_ENV = "COS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 48 * 3600


@dataclass
class World:
    """rank / size of this run's processes; `connected`: they can meet (barrier, gather) through a process group.
    `--cos-shard I/N` is a world of N that is not connected: every rank only fills the store."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    connected: bool = False
    _group: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.connected and self.size > 1:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def gather(self, obj: Any) -> list:
        """`obj` of every rank, in rank order, on every rank (a list of one when alone or not connected)."""
        if not (self.connected and self.size > 1):
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, obj, group=self._group)
        return out


def launched_size() -> int:
    """WORLD_SIZE of the launcher (1 when not launched by accelerate/torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def world_from_env() -> World:
    """The launcher's world, connected through a gloo group (created here, once per process)."""
    size = launched_size()
    if size == 1:
        return World()
    import torch.distributed as dist

    env = lambda k, d: int(os.environ.get(k, d))
    rank, local_rank = env("RANK", 0), env("LOCAL_RANK", 0)
    local_size = env("LOCAL_WORLD_SIZE", size)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timeout)
        group = None
    else:   # someone (accelerate's state) made the default group, maybe NCCL: a gloo group of our own beside it
        group = dist.new_group(backend="gloo", timeout=timeout)
    return World(rank, size, local_rank, local_size, connected=True, _group=group)


def limit_threads(local_size: int | None = None) -> int:
    """Each process of a node takes its share of the cores for torch's intra-op threads (N processes each
    spinning up all cores thrash each other). Returns the thread count set (0: left alone, one process)."""
    local_size = local_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local_size <= 1:
        return 0
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    n = max(1, cores // local_size)
    torch.set_num_threads(n)
    return n

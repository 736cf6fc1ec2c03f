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

import contextlib
import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterator

from cos.errors import InputError

TIMEOUT_ENV = "COS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 48 * 3600
# Waiting for every rank to join is a different wait from a look's gather: the ranks start together (the
# launcher starts them, they join at pytest's configure, before any model loads), so a rank missing after 10
# minutes never started or cannot reach rank 0. Without this bound a launch short of a process waits 48 h.
JOIN_TIMEOUT_ENV = "COS_DIST_JOIN_TIMEOUT_S"
DEFAULT_JOIN_TIMEOUT_S = 600


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
    """WORLD_SIZE of the launcher (1 when not launched by accelerate/torchrun). A WORLD_SIZE that is not an
    integer counts as launched (2) so that `launch_env` refuses it with one line instead of the run going on
    alone as if it were the whole launch."""
    v = os.environ.get("WORLD_SIZE", "1").strip()
    if not re.fullmatch(r"[+-]?\d+", v):
        return 2
    return max(1, int(v))


def _int_env(name: str, low: int, high: int | None, default: int | None) -> int:
    """An integer environment variable in [low, high]; InputError (one line: variable, value, rule) otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise InputError(f"{name} is not set: a launch of WORLD_SIZE={os.environ.get('WORLD_SIZE')} needs it "
                             "(accelerate launch / torchrun set it)")
        return default
    rule = f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else "")
    if not re.fullmatch(r"\s*[+-]?\d+\s*", raw) or not (low <= int(raw) and (high is None or int(raw) <= high)):
        raise InputError(f"{name}={raw!r}: {rule}")
    return int(raw)


def _seconds_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name}={raw!r}: must be a number of seconds > 0")
    return v


@dataclass(frozen=True)
class LaunchEnv:
    """The launcher's description of this process, checked (`launch_env`)."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    timeout_s: float          # a gather or barrier may wait this long (a look)
    join_timeout_s: float     # every rank must have joined within this


def launch_env() -> LaunchEnv | None:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT and the timeouts, checked before any
    connection is tried: None when not launched (WORLD_SIZE unset or 1), else InputError with one line naming the
    variable, its value and the rule (torch would raise a bare ValueError, or two ranks that both default to 0 would
    wait for each other until the timeout)."""
    size = _int_env("WORLD_SIZE", 1, None, 1)
    timeout = _seconds_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    join = _seconds_env(JOIN_TIMEOUT_ENV, min(DEFAULT_JOIN_TIMEOUT_S, timeout))
    if size == 1:
        return None
    rank = _int_env("RANK", 0, size - 1, None)
    local_size = _int_env("LOCAL_WORLD_SIZE", 1, size, size)
    local_rank = _int_env("LOCAL_RANK", 0, local_size - 1, rank if local_size == size else None)
    if not os.environ.get("MASTER_ADDR", "").strip():
        raise InputError(f"MASTER_ADDR is not set: a launch of WORLD_SIZE={size} needs rank 0's address")
    _int_env("MASTER_PORT", 1, 65535, None)
    return LaunchEnv(rank, size, local_rank, local_size, timeout, join)


def _host() -> str:
    """This machine, for grouping ranks by node: hostname and boot id (containers of one launch on two machines
    may share a hostname; their boot ids differ)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:    # a small procfs file, never a FIFO
            boot = f.read(64).decode("ascii", "replace").strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}" + (f"#{boot}" if boot else "")


def check_world(views: list[dict[str, Any]]) -> None:
    """Every rank's view of the launch (`{"rank", "size", "local_rank", "local_size", "host"}`, in group order)
    must agree: WORLD_SIZE the number of ranks that joined, ranks 0..N-1 once each, and on each node
    LOCAL_WORLD_SIZE the node's number of ranks with local ranks 0..L-1 once each. InputError (one line) else:
    a launch that disagrees about its world would split the batches wrongly and leave some unsampled."""
    n = len(views)
    sizes = sorted({v["size"] for v in views})
    if sizes != [n]:
        raise InputError(f"launch: {n} processes joined but their WORLD_SIZE says {', '.join(map(str, sizes))}; "
                         "every process of one launch needs the same WORLD_SIZE, the number of processes")
    ranks = sorted(v["rank"] for v in views)
    if ranks != list(range(n)):
        dup = sorted({r for r in ranks if ranks.count(r) > 1})
        raise InputError(f"launch: RANK values {ranks} (repeated: {dup}); each of the WORLD_SIZE={n} processes "
                         "needs its own RANK in 0..WORLD_SIZE-1")
    for host in sorted({v["host"] for v in views}):
        here = [v for v in views if v["host"] == host]
        lsizes = sorted({v["local_size"] for v in here})
        if lsizes != [len(here)]:
            raise InputError(f"launch: {len(here)} processes on host {host.split('#')[0]} (ranks "
                             f"{sorted(v['rank'] for v in here)}) but LOCAL_WORLD_SIZE says "
                             f"{', '.join(map(str, lsizes))}; it must be the number of processes on the node")
        lranks = sorted(v["local_rank"] for v in here)
        if lranks != list(range(len(here))):
            raise InputError(f"launch: LOCAL_RANK values {lranks} on host {host.split('#')[0]}; each of its "
                             f"{len(here)} processes needs its own LOCAL_RANK in 0..{len(here) - 1}")


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def world_from_env() -> World:
    """The launcher's world, connected through a gloo group (created here, once per process), after every rank
    has joined within the join timeout and all agree about the world (`check_world`). InputError (one line)
    when the environment is malformed, a rank does not join in time, or the ranks disagree."""
    env = launch_env()
    if env is None:
        return World()
    import torch.distributed as dist

    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        with _stderr_held():
            views, group = _join(dist, env)
    except Exception as e:  # noqa: BLE001 - torch's store/gloo errors have no common base: one line either way
        who = ("rank 0 waited for the others" if env.rank == 0 else f"rank {env.rank} could not reach rank 0 "
               f"at {where} or the others")
        raise InputError(f"launch: not every one of the WORLD_SIZE={env.size} processes joined within "
                         f"{env.join_timeout_s:g} s ({who}; a process did not start, crashed or was given another "
                         f"WORLD_SIZE/MASTER_PORT; ${JOIN_TIMEOUT_ENV} sets the wait): {_one_line(e)}") from None
    try:
        check_world(views)
    except InputError:
        _leave(dist, group)
        raise
    return World(env.rank, env.size, env.local_rank, env.local_size, connected=True, _group=group)


def _leave(dist: Any, group: Any) -> None:
    """Every rank leaves the groups together before the one-line error ends it. Left to interpreter exit, rank 0
    (which hosts the store) could tear its threads down while the other rank still closed its connections, and
    died of SIGABRT ('terminate called without an active exception') instead of exiting with the one line: seen
    1 in 15 under load. All ranks reach here (they gathered the same views), so the barrier cannot hang."""
    try:
        try:
            dist.barrier(group=group)
        finally:            # a barrier that fails still leaves the groups (their threads joined, not left to exit)
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the one line the caller raises says what happened; this is cleanup only
        pass


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """File descriptor 2 into a temporary file while ranks join: torch's C++ side logs every connection retry
    with a 30-frame stack to fd 2, which would bury the one line a failed join ends with. Replayed to stderr when
    the block succeeds, dropped when it raises (the one line says what happened)."""
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                tmp.seek(0)
                os.write(2, tmp.read())


def _join(dist: Any, env: LaunchEnv) -> tuple[list, Any]:
    """Every rank's view of the launch, gathered over a gloo group of our own (made here)."""
    if not dist.is_initialized():
        # the default group only proves that every rank joined: its timeout is the join timeout
        dist.init_process_group("gloo", rank=env.rank, world_size=env.size,
                                timeout=timedelta(seconds=env.join_timeout_s))
    # someone (accelerate's state) may have made the default group, maybe NCCL: the gathers and barriers of a run
    # go over a gloo group of our own, with the long timeout (a rank may wait hours at a look)
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=env.timeout_s))
    views: list = [None] * env.size
    dist.all_gather_object(views, {"rank": env.rank, "size": env.size, "local_rank": env.local_rank,
                                   "local_size": env.local_size, "host": _host()}, group=group)
    return views, group


def limit_threads(local_size: int | None = None) -> int:
    """Each process of a node takes its share of the cores for torch's intra-op threads (N processes each
    spinning up all cores thrash each other). Returns the thread count set (0: left alone, one process)."""
    if local_size is None:   # a malformed value is refused by launch_env with one line; here it means alone
        raw = os.environ.get("LOCAL_WORLD_SIZE", "1").strip()
        local_size = int(raw) if raw.isdigit() else 1
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

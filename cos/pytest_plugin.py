"""pytest plugin: markers, `--cos-*` options, the claim fixtures, and the claims-status table.

Claim tests report a `ClaimResult` through the `cos_claim` fixture; the result travels as plain data
in the test report's `user_properties`, so it reaches the controller under pytest-xdist too. At the
end the table is printed and written as claims-status.md/.json; with `--cos-baseline` a claim that
held in the baseline and does not hold now fails the run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import pytest

from cos.registry import ClaimResult, get_claim

if TYPE_CHECKING:
    from cos.runner import RunContext

MARKERS = {
    "claims": "a paper claim checked on the model named by --cos-model",
    "gpu": "needs a CUDA GPU",
    "full_model": "needs a full Wan2.2-I2V model directory (--cos-model)",
    "slow": "takes minutes",
    "claim(id)": "the claim id (docs/claims.md, `cos list`) this test reports",
}
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "fixtures" / "organism"
_RESULT_KEY, _ID_KEY, _ARRAYS_KEY, _SAMPLES_KEY = "cos_claim_result", "cos_claim_id", "cos_claim_arrays", "cos_samples"
_RECORDS_KEY, _GATE_KEY = "cos_records", "cos_gate"
# an xdist worker's plan (on its first claim's setup report) and each claim's progress in it (on its teardown
# report): the controller runs the ETA from them (`CosSession._workers_plan`)
_PLAN_KEY, _WORK_KEY = "cos_plan", "cos_claim_work"
# ... and, between reports, every batch's progress in a file of a folder the controller gives each worker
_PROGRESS_DIR_KEY = "cos_progress_dir"


class _Recording:
    """An option group that also records each option's default (`cos_requested` compares against them)."""

    def __init__(self, group) -> None:
        self.group = group

    def addoption(self, *names: str, **kw) -> None:
        _DEFAULTS[names[0].lstrip("-").replace("-", "_")] = kw.get("default", False if kw.get("action") ==
                                                                   "store_true" else None)
        self.group.addoption(*names, **kw)


_DEFAULTS: dict[str, object] = {}
_SESSION = pytest.StashKey["CosSession"]()
_STARTED_AT = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = _Recording(parser.getgroup("cos", "Chain-of-Steps claims harness"))
    g.addoption("--cos-model", default=None,
                help=f"diffusers-format Wan model directory (default: the organism, {DEFAULT_MODEL})")
    g.addoption("--cos-device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    g.addoption("--cos-out", default=".", help="folder for claims-status.md/.json (default: current directory)")
    g.addoption("--cos-baseline", default=None,
                help="a previous claims-status.json: fail when a claim that held there no longer holds")
    g.addoption("--cos-lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                help="a LoRA for distill.four_step's distilled model (repeat: reasoning and distillation LoRAs, "
                     "weight 0.5 each by default), applied to both experts of --cos-model; without it, the "
                     "model's own distilled LoRA where its cos_model.json declares one (the organism does)")
    g.addoption("--cos-model-lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                help="a LoRA applied to --cos-model itself (e.g. base Wan2.2 + the VBVR LoRA at 1.0)")
    g.addoption("--cos-flow-shift", type=float, default=None,
                help="override the shipped scheduler's flow shift (VBVR-Wan2.2 was evaluated at 50 steps, shift 5)")
    g.addoption("--cos-offload", action="store_true",
                help="keep the experts on the CPU and move the one in use to the GPU (when both do not fit)")
    g.addoption("--cos-instances", type=int, default=None, help="task instances per task (overrides the tier)")
    g.addoption("--cos-tasks", default=None, help="comma-separated task names (overrides the tier)")
    g.addoption("--cos-size", default=None, metavar="HxWxF",
                help="video height x width x frames (overrides the tier; e.g. 480x832x81)")
    g.addoption("--cos-steps", type=int, default=None, help="denoising steps (overrides the tier)")
    g.addoption("--cos-batch-size", type=int, default=None,
                help="rows per sampler batch (overrides the tier). Batches are what several processes split: "
                     "a tier whose rows fit one batch runs on one rank; the table depends on it, not on N")
    g.addoption("--cos-store", default=None,
                help="result-store folder: finished runs are kept there and an interrupted run resumes; "
                     "'none' disables (default: <cos-out>/cos-store on the full tier, off otherwise)")
    g.addoption("--cos-store-key", default=None, metavar="KEYFILE",
                help="the secret key that signs and checks result-store entries (default: $COS_STORE_KEY, else "
                     "<cache dir>/store.key, made on first use); copy one key to the hosts of one launch")
    g.addoption("--cos-shard", default=None, metavar="I/N",
                help="hosts without a shared filesystem: run only batch shard I of N (0-based, the split of "
                     "`accelerate launch` ranks) into the result store; `cos merge` the stores and rerun for the "
                     "table. On one node, or nodes sharing a filesystem, use `accelerate launch` instead")
    g.addoption("--cos-report-instances", type=int, default=2, metavar="N",
                help="x̂0 filmstrips per task in the report: the N most and least confident instances (default 2)")
    g.addoption("--cos-overwrite", action="store_true",
                help="replace the run a --cos-out holds without keeping it: by default it moves to "
                     "<cos-out>/history/<UTC start time>/ when this run first writes (cos.runs)")
    g.addoption("--cos-compare", default=None, choices=["last"],
                help="last: print what changed against the previous run in --cos-out on the same weights (the "
                     "most recent history entry with the same weights hash); informational, --cos-baseline gates")
    g.addoption("--cos-compile", action="store_true", help="compile_repeated_blocks on the experts")
    g.addoption("--cos-vbvr", default=None, metavar="DIR",
                help="VBVR-Bench data folder: bench.table1 and ensemble.mid_layers generate its samples at "
                     "VBVR-Wan2.2's evaluation settings and score them with VBVR-EvalKit (cos.vbvr_run)")
    g.addoption("--cos-sequential", default="auto", choices=["auto", "on", "off"],
                help="decide claims written as records at up to 3 looks (--cos-looks; O'Brien-Fleming alpha "
                     "spending) and stop each once decided or futile; auto: on for the gpu and full tiers, off for "
                     "cpu (cos.sequential)")
    g.addoption("--cos-looks", default=None, metavar="K",
                help="with sequential decisions: at most K looks per claim (default 3; 2 to 10). More looks stop "
                     "clear claims sooner and cost borderline ones power at the same maximum n (5 looks: 0.65 "
                     "instead of 0.72 at an effect 2.8 standard errors out); `cos plan --looks K` prices it "
                     "(cos.sequential)")
    g.addoption("--cos-overlap", default="off", choices=["on", "off"],
                help="read out a batch (decode, mixtures, scores, CKA) on a worker thread while the next batch "
                     "samples; the same table either way. Off by default: on the organism's gpu tier it gained "
                     "1.04x (its readouts hold the GIL); a full model's long forwards are what it can hide, "
                     "not yet measured (benchmarks/results/gpu/overlap-h200)")
    g.addoption("--cos-against", default=None, metavar="OLD",
                help="gate a model change: also measure every selected claim on OLD (a model directory, or a run "
                     "folder whose records.jsonl to pair with) on the same rows, and report each claim's paired "
                     "change (DIR/gate.json, gate.md); the run fails when a claim regresses (cos.gate). Where the "
                     "run takes looks (--cos-sequential auto on the gpu and full tiers against a model directory; "
                     "on: against a run folder too) a claim's rows (against a model, both models', sampled unit by "
                     "unit alike) stop once its change is decided")
    g.addoption("--cos-tolerance", type=float, default=None, metavar="FRACTION",
                help="with --cos-against: a claim regresses when its change is confidently worse than this fraction "
                     "of the effect it is sized for (ClaimSpec.effect; default 0.5; 0: any confidently worse "
                     "change), or than its own gate_tolerance")
    g.addoption("--cos-budget", default=None, metavar="HOURS[:fit]",
                help="GPU-hours the run may take (its expected time from the timed warm forward, times its "
                     "processes): a plan above it is refused before any claim runs; HOURS:fit instead sizes every "
                     "claim down (fewer instances a task) until the plan fits and says what power that leaves. "
                     "Claims not yet started when the budget is spent are skipped (cos.eta)")
    g.addoption("--cos-pilot", default=None, metavar="STATUS_JSON",
                help="a claims-status.json of the same claims (as `cos plan --pilot`): its intervals give each "
                     "claim's spread, hence where sequential claims are expected to stop (the ETA) and the power "
                     "--cos-budget's fit leaves; default: the --cos-baseline when given, else the run --cos-out "
                     "holds when it is of the same tier and weights, else none (a prior)")
    g.addoption("--cos-tier", default="auto", choices=["auto", "cpu", "gpu", "full"],
                help="claim settings: cpu (CI), gpu (full statistics), full (a full Wan model, paper settings); "
                     "auto picks from the model and device")


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            return []
    return []


def assign_worker_gpu(worker_id: str | None, gpus: list[str]) -> str | None:
    """One GPU per xdist worker: gwN takes gpus[N % len(gpus)] (indexing into the caller's own list)."""
    if not worker_id or not worker_id.startswith("gw") or not gpus:
        return None
    return gpus[int(worker_id[2:]) % len(gpus)]


def validate_session(config: pytest.Config) -> None:
    """Check every --cos-* value (cos.validation) before any test runs: a bad one is a one-line usage error."""
    if hasattr(config, "workerinput"):   # xdist workers: the controller has checked the same options
        return
    from cos.errors import CosError
    from cos.parallel import launch_env
    from cos.validation import validate_options

    opts = {"--cos-" + k[4:].replace("_", "-"): v for k, v in vars(config.option).items() if k.startswith("cos_")}
    if opts.get("--cos-out") == ".":   # the default: only written to when claims ran; don't refuse unit tests
        del opts["--cos-out"]
    try:
        validate_options(opts)
        launch_env()    # a malformed launcher environment: one line before anything connects
        budget = opts.get("--cos-budget")
        workers = getattr(config.option, "numprocesses", None)
        if budget and str(budget).strip().lower().endswith(":fit") and (opts.get("--cos-shard") or workers):
            # unconnected processes (shards, xdist workers) would each time and fit for themselves: different
            # instance counts per process, store keys that do not merge, a table of claims at different sizes
            raise CosError(f"--cos-budget {budget!r}: ':fit' needs one process or a launcher (accelerate/torchrun) "
                           f"that connects them, not {'--cos-shard' if opts.get('--cos-shard') else '-n (xdist)'}; "
                           "run `cos plan` and pass the instances it fits as --cos-instances to every process")
    except CosError as e:
        raise pytest.UsageError(str(e)) from None


def session_fatal(what: str, e: BaseException) -> "NoReturn":
    """End the session with one line (not one traceback per claim): a model, LoRA or option error is the same
    for every claim. Nothing is written, so the earlier run stays in place (not moved to history)."""
    msg = str(e) if isinstance(e, Exception) and type(e).__module__.startswith("cos") else f"{type(e).__name__}: {e}"
    pytest.exit(f"ERROR: {what}: {' '.join(msg.split())}", returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_configure(config: pytest.Config) -> None:
    """Options and markers only: installing cos must not change another project's test session (no torch import,
    no nvidia-smi, no CUDA_VISIBLE_DEVICES rewrite, no thread limit, no process group). The claims session starts
    when claims are collected, or at once when a --cos-* option is given (`start_session`)."""
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    config.stash[_STARTED_AT] = time.time()
    validate_session(config)    # only the options given (the defaults need no check): nothing heavy is imported
    config.pluginmanager.register(_Hooks(config), "cos-session")
    if cos_requested(config):
        start_session(config)


def cos_requested(config: pytest.Config) -> bool:
    """Whether a --cos-* option was given a value other than its default."""
    return any(getattr(config.option, dest, default) != default for dest, default in _DEFAULTS.items())


def selects_claims(config: pytest.Config) -> bool:
    """Whether the session is a claims session before anything is collected (the xdist controller never collects):
    a --cos-* option given, or `-m` selecting a claim test (marked `claims`, with the markers a tier adds), as
    pytest evaluates it: `-m "claims and gpu"` does, the suite's own default `-m "not claims and ..."` does not."""
    if cos_requested(config):
        return True
    expr = config.option.markexpr or ""
    if "claims" not in expr:
        return False
    try:
        from _pytest.mark.expression import Expression      # pytest's own evaluator of -m (no public API)

        e = Expression.compile(expr)
        return any(e.evaluate(lambda name, **kw: name in marks)
                   for marks in ({"claims", "claim"}, {"claims", "claim", "gpu"},
                                 {"claims", "claim", "gpu", "full_model"}))
    except Exception:  # noqa: BLE001 - another pytest's internals, or an expression pytest itself will refuse
        return "not claims" not in expr


def cos_session(config: pytest.Config) -> "CosSession | None":
    """The session's `CosSession`, or None while no claim was collected and no --cos-* option given."""
    return config.stash.get(_SESSION, None)


def start_session(config: pytest.Config) -> "CosSession":
    """Start the claims session once per process: pin this process's GPU (an xdist worker or a launched rank takes
    its own), limit torch's threads, connect the launched ranks, open the store. Called at configure when a --cos-*
    option is given, else at collection when an item carries the `claim` marker (each xdist worker collects; the
    controller, which never collects, at the first claim's report): always before any fixture, so before torch
    can have initialised CUDA with the unpinned CUDA_VISIBLE_DEVICES."""
    session = cos_session(config)
    if session is not None:
        return session
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env and len([d for d in env.split(",") if d.strip()]) != len({d.strip() for d in env.split(",") if d.strip()}):
        # CUDA rejects a list that repeats an ordinal ("invalid device ordinal"): no GPU would be seen at all
        raise pytest.UsageError(f"CUDA_VISIBLE_DEVICES={env} repeats a GPU, which CUDA rejects; to let xdist "
                                "workers share GPUs list each once (workers take entries round-robin)")
    from cos.parallel import launch_env, launched_size, limit_threads

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if launched_size() > 1 and worker:
        raise pytest.UsageError("accelerate launch / torchrun and pytest-xdist (-n) both split the work: use one")
    launch = launch_env() if launched_size() > 1 else None     # checked at configure: one line if malformed
    gpu, shared_by = place_process(config.getoption("--cos-device"), launch, worker, _visible_gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    check_run_options(config)   # before a launch's limit_threads imports torch (make_run_context checks it again)
    # several processes on a node: each takes its share of the cores (a launched rank's by LOCAL_WORLD_SIZE)
    share_worker_cores(worker) or limit_threads()
    session = config.stash[_SESSION] = CosSession(config)
    session.gpu_shared_by = shared_by
    return session


def xdist_share(worker: str | None) -> int | None:
    """The processes an xdist worker shares the cores with (None: not a worker, or OMP_NUM_THREADS set, which
    rules). Left to torch's default, every worker spins an OpenMP thread on every core: two workers sharing one
    H100's 16 cores had run 4 of the organism's 13 claims when stopped at 170 s (one process: all 13 in 109 s)."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker or not count.isdigit() or "OMP_NUM_THREADS" in os.environ:
        return None
    return int(count)


def share_worker_cores(worker: str | None) -> int:
    """An xdist worker's share of the cores for torch, and for the processes it starts (OMP_NUM_THREADS: pytester
    subprocesses, launched ranks). Returns the thread count set (0: not a worker of several, or left alone). The
    test suite's conftest calls it too, for workers that start no claims session."""
    from cos.parallel import limit_threads

    share = xdist_share(worker)
    if share is None or share <= 1:
        return 0
    n = limit_threads(share)
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n


def place_process(device: str, launch: Any, worker: str | None,
                  visible: Callable[[], list[str]]) -> tuple[str | None, int]:
    """(the GPU this process is given, or None to leave CUDA_VISIBLE_DEVICES alone; how many of the node's launched
    processes share that GPU). A launch's local rank N takes the node's N-th visible GPU (mod their number), an
    xdist worker gwN the N-th; under a launch `--cos-device cuda:N` puts every process of the node on GPU N."""
    if device in ("auto", "cuda") and (worker or launch is not None):
        gpus = visible()
        gpu = assign_worker_gpu(f"gw{launch.local_rank}" if launch is not None else worker, gpus)
        shared = gpu_shared_by(launch.local_rank, launch.local_size, len(gpus)) if gpu and launch else 1
        return gpu, shared
    if launch is not None and device.startswith("cuda:"):
        return None, launch.local_size
    return None, 1


def gpu_shared_by(local_rank: int, local_size: int, gpus: int) -> int:
    """How many of the node's launched processes are given this process's GPU (local rank r takes GPU r mod G)."""
    if gpus < 1:
        return 1
    return len(range(local_rank % gpus, max(local_size, 1), gpus))


def shared_gpu_note(shared_by: int) -> str:
    """The line a launch says when its processes share a GPU (before any claim samples); "" when none do."""
    if shared_by <= 1:
        return ""
    return (f"[cos] note: up to {shared_by} processes of this launch are given the same visible GPU (unless the "
            "launcher gave each its own CUDA_VISIBLE_DEVICES). A shared GPU time-slices their forwards (the "
            "organism's gpu tier on one H100: 1.11x at 4 processes, slower at 2, 1.15x at 3 under NVIDIA MPS; "
            "benchmarks/results/gpu/procs-h100), and the ETA and GPU-hours count each process as its own GPU")


class _Hooks:
    """Registered at configure (cheap): hands the run's hooks to the `CosSession` once one has started."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)     # before pytest's junitxml, which writes the teardown report's properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = cos_session(self.config)
        if session is None:
            # the xdist controller never collects: it learns that claims run from the first claim's report
            if hasattr(self.config, "workerinput") or _ID_KEY not in dict(report.user_properties):
                return
            session = start_session(self.config)
        session.pytest_runtest_logreport(report)
        if report.when == "teardown" and not hasattr(self.config, "workerinput"):
            report.user_properties = junit_properties(report.user_properties)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: a worker is down (done, or crashed and replaced under another id): the ETA waits for it no more."""
        cos = cos_session(self.config)
        if cos is not None:
            cos._xdist_workers.discard(_worker_id(node))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cos = cos_session(self.config)
        if cos is not None:
            cos.pytest_sessionfinish(session)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        cos = cos_session(self.config)
        if cos is not None:
            cos.pytest_terminal_summary(terminalreporter)


_INTERNAL = (_RESULT_KEY, _ARRAYS_KEY, _SAMPLES_KEY, _RECORDS_KEY, _GATE_KEY, _PLAN_KEY, _WORK_KEY)


def junit_properties(props: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """What --junitxml gets of a claim test's properties: the row and its gate change as short text, not the
    records, samples and arrays that travel in them between processes (pytest writes every property's str(): a
    junit.xml of megabytes with bytes reprs in it). Other properties are left as they are."""
    d = dict(props)
    out = [(k, v) for k, v in props if k not in _INTERNAL]
    row = d.get(_RESULT_KEY)
    if isinstance(row, dict):
        ci = (f" [{row['ci_low']:.4g}, {row['ci_high']:.4g}]" if isinstance(row.get("ci_low"), (int, float))
              and isinstance(row.get("ci_high"), (int, float)) else "")
        m = row.get("measured")
        out.append(("cos_row", f"{row.get('status')}: {'–' if not isinstance(m, (int, float)) else f'{m:.4g}'}{ci}, "
                               f"n={row.get('n')}" + (f"; {row['reason']}" if row.get("reason") else "")))
    g = d.get(_GATE_KEY)
    if isinstance(g, dict):
        ch, gci = g.get("change"), g.get("ci")
        out.append(("cos_gate", f"{g.get('verdict')}: change "
                                + ("–" if not isinstance(ch, (int, float)) else f"{ch:+.4g}")
                                + (f" [{gci[0]:+.4g}, {gci[1]:+.4g}]" if gci else "")
                                + (f", tolerance {g['tolerance']:.3g}" if isinstance(g.get("tolerance"), (int, float)) else "")
                                + f", {g.get('status_old')} → {g.get('status_new')}"
                                + (f"; {g['reason']}" if g.get("reason") else "")))
    return out


def resolve_tier(config: pytest.Config) -> str:
    """cpu / gpu / full from --cos-tier, or from the model (a cos organism dir or a diffusers Wan dir) and device."""
    tier = config.getoption("--cos-tier")
    if tier != "auto":
        return tier
    model = config.getoption("--cos-model")
    if model is not None and not (Path(model) / "cos_model.json").exists():
        return "full"
    dev = config.getoption("--cos-device")
    if dev == "auto":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
    return "gpu" if dev.startswith("cuda") else "cpu"


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--cos-shard {spec!r}: expected I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise pytest.UsageError(f"--cos-shard {spec!r}: need 0 <= I < N")
    return i, n


def _run_folder(against: str | None) -> bool:
    """Whether --cos-against names an earlier run's folder (its records.jsonl: `cos.gate.Against.from_path`'s
    test), not a model directory."""
    from cos.records import FILE

    return bool(against) and (Path(against) / FILE).exists()


def check_run_options(config: pytest.Config) -> tuple[int, int] | None:
    """--cos-shard's (I, N) or None, after refusing in one line (pytest.UsageError) the run options that do not fit
    together. Imports no torch, except for --cos-looks under --cos-sequential auto, whose check needs the tier (is
    CUDA there?); `start_session` calls it before a launch's thread limit imports torch."""
    from cos.parallel import launched_size

    shard = parse_shard(config.getoption("--cos-shard"))
    launched = launched_size() > 1
    if launched and shard is not None:
        raise pytest.UsageError("--cos-shard splits the batches over hosts that never talk; under accelerate "
                                "launch / torchrun the ranks split them already: drop --cos-shard")
    if launched and config.getoption("--cos-store") == "none":
        raise pytest.UsageError("several processes meet through the result store: --cos-store none cannot be used "
                                "under accelerate launch / torchrun (give a folder every rank sees)")
    if config.getoption("--cos-looks") is not None and not decides_at_looks(config):
        mode = config.getoption("--cos-sequential")
        why = ("--cos-sequential off" if mode == "off" else
               "a gate against a run folder takes looks only with --cos-sequential on"
               if _run_folder(config.getoption("--cos-against")) else
               f"--cos-sequential on; auto is off at the {resolve_tier(config)} tier")
        raise pytest.UsageError(f"--cos-looks {config.getoption('--cos-looks')!r}: only with sequential decisions "
                                f"({why})")
    return shard


def decides_at_looks(config: pytest.Config) -> bool:
    """Whether the run's claims stop at looks (sequential decisions)."""
    from cos.sequential import resolve as sequential_on

    # under a gate (--cos-against) a claim's rows stop at a look once its paired change is decided (look_rule;
    # against a model both models' rows). `auto` does so against a model directory, where its calibration on the
    # planted models gave the fixed-n gate's verdict on every draw (benchmarks/results/calibration/
    # gate-gpu-tier-seq-vm/); against a run folder it stays at fixed n: that path is calibrated by simulation
    # only, and a CI's accepted run is the last gate's folder, whose rows a stop would cut short for the next gate
    mode = config.getoption("--cos-sequential")
    # only auto reads the tier, and resolving it may import torch (is CUDA there?)
    return (sequential_on(mode, resolve_tier(config) if mode == "auto" else "")
            and (mode == "on" or not _run_folder(config.getoption("--cos-against"))))


def make_run_context(config: pytest.Config) -> "RunContext":
    """The session's `RunContext`: the result store (--cos-store; by default on the full tier, under a shard and
    with several processes, where the ranks' runs meet) and this process's place among the run's processes
    (`accelerate launch` / `torchrun` ranks, connected; or --cos-shard I/N, not connected)."""
    shard = check_run_options(config)
    sequential = decides_at_looks(config)
    from cos.errors import CosError
    from cos.parallel import launched_size, world_from_env
    from cos.runner import RunContext
    from cos.sequential import LOOKS
    from cos.store import ResultStore, run_store
    from cos.validation import check_looks

    store = config.getoption("--cos-store")
    launched = launched_size() > 1
    store = run_store(store, config.getoption("--cos-out"), resolve_tier(config) if store is None else "",
                      shard is not None or launched)
    try:    # a rank that never joins, or ranks that disagree about the world: one line, nonzero exit
        world = world_from_env() if launched else None
    except CosError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        opened = None if store is None else ResultStore(store, key_file=config.getoption("--cos-store-key"))
    except Exception as e:  # noqa: BLE001 - a bad key or store: one line before any test
        raise pytest.UsageError(f"--cos-store {store}: {e}") from None
    ctx = RunContext(store=opened, shard=shard, report_instances=config.getoption("--cos-report-instances"),
                     sequential=sequential,
                     overlap=config.getoption("--cos-overlap") == "on",
                     looks=check_looks("--cos-looks", config.getoption("--cos-looks") or LOOKS))
    if world is not None:
        ctx.world = world
    return ctx


def progress_writer(config: pytest.Config):
    """Progress lines written past pytest's output capture (they are for the person waiting, not the log)."""
    from cos.runner import terminal_writer

    def write(text: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        tr = config.pluginmanager.getplugin("terminalreporter")
        if tr is None:
            return
        if capman is None:
            tr.ensure_newline()     # not after a test file's dots
            tr.write(text, flush=True)
            return
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write(text, flush=True)

    tr = config.pluginmanager.getplugin("terminalreporter")
    return terminal_writer(write, bool(tr is not None and tr.isatty))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # claim tests are tier-agnostic; they carry the markers of the tier the chosen model runs in, so that
    # `-m "claims and full_model"` selects them for a full model and `-m "claims and gpu"` on a GPU
    if not any(item.get_closest_marker("claim") is not None for item in items):
        return      # no claims here: the session stays unstarted (resolving the tier would import torch)
    start_session(config)   # first: it pins this process's GPU before resolve_tier asks torch about CUDA
    tier = resolve_tier(config)
    extra = {"cpu": [], "gpu": ["gpu"], "full": ["gpu", "full_model"]}[tier]
    for item in items:
        if item.get_closest_marker("claim") is not None:
            for m in extra:
                item.add_marker(m)


def shared_run_groups(config: pytest.Config) -> dict[str, str]:
    """Claim id -> the name of its group: the claims that read a shared run (`Claim.shared_runs`: the clean run,
    the noise sweep), joined through any run two of them read. A claim with runs of its own only is in none, as
    is one whose `shared_runs` needs the model (a claim of another package may: it is left ungrouped). Names
    only: any tier's settings, without the model's defaults, name the same runs (the xdist controller, which
    calls this, loads no model and asks torch nothing)."""
    from dataclasses import replace

    from cos.registry import all_claims
    from cos.settings import TIERS

    tier = config.getoption("--cos-tier")
    s = TIERS[tier if tier in TIERS else "gpu"]
    if config.getoption("--cos-vbvr"):      # bench.table1 samples its own runs on VBVR-Bench
        s = replace(s, extra={**s.extra, "vbvr": {"data": str(config.getoption("--cos-vbvr")), "out": "."}})
    runs: dict[str, list[str]] = {}
    for c in all_claims():
        try:
            runs[c.id] = sorted(c.shared_runs(s, None))
        except Exception:   # noqa: BLE001 - grouping is an optimisation: the claim still runs, only ungrouped
            runs[c.id] = []
    parent: dict[str, str] = {}     # union-find over the run names

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    for names in runs.values():
        for a in names[1:]:
            parent[root(a)] = root(names[0])
    members: dict[str, list[str]] = {}
    for names in runs.values():
        for a in names:
            members.setdefault(root(a), []).append(a)
    return {cid: "+".join(sorted(set(members[root(names[0])]))) for cid, names in runs.items() if names}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`pytest -n N --dist loadgroup`: the claims that read a shared run go to one worker, whose session memo then
    samples the run once (split over workers, each would sample it again: no store connects xdist workers unless
    --cos-store is given). xdist's own loadgroup reads an xdist_group mark through the node id, which pytest
    9.2's structured node ids no longer carry (pytest-dev/pytest-xdist#1386), and a mark cannot reach the
    controller, which never collects: the claim's id in its node id (`test_claim[<id>]`, a parameter id that is
    exactly a claim id) does. Only in a claims session (a --cos-* option given, or `-m` naming claims): elsewhere
    the plugin stays inert, and other tests' `xdist_group` marks are left to xdist (which does not group them
    under pytest >= 9.2 either)."""
    if config.getvalue("dist") != "loadgroup" or not selects_claims(config):
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups = shared_run_groups(config)

    class SharedRunScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            param = nodeid[nodeid.rfind("[") + 1:-1] if nodeid.endswith("]") else None
            if param in groups:
                return f"cos shared run: {groups[param]}"
            return super()._split_scope(nodeid)

    return SharedRunScheduling(config, log)


_PROGRESS_DIR = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """The xdist controller, starting a worker in a claims session: a folder (one for the run) where the worker
    leaves its progress after every batch (`progress_writer_to`), read by the controller's ETA."""
    config = node.config
    if not selects_claims(config):
        return
    if _PROGRESS_DIR not in config.stash:
        import tempfile

        config.stash[_PROGRESS_DIR] = tempfile.mkdtemp(prefix="cos-xdist-progress-")
    node.workerinput[_PROGRESS_DIR_KEY] = config.stash[_PROGRESS_DIR]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PROGRESS_DIR in config.stash and not hasattr(config, "workerinput"):
        shutil.rmtree(config.stash[_PROGRESS_DIR], ignore_errors=True)


def progress_writer_to(path: Path) -> Callable[[Any], None]:
    """A `RunEstimate.listener` that leaves, per claim started, how far it got ({claim: [done, units, stops,
    finished]}) in `path`, replaced whole (a reader never sees half a file)."""
    import json

    def write(est: Any) -> None:
        doc = {k: [c.done, c.units, [list(x) for x in c.stops], c.finished] for k, c in est.claims.items() if c.units}
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(plain(doc)))
            os.replace(tmp, path)
        except Exception:  # noqa: BLE001 - the ETA is advice (a folder gone when the controller ended): never the run's end
            pass
    return write


def read_progress(folder: str | Path) -> dict[str, list]:
    """Every worker's progress file in `folder` merged ({claim: [done, units, stops, finished]}); unreadable ones
    and entries of another shape skipped."""
    import json

    out: dict[str, list] = {}
    for f in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out.update({k: v for k, v in doc.items() if isinstance(v, list) and len(v) == 4})
    return out


def _worker_id(node: Any) -> str | None:
    """An xdist worker's id ("gw0") from its node on the controller (a report's `node`, `pytest_testnodedown`'s)."""
    return getattr(getattr(node, "gateway", None), "id", None)


def workers_with_progress(folder: str | Path) -> set[str]:
    """The xdist workers that have left progress in `folder` (a file each, written after a batch or a claim's
    end: `progress_writer_to`)."""
    return {f.stem for f in Path(folder).glob("*.json")}


class CosSession:
    """Collects claim rows on the controller and writes the table at the end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: dict[str, ClaimResult] = {}
        self.start = config.stash.get(_STARTED_AT, time.time())    # the wall time counts from configure
        from cos.reporting import code_state

        self.code = code_state()    # the commit the run started from (one made during a long run is not it)
        self.ctx = make_run_context(config)
        self.ctx.progress_writer = progress_writer(config)
        self.eta: dict | None = None
        self.gpu_shared_by = 1                # launched processes given this process's GPU (start_session)
        self.tracker = None                   # the run's estimate, re-estimated after every batch (cos.eta)
        self.claims_end_s: float | None = None  # seconds into the run when the last claim was done
        self._plan_told = False               # an xdist worker: its plan went to the controller
        self._eta_failed = False              # the xdist ETA stopped (said once)
        self._xdist_workers: set[str] = set()     # the controller: workers that started a claim (sent their plan)
        self.pilot_path: str | None = None    # whose rows told the ETA where claims stop, and the fit their power
        self.budget: tuple[float, bool] | None = None     # --cos-budget: (GPU-hours, fit)
        self.budget_doc: dict | None = None   # what the budget decided (provenance)
        self.budget_warned = False
        # set on every rank once plan_run has decided (budget_doc exists on rank 0 only: testing it made rank 0
        # alone enter budget_spent's gather, off by one against the other ranks' next collective)
        self.budget_planned = False
        if config.getoption("--cos-budget"):
            from cos.eta import parse_budget

            self.budget = parse_budget(config.getoption("--cos-budget"))    # checked at configure already
        self.comparison: dict | None = None
        self.gate: dict[str, dict] = {}       # --cos-against: claim id -> its gate.json entry (cos.gate)
        self.cleared = False                  # the folder's previous run moved away (at this run's first write)
        self.moved_to: Path | None = None     # ... into this history folder
        self.last: dict | None = None         # --cos-compare last: what changed against the previous run
        self.baseline = None
        path = config.getoption("--cos-baseline")
        if path:
            from cos.reporting import load_status

            try:
                self.baseline = load_status(path)
            except Exception as e:  # one line, before any test runs
                raise pytest.UsageError(f"--cos-baseline: {e}") from None

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def pilot(self, weights_hash: str | None) -> tuple[dict | None, str | None]:
        """(rows by id, path) of the run's pilot: --cos-pilot, else --cos-baseline, else the run this --cos-out still
        holds when it is of the same tier and weights (a rerun: where its claims stopped is the best guess of where
        they stop now), else (None, None)."""
        from cos.plan import load_pilot

        path = self.config.getoption("--cos-pilot") or self.config.getoption("--cos-baseline")
        if path:
            return load_pilot(path), str(path)
        prev = Path(self.config.getoption("--cos-out")) / "claims-status.json"
        try:
            import json

            prov = json.loads(prev.read_text()).get("provenance") or {}
            if prov.get("tier") == resolve_tier(self.config) and weights_hash and prov.get("weights_hash") == weights_hash:
                return load_pilot(prev), str(prev)
        except (OSError, ValueError, AttributeError):     # no earlier run, or not one to read: no pilot
            pass
        return None, None

    def say(self, line: str) -> None:
        """A line for the person waiting, past pytest's capture, on the main process only."""
        if not self.ctx.world.is_main:
            return
        capman = self.config.pluginmanager.getplugin("capturemanager")
        tr = self.config.pluginmanager.getplugin("terminalreporter")
        if capman is None or tr is None:
            print(line)
            return
        with capman.global_and_fixture_disabled():     # shown when it is decided, not after the claim
            tr.ensure_newline()
            tr.write_line(line)

    def warn_over_budget(self, total_s: float) -> None:
        """A re-estimate put the run past --cos-budget: said once, and in the provenance (never silently)."""
        from cos.eta import gpu_hours

        hours, _ = self.budget
        ranks = self.eta["ranks"] if self.eta else 1
        if self.budget_warned or gpu_hours(total_s, ranks) <= hours:
            return
        self.budget_warned = True
        if self.budget_doc is not None:
            self.budget_doc["warned_at_s"] = round(time.time() - self.start, 1)
            self.budget_doc["projected_gpu_hours"] = round(gpu_hours(total_s, ranks), 4)
        self.say(f"[cos] WARNING --cos-budget {hours:g}: re-estimated after "
                 f"{time.time() - self.start:.0f} s, the run needs {gpu_hours(total_s, ranks):.3g} GPU-hours; "
                 "claims not started once the budget is spent are skipped")

    def budget_spent(self) -> str | None:
        """Why a claim about to start is skipped: --cos-budget's GPU-hours are spent (rank 0's clock decides for
        every rank, so all skip alike); None otherwise."""
        if self.budget is None or not self.budget_planned:    # the plan first: it refuses or fits before any spend
            return None
        from cos.eta import gpu_hours

        hours, _ = self.budget
        ranks = self.eta["ranks"] if self.eta else self.ctx.split[1]
        spent = gpu_hours(time.time() - self.start, ranks)
        reason = (f"--cos-budget {hours:g}: {spent:.3g} GPU-hours spent before this claim started; not run"
                  if spent >= hours else None)
        if self.ctx.world.connected:
            reason = self.ctx.world.gather(reason)[0]
        if reason and self.budget_doc is not None:
            self.budget_doc.setdefault("skipped_at_s", round(time.time() - self.start, 1))
        return reason

    # ------------------------------------------------------------------ the ETA under pytest-xdist
    # Each xdist worker prices the whole plan for itself (`plan_run`) and runs only the claims it is sent, its
    # output hidden: no ETA reached the terminal. So a worker hands its plan to the controller on its first claim's
    # setup report, and every claim's progress (the share of its units done, where a sequential claim stopped) on
    # its teardown report; the controller follows the run with one `RunEstimate` of the plan told by every worker.
    # Its rate is the wall time over the planned seconds the workers have finished together, so how far the workers
    # overlap on the machine (two sharing one H100: 1.3-1.4x, not 2x) is measured, not assumed. A worker's reports
    # reach the controller only at a test's phases, so between them each worker leaves its progress after every
    # batch in a file (`progress_writer_to`), read when a claim ends (`_workers_progress`).
    def _advisory(self, fn: Callable[..., None], *args: Any) -> None:
        """The ETA's steps in the report hook: after a failure in one the ETA stops, said once, and the run goes on
        (the ETA is advice; an exception in a report hook would end the session)."""
        if self._eta_failed:
            return
        try:
            fn(*args)
        except pytest.exit.Exception:
            raise
        except Exception as e:  # noqa: BLE001
            self._eta_failed = True
            self.say(f"[cos] note: the ETA stopped ({type(e).__name__}: {e}); the run goes on")

    def _tell_controller(self, report: pytest.TestReport, cid: str | None) -> None:
        """On an xdist worker, before its report goes to the controller: the plan (once) and the claim's progress."""
        if cid is None or self.eta is None or self.tracker is None:
            return
        if report.when == "setup" and not self._plan_told:
            self._plan_told = True
            from dataclasses import asdict

            report.user_properties.append((_PLAN_KEY, plain({
                "claims": {k: asdict(c) for k, c in self.tracker.claims.items()},
                "est": {k: v for k, v in self.eta.items() if k != "at_s"},
                "worker": os.environ.get("PYTEST_XDIST_WORKER"), "pilot": self.pilot_path,
                "workers": int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0) or None,
                # whether it leaves progress the controller can read (a worker on another host writes none)
                "progress": self.tracker.listener is not None and Path(
                    self.config.workerinput[_PROGRESS_DIR_KEY]).is_dir()})))
        elif report.when == "teardown" and cid in self.tracker.claims:
            c = self.tracker.claims[cid]
            report.user_properties.append((_WORK_KEY, plain({"done": c.done, "units": c.units,
                                                             "stops": c.stops})))

    def _workers_plan(self, doc: Any) -> None:
        """On the xdist controller: each worker that leaves progress is noted when its plan arrives (it has started
        a claim: `_waiting_workers`); the first plan starts the run's estimate (its line says what it is)."""
        from cos.eta import ClaimWork, RunEstimate
        from cos.runner import fmt_s

        if isinstance(doc, dict) and isinstance(doc.get("worker"), str) and doc.get("progress", True):
            self._xdist_workers.add(doc["worker"])
        if self.tracker is not None:
            return
        try:
            claims = {k: ClaimWork(**v) for k, v in doc["claims"].items()}
            est = dict(doc["est"])
        except (KeyError, TypeError, ValueError, AttributeError):     # another version's plan: no ETA, no failure
            return
        now = time.time()
        self.tracker = RunEstimate(claims, t0=now, start=self.start)
        # the rate counts from here: the planned work the workers finish per wall second from now on
        self.tracker.warm = (now, self.tracker.work()[0])
        self.pilot_path = doc.get("pilot")
        self.eta = {**est, "at_s": now - self.start, "workers": doc.get("workers"), "priced_by": doc.get("worker")}
        self.say(f"[cos] {est.get('row_forwards')} row-forwards planned for {len(claims)} claims, priced by xdist "
                 f"worker {doc.get('worker')} as one process would run them: {fmt_s(est.get('eta_s', 0.0))}; "
                 f"{doc.get('workers')} workers share them: the ETA follows from the rate at which claims finish")

    def _workers_progress(self) -> None:
        """The claims the workers are still running, as far as their last batch got (their progress files): what
        is in progress counts as work done, where told only at a claim's end the noise sweep (half the gpu tier's
        plan) counted nothing until its claim ended, and the first re-estimates said 3-4x the time left."""
        folder = self.config.stash.get(_PROGRESS_DIR, None)
        if folder is None:
            return
        for cid, (done, units, stops, finished) in read_progress(folder).items():
            try:
                self.tracker.told(cid, done, units, stops, bool(finished))
            except (TypeError, ValueError):     # a file of another shape: its claim as it was
                continue

    def _waiting_workers(self) -> list[str]:
        """The workers the controller's ETA waits for: each has started a claim (sent its plan) and left no progress
        yet, so the batch it is on counts nothing and the rate would be the others' alone (the first re-estimates
        under `-n 2` said 3-4x the time left while information_flow's first batch, the noise sweep, ran). Only a
        worker's first claim is covered: after it, a long batch in flight counts nothing either."""
        folder = self.config.stash.get(_PROGRESS_DIR, None)
        if folder is None or not Path(folder).is_dir():     # no progress to wait for: the ETA moves as claims end
            return []
        return sorted(self._xdist_workers - workers_with_progress(folder))

    def _claim_ended_on(self, report: pytest.TestReport) -> None:
        """On the xdist controller: the worker that sent a claim's end has left its progress (it writes before it
        reports; one on another host never does): it is waited for no more; the ETA holds while another is."""
        self._xdist_workers.discard(_worker_id(getattr(report, "node", None)))
        self.tracker.hold = bool(self._waiting_workers())

    def _worker_claim_done(self, cid: str, work: dict) -> None:
        """On the xdist controller: a worker finished `cid` (its units, how far it got); re-estimate and say so."""
        t = self.tracker
        c = t.claims.get(cid)
        if c is None or c.finished:
            return
        self._workers_progress()    # the claims still running elsewhere, as far as their last batch got
        waiting = self._waiting_workers() if t.hold else []     # held by `_claim_ended_on`, just before
        try:
            t.ended(cid, work.get("done", 0.0), work.get("units"), work.get("stops") or ())
        except (TypeError, ValueError):     # a payload of another shape: the claim ends, told nothing more
            t.finished(cid)
        done = sum(x.finished for x in t.claims.values())
        status = t.status()
        if waiting:
            self.say(f"[cos] {done} of {len(t.claims)} claims done · run: {t.fraction():.0%} · ETA once "
                     f"{', '.join(waiting)} {'has' if len(waiting) == 1 else 'have'} finished a batch")
        elif status:
            self.say(f"[cos] {done} of {len(t.claims)} claims done · {status}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        cid = props.get(_ID_KEY)
        if self.is_worker:
            self._advisory(self._tell_controller, report, cid)
        elif _PLAN_KEY in props:
            self._advisory(self._workers_plan, props[_PLAN_KEY])
        if cid is not None and report.when == "teardown" and self.tracker is not None:
            if not self.is_worker:
                self._advisory(self._claim_ended_on, report)
            if not self.is_worker and isinstance(props.get(_WORK_KEY), dict):
                self._advisory(self._worker_claim_done, cid, props[_WORK_KEY])
            else:     # skipped, errored or done: what it did not spend leaves the plan
                self._advisory(self.tracker.finished, cid)
        if self.is_worker or cid is None:
            return
        if _RESULT_KEY in props and report.when == "call" and (report.passed or report.skipped):
            self.results[cid] = ClaimResult.from_dict(props[_RESULT_KEY])
            self.results[cid].samples = props.get(_SAMPLES_KEY) or []
            self.results[cid].records = props.get(_RECORDS_KEY)
            if props.get(_GATE_KEY) is not None:
                self.gate[cid] = props[_GATE_KEY]
            if props.get(_ARRAYS_KEY):
                from safetensors.numpy import load

                self.results[cid].arrays = load(props[_ARRAYS_KEY])
        elif report.skipped and cid not in self.results:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.results[cid] = ClaimResult.for_claim(cid, measured=None, ci_low=None, ci_high=None, n=None,
                                                      status="skipped", reason=reason.removeprefix("Skipped: "))
        elif report.failed:
            msg = (report.longreprtext or "failed").strip().splitlines()
            line = next((m[2:].strip() for m in reversed(msg) if m.startswith("E ")), msg[-1] if msg else "failed")
            self.results[cid] = ClaimResult.for_claim(cid, measured=None, ci_low=None, ci_high=None, n=None,
                                                      status="error", reason=f"{report.when}: {line}"[:300])
        if cid in self.results and report.when in ("call", "setup") and self.ctx.world.is_main:
            if self.cleared or not self._only_errors_over_a_run():
                self._write_partial()

    def _only_errors_over_a_run(self) -> bool:
        """Whether every row so far errored while the folder still holds a previous run: writing now would move
        that run to history for a run that has measured nothing (it stays until a row is measured)."""
        from cos.runs import holds_run

        return all(r.status == "error" for r in self.results.values()) and \
            holds_run(self.config.getoption("--cos-out"))

    def _clear(self, out: Path) -> None:
        """Before this run's first write: the folder's previous run moves to history (cos.runs.keep_previous),
        or is deleted under --cos-overwrite. Once per session."""
        if self.cleared:
            return
        from cos.runs import keep_previous

        self.moved_to = keep_previous(out, keep=not self.config.getoption("--cos-overwrite"))
        self.cleared = True

    def _write_partial(self) -> None:
        """Every finished row, as each claim finishes (cos.reporting.write_partial): a killed run keeps them."""
        from cos.reporting import write_partial
        from cos.runs import mark_run

        out = Path(self.config.getoption("--cos-out"))
        try:
            self._clear(out)
            write_partial(out, list(self.results.values()))
            mark_run(out)
        except OSError as e:    # a full disk here must not stop the claims; the final write says it again
            import warnings

            warnings.warn(f"partial table not written: {e}")

    @property
    def is_main(self) -> bool:
        """The process that writes: not an xdist worker, rank 0 of a launched run."""
        return not self.is_worker and self.ctx.world.is_main

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        # every rank, results or not (a collective): which (instance, seed) rows each rank sampled itself
        st = self.ctx.store
        mine = {"rows": self.ctx.ran, "store": None if st is None else {"hits": st.hits, "misses": st.misses},
                "phases": self.ctx.phase_s}
        gathered = self.ctx.world.gather(mine)
        ran = [g["rows"] for g in gathered]
        if not self.is_main or not self.results:
            return
        from cos.reporting import apply_p, compare, provenance, write_status

        rows = list(self.results.values())
        apply_p(rows)
        if self.baseline is not None:
            self.comparison = compare(self.baseline, rows)
        models = sorted({r.model for r in rows if r.model})
        hashes = sorted({r.details.get("weights_hash") for r in rows if r.details.get("weights_hash")})
        prov = provenance(model=", ".join(models) or None, weights_hash=", ".join(hashes) or None,
                          device=self.config.getoption("--cos-device"), start_time=self.start, code=self.code)
        out = Path(self.config.getoption("--cos-out"))
        rank, world = self.ctx.split
        prov["tier"] = resolve_tier(self.config)    # `cos history` lists it
        prov["world_size"] = world
        prov["shard"] = list(self.ctx.shard) if self.ctx.shard is not None else None
        prov["sequential"] = bool(self.ctx.sequential)
        prov["looks"] = self.ctx.max_looks
        prov["overlap"] = bool(self.ctx.overlap)     # readouts beside the sampling (--cos-overlap)
        prov["gpu_shared_by"] = self.gpu_shared_by    # launched processes given this one's visible GPU (1: a GPU
        # each, or alone); an overcount where the launcher bound each process to its own GPU
        # rank -> {instance id: seeds it sampled}; under --cos-shard only this host's
        prov["rank_rows"] = {str(r if self.ctx.shard is None else rank): rows for r, rows in enumerate(ran)}
        # per rank, runs read from the store / computed (a relaunch after a crash computes only what was lost)
        prov["rank_store"] = [g["store"] for g in gathered]
        if world > 1 and self.ctx.shard is None:
            # per rank, per claim: seconds measuring its share, at the looks' gathers, concluding (what bounds the run)
            prov["rank_phases_s"] = [g["phases"] for g in gathered]
        if self.eta is not None:
            xdist = bool(self.eta.get("workers"))
            # xdist: the plan's line was one worker's price for one process, not an ETA of this run: kept apart
            prov["eta_s"] = None if xdist else round(self.eta["eta_s"], 1)
            prov["eta_max_s"] = None if xdist else round(self.eta["eta_max_s"], 1)  # every claim to its maximum n
            prov["eta_at_s"] = round(self.eta["at_s"], 1)        # when it was printed, seconds into the run
            if xdist:
                prov["eta_xdist"] = {"workers": self.eta["workers"], "priced_by": self.eta.get("priced_by"),
                                     "one_process_eta_s": round(self.eta["eta_s"], 1),
                                     "one_process_eta_max_s": round(self.eta["eta_max_s"], 1),
                                     "re_estimated": "when a claim ends, with the workers' progress after their "
                                                     "last batch"}
            self.claims_end_s = time.time() - self.start
            prov["claims_end_s"] = round(self.claims_end_s, 1)    # the last claim done (the report follows)
            if self.tracker is not None:    # every re-estimate (benchmarks/eta_error.py reads their errors)
                prov["eta_estimates"] = {**self.tracker.record(), "pilot": self.pilot_path}
            prov["eta_parts_s"] = {"forwards": round(self.eta["forwards_s"], 1), "readouts": round(self.eta["host_s"], 1),
                                   "readouts_per_claim": {k: round(v * self.eta["share"], 2)
                                                          for k, v in self.eta["host_s_per_claim"].items()},
                                   "seconds_per_row_forward": self.eta["seconds_per_row_forward"]}
        if self.budget_doc is not None:
            prov["budget"] = self.budget_doc
        self.report_note = None
        from cos.runs import mark_run

        if self._only_errors_over_a_run() and not self.cleared:
            # every claim broke: the earlier run is worth more than this one; it stays in place, not in history
            self.paths = ()
            self.report_note = f"every claim errored: the earlier run in {out} left as it was"
            return
        try:
            self._clear(out)
            self.paths = write_status(out, rows, prov, self.comparison)
            self.paths = (*self.paths, *self._write_records_and_gate(out, rows))
            mark_run(out)
        except OSError as e:   # full disk, read-only folder: keep what exists, say which file, fail the run
            self.paths = ()
            self.report_note = _failed_write_note(out, e)
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            return
        try:
            from cos.report import write_report

            self.paths = (*self.paths, *write_report(self.config.getoption("--cos-out")))
            mark_run(out)
        except Exception as e:  # the table stands on its own; say why the pictures are missing
            self.report_note = f"report not written: {type(e).__name__}: {e}"
        if self.config.getoption("--cos-compare") == "last":
            self.last = compare_last(out, rows, prov.get("weights_hash"))
        if self.comparison and self.comparison["regressed"]:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if any(g.get("regressed") for g in self.gate.values()):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_records_and_gate(self, out: Path, rows: list[ClaimResult]) -> list[Path]:
        """records.jsonl (what each row was concluded on: `cos conclude`, `cos gate`) and, under --cos-against,
        gate.json and gate.md."""
        from cos.records import write_records

        paths = [p for p in [write_records(out, rows)] if p is not None]
        if self.gate:
            from cos.gate import write_gate

            new = ", ".join(sorted({r.model for r in rows if r.model}))
            paths += write_gate(out, self.gate, new, str(self.config.getoption("--cos-against")),
                                looks=self.ctx.max_looks)
        return paths

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.is_main or not self.results:
            return
        from cos.reporting import render_table

        tr = terminalreporter
        tr.section("claims status")
        tr.write_line(render_table(self.results.values(), "simple", (self.comparison or {}).get("labels")))
        if self.gate:
            from cos.gate import render_gate

            doc = {"new": "this model", "old": self.config.getoption("--cos-against"), "claims": self.gate,
                   "regressed": sorted(k for k, g in self.gate.items() if g.get("regressed"))}
            tr.section("cos gate")
            tr.write_line(render_gate(doc, "simple"), red=bool(doc["regressed"]))
        tr.write_line("written: " + ", ".join(str(p) for p in self.paths))
        if self.report_note:
            tr.write_line(self.report_note, yellow=True)
        if self.moved_to is not None:
            tr.write_line(f"[cos] the previous run in {self.config.getoption('--cos-out')} moved to {self.moved_to}")
        if self.last is not None:
            for line in self.last["lines"]:
                tr.write_line(line)
        rank, world = self.ctx.split
        from cos.runner import fmt_s

        wall = time.time() - self.start
        tr.write_line(f"[cos] wall time {fmt_s(wall)} ({wall:.1f} s) on {world} process(es)"
                      + (f"; the plan printed {self.eta['at_s']:.1f} s in, priced for one process, said "
                         f"{fmt_s(self.eta['eta_s'])} ({self.eta['eta_s']:.1f} s); {self.eta['workers']} xdist workers "
                         f"took {wall - self.eta['at_s']:.1f} s from there" if self.eta and self.eta.get("workers") else
                         f"; the ETA printed {self.eta['at_s']:.1f} s in said {fmt_s(self.eta['eta_s'])} "
                         f"({self.eta['eta_s']:.1f} s), it took {wall - self.eta['at_s']:.1f} s from there"
                         if self.eta else ""))
        if self.tracker is not None and self.tracker.trace and self.claims_end_s is not None:
            from cos.eta import trace_errors

            errs = sorted(abs(e) for _, e, _ in trace_errors(self.tracker.trace, self.claims_end_s, self.eta["at_s"]))
            if errs:
                after = "claims done on the xdist workers" if self.eta.get("workers") else "batches"
                tr.write_line(f"[cos] the ETA was re-estimated {len(errs)} times after {after}: the end of the "
                              f"claims it predicted missed by median {errs[len(errs) // 2]:.0%}, worst {errs[-1]:.0%} "
                              f"of their {self.claims_end_s - self.eta['at_s']:.1f} s from the ETA line (the table "
                              f"and report took {wall - self.claims_end_s:.1f} s more; provenance eta_estimates)")
        if self.comparison:
            c = self.comparison
            if c["regressed"]:
                tr.write_line(f"REGRESSED against baseline (run fails): {', '.join(c['regressed'])}", red=True)
            if c["newly_holds"]:
                tr.write_line(f"newly hold: {', '.join(c['newly_holds'])}", green=True)


def compare_last(out: Path, rows: list[ClaimResult], weights_hash: str | None) -> dict:
    """--cos-compare last: this run's rows against the previous run on the same weights in `out`'s history
    (cos.reporting.compare, plus every other status move); the lines say what changed, or why nothing is compared."""
    from cos.reporting import compare, load_status
    from cos.runs import PARTIAL, previous_run, status_changes

    prev = previous_run(out, weights_hash)
    if prev is None:
        return {"run": None, "lines": [f"[cos] --cos-compare last: no earlier run in {out / 'history'} on weights "
                                       f"{weights_hash}: nothing to compare"]}
    try:
        doc = load_status(prev / "claims-status.json" if (prev / "claims-status.json").exists() else prev / PARTIAL)
    except Exception as e:  # noqa: BLE001 - a damaged history entry must not fail the run that just finished
        return {"run": str(prev), "lines": [f"[cos] --cos-compare last: {prev} unreadable: {e}"]}
    c = compare(doc, rows)
    moved = status_changes(doc, rows)
    lines = [f"[cos] against the previous run on the same weights ({prev}): regressed {', '.join(c['regressed']) or 'none'}"
             f"; newly hold {', '.join(c['newly_holds']) or 'none'}"
             + (f"; changed definition {', '.join(c['changed_definition'])}" if c["changed_definition"] else "")
             + (f"; not run now {', '.join(c['missing'])}" if c["missing"] else "")]
    lines += [f"  {m}" for m in moved] or ["  no claim changed status"]
    return {"run": str(prev), "comparison": c, "changes": moved, "lines": lines}


def _failed_write_note(out: Path, e: OSError) -> str:
    """One line on a failed final write: the file (the temporary it left, removed: cos made it) and why."""
    tmps = sorted(out.glob("*.tmp")) + sorted(out.glob("data/*.tmp"))
    failed = e.filename or (max(tmps, key=lambda p: p.stat().st_mtime) if tmps else None)
    for t in tmps:
        t.unlink(missing_ok=True)
    final = str(failed).removesuffix(".tmp") if failed else out / "claims-status.json"
    kept = [p.name for p in (out / "claims-status.json", out / "claims-status.md", out / "samples.jsonl") if p.exists()]
    return (f"ERROR: {final} not written ({e.strerror or e}); the table above is this run's; "
            + (f"{', '.join(kept)} in {out} each whole (written atomically: this run's or the earlier one)" if kept
               else f"nothing else in {out} was changed"))


class ClaimReporter:
    """What a claim test gets from the `cos_claim` fixture: report one result for its claim id."""

    def __init__(self, item: pytest.Item, claim_id: str, shard: tuple[int, int] | None = None):
        self.item, self.id, self.t0, self.shard = item, claim_id, time.time(), shard
        self.spec = get_claim(claim_id).spec

    def gate(self, row: dict) -> None:
        """The claim's gate.json entry (--cos-against), reported before its row."""
        self.item.user_properties.append((_GATE_KEY, self._wire(row)))

    def report(self, result: ClaimResult) -> ClaimResult:
        if result.id != self.id:
            raise ValueError(f"test is marked claim({self.id!r}) but reported {result.id!r}")
        if result.runtime_s is None:
            result.runtime_s = round(time.time() - self.t0, 3)
        if self.shard is not None and result.status != "skipped":
            i, n = self.shard
            result.details = {**result.details, "partial_measured": result.measured}
            result.status, result.reason = "skipped", (f"shard {i}/{n}: its batches are in the result store; "
                                                       "`cos merge` the stores and rerun without --cos-shard")
        self.item.user_properties.append((_RESULT_KEY, self._wire(result.to_dict())))
        self.item.user_properties.append((_SAMPLES_KEY, self._wire(result.samples)))
        self.item.user_properties.append((_RECORDS_KEY, self._wire(result.records)))
        if result.arrays:   # plain bytes travel to the xdist controller like the row itself
            import numpy as np
            from safetensors.numpy import save

            self.item.user_properties.append(
                (_ARRAYS_KEY, save({k: np.ascontiguousarray(v) for k, v in result.arrays.items()})))
        if result.status == "skipped":   # shown as a skip by pytest too, with the claim's reason
            pytest.skip(result.reason)
        return result

    def _wire(self, value: Any) -> Any:
        """In an xdist worker, `value` with builtin types only: execnet, which carries the report to the
        controller, serialises exact builtins and refuses a numpy float (a subclass of float) or a named tuple."""
        return plain(value) if hasattr(self.item.config, "workerinput") else value


def plain(x: Any) -> Any:
    """x (dicts, lists, tuples, sets of scalars) rebuilt from builtin types: numpy/torch scalars and arrays as
    Python values and lists, subclasses of the builtins as the builtin, anything else as its str()."""
    if x is None or type(x) in (bool, int, float, str, bytes):
        return x
    if isinstance(x, dict):
        return {plain(k): plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(plain(v) for v in x)
    if isinstance(x, (set, frozenset)):
        return type(x)(plain(v) for v in x)
    if hasattr(x, "tolist") and hasattr(x, "shape"):    # numpy/torch scalars and arrays: their Python values
        return plain(x.tolist())
    for t in (bool, int, float, str, bytes):
        if isinstance(x, t):
            return t(x)
    return str(x)       # anything else (a Path, an Enum) as the table's JSON writes it (default=str)


@pytest.fixture
def cos_claim(request: pytest.FixtureRequest) -> ClaimReporter:
    """Reporter for the claim named by the test's `@pytest.mark.claim("<id>")` marker."""
    marker = request.node.get_closest_marker("claim")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: uses cos_claim without @pytest.mark.claim('<id>')")
    # the id itself was recorded in pytest_runtest_setup
    return ClaimReporter(request.node, marker.args[0], start_session(request.config).ctx.shard)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # a claim that errors or skips during setup must still get its row: record the id first
    marker = item.get_closest_marker("claim")
    if marker is not None and marker.args and (_ID_KEY, marker.args[0]) not in item.user_properties:
        item.user_properties.append((_ID_KEY, marker.args[0]))
    session = cos_session(item.config) if marker is not None else None
    reason = session.budget_spent() if session is not None else None
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cos_run(pytestconfig: pytest.Config, cos_model_path: Path, cos_device: str) -> "RunContext":
    """The session's `RunContext` (store, shard, shared runs); the distilled model (--cos-lora, else the model's
    own declared LoRA) loads on first use."""
    ctx = start_session(pytestconfig).ctx
    if distilled_loras(cos_model_path, pytestconfig):
        ctx.distilled_loader = lambda: _distilled_system(cos_model_path, cos_device, pytestconfig)
    return ctx


@pytest.fixture(scope="session")
def cos_against(pytestconfig: pytest.Config, cos_device: str):
    """--cos-against OLD: the old side of the gate (cos.gate.Against: a model loaded like --cos-model, or a run
    folder's records); None without the option."""
    path = pytestconfig.getoption("--cos-against")
    if not path:
        return None
    from cos.gate import Against
    from cos.models import load_system
    from cos.models.loading import run_dtype

    def load(p: Path):
        return load_system(p, device=cos_device, dtype=run_dtype(p, cos_device),
                           flow_shift=pytestconfig.getoption("--cos-flow-shift"),
                           offload=pytestconfig.getoption("--cos-offload"))
    try:
        return Against.from_path(path, load)
    except Exception as e:  # noqa: BLE001 - the same failure for every claim: one line for the session
        session_fatal(f"--cos-against {path}", e)


@pytest.fixture(scope="session")
def cos_tier(pytestconfig: pytest.Config) -> str:
    return resolve_tier(pytestconfig)


@pytest.fixture(scope="session")
def cos_settings(cos_system, cos_tier: str, pytestconfig: pytest.Config, request: pytest.FixtureRequest,
                 cos_model_path: Path):
    """The tier's settings with the --cos-* overrides; on gpu/full an ETA line is printed before the work starts."""
    from dataclasses import replace

    from cos.settings import instances, settings_for

    s = settings_for(cos_system, cos_tier)
    n = pytestconfig.getoption("--cos-instances")
    if n:
        s = replace(s, instances=n, instance_cap=n)
    if pytestconfig.getoption("--cos-size"):
        try:
            h, w, f = (int(x) for x in pytestconfig.getoption("--cos-size").lower().split("x"))
        except ValueError:
            raise pytest.UsageError(f"--cos-size {pytestconfig.getoption('--cos-size')!r}: expected HxWxF, e.g. 480x832x81")
        s = replace(s, height=h, width=w, num_frames=f)
    if pytestconfig.getoption("--cos-steps"):
        s = replace(s, steps=pytestconfig.getoption("--cos-steps"))
    if pytestconfig.getoption("--cos-batch-size"):
        s = replace(s, batch_size=pytestconfig.getoption("--cos-batch-size"))
    if pytestconfig.getoption("--cos-tasks"):
        from cos.tasks import TASKS

        tasks = tuple(t.strip() for t in pytestconfig.getoption("--cos-tasks").split(",") if t.strip())
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise pytest.UsageError(f"--cos-tasks: unknown task(s) {bad}; known: {sorted(TASKS)}")
        s = replace(s, tasks=tasks)
    if pytestconfig.getoption("--cos-vbvr"):   # the VBVR-Bench data travels in the settings (cos.vbvr_run)
        from cos.vbvr_run import extra_from_options

        s = replace(s, extra={**s.extra, "vbvr": extra_from_options(
            pytestconfig.getoption("--cos-vbvr"), pytestconfig.getoption("--cos-out"), pytestconfig.getoption("--cos-steps"),
            pytestconfig.getoption("--cos-size"), pytestconfig.getoption("--cos-flow-shift"))})
    if cos_tier == "full" and cos_system.encode_prompt is not None and hasattr(cos_system.encode_prompt, "precompute"):
        prompts = {i.prompt for sp in ("id", "ood") for i in instances(replace(s, split=sp))} | {""}
        if s.extra.get("vbvr"):
            from cos.vbvr_run import WAN_NEGATIVE
            from cos.tasks.vbvr import sample_dirs

            prompts |= {(d / "prompt.txt").read_text().strip() for d in sample_dirs(s.extra["vbvr"]["data"])}
            prompts.add(WAN_NEGATIVE)
        cos_system.encode_prompt.precompute(prompts)       # encode every prompt first, then free UMT5
        cos_system.encode_prompt.release()
    if cos_tier in ("full", "gpu") or pytestconfig.getoption("--cos-budget"):
        ids = [item.get_closest_marker("claim").args[0] for item in request.session.items
               if item.get_closest_marker("claim") is not None]
        # a claim that will be skipped plans nothing (distill without a LoRA stack was counted: 10 s of 400)
        lora = bool(distilled_loras(cos_model_path, pytestconfig))
        s = plan_run(start_session(pytestconfig), cos_system, s, [c for c in map(get_claim, ids)
                                                                  if lora or not c.needs_distilled])
    return s


def plan_run(session: "CosSession", system, s, planned: list) -> object:
    """Before any claim runs: price the plan (`cos.runner.time_forward`: a timed warm forward and readout units),
    hold it to --cos-budget (refuse in one line, or size every claim down to fit), print the ETA line and start
    the run's estimate (`cos.eta.RunEstimate`, re-estimated after every batch). Returns the settings to run at
    (the fitted ones under HOURS:fit). Priced on the main process; under a launcher the budget's decision is
    rank 0's, handed to every rank (the ranks must run the same settings and stop alike)."""
    from dataclasses import replace

    from cos.eta import RunEstimate, apply_budget, expected_s, price_plan, stored_counts, with_stored
    from cos.runner import fmt_s, price_forwards, stored_work, time_forward

    ctx = session.ctx
    decision: dict = {}
    if ctx.world.is_main:
        timing = time_forward(system, s)
        at_s = time.time() - session.start     # the plan predicts the time from here (model loaded, timed)
        pilot, session.pilot_path = session.pilot(getattr(system, "weights_hash", None))

        # --cos-against a model directory samples every claim again on the old model, on the same rows: the budget
        # and the ETA line price both sides (the per-batch tracker advances on the new side's batches, counting
        # both sides' seconds; the old side's wall time then shows in its measured rate)
        against = session.config.getoption("--cos-against")
        sides = 2 if against and not _run_folder(against) else 1

        looked: list = []       # (settings, what the store holds of them): the plan is priced twice at its own

        def held(settings) -> dict:
            for at, got in looked:
                if at == settings:
                    return got
            try:
                got = stored_work(ctx, planned, system, settings)
            except Exception:  # noqa: BLE001 - never fail the plan (under a launcher the other ranks wait at the
                got = {}        # gather below): nothing stored, the full price
            looked.append((settings, got))
            return got

        def price(settings, stored: bool = True):
            # under a gate the looks stop claims by the gate's rule (cos.gate), not modelled: priced at every row
            # (on the planted models a retrained copy used 0.99-1.00 of its rows, a regression at the MDE 0.76-1.00,
            # the same weights and clear regressions 0.33-0.89: an upper bound, tight for a real model change;
            # benchmarks/results/calibration/gate-gpu-tier-seq-vm)
            est, work, power = price_plan(ctx, system, settings, planned, timing, pilot, own_stops=not against)
            if sides > 1:   # what the store holds is not taken off: the old side's keys need the old model (not
                # loaded yet), and a killed gate run stored the new side of a claim before its old side
                work = {k: replace(w, own_s=w.own_s * sides, shared={r: v * sides for r, v in w.shared.items()})
                        for k, w in work.items()}
            elif stored:    # a rerun pays only for the batches the store does not hold (a killed run's rest)
                work = with_stored(work, held(settings))
            return est, work, power

        notes: list[str] = []
        if session.budget is not None:
            hours, fit = session.budget
            ranks = price_forwards(ctx, system, s, planned, timing)["ranks"]
            s, session.budget_doc, refusal, notes = apply_budget(hours, fit, s, at_s, ranks, price, len(planned),
                                                                 lambda x: price(x, stored=False))
            if refusal:
                decision = {"refuse": refusal}
            elif session.budget_doc.get("fitted_instances"):
                decision = {"fit": {"instances": s.instances, "scale": s.instance_scale}}
        est, work, _ = price(s)
        eta = expected_s(work)
        if "refuse" not in decision:
            est["at_s"] = at_s
            est["eta_max_s"], est["eta_s"] = est["eta_s"], eta
            session.eta = est
            session.tracker = ctx.tracker = RunEstimate(work, t0=time.time(), start=session.start)
            progress_dir = getattr(session.config, "workerinput", {}).get(_PROGRESS_DIR_KEY)
            if progress_dir:    # an xdist worker: its progress after every batch, for the controller's ETA
                session.tracker.listener = progress_writer_to(
                    Path(progress_dir) / f"{os.environ.get('PYTEST_XDIST_WORKER', 'worker')}.json")
            if sides > 1:
                est["sides"] = sides
            if session.budget is not None:
                session.tracker.over_budget = session.warn_over_budget
            looks = ctx.sequential and abs(est["eta_max_s"] - eta) > 1e-6
            msg = (f"[cos] {est['row_forwards']} row-forwards planned for {len(planned)} "
                   f"claim{'s' if len(planned) != 1 else ''} at "
                   f"{est['seconds_per_row_forward']:.4f} s each (warm forward, batch of {est['batch_rows']}; "
                   f"the cold first one took {est['cold_seconds_per_row_forward'] or 0:.4f} s)"
                   + (f" over {est['ranks']} processes" if est["ranks"] > 1 else "")
                   + f", {fmt_s(est['forwards_s'])}, plus host-side readouts {fmt_s(est['host_s'])}"
                   + (f"; with sequential looks expected {fmt_s(eta)} of at most {fmt_s(est['eta_max_s'])}"
                      if looks else "")
                   + (" (both models: --cos-against samples the old one on the same rows)" if sides > 1 else "")
                   + ("; {} of {} batches of the claims already stored, not redone".format(*stored_counts(work))
                      if stored_counts(work)[0] else "")
                   + f": ETA {fmt_s(eta)} (re-estimated after every batch)")
            for line in [*notes, shared_gpu_note(session.gpu_shared_by), msg]:
                if line:
                    session.say(line)
    if session.budget is not None and ctx.world.connected:
        decision = ctx.world.gather(decision)[0]
    if "refuse" in decision:     # one line, nothing written (the earlier run stays in place)
        pytest.exit(f"ERROR: {decision['refuse']}", returncode=pytest.ExitCode.USAGE_ERROR)
    if "fit" in decision and not ctx.world.is_main:
        s = replace(s, instances=decision["fit"]["instances"], instance_scale=decision["fit"]["scale"])
    session.budget_planned = session.budget is not None
    return s


@pytest.fixture(scope="session")
def cos_device(pytestconfig: pytest.Config) -> str:
    dev = pytestconfig.getoption("--cos-device")
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


@pytest.fixture(scope="session")
def cos_model_path(pytestconfig: pytest.Config) -> Path:
    """The model directory named by --cos-model, or the shipped organism; a skip says when it is absent."""
    path = pytestconfig.getoption("--cos-model")
    if path is None:
        if not DEFAULT_MODEL.exists():   # a skip per claim would end the run "passed" having run nothing
            session_fatal("--cos-model", FileNotFoundError(f"none given and the organism is not in {DEFAULT_MODEL}"))
        return DEFAULT_MODEL
    return Path(path)


@pytest.fixture(scope="session")
def cos_system(cos_model_path: Path, cos_device: str, pytestconfig: pytest.Config):
    """The loaded `WanSystem` (validated first: bad paths fail with one line)."""
    from cos.models import load_system
    from cos.models.loading import run_dtype

    from cos.models.lora import parse_lora_spec

    try:
        system = load_system(cos_model_path, device=cos_device, dtype=run_dtype(cos_model_path, cos_device),
                             loras=[parse_lora_spec(x) for x in pytestconfig.getoption("--cos-model-lora")],
                             flow_shift=pytestconfig.getoption("--cos-flow-shift"),
                             offload=pytestconfig.getoption("--cos-offload"))
    except Exception as e:  # noqa: BLE001 - the same failure for every claim: one line for the session
        session_fatal(f"loading {cos_model_path}", e)
    if pytestconfig.getoption("--cos-compile"):
        for e in system.experts:
            e.compile_repeated_blocks(fullgraph=True)
    return system


def distilled_loras(model_path: Path, config: pytest.Config) -> list:
    """The LoRA stack of distill.four_step's fast model: --cos-lora when given (it overrides), else the one the
    model directory ships and declares (cos_model.json "distilled", `cos.models.loading.shipped_distilled`),
    else none (the claim skips with its reason)."""
    from cos.models.lora import parse_lora_spec

    if config.getoption("--cos-lora"):
        return [parse_lora_spec(s) for s in config.getoption("--cos-lora")]
    from cos.models.loading import shipped_distilled

    decl = shipped_distilled(model_path)
    return decl["loras"] if decl else []


def _distilled_system(model_path: Path, device: str, config: pytest.Config):
    """--cos-model with the distilled LoRA stack applied (App. C's 4-step distilled model; `distilled_loras`).
    Without peft (the `lora` extra) the claim that reads it is skipped with that reason, not errored: the package
    alone runs every other claim."""
    import importlib.util

    from cos.models import load_system
    from cos.models.loading import run_dtype

    if importlib.util.find_spec("peft") is None:
        pytest.skip("the distilled model is a LoRA stack and LoRAs need peft: pip install 'cos-claims[lora]'")

    return load_system(model_path, device=device, dtype=run_dtype(model_path, device),
                       loras=distilled_loras(model_path, config),
                       flow_shift=config.getoption("--cos-flow-shift"), offload=config.getoption("--cos-offload"))


"""Claims as registered objects, and the results schema (one row per claim, lm-evaluation-harness style).

A `Claim` is one object in one module of `cos/claims/`: its `ClaimSpec` (id, version, paper reference, the
paper's numbers, threshold and direction), its per-tier sizing, `measure`, its controls, its figures and its
cost. `cos.claims.load_all()` discovers them (the package's modules and the `cos.claims` entry-point group);
nothing else in the tree names a claim.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

if TYPE_CHECKING:
    from cos.models.system import WanSystem
    from cos.runner import RunContext
    from cos.settings import ClaimSettings
    from cos.stats import Estimate

STATUSES = ("holds", "fails", "inconclusive", "skipped", "error")
SCHEMA = "cos.claims-status/2"
DIRECTIONS = (">", "<")


@dataclass(frozen=True)
class ClaimSpec:
    """What a claim is: id, version, title, where the paper states it, the paper's statement and numbers, what
    is measured and how it is decided (the interval of `statistic` against `threshold` in `direction`)."""

    id: str
    title: str
    paper_ref: str
    paper_value: str
    measured_quantity: str
    threshold: float
    direction: str
    statistic: str = "mean over task instances (seeds averaged), 95% BCa bootstrap CI"
    version: int = 1
    paper: Mapping[str, float] = field(default_factory=dict)   # the paper's numbers: they exist here only
    # the effect size a run is sized for (`cos plan`): distance from the threshold in the claim's own units, and
    # where it comes from ("paper: ..." where the paper's numbers give it in these units, else "chosen: ... why")
    effect: float | None = None
    effect_note: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{self.id}: direction={self.direction!r}: expected one of {DIRECTIONS}")


@dataclass
class Details:
    """Base of a claim's typed details: what it records for the report and the JSON. Subclass per claim."""

    measured: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Details":
        """The typed view of a row's `details` (keys the class does not declare are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


CONTROL_KINDS = ("positive", "negative", "sensitivity")


@dataclass(frozen=True)
class Control:
    """A model on which the claim's outcome is known: `positive` (effect planted: must hold) or `negative`
    (effect absent: must not hold) or `sensitivity` (effect planted smaller: `cos validate` reports how often it
    is detected, no test asserts it). `model(draw)` builds it (a model with random weights takes the draw as its
    weight seed), `settings` say how much to run, `kwargs(draw)` are further arguments of the claim's `measure`;
    `check` adds a condition on the row. Draw 0 is the default test tier's; `cos validate` reruns every control
    over draws 1..N with independent task instances and noise seeds (`at_draw`) to measure power and FPR."""

    name: str
    kind: str
    model: Callable[[int], "WanSystem"]
    settings: "ClaimSettings"
    why: str
    kwargs: Callable[[int], Mapping[str, Any]] | None = None
    check: Callable[["ClaimResult"], bool] | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"control {self.name!r}: kind={self.kind!r}: expected one of {CONTROL_KINDS}")

    @property
    def expect(self) -> tuple[str, ...]:
        return ("holds",) if self.kind in ("positive", "sensitivity") else ("fails", "inconclusive")

    @property
    def tested(self) -> bool:
        """Positive and negative controls are tests of the default tier; a `sensitivity` control (the effect
        planted at the paper's size or smaller, which the tier's n may miss) is only measured by `cos validate`."""
        return self.kind != "sensitivity"

    def run(self, claim: "Claim", draw: int = 0, sequential: bool = False, model: Any = None) -> "ClaimResult":
        """The claim's row on this control at `draw`; with `sequential`, decided at looks as `--cos-sequential`
        decides it (`RunContext.sequential`: its details then say which looks it took and how many batches).
        `model`: `self.model(draw)` built already (the caller reads it further)."""
        from cos.runner import RunContext

        return claim.measure(RunContext(progress=False, sequential=sequential),
                             self.model(draw) if model is None else model,
                             at_draw(self.settings, draw),
                             **(self.kwargs(draw) if self.kwargs else {}))


DRAW_STRIDE = 1000   # instance and noise seeds of draw d start at d·DRAW_STRIDE: draws never share one


def at_draw(settings: "ClaimSettings", draw: int) -> "ClaimSettings":
    """The settings of an independent repetition: draw 0 is `settings` itself; draw d > 0 shifts the task-instance
    seeds and the noise seeds by d·DRAW_STRIDE (same sizes, new instances, new noise)."""
    if draw == 0:
        return settings
    off = draw * DRAW_STRIDE
    return replace(settings, first_instance=settings.first_instance + off, seeds=tuple(s + off for s in settings.seeds))


Figure = tuple[Path, str]   # (image file, caption)


class Claim:
    """One paper claim. Subclasses set `spec`, `Details` and `sizing`, and implement `measure`, `controls`,
    `figures` and `cost`. `sizing` maps a tier (cpu/gpu/full) to the claim's own sizes (any object)."""

    spec: ClaimSpec
    Details: ClassVar[type[Details]] = Details
    sizing: ClassVar[Mapping[str, Any]] = {}
    needs_distilled: ClassVar[bool] = False    # reads the --cos-lora model (RunContext.distilled)

    @property
    def id(self) -> str:
        return self.spec.id

    def sizing_for(self, settings: "ClaimSettings") -> Any:
        return self.sizing.get(settings.tier, self.sizing.get("cpu"))

    def measure(self, ctx: "RunContext", system: "WanSystem", settings: "ClaimSettings", **kw: Any) -> "ClaimResult":
        """The claim's row. A claim written as records (`measure_batch` + `conclude`) needs nothing here: the run
        context samples its batches, keeps their records and concludes, sequentially where the run says so
        (`RunContext.measure_records`). An older claim overrides `measure` and loops over `ctx.batches` itself."""
        if not self.by_records:
            raise NotImplementedError(f"{self.id}: implement measure_batch and conclude (or measure)")
        return ctx.measure_records(self, system, settings, **kw)

    def measure_batch(self, ctx: "RunContext", system: "WanSystem", settings: "ClaimSettings", batch: Any,
                      **kw: Any) -> list[dict]:
        """The records of one batch's rows: one small dict of plain numbers per (instance × seed) row it reads,
        with its "instance" id and "seed" (what samples.jsonl lists). Records are stored, gathered across ranks
        and read by `conclude`; they must follow from the batch alone (the same batch gives the same records)."""
        raise NotImplementedError

    def conclude(self, records: list[dict], system: "WanSystem", settings: "ClaimSettings",
                 **kw: Any) -> "ClaimResult":
        """The row of the table from the records of the batches run so far, in batch order: its estimate,
        interval, conditions and decision. Intervals take the decision level in force (`cos.stats.decision_level`:
        a sequential look's), so a conclusion passes no level of its own to its decision intervals."""
        raise NotImplementedError

    def batch_settings(self, settings: "ClaimSettings", **kw: Any) -> list["ClaimSettings"]:
        """The settings whose batches the claim reads, one per phase (default: `settings` alone). A claim that
        samples several variants of its rows (one per frame count, per split) lists one settings each. The runner
        interleaves them: unit k is the k-th batch of every phase, in this order (so every look sees whole
        instances of every phase), and `measure_batch` is handed the phase's settings, `conclude` those given to
        `measure_records`. A record should name its phase where `conclude` needs it (e.g. its frame count)."""
        return [settings]

    def finish(self, ctx: "RunContext", system: "WanSystem", settings: "ClaimSettings", records: list[dict],
               result: "ClaimResult", **kw: Any) -> "ClaimResult":
        """Report-only extras that need the run context (x̂0 filmstrips, their arrays), once, after the last look,
        on the records it concluded on; never anything the decision reads. Default: the row as concluded."""
        return result

    @property
    def by_records(self) -> bool:
        """Whether the claim is written as records (`measure_batch` + `conclude`)."""
        return type(self).measure_batch is not Claim.measure_batch

    def controls(self) -> list[Control]:
        return []

    def gate_pairs(self) -> tuple[list, list[str]]:
        """The pairs of controls `cos validate --kind gate` calibrates the gate on (cos.gate_validate.GatePair:
        OLD and NEW run at the same draw), and why any control is left unpaired. Default: built from `controls()`
        (`cos.gate_validate.default_pairs`); a claim overrides it to add or replace pairs."""
        from cos.gate_validate import default_pairs

        return default_pairs(self)

    def figures(self, details: Details, fig_dir: Path, arrays: Mapping[str, Any]) -> list[Figure]:
        return []

    def max_units(self, settings: "ClaimSettings", system: "WanSystem") -> int:
        """The most units (task instances, seeds averaged) the claim's interval is over at these settings: every
        instance of the settings unless the claim reads fewer (a subset of tasks) or sizes its own."""
        return settings.instances * len(settings.tasks)

    def cost(self, settings: "ClaimSettings", system: "WanSystem") -> int:
        """Row-forwards (one sample through one expert once, per CFG pass) of this claim's own runs, beyond the
        shared ones (`shared_runs`)."""
        return 0

    def shared_runs(self, settings: "ClaimSettings", system: "WanSystem") -> dict[str, int]:
        """Runs several claims read, by name, with their row-forwards: the plan counts each name once, and
        only when a claim of the plan reads it. Most claims read the shared clean run (x̂0 recorded)."""
        return {"clean run": settings.rows * settings.steps}

    def readouts(self, settings: "ClaimSettings", system: "WanSystem") -> dict[str, int]:
        """Host-side work of `measure` beyond the forwards, for the ETA: "decode" (one row's video decoded alone),
        "batch_decode" (one row's, decoded with its run's other rows), "weights" (one video's NNLS candidate
        mixture, read back on its own), "step_weights" (one step's mixture where a row's every step is read back
        and solved together; "frame_weights" of one frame so), "score" (one video scored alone), "branch_score"
        (one of a row's runs scored with its others at once), "cka" (one x̂0 comparison, a row's branches against
        its clean run at once): `cos.runner._readout_seconds` times each as it is computed.
        Divided over the ranks of a data-parallel run, as the batches are (each reads out the batches it sampled
        in `measure_batch`: cos.runner.RunContext.measure_records)."""
        return {}

    # ---------------------------------------------------------------- building the row
    def result(self, est: "Estimate", system: "WanSystem", settings: "ClaimSettings", details: Details,
               arrays: Mapping[str, Any] | None = None, samples: Mapping[str, Any] | None = None) -> "ClaimResult":
        """A row whose status comes from the interval against the spec's threshold. `samples` maps a task
        instance id to what the claim measured on it (per seed, in `settings.seeds` order): the per-sample
        records written to samples.jsonl, so a verdict can be followed down to the video."""
        from cos.stats import detectable, one_sided_p
        from cos.store import key_of

        s = self.spec
        d = {"threshold": s.threshold, "direction": s.direction, "rule": self.rule,
             "p_value": one_sided_p(est, s.threshold, s.direction), "detectable": detectable(est, s.threshold),
             "weights_hash": system.weights_hash,
             "settings": settings.record(), **asdict(details)}
        status, reason = decide(est.ci_low, est.ci_high, s.threshold, s.direction), ""
        if not est.decidable and status != "error":
            status, reason = "inconclusive", (f"all {est.n} values equal {est.value:.3g}: no interval, this n "
                                              "cannot decide")
        return ClaimResult(id=s.id, title=s.title, paper_ref=s.paper_ref, paper_value=s.paper_value,
                           measured=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n=est.n, status=status,
                           reason=reason, model=system.name, seeds=list(settings.seeds), details=d,
                           version=s.version, arrays=dict(arrays or {}),
                           samples=sample_records(s, samples or {}, settings, key_of(settings=settings.record())))

    @property
    def rule(self) -> str:
        """The decision rule in words (shown in the report and the JSON)."""
        s = self.spec
        side = "above" if s.direction == ">" else "below"
        return f"holds when the whole 95% CI of the {s.measured_quantity} lies {side} {s.threshold:g}" + \
            "".join(f"; {c}" for c in self.conditions)

    conditions: ClassVar[tuple[str, ...]] = ()    # the claim's further conditions, in words

    def skipped(self, reason: str, system: "WanSystem | None" = None,
                settings: "ClaimSettings | None" = None) -> "ClaimResult":
        """A row for a claim that cannot be measured with these inputs, with its one-line reason."""
        return self.empty_row("skipped", reason, system, settings)

    def empty_row(self, status: str, reason: str, system: "WanSystem | None" = None,
                  settings: "ClaimSettings | None" = None) -> "ClaimResult":
        s = self.spec
        return ClaimResult(id=s.id, title=s.title, paper_ref=s.paper_ref, paper_value=s.paper_value, measured=None,
                           ci_low=None, ci_high=None, n=None, status=status, reason=reason,
                           model=system.name if system else "", seeds=list(settings.seeds) if settings else [],
                           details={"weights_hash": system.weights_hash} if system else {}, version=s.version)


def sensitivity_note(r: "ClaimResult") -> str:
    """The row's minimum detectable effect in words (and, for an undecided row, the n that would decide it):
    shown after the reason in the table and the report."""
    det = r.details or {}
    d = det.get("detectable")
    if not d:
        return ""
    text = f"MDE {d['min_detectable_effect']:.3g} at n={d['n']} ({d['power']:.0%} power)"
    # the n concerns the row's own interval: only where that interval straddles the threshold (a row undecided
    # by a further condition is undecided on that condition's interval, not this one)
    straddles = (r.ci_low is not None and "threshold" in det and
                 decide(r.ci_low, r.ci_high, det["threshold"], det.get("direction", ">")) == "inconclusive")
    if r.status == "inconclusive" and straddles and d.get("n_to_decide"):
        text += f"; ~{d['n_to_decide']} units would decide it"
    return text


def reason_text(r: "ClaimResult") -> str:
    """The reason column: the row's reason, then its sensitivity note."""
    return "; ".join(t for t in (r.reason, sensitivity_note(r)) if t)


def sample_records(spec: ClaimSpec, samples: Mapping[str, Any], settings: "ClaimSettings",
                   settings_hash: str) -> list[dict]:
    """One record per task instance: task, split, instance seed, the noise seeds, what was measured on it."""
    out = []
    for inst_id, values in sorted(samples.items()):
        task, split, idx = inst_id.rsplit("-", 2)
        out.append({"claim": spec.id, "version": spec.version, "task": task, "split": split, "instance": int(idx),
                    "seeds": list(settings.seeds), "settings_hash": settings_hash,
                    "quantity": spec.measured_quantity, "values": _plain(values)})
    return out


def _plain(v: Any) -> Any:
    """JSON-able copy (numpy scalars and arrays become numbers and lists)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def also_requires(res: "ClaimResult", ok: bool | str, reason: str, name: str | None = None) -> "ClaimResult":
    """A claim with a further condition beside its interval (decided on an interval of its own where it has
    one: `ok` is then that condition's status). The row holds only when every condition holds: a condition that
    fails turns `holds` into `fails`, an undecided one into `inconclusive`, with the reason. Each named
    condition's status is recorded in details["conditions"]."""
    status = ok if isinstance(ok, str) else ("holds" if ok else "fails")
    if name:
        res.details.setdefault("conditions", {})[name] = status
    if res.status == "holds" and status != "holds":
        res.status, res.reason = ("fails" if status == "fails" else "inconclusive"), reason
    return res


CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    """Add a claim to the registry (its module calls this once at import)."""
    old = CLAIMS.get(claim.id)
    if old is not None and type(old).__qualname__ != type(claim).__qualname__:
        raise ValueError(f"claim id {claim.id!r} registered twice ({type(old).__name__}, {type(claim).__name__})")
    CLAIMS[claim.id] = claim
    return claim


def unregister(claim_id: str) -> None:
    CLAIMS.pop(claim_id, None)


def all_claims() -> list[Claim]:
    """Every registered claim, sorted by id (discovers the package's claims first)."""
    from cos.claims import load_all

    load_all()
    return [CLAIMS[k] for k in sorted(CLAIMS)]


def get_claim(claim_id: str) -> Claim:
    from cos.claims import load_all

    load_all()
    try:
        return CLAIMS[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; known: {sorted(CLAIMS)}") from None


def decide(ci_low: float, ci_high: float, threshold: float = 0.0, direction: str = ">") -> str:
    """Status from a confidence interval: `holds` if the whole interval is on the claimed side of the
    threshold, `fails` if the whole interval is on the other side, `inconclusive` if it straddles it."""
    if any(map(lambda v: v is None or math.isnan(v), (ci_low, ci_high))):
        return "error"
    if direction == ">":
        return "holds" if ci_low > threshold else "fails" if ci_high <= threshold else "inconclusive"
    if direction == "<":
        return "holds" if ci_high < threshold else "fails" if ci_low >= threshold else "inconclusive"
    raise ValueError(f"direction={direction!r}: expected '>' or '<'")


@dataclass
class ClaimResult:
    """One row of claims-status.json. `arrays` (named numpy arrays, e.g. x̂0 filmstrips) are written beside
    the JSON as safetensors (`data/<id>.safetensors`), never into it."""

    id: str
    title: str
    paper_ref: str
    paper_value: str
    measured: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    status: str
    reason: str = ""
    model: str = ""
    seeds: list[int] = field(default_factory=list)
    runtime_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    samples: list[dict] = field(default_factory=list, repr=False)   # samples.jsonl, never the status JSON
    # what the row was concluded on (cos.records.Concluded as JSON): records.jsonl, never the status JSON
    records: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}: expected one of {STATUSES}")

    @classmethod
    def for_claim(cls, claim_id: str, **kw: Any) -> "ClaimResult":
        spec = get_claim(claim_id).spec
        kw.setdefault("version", spec.version)
        return cls(id=spec.id, title=spec.title, paper_ref=spec.paper_ref, paper_value=spec.paper_value, **kw)

    def to_dict(self) -> dict[str, Any]:
        # asdict deep-copies every field: not the three that are written elsewhere (a row's records and samples
        # are its largest part, and the partial table is rewritten with every row as each claim finishes)
        d = asdict(replace(self, arrays={}, samples=[], records=None))
        for k in ("arrays", "samples", "records"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClaimResult":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d and k not in ("arrays", "samples", "records")})

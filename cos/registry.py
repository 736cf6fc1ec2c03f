"""The claim registry and the results schema (one row per claim, lm-evaluation-harness style)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("holds", "fails", "inconclusive", "skipped", "error")
SCHEMA = "cos.claims-status/1"


@dataclass(frozen=True)
class ClaimSpec:
    """What a claim is: id, title, where the paper states it, the paper's value, what is measured."""

    id: str
    title: str
    paper_ref: str
    paper_value: str
    measured_quantity: str
    assertion: str = ""


CLAIMS: dict[str, ClaimSpec] = {}


def register_claim(spec: ClaimSpec) -> ClaimSpec:
    if spec.id in CLAIMS and CLAIMS[spec.id] != spec:
        raise ValueError(f"claim id {spec.id!r} registered twice with different specs")
    CLAIMS[spec.id] = spec
    return spec


def get_claim(claim_id: str) -> ClaimSpec:
    from cos import catalog  # noqa: F401  (registers the paper's claims)

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
    """One row of claims-status.json."""

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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}: expected one of {STATUSES}")

    @classmethod
    def for_claim(cls, claim_id: str, **kw: Any) -> "ClaimResult":
        spec = get_claim(claim_id)
        return cls(id=spec.id, title=spec.title, paper_ref=spec.paper_ref, paper_value=spec.paper_value, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClaimResult":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})

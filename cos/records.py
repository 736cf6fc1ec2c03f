"""A claim's records on disk: what its conclusion read, enough to conclude it again without any run.

`RunContext.measure_records` attaches to each row the records it concluded on with what `Claim.conclude` was
called with (the settings, the model's identity, the claim's keyword arguments and the look's level): a
`Concluded`. The plugin writes them to `records.jsonl` (one line per claim) beside samples.jsonl; `cos conclude
RUN_DIR` recomputes the table from it, and `cos gate` pairs two models' records (cos.gate).

Keyword arguments are stored as tagged JSON: a dataclass of a `cos.` module by its name and fields, a model by
its identity (`RecordedSystem`); reading one never imports anything outside `cos.` and never unpickles.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cos.errors import CosError

SCHEMA = "cos.records/1"
FILE = "records.jsonl"


@dataclass(frozen=True)
class RecordedSystem:
    """What a conclusion reads of a model (its name, identity and depth), standing in for the `WanSystem` when a
    conclusion is recomputed from disk."""

    name: str
    weights_hash: str | None
    fingerprint: str | None
    num_layers: int
    scale_temporal: int | None = None    # the VAE's frame stride (noise_frames reads it)

    @classmethod
    def of(cls, system: Any) -> "RecordedSystem":
        vae = getattr(system, "vae", None)
        st = getattr(vae, "scale_temporal", None) if vae is not None else getattr(system, "scale_temporal", None)
        return cls(name=system.name, weights_hash=system.weights_hash, fingerprint=system.fingerprint,
                   num_layers=int(system.num_layers), scale_temporal=None if st is None else int(st))

    @property
    def vae(self) -> Any:
        """The VAE as far as a conclusion reads it (its frame stride); AttributeError where it was not recorded."""
        if self.scale_temporal is None:
            raise AttributeError("the recorded model has no VAE frame stride (records of an older cos)")
        from types import SimpleNamespace

        return SimpleNamespace(scale_temporal=self.scale_temporal)


@dataclass
class Concluded:
    """The records a row was concluded on, in batch order, with the arguments of that conclusion."""

    claim: str
    version: int
    records: list[dict]
    system: Any                    # a WanSystem in the run, a RecordedSystem from disk
    settings: Any                  # ClaimSettings
    kw: dict = field(default_factory=dict)
    level: float | None = None     # the decision level of the look it was concluded at (None: the default 95%)
    status: str | None = None      # the row's status as the run wrote it (records.jsonl carries it)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "claim": self.claim, "version": self.version, "level": self.level,
                "system": dataclasses.asdict(RecordedSystem.of(self.system)),
                "settings": _tag(self.settings), "kw": {k: _tag(v) for k, v in sorted(self.kw.items())},
                "records": self.records}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "records") -> "Concluded":
        """The bundle from its JSON (one line of records.jsonl); one-line `CosError` naming `where` when malformed."""
        try:
            if d.get("schema") != SCHEMA:
                raise ValueError(f"schema {d.get('schema')!r}, expected {SCHEMA!r}")
            if not isinstance(d["records"], list) or not all(isinstance(r, dict) for r in d["records"]):
                raise ValueError("'records' is not a list of objects")
            return cls(claim=str(d["claim"]), version=int(d["version"]), records=d["records"],
                       system=RecordedSystem(**d["system"]), settings=_untag(d["settings"]),
                       kw={k: _untag(v) for k, v in d["kw"].items()},
                       level=None if d.get("level") is None else float(d["level"]),
                       status=None if d.get("status") is None else str(d["status"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CosError(f"{where}: not a cos records line ({type(e).__name__}: {e})") from None

    def conclude(self, claim: Any, records: list[dict] | None = None):
        """`claim.conclude` on these records (or on `records`) with the recorded arguments, at the recorded level."""
        from cos.runner import _conclude_at

        return _conclude_at(claim, self.records if records is None else records, self.system, self.settings,
                            self.kw, self.level)


def _tag(v: Any) -> Any:
    """JSON of a conclusion argument: tuples and dataclasses tagged, a model by its identity."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return {"__tuple__": [_tag(x) for x in v]}
    if isinstance(v, list):
        return [_tag(x) for x in v]
    if isinstance(v, dict):
        return {"__dict__": [[_tag(k), _tag(x)] for k, x in v.items()]}
    if hasattr(v, "experts") and hasattr(v, "fingerprint"):       # a WanSystem (distill's fast model)
        return {"__system__": dataclasses.asdict(RecordedSystem.of(v))}
    if isinstance(v, RecordedSystem):
        return {"__system__": dataclasses.asdict(v)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type) and type(v).__module__.startswith("cos."):
        return {"__dataclass__": f"{type(v).__module__}:{type(v).__qualname__}",
                "fields": {f.name: _tag(getattr(v, f.name)) for f in dataclasses.fields(v)}}
    raise TypeError(f"cannot record a conclusion argument of type {type(v).__name__}")


def _untag(v: Any) -> Any:
    if isinstance(v, list):
        return [_untag(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "__tuple__" in v:
        return tuple(_untag(x) for x in v["__tuple__"])
    if "__dict__" in v:
        return {_untag(k): _untag(x) for k, x in v["__dict__"]}
    if "__system__" in v:
        return RecordedSystem(**v["__system__"])
    if "__dataclass__" in v:
        mod, _, name = str(v["__dataclass__"]).partition(":")
        if not mod.startswith("cos.") and mod != "cos":   # never import what a file names outside cos
            raise ValueError(f"dataclass {v['__dataclass__']!r} is not cos's")
        cls: Any = importlib.import_module(mod)
        for part in name.split("."):
            cls = getattr(cls, part)
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{v['__dataclass__']!r} is not a dataclass")
        return cls(**{k: _untag(x) for k, x in v["fields"].items()})
    raise ValueError(f"untagged object {sorted(v)[:3]}")


def write_records(out: Path, results: list) -> Path | None:
    """records.jsonl: one line per row concluded from records (atomically); None when no row has any."""
    rows = [r for r in sorted(results, key=lambda r: r.id) if r.records]
    if not rows:
        return None
    path = Path(out) / FILE
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps({**r.records, "status": r.status, "measured": r.measured}, default=str) + "\n")
    tmp.replace(path)
    return path


MAX_BYTES = 1 << 30


def load_records(run: str | Path) -> dict[str, Concluded]:
    """The bundles of a run folder's records.jsonl by claim id; one line naming the file when it is missing or
    malformed. A regular file only, its size bounded (cos.trust.read_regular)."""
    from cos.trust import read_regular

    path = Path(run) / FILE if Path(run).is_dir() else Path(run)
    try:
        text = read_regular(path, MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise CosError(f"{path}: no records here (a run of cos 0.3 or later writes {FILE} beside its table)") from None
    except (OSError, ValueError) as e:   # UnicodeDecodeError is a ValueError
        raise CosError(f"{path}: cannot read ({e})") from None
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise CosError(f"{path}:{i}: malformed JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise CosError(f"{path}:{i}: not a JSON object")
        b = Concluded.from_dict(d, f"{path}:{i}")
        out[b.claim] = b
    return out

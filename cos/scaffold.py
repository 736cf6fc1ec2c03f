"""`cos new-claim` (a claim module's skeleton), `cos baseline add|update` (baseline rows from a run, never
spliced by hand) and `cos list --format markdown` (docs/claims.md, generated from the registry)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cos.errors import CosError, InputError

CLAIM_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")

SKELETON = '''\"\"\"{id} (TODO: Sec. / Fig. of the paper): TODO one sentence: what the paper claims, and what is measured here.

How the paper is read (docs/claims.md prints this docstring): TODO what had to be interpreted and how; why the
threshold is what it is (fixed before running any real model).
\"\"\"
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cos import (TINY, Claim, ClaimSpec, Control, Details, RunContext, bootstrap_ci, clean_batch_rows, ref,
                 register)

THRESHOLD = 0.0   # TODO: the smallest effect that counts, fixed before measuring
EFFECT = None     # TODO: the effect a run is sized for (`cos plan`): distance from THRESHOLD in the claim's units


@dataclass
class {cls}Details(Details):
    \"\"\"What the row records for the report and the JSON (typed; `Details.from_dict` reads it back).\"\"\"

    per_instance: dict[str, float] = field(default_factory=dict)   # `cos compare` pairs runs on these


class {cls}(Claim):
    spec = ClaimSpec(
        id="{id}", title="TODO: the claim in a few words", paper_ref="TODO: Sec x, Fig y",
        paper_value="TODO: what the paper reports", measured_quantity="final score minus the random-candidate score",
        threshold=THRESHOLD, direction=">", version=1,
        statistic="mean over task instances (seeds averaged), 95% bootstrap CI",
        effect=EFFECT,
        effect_note="chosen: TODO why this size ('paper: ...' where the paper's numbers give it in these units)")
    Details = {cls}Details
    # the claim's own sizes per tier (cpu / gpu / full): sweep points, blocks, frame counts; None: none needed
    sizing = {{"cpu": None, "gpu": None, "full": None}}

    def measure_batch(self, ctx: RunContext, system, settings, batch) -> list[dict]:
        \"\"\"The records of one batch: one small dict of plain numbers per (instance × seed) row, with its
        "instance" and "seed". `read(inst, steps, final)` sees the shared clean run's decoded x̂0 per step
        (S, F, 3, H, W) and the decoded video; it runs once per row, on the rank that sampled the batch, and must
        be deterministic (the records are stored with the claim's code hash and gathered across ranks; the same
        batch gives the same records). TODO: your readout; `ctx.run` / `ctx.sweep` for your own interventions.\"\"\"
        read = lambda inst, steps, final: float(inst.score(final)) - 1.0 / inst.candidates.shape[0]
        return [{{"instance": inst.id, "seed": seed, "value": v}}
                for inst, seed, v in clean_batch_rows(ctx, system, settings, batch, read)]

    def conclude(self, records: list[dict], system, settings):
        \"\"\"The row from the records of the batches so far (every look of a sequential run, and the last): the
        interval the status is decided on, one value per task instance (its seeds averaged). Intervals take the
        look's level themselves (`cos.stats.decision_level`): pass no confidence of your own.\"\"\"
        values: dict[str, list[float]] = {{}}
        for r in records:
            values.setdefault(r["instance"], []).append(r["value"])
        if len(values) < 2:
            return self.skipped(f"needs ≥ 2 task instances; the records hold {{len(values)}}", system, settings)
        est = bootstrap_ci([float(np.mean(v)) for v in values.values()])
        d = {cls}Details(measured=f"{{self.spec.measured_quantity}}, {{est}}",
                         per_instance={{k: float(np.mean(v)) for k, v in values.items()}})
        return self.result(est, system, settings, d, samples={{k: {{"value": v}} for k, v in values.items()}})

    def controls(self) -> list[Control]:
        # `model(d)`: d is the draw (0 in the tests; cos validate reruns 1..N with new instances and noise, and a
        # model with random weights takes d as its weight seed). TODO: a model on which the effect is present by
        # construction (must hold) and one on which it is absent (must not).
        return [Control("oracle", "positive", lambda d: ref(prior="oracle"), TINY,
                        why="the reference denoiser with all prior mass on the answer: always right"),
                Control("uniform", "negative", lambda d: ref(), TINY,
                        why="the reference denoiser with a uniform prior: right at chance")]

    def figures(self, d: {cls}Details, fig_dir: Path, arrays) -> list:
        from cos.figures import bars

        if not d.per_instance:
            return []
        keys = sorted(d.per_instance)
        return [(bars(keys, [d.per_instance[k] for k in keys], [None] * len(keys),
                      fig_dir / "{module}.png", ylabel=self.spec.measured_quantity,
                      threshold=self.spec.threshold, direction=self.spec.direction,
                      title="per instance (seeds averaged; no interval per instance)"),
                 f"Per-instance values. Holds when the mean's 95% CI lies above {{self.spec.threshold:g}}.")]

    def cost(self, settings, system) -> int:
        return 0   # row-forwards beyond the shared clean run (which `shared_runs` counts)

    def readouts(self, settings, system) -> dict[str, int]:
        return {{"decode": settings.rows, "score": settings.rows}}


register({cls}())
'''


def new_claim(claim_id: str, out: str | None) -> Path:
    """Write the skeleton of claim `claim_id` (family.name) to `out` (default: cos/claims/<module>.py in a
    source checkout, else ./<module>.py); never over an existing file."""
    if not CLAIM_ID.match(claim_id):
        raise InputError(f"{claim_id!r}: a claim id is lower-case words joined by one dot, e.g. my_family.my_effect")
    module = claim_id.split(".")[-1]
    cls = "".join(w.capitalize() for w in re.split(r"[._]", claim_id))
    if out is None:
        here = Path.cwd() / "cos" / "claims"
        out = str((here if here.is_dir() else Path.cwd()) / f"{module}.py")
    path = Path(out)
    if path.exists():
        raise CosError(f"{path}: exists; new-claim never overwrites (choose --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SKELETON.format(id=claim_id, cls=cls, module=module))
    return path


# ---------------------------------------------------------------- baseline rows from a run
def _read(path: Path, what: str) -> dict:
    from cos.reporting import load_status

    if path.is_dir():
        path = path / "claims-status.json"
    if not path.exists():
        raise CosError(f"{path}: no {what} here")
    return load_status(path)


def baseline_rows(run: str, into: str, pattern: str | None, replace: bool) -> list[str]:
    """Copy the rows of RUN's claims-status.json whose id contains `pattern` (all when None) into the baseline
    `into` (created when missing): `add` (replace False) refuses a row the baseline has, `update` replaces it.
    Each copied row's source (run folder, commit, time) is recorded under `row_sources`. Returns the lines said."""
    src = _read(Path(run), "claims-status.json (a run folder or the file itself)")
    dest = Path(into)
    doc = _read(dest, "baseline") if dest.exists() else {"schema": src.get("schema"), "provenance": src.get("provenance"),
                                                        "claims": []}
    if doc.get("schema") != src.get("schema"):
        raise CosError(f"{dest}: schema {doc.get('schema')!r} differs from {run}'s {src.get('schema')!r}")
    rows = [r for r in src["claims"] if pattern is None or pattern in r["id"]]
    if not rows:
        raise CosError(f"{run}: no claim id contains {pattern!r}")
    have = {r["id"]: i for i, r in enumerate(doc["claims"])}
    clash = [r["id"] for r in rows if r["id"] in have]
    if clash and not replace:
        raise CosError(f"{dest} already has {', '.join(clash)}: `cos baseline update` replaces rows, add never does")
    prov = src.get("provenance") or {}
    said = []
    for r in rows:
        r = {**r, "details": {k: v for k, v in (r.get("details") or {}).items() if k != "arrays_file"}}
        if r["id"] in have:   # the arrays file lives beside the run, not the baseline: not named
            old = doc["claims"][have[r["id"]]]
            doc["claims"][have[r["id"]]] = r
            said.append(f"updated {r['id']}: {old.get('status')} v{old.get('version') or 1} → "
                        f"{r['status']} v{r.get('version') or 1}")
        else:
            doc["claims"].append(r)
            said.append(f"added {r['id']}: {r['status']} v{r.get('version') or 1}")
        doc.setdefault("row_sources", {})[r["id"]] = {"run": str(run), "git_commit": prov.get("git_commit"),
                                                      "start_time": prov.get("start_time")}
    doc["claims"].sort(key=lambda r: r["id"])
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(dest)
    return said


# ---------------------------------------------------------------- docs/claims.md
def claims_markdown() -> str:
    """Every registered claim: spec, rule, statistic, controls and its module's docstring (how the paper is
    read). docs/claims.md is this output, committed; a test checks it is current."""
    from cos.registry import all_claims

    claims = all_claims()
    out = ["# The claims", "",
           "Generated by `cos list --format markdown > docs/claims.md` from the registry (each claim's `ClaimSpec`, "
           "rule, controls and module docstring); edit the claim, not this file. A test fails when it is stale.", "",
           "| claim | v | paper | holds when | title |", "|---|---|---|---|---|"]
    out += [f"| [`{c.id}`](#{c.id.replace('.', '')}) | {c.spec.version} | {c.spec.paper_ref} | "
            f"CI {c.spec.direction} {c.spec.threshold:g} | {c.spec.title} |" for c in claims]
    for c in claims:
        s = c.spec
        doc = (sys.modules[type(c).__module__].__doc__ or "").strip()
        out += ["", f"## {s.id}", "", f"**{s.title}** (version {s.version}; {s.paper_ref}; "
                f"module `{type(c).__module__}`)", "",
                f"- Paper: {s.paper_value}", f"- Measured: {s.measured_quantity}", f"- Statistic: {s.statistic}",
                f"- Rule: {c.rule}"]
        if s.paper:
            out.append("- The paper's numbers: " + ", ".join(f"{k} {v:g}" for k, v in s.paper.items()))
        out += ["- Controls:"] + [f"  - {k.kind} `{k.name}`: {k.why}" for k in c.controls()]
        if doc:
            out += ["", doc]
    return "\n".join(out) + "\n"

"""The claims report, rendered from what a run recorded (its claims-status.json and the arrays files its rows
name; no sampling): a forest plot of every claim's interval against its own threshold, coloured by the row's
status, then one section per claim with its decision rule, the status of each further condition and the
figures the claim draws (`Claim.figures`), each with the sentence saying what would make the claim hold.
x̂0 filmstrips are folded under <details>. Markdown with PNGs (SVGs beside) and a self-contained HTML page
(images inlined), both from jinja2 templates (`cos/templates/`) with autoescape on: every string that comes
from a status file (claim ids, titles, reasons, folder names) is escaped, so a report never runs a script.

Figures are drawn into a fresh `figures/` folder: a report never shows another run's pictures. Only a folder
that cos made (it holds the `.cos-made` marker naming the verb that made it) is ever cleared; any other is
refused with one line, its files untouched."""
from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cos.errors import CosError
from cos.reporting import load_arrays, load_status, p_cell
from cos.registry import ClaimResult, reason_text

MARKER = ".cos-made"
COLOUR = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700", "skipped": "#6e7781", "error": "#8250df"}
FILMSTRIP_PREFIX = "trace-"   # a claim's x̂0 filmstrips: folded under <details>, not in the figure flow


@dataclass
class Figure:
    """One drawn figure: its PNG and the sentence under it."""

    path: Path
    caption: str

    @property
    def filmstrip(self) -> bool:
        return self.path.name.startswith(FILMSTRIP_PREFIX)

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode()


@dataclass
class Section:
    """One claim's part of the report: its row, the rule and condition statuses, and its figures."""

    row: dict
    rule: str
    conditions: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def plots(self) -> list[Figure]:
        return [f for f in self.figures if not f.filmstrip]

    @property
    def strips(self) -> list[Figure]:
        return [f for f in self.figures if f.filmstrip]

    @property
    def measured(self) -> str:
        return ci_text(self.row)

    @property
    def reason(self) -> str:
        return reason_text(ClaimResult.from_dict(self.row))

    @property
    def what(self) -> str:
        return str((self.row.get("details") or {}).get("measured", ""))

    @property
    def p(self) -> str:
        return p_cell(ClaimResult.from_dict(self.row))


def ci_text(row: dict | None) -> str:
    if not row or row.get("measured") is None:
        return "–"
    if row.get("ci_low") is None:
        return f"{row['measured']:.4g} (no interval), n = {row.get('n')}"
    return f"{row['measured']:.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}], n = {row.get('n')}"


def short_rule(row: dict, claim) -> str:
    """The rule in a table cell: the interval's side of the threshold, plus the number of further conditions."""
    d = row.get("details") or {}
    t, direction = d.get("threshold", claim.spec.threshold if claim else None), d.get("direction")
    if direction is None and claim is not None:
        direction = claim.spec.direction
    k = len(claim.conditions) if claim is not None else len(d.get("conditions") or {})
    return (f"95% CI {direction} {t:g}" if t is not None and direction else "–") + (f" + {k} condition(s)" if k else "")


def _claim(cid: str):
    from cos.registry import CLAIMS, all_claims

    all_claims()
    return CLAIMS.get(cid)


def claim_sections(run: Path, fig_dir: Path, have_mpl: bool) -> list[Section]:
    """Each row's section, with its claim's figures drawn into `fig_dir`."""
    out = []
    for row in load_status(run / "claims-status.json")["claims"]:
        claim = _claim(row["id"])
        d = row.get("details") or {}
        s = Section(row, str(d.get("rule") or (claim.rule if claim else "–")), dict(d.get("conditions") or {}))
        # an empty row (measured nothing: too few instances, skipped, error) decided no condition; an old run's
        # measured row may predate details.conditions
        if (claim is not None and claim.conditions and not s.conditions and row.get("measured") is not None
                and row["status"] not in ("skipped", "error")):
            s.notes.append("this row records no status per further condition (a run before details.conditions)")
        if have_mpl and claim is not None and row["status"] not in ("skipped", "error"):
            try:
                s.figures = [Figure(Path(p), c) for p, c in
                             claim.figures(claim.Details.from_dict(d), fig_dir, load_arrays(run, row))]
            except Exception as e:  # a figure must never hide the table: say what failed
                s.notes.append(f"figure for {row['id']} failed: {type(e).__name__}: {e}")
        out.append(s)
    return out


def forest_figure(rows: list[dict], fig_dir: Path, name: str = "forest.png") -> Figure:
    from cos.figures import forest

    p = forest(rows, fig_dir / name, title="every claim's headline 95% CI against its own threshold "
                                           "(colour and word: the row's status)")
    return Figure(p, "Each claim's headline interval, shifted to its threshold (0) and scaled to its own reach, "
                     "the claimed side right and shaded. A claim holds when its whole interval lies right of 0 and "
                     "every further condition holds (its section). The colour and word are the row's status.")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def fresh_dir(path: Path, by: str) -> Path:
    """An empty folder at `path` made by `by` (a cos verb). An existing folder is cleared only when it holds the
    marker of that same verb: a folder cos did not make, or that another verb made (a run's figures under a
    `cos compare --out`), is refused with one line, nothing deleted. An empty folder is adopted."""
    mark = path / MARKER
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CosError(f"{path}: exists and is not a folder cos made; refusing to replace it")
    if path.exists():
        made_by = None
        if mark.is_file():
            try:
                made_by = json.loads(mark.read_text()).get("by")
            except (OSError, ValueError, AttributeError):
                made_by = None
        if made_by == by:
            shutil.rmtree(path)
        elif made_by is None and not any(path.iterdir()):
            pass
        else:
            whose = f"made by `{made_by}`" if made_by else f"not made by cos (no {MARKER})"
            raise CosError(f"{path}: {whose}; refusing to clear it for `{by}`: move it away or choose another "
                           "folder")
    path.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps({"by": by}) + "\n")
    return path


def provenance_line(prov: dict) -> str:
    env = prov.get("env") or {}
    gpu = env.get("gpu") or prov.get("device_name")
    parts = [f"model {prov.get('model')}", f"weights {prov.get('weights_hash')}", f"device {gpu}"]
    parts += [f"{k} {env[k]}" for k in ("cuda", "driver", "cudnn") if env.get(k)]
    commit = str(prov.get("git_commit"))[:12] + (" (dirty)" if prov.get("git_dirty") else "")
    return " · ".join(parts + [f"commit {commit}", str(prov.get("start_time"))])


def md_escape(v: Any) -> Any:
    """What Markdown needs escaped in data: `<` (raw HTML, e.g. a <script> claim id, which a Markdown renderer
    may pass through) and `&` (entities). The rest stays readable in the .md file."""
    return v.replace("&", "&amp;").replace("<", "&lt;") if isinstance(v, str) else v


def _env(markdown: bool = False):
    import jinja2

    # HTML: autoescape (every value, including attribute quotes); Markdown: md_escape on every value
    env = jinja2.Environment(loader=jinja2.PackageLoader("cos", "templates"), autoescape=not markdown,
                             finalize=md_escape if markdown else None,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")   # one Markdown table cell
    env.filters["anchor"] = anchor
    return env


def anchor(cid: str) -> str:
    """GitHub's heading anchor of `## <id>: <title>` is unwieldy; the Markdown links the id without dots."""
    return str(cid).replace(".", "")


def _rel(p: Path, base: Path) -> str:
    return p.relative_to(base).as_posix()


def write_report(run: str | Path) -> tuple[Path, Path]:
    """Render claims-report.md (+ figures/) and claims-report.html for the run folder holding claims-status.json."""
    run = Path(run)
    doc = load_status(run / "claims-status.json")
    prov = doc.get("provenance") or {}
    have_mpl = have_matplotlib()
    fig_dir = fresh_dir(run / "figures", "cos report")
    sections = claim_sections(run, fig_dir, have_mpl)
    forest = forest_figure([s.row for s in sections], fig_dir) if have_mpl else None
    ctx: dict[str, Any] = {"title": f"Claims report: {prov.get('model')}", "meta": provenance_line(prov),
                           "sections": sections, "forest": forest, "have_mpl": have_mpl, "colour": COLOUR,
                           "rule": lambda s: short_rule(s.row, _claim(s.id)), "rel": lambda p: _rel(p, run),
                           "alpha_note": alpha_note()}
    md_path, html_path = run / "claims-report.md", run / "claims-report.html"
    md_path.write_text(_env(markdown=True).get_template("report.md.j2").render(**ctx))
    html_path.write_text(_env().get_template("report.html.j2").render(**ctx))
    return md_path, html_path


def alpha_note() -> str:
    return ("p: one-sided (of \"not on the claimed side\"), bounded by the same intervals that decide the row: a row "
            "holds only when every one of its 95% intervals clears its threshold, so p < 0.025 exactly when it holds "
            "(> 0.975 when one lies wholly on the wrong side; between otherwise). No adjustment across claims.")


# ---------------------------------------------------------------- two runs side by side (`cos compare`)
def paired_difference(a: dict, b: dict, rec_a: Any = None, rec_b: Any = None) -> tuple[str, Any]:
    """B − A, paired where it can be: over the task instances both runs measured with the same seeds, from the
    runs' records (`rec_a`, `rec_b`: the claim's `Concluded` bundles of records.jsonl) by the gate's jackknife
    paired change (`cos.gate.paired_change`, the same interval `cos gate` decides on); else over the instances both
    rows record in `details.per_instance` (a scaffolded claim's); else the two estimates' difference, unpaired (no
    CI), with the reason the rows could not be paired."""
    from cos.stats import bootstrap_ci

    why = "no shared per-instance values"
    if (rec_a is None) != (rec_b is None):
        why = f"no records of this claim in run {'A' if rec_a is None else 'B'}"
    if rec_a is not None and rec_b is not None:
        claim = _claim(a.get("id") or b.get("id") or rec_a.claim)
        if claim is None:
            why = "not a claim of this cos: its records cannot be concluded"
        elif rec_a.version != rec_b.version:
            why = f"claim version v{rec_a.version} → v{rec_b.version}: the two answer different questions"
        elif rec_a.version != claim.spec.version:
            # as `cos conclude`: this cos's conclusion is not the one the records were made for
            why = f"v{rec_a.version} recorded, v{claim.spec.version} installed: not recomputed"
        else:
            from cos.gate import paired_change

            try:
                ch = paired_change(claim, rec_b, rec_a)
            except Exception as e:  # noqa: BLE001 - a display: a conclusion that cannot run on a leave-one-out
                why = f"records not paired: {type(e).__name__}: {e}"[:160]    # subset leaves B − A unpaired, said
            else:
                over = (f"paired over {ch['n_shared']} shared instances"
                        + (f" ({ch['n']} move the estimate)" if ch["n"] != ch["n_shared"] else ""))
                if ch["ci"] is not None:
                    lo, hi = ch["ci"]
                    wr = ch.get("width_ratio_unpaired")
                    return (f"{ch['change']:+.3g} [{lo:+.3g}, {hi:+.3g}] {over}"
                            + (f"; the unpaired interval {wr:.2g}× as wide" if wr else ""), ch)
                return f"{ch['change']:+.3g} {over}, no interval: {ch['why_no_interval']}", ch
    pa, pb = ((r.get("details") or {}).get("per_instance") for r in (a, b))
    if isinstance(pa, dict) and isinstance(pb, dict) and a.get("seeds") == b.get("seeds"):
        shared = sorted(set(pa) & set(pb))
        if len(shared) >= 2:
            est = bootstrap_ci([pb[k] - pa[k] for k in shared])
            return (f"{est.value:+.3g} [{est.ci_low:+.3g}, {est.ci_high:+.3g}] paired, {len(shared)} shared "
                    "instances", est)
    if a.get("measured") is None or b.get("measured") is None:
        return "–", None
    return f"{b['measured'] - a['measured']:+.3g} unpaired ({why}): compare the CIs", None


def _run_records(run: Path) -> dict:
    """A run folder's records by claim id ({} when it has none: a run of cos < 0.3, or no claim written as
    records); a records.jsonl that is there but unreadable is one line, as everywhere."""
    from cos.records import FILE, load_records

    return load_records(run) if (run / FILE).exists() else {}


def overlay_figure(cid: str, rows: list[tuple[str, dict]], fig_dir: Path) -> Figure | None:
    """Both runs' headline estimates and CIs on one decision plot (no status word: each run's is in the table)."""
    from cos.figures import decision

    claim = _claim(cid)
    pts = [(name, r["measured"], None if r.get("ci_low") is None else (r["ci_low"], r["ci_high"]))
           for name, r in rows if r is not None and r.get("measured") is not None]
    if claim is None or not pts:
        return None
    s = claim.spec
    p = decision(pts, fig_dir / f"compare-{cid.replace('.', '-')}.png", threshold=s.threshold, direction=s.direction,
                 xlabel=s.measured_quantity, title=f"{cid}: both runs")
    return Figure(p, f"Both runs' estimates with 95% CIs. Each holds its headline part when its whole interval lies "
                     f"{'above' if s.direction == '>' else 'below'} {s.threshold:g}.")


def write_comparison(run_a: str | Path, run_b: str | Path, out: str | Path) -> tuple[Path, Path]:
    """compare.md (+ figures/) and a self-contained compare.html of two run folders, claim by claim."""
    from cos.cli import _settings_differences

    run_a, run_b, out = Path(run_a), Path(run_b), Path(out)
    docs = [load_status(r / "claims-status.json") for r in (run_a, run_b)]
    recs = [_run_records(r) for r in (run_a, run_b)]
    out.mkdir(parents=True, exist_ok=True)
    fig = fresh_dir(out / "figures", "cos compare")
    na, nb = (run_a.name, run_b.name) if run_a.name != run_b.name else ("A", "B")
    have_mpl = have_matplotlib()
    secs = [{s.id: s for s in claim_sections(r, fresh_dir(fig / n, "cos compare"), have_mpl)}
            for r, n in ((run_a, "a"), (run_b, "b"))]
    claims = []
    for cid in sorted(set(secs[0]) | set(secs[1])):
        sa, sb = secs[0].get(cid), secs[1].get(cid)
        ra, rb = (s.row if s else None for s in (sa, sb))
        figs = [{f.path.name: f for f in (s.plots if s else [])} for s in (sa, sb)]
        claims.append({"id": cid, "title": (ra or rb).get("title"), "rule": (sa or sb).rule,
                       "status": [s.status if s else "absent" for s in (sa, sb)],
                       "measured": [ci_text(ra), ci_text(rb)],
                       "delta": paired_difference(ra, rb, recs[0].get(cid), recs[1].get(cid))[0] if ra and rb
                       else "–",
                       "overlay": overlay_figure(cid, [(na, ra), (nb, rb)], fig) if have_mpl else None,
                       "pairs": [(figs[0].get(k), figs[1].get(k)) for k in dict.fromkeys([*figs[0], *figs[1]])]})
    ctx = {"na": na, "nb": nb, "run_a": str(run_a), "run_b": str(run_b), "claims": claims, "colour": COLOUR,
           "meta": [provenance_line(d.get("provenance") or {}) for d in docs],
           "diffs": _settings_differences(docs[0], docs[1]), "rel": lambda p: _rel(p, out), "wide": png_width}
    md_path, html_path = out / "compare.md", out / "compare.html"
    md_path.write_text(_env(markdown=True).get_template("compare.md.j2").render(**ctx))
    html_path.write_text(_env().get_template("compare.html.j2").render(**ctx))
    return md_path, html_path


def png_width(f: Figure | None) -> int:
    import struct

    return 0 if f is None else struct.unpack(">I", f.path.read_bytes()[16:20])[0]

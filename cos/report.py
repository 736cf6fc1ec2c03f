"""The claims report: one section per claim with its decision rule, the status of each further condition, a
figure of the decision itself (estimate, 95% CI, threshold, claimed side) and the figures the claim draws
(`Claim.figures`) from what it recorded (its row's typed details and the arrays file the row names; no
sampling), each with one sentence saying what would make the claim hold. Markdown with PNGs (SVGs beside) and
a self-contained HTML page (images inlined), written beside claims-status.md.

A run's figures are drawn into a fresh `figures/` folder: a report never shows another run's pictures."""
from __future__ import annotations

import base64
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cos.reporting import load_arrays, load_status
from cos.registry import ClaimResult, reason_text

COLOUR = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700", "skipped": "#6e7781", "error": "#8250df"}
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1f2328;font-size:15px}"
       "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;font-size:14px;"
       "vertical-align:top}img{max-width:100%;border:1px solid #eee}figure{display:block;margin:12px 0}"
       "figcaption{font-size:14px;color:#444;max-width:900px}section{border-top:1px solid #d0d7de;margin-top:1.5em}"
       ".rule{background:#f6f8fa;padding:6px 10px;border-left:3px solid #8c959f}.pair{display:flex;gap:8px}"
       ".pair figure{flex:1;min-width:0}")


@dataclass
class Section:
    """One claim's part of the report: its row, the rule and condition statuses, and its figures."""

    row: dict
    rule: str
    conditions: dict[str, str]
    figures: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def status(self) -> str:
        return self.row["status"]


def ci_text(row: dict) -> str:
    m = row.get("measured")
    if m is None:
        return "–"
    if row.get("ci_low") is None:
        return f"{m:.4g} (no interval), n = {row.get('n')}"
    return f"{m:.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}], n = {row.get('n')}"


def short_rule(row: dict, claim) -> str:
    """The rule in a table cell: the interval's side of the threshold, plus the number of further conditions."""
    d = row.get("details") or {}
    t, direction = d.get("threshold", getattr(claim, "spec", None) and claim.spec.threshold), d.get("direction")
    if direction is None and claim is not None:
        direction = claim.spec.direction
    k = len(claim.conditions) if claim is not None else len(d.get("conditions") or {})
    return (f"95% CI {direction} {t:g}" if t is not None and direction else "–") + (f" + {k} condition(s)" if k else "")


def claim_sections(run: Path, fig_dir: Path, have_mpl: bool) -> list[Section]:
    """Each row's section, with its figures drawn into `fig_dir`."""
    from cos.registry import CLAIMS, all_claims

    all_claims()
    data = load_status(run / "claims-status.json")
    out = []
    for row in data["claims"]:
        claim = CLAIMS.get(row["id"])
        d = row.get("details") or {}
        s = Section(row, d.get("rule") or (claim.rule if claim else "–"), dict(d.get("conditions") or {}))
        if claim is not None and claim.conditions and not s.conditions and row["status"] not in ("skipped", "error"):
            s.notes.append("this row records no status per further condition (a run before details.conditions)")
        if have_mpl and claim is not None and row["status"] not in ("skipped", "error"):
            try:
                if row.get("measured") is not None:
                    s.figures.append(decision_figure(row, claim, fig_dir))
                s.figures += claim.figures(claim.Details.from_dict(d), fig_dir, load_arrays(run, row))
            except Exception as e:  # a figure must never hide the table: say what failed
                s.notes.append(f"figure for {row['id']} failed: {type(e).__name__}: {e}")
        out.append(s)
    return out


def decision_figure(row: dict, claim, fig_dir: Path) -> tuple[Path, str]:
    """The headline estimate and its CI against the threshold, with the claimed side shaded."""
    from cos.figures import decision

    s = claim.spec
    iv = None if row.get("ci_low") is None else (row["ci_low"], row["ci_high"])
    from cos.registry import decide

    head = decide(*iv, s.threshold, s.direction) if iv else "no interval"
    p = decision([("estimate", row["measured"], iv)], fig_dir / f"decision-{row['id'].replace('.', '-')}.png",
                 threshold=s.threshold, direction=s.direction, xlabel=s.measured_quantity,
                 title=f"headline interval: {head}; claim: {row['status']}")
    side = "above" if s.direction == ">" else "below"
    return p, (f"The decision. The headline part holds when the whole 95% CI lies {side} {s.threshold:g} "
               f"(in the shaded side)" + ("; the further conditions are listed above." if claim.conditions else "."))


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (an earlier report's figures removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_report(run: str | Path) -> tuple[Path, Path]:
    """Render claims-report.md (+ figures/) and claims-report.html for the run folder holding claims-status.json."""
    run = Path(run)
    prov = load_status(run / "claims-status.json")["provenance"]
    have_mpl = have_matplotlib()
    sections = claim_sections(run, fresh_dir(run / "figures"), have_mpl)
    md = [f"# Claims report: {prov.get('model')}", "", provenance_line(prov), "",
          "Status table with Holm-adjusted p: [claims-status.md](claims-status.md). Figures are drawn from what "
          "the claims recorded; every figure has its SVG beside the PNG.", ""]
    if not have_mpl:
        md += ["*Figures need matplotlib: `pip install -e '.[report]'`, then `cos report <run-dir>`.*", ""]
    md += summary_table(sections) + [""]
    for s in sections:
        md += section_markdown(s, run)
    md_path, html_path = run / "claims-report.md", run / "claims-report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(page(f"Claims report: {prov.get('model')}", provenance_line(prov),
                              summary_html(sections), "".join(section_html(s) for s in sections)))
    return md_path, html_path


def provenance_line(prov: dict) -> str:
    return (f"Model `{prov.get('model')}` · weights `{prov.get('weights_hash')}` · device {prov.get('device_name')} · "
            f"commit `{str(prov.get('git_commit'))[:12]}` · {prov.get('start_time')}")


def _claim(cid: str):
    from cos.registry import CLAIMS

    return CLAIMS.get(cid)


def summary_table(sections: list[Section]) -> list[str]:
    rows = ["| claim | status | measured [95% CI] | decision rule | further conditions |", "|---|---|---|---|---|"]
    for s in sections:
        cond = ", ".join(f"{k}: {v}" for k, v in s.conditions.items()) or "–"
        rows.append(f"| [{s.id}](#{anchor(s.id)}) | **{s.status}** | {ci_text(s.row)} | "
                    f"{short_rule(s.row, _claim(s.id))} | {cond} |")
    return rows


def anchor(cid: str) -> str:
    """GitHub's heading anchor of `## <id>: <title>` is unwieldy; the HTML uses the id itself."""
    return cid.replace(".", "")


def section_markdown(s: Section, md_dir: Path) -> list[str]:
    r = s.row
    out = [f"## {s.id}: {r.get('title')}", "",
           f"**{s.status}** · measured {ci_text(r)} · paper: {r.get('paper_value')} ({r.get('paper_ref')})", "",
           f"> **Rule:** {s.rule}", ""]
    if s.conditions:
        out += ["Further conditions: " + "; ".join(f"`{k}` {v}" for k, v in s.conditions.items()), ""]
    what = (r.get("details") or {}).get("measured", "")
    reason = reason_text(ClaimResult.from_dict(r))
    if what or reason:
        out += [f"{what}" + (f" — {reason}" if reason else ""), ""]
    out += [f"*{n}*\n" for n in s.notes]
    for p, cap in s.figures:
        out += [f"![{cap}]({p.relative_to(md_dir).as_posix()})", "", f"*{cap}*", ""]
    return out


def img(p: Path, cap: str) -> str:
    data = base64.b64encode(p.read_bytes()).decode()
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(cap)}'>"
            f"<figcaption>{html.escape(cap)}</figcaption></figure>")


def section_head_html(s: Section) -> str:
    r = s.row
    what = html.escape((r.get("details") or {}).get("measured", ""))
    reason = reason_text(ClaimResult.from_dict(r))
    reason = f" — {html.escape(reason)}" if reason else ""
    cond = "".join(f"<li><code>{html.escape(k)}</code>: <b style='color:{COLOUR.get(v, '#444')}'>{html.escape(v)}</b>"
                   f"</li>" for k, v in s.conditions.items())
    return (f"<p><b style='color:{COLOUR[s.status]}'>{s.status}</b> · measured {html.escape(ci_text(r))} · paper: "
            f"{html.escape(str(r.get('paper_value')))} ({html.escape(str(r.get('paper_ref')))})</p>"
            f"<p class='rule'><b>Rule:</b> {html.escape(s.rule)}</p>"
            + (f"<p>Further conditions:</p><ul>{cond}</ul>" if cond else "")
            + f"<p>{what}{reason}</p>" + "".join(f"<p><i>{html.escape(n)}</i></p>" for n in s.notes))


def section_html(s: Section) -> str:
    return (f"<section id='{s.id}'><h2>{s.id}: {html.escape(str(s.row.get('title')))}</h2>{section_head_html(s)}"
            + "".join(img(p, c) for p, c in s.figures) + "</section>")


def summary_html(sections: list[Section]) -> str:
    rows = "".join(f"<tr><td><a href='#{s.id}'>{s.id}</a></td><td style='color:{COLOUR[s.status]}'><b>{s.status}</b>"
                   f"</td><td>{html.escape(str(s.row.get('paper_value')))}</td><td>{html.escape(ci_text(s.row))}</td>"
                   f"<td>{html.escape(short_rule(s.row, _claim(s.id)))}</td><td>"
                   + html.escape(", ".join(f"{k}: {v}" for k, v in s.conditions.items()) or "–") + "</td></tr>"
                   for s in sections)
    return ("<table><tr><th>claim</th><th>status</th><th>paper</th><th>measured [95% CI]</th><th>decision rule</th>"
            f"<th>further conditions</th></tr>{rows}</table>")


def page(title: str, meta: str, table: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}"
            f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(meta)}</p>{table}{body}</body></html>")



# ---------------------------------------------------------------- two runs side by side (`cos compare`)
def paired_difference(a: dict, b: dict) -> tuple[str, Any]:
    """B − A: paired over the instances both rows record in `details.per_instance` ({instance key: value, seeds
    averaged}) when the runs used the same seeds, else the two estimates' difference, unpaired (no CI)."""
    from cos.stats import bootstrap_ci

    pa, pb = ((r.get("details") or {}).get("per_instance") for r in (a, b))
    if isinstance(pa, dict) and isinstance(pb, dict) and a.get("seeds") == b.get("seeds"):
        shared = sorted(set(pa) & set(pb))
        if len(shared) >= 2:
            est = bootstrap_ci([pb[k] - pa[k] for k in shared])
            return (f"{est.value:+.3g} [{est.ci_low:+.3g}, {est.ci_high:+.3g}] paired, {len(shared)} shared "
                    "instances", est)
    if a.get("measured") is None or b.get("measured") is None:
        return "–", None
    return f"{b['measured'] - a['measured']:+.3g} unpaired (no shared per-instance values): compare the CIs", None


def overlay_figure(cid: str, rows: list[tuple[str, dict]], fig_dir: Path) -> tuple[Path, str] | None:
    """Both runs' headline estimates and CIs on one decision plot."""
    from cos.figures import decision

    claim = _claim(cid)
    pts = [(name, r["measured"], None if r.get("ci_low") is None else (r["ci_low"], r["ci_high"]))
           for name, r in rows if r is not None and r.get("measured") is not None]
    if claim is None or not pts:
        return None
    s = claim.spec
    p = decision(pts, fig_dir / f"compare-{cid.replace('.', '-')}.png", threshold=s.threshold, direction=s.direction,
                 xlabel=s.measured_quantity, title=f"{cid}: both runs")
    return p, (f"Both runs' estimates with 95% CIs. Each holds its headline part when its whole interval lies "
               f"{'above' if s.direction == '>' else 'below'} {s.threshold:g}.")


def write_comparison(run_a: str | Path, run_b: str | Path, out: str | Path) -> tuple[Path, Path]:
    """compare.md (+ figures/) and a self-contained compare.html of two run folders, claim by claim."""
    from cos.cli import _settings_differences

    run_a, run_b, out = Path(run_a), Path(run_b), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = fresh_dir(out / "figures")
    docs = [load_status(r / "claims-status.json") for r in (run_a, run_b)]
    na, nb = (run_a.name, run_b.name) if run_a.name != run_b.name else ("A", "B")
    have_mpl = have_matplotlib()
    secs = [{s.id: s for s in claim_sections(r, fresh_dir(fig / n), have_mpl)} for r, n in ((run_a, "a"), (run_b, "b"))]
    diffs = _settings_differences(docs[0], docs[1])
    meta = (f"A = {na} ({run_a}): {provenance_line(docs[0]['provenance'])}\n\n"
            f"B = {nb} ({run_b}): {provenance_line(docs[1]['provenance'])}")
    md = [f"# Comparison: {na} vs {nb}", "", meta, ""]
    if diffs:
        md += [f"**Settings differ:** {'; '.join(diffs)}.", ""]
    table = [f"| claim | {na} | {nb} | {na} measured | {nb} measured | {nb} − {na} |", "|---|---|---|---|---|---|"]
    ids = sorted(set(secs[0]) | set(secs[1]))
    body_md, body_html, rows_html = [], [], []
    for cid in ids:
        sa, sb = secs[0].get(cid), secs[1].get(cid)
        ra, rb = (s.row if s else None for s in (sa, sb))
        delta = paired_difference(ra, rb)[0] if ra and rb else "–"
        st = [s.status if s else "absent" for s in (sa, sb)]
        table.append(f"| [{cid}](#{anchor(cid)}) | {st[0]} | {st[1]} | {ci_text(ra) if ra else '–'} | "
                     f"{ci_text(rb) if rb else '–'} | {delta} |")
        rows_html.append(f"<tr><td><a href='#{cid}'>{cid}</a></td>" + "".join(
            f"<td style='color:{COLOUR.get(x, '#444')}'><b>{x}</b></td>" for x in st) + "".join(
            f"<td>{html.escape(x)}</td>" for x in (ci_text(ra) if ra else "–", ci_text(rb) if rb else "–", delta))
            + "</tr>")
        ov = overlay_figure(cid, [(na, ra), (nb, rb)], fig) if have_mpl else None
        title = (ra or rb).get("title")
        body_md += [f"## {cid}: {title}", "", f"{na}: **{st[0]}** · {nb}: **{st[1]}** · {nb} − {na}: {delta}", "",
                    f"> **Rule:** {(sa or sb).rule}", ""]
        if ov:
            body_md += [f"![{ov[1]}]({ov[0].relative_to(out).as_posix()})", "", f"*{ov[1]}*", ""]
        body_md += side_by_side_md([sa, sb], (na, nb), out)
        body_html.append(f"<section id='{cid}'><h2>{cid}: {html.escape(str(title))}</h2><p>{na}: <b>{st[0]}</b> · "
                         f"{nb}: <b>{st[1]}</b> · {nb} − {na}: {html.escape(delta)}</p><p class='rule'><b>Rule:</b> "
                         f"{html.escape((sa or sb).rule)}</p>" + (img(*ov) if ov else "")
                         + side_by_side_html([sa, sb], (na, nb)) + "</section>")
    md_path, html_path = out / "compare.md", out / "compare.html"
    md_path.write_text("\n".join(md + table + [""] + body_md))
    head = ("<table><tr><th>claim</th>" + "".join(f"<th>{html.escape(x)}</th>" for x in
            (na, nb, f"{na} measured", f"{nb} measured", f"{nb} − {na}")) + "</tr>" + "".join(rows_html) + "</table>")
    warn = f"<p><b>Settings differ:</b> {html.escape('; '.join(diffs))}.</p>" if diffs else ""
    html_path.write_text(page(f"Comparison: {na} vs {nb}", meta.replace("\n\n", " | "), warn + head, "".join(body_html)))
    return md_path, html_path


def side_by_side_md(secs: list[Section | None], names: tuple[str, str], out: Path) -> list[str]:
    """The claim's own figures of both runs, paired by file name, as a two-column Markdown table."""
    figs = [{p.name: (p, c) for p, c in (s.figures if s else []) if not p.name.startswith("decision-")} for s in secs]
    keys = list(dict.fromkeys([*figs[0], *figs[1]]))
    if not keys:
        return []
    rows = [f"| {names[0]} | {names[1]} |", "|---|---|"]
    for k in keys:
        cells = [f"![{k}]({f[k][0].relative_to(out).as_posix()})" if k in f else "–" for f in figs]
        rows.append(f"| {cells[0]} | {cells[1]} |")
    return rows + [""]


def side_by_side_html(secs: list[Section | None], names: tuple[str, str]) -> str:
    figs = [{p.name: (p, c) for p, c in (s.figures if s else []) if not p.name.startswith("decision-")} for s in secs]
    out = []
    for k in dict.fromkeys([*figs[0], *figs[1]]):
        cells = [img(f[k][0], f"{n}: {f[k][1]}") if k in f else f"<figure><p>{n}: not drawn</p></figure>"
                 for f, n in zip(figs, names)]
        wide = any(k in f and png_width(f[k][0]) > 540 for f in figs)   # halved, its text would fall under 9 pt
        out.append(f"<div class='{'stack' if wide else 'pair'}'>{''.join(cells)}</div>")
    return "".join(out)


def png_width(p: Path) -> int:
    import struct

    return struct.unpack(">I", p.read_bytes()[16:20])[0]

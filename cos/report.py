"""The claims report: one section per claim with the figures the claim itself draws (`Claim.figures`) from what it
recorded (its row's typed details and the arrays file the row names; no sampling). Markdown with PNGs and a
self-contained HTML page (images inlined), written beside claims-status.md."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from cos.reporting import load_arrays, load_status


def write_report(run: str | Path) -> tuple[Path, Path]:
    """Render claims-report.md (+ figures/) and claims-report.html for the run folder holding claims-status.json."""
    run = Path(run)
    data = load_status(run / "claims-status.json")
    prov = data["provenance"]
    fig_dir = run / "figures"
    fig_dir.mkdir(exist_ok=True)
    try:
        import matplotlib  # noqa: F401
        have_mpl = True
    except ImportError:
        have_mpl = False
    md = [f"# Claims report: {prov.get('model')}", "",
          f"Model `{prov.get('model')}` · weights `{prov.get('weights_hash')}` · device {prov.get('device_name')} · "
          f"commit `{str(prov.get('git_commit'))[:12]}` · {prov.get('start_time')}", "",
          "Status table: [claims-status.md](claims-status.md). Figures are drawn from what the claims recorded.", ""]
    if not have_mpl:
        md += ["*Figures need matplotlib: `pip install -e '.[report]'`, then `cos report <run-dir>`.*", ""]
    sections = []
    from cos.registry import CLAIMS, ClaimResult, all_claims

    all_claims()
    for row in data["claims"]:
        r = ClaimResult.from_dict(row)
        figs = []
        claim = CLAIMS.get(r.id)
        if have_mpl and claim is not None and r.status not in ("skipped", "error"):
            try:
                figs = claim.figures(claim.Details.from_dict(r.details), fig_dir, load_arrays(run, row))
            except Exception as e:  # a figure must never hide the table: say what failed
                md += [f"*figure for {r.id} failed: {type(e).__name__}: {e}*"]
        ci = "–" if r.measured is None else f"{r.measured:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}], n = {r.n}"
        what = r.details.get("measured", "")
        sections.append((r, ci, what, figs))
        md += [f"## {r.id}: {r.title}", "", f"**{r.status}** · measured {ci} · paper: {r.paper_value} ({r.paper_ref})",
               "", f"{what}" + (f" — {r.reason}" if r.reason else ""), ""]
        md += [f"![{cap}](figures/{p.name})" for p, cap in figs] + [""]
    md_path = run / "claims-report.md"
    md_path.write_text("\n".join(md))
    html_path = run / "claims-report.html"
    html_path.write_text(_html(prov, sections))
    return md_path, html_path


def _html(prov: dict, sections) -> str:
    colour = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700", "skipped": "#6e7781",
              "error": "#8250df"}
    rows = "".join(f"<tr><td><a href='#{r.id}'>{r.id}</a></td><td style='color:{colour[r.status]}'><b>{r.status}</b>"
                   f"</td><td>{html.escape(r.paper_value)}</td><td>{ci}</td></tr>" for r, ci, _, _ in sections)
    body = []
    for r, ci, what, figs in sections:
        imgs = "".join(f"<figure><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}' "
                       f"alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
                       for p, cap in figs)
        body.append(f"<section id='{r.id}'><h2>{r.id}: {html.escape(r.title)}</h2><p><b style='color:"
                    f"{colour[r.status]}'>{r.status}</b> · measured {ci} · paper: {html.escape(r.paper_value)} "
                    f"({html.escape(r.paper_ref)})</p><p>{html.escape(what)}{' — ' + html.escape(r.reason) if r.reason else ''}"
                    f"</p>{imgs}</section>")
    meta = html.escape(f"{prov.get('model')} · weights {prov.get('weights_hash')} · {prov.get('device_name')} · "
                       f"commit {str(prov.get('git_commit'))[:12]} · {prov.get('start_time')}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>cos claims report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1f2328}"
            "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;font-size:14px}"
            "img{max-width:100%;border:1px solid #eee}figure{display:inline-block;margin:8px;max-width:48%}"
            "section{border-top:1px solid #d0d7de;margin-top:1.5em}</style></head><body>"
            f"<h1>Claims report: {html.escape(str(prov.get('model')))}</h1><p>{meta}</p>"
            f"<table><tr><th>claim</th><th>status</th><th>paper</th><th>measured [95% CI]</th></tr>{rows}</table>"
            + "".join(body) + "</body></html>")

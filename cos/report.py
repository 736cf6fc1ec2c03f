"""The claims report: one section per claim with the figure its evidence calls for, drawn from what the claims
recorded (claims-status.json details and the artifacts/ folder; no sampling). Markdown with PNGs and a
self-contained HTML page (images inlined), written beside claims-status.md."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable

import numpy as np

from cos.reporting import load_status

PAPER_NUMBERS = {
    "ensemble.mid_layers": {"baseline": 0.685, "mid": 0.716, "early": 0.688, "all": 0.690},
    "frames.count": {"1": 0.581, "5": 0.619, "9": 0.632, "17": 0.663, "33": 0.685, "65": 0.675},
    "bench.table1": {"all": 0.685, "id": 0.760, "ood": 0.610},
}


def _filmstrips(run: Path, fig_dir: Path, r) -> list[tuple[Path, str]]:
    from cos.figures import filmstrip

    out = []
    for f in sorted((run / "artifacts").glob("trace-*.npz"))[:4]:
        d = np.load(f)
        s = d["x0"].shape[0]
        rows = sorted(set(np.linspace(0, s - 1, min(s, 8)).round().astype(int).tolist()))
        k = d["weights"].shape[1]
        p = filmstrip(d["x0"][rows], fig_dir / f"{f.stem}.png", weights=d["weights"][rows],
                      row_labels=[f"step {i} σ={d['sigmas'][i]:.2f}" for i in rows],
                      candidate_labels=["ans"] + [f"c{i}" for i in range(1, k)],
                      title=f"{d['task']} #{int(d['instance'])}: decoded x̂0 per step, candidate mixture at right")
        out.append((p, f"x̂0 filmstrip, {d['task']} instance {int(d['instance'])}"))
    return out


def _fig_superposition(run, fig_dir, r):
    from cos.figures import curves

    out = _filmstrips(run, fig_dir, r)
    h = r.details.get("entropy_per_step")
    if h:
        ci = np.array(r.details.get("entropy_per_step_ci") or [[v, v] for v in h])
        out.insert(0, (curves(np.arange(len(h)), {"candidate entropy": (h, ci[:, 0], ci[:, 1])},
                              fig_dir / "superposition.png", xlabel="step", ylabel="entropy (nats)",
                              title="entropy of the candidate mixture along the steps"), "entropy per step"))
    return out


def _fig_step_vs_frame(run, fig_dir, r):
    from cos.figures import bars

    d = r.details
    ci = d.get("ci", {})
    names = ["clean"] + [f"step{k}" for k in d.get("score_noise_at_step", {})] + \
            [f"frame{k}" for k in d.get("score_noise_at_frame", {})]
    est = [d["clean_score"]] + list(d.get("score_noise_at_step", {}).values()) + \
        list(d.get("score_noise_at_frame", {}).values())
    lo = [ci.get(n, [e, e])[0] for n, e in zip(names, est)]
    hi = [ci.get(n, [e, e])[1] for n, e in zip(names, est)]
    return [(bars(names, est, lo, hi, fig_dir / "step_vs_frame.png", ylabel="score",
                  paper=[0.685] + [None] * (len(names) - 1),
                  title="score with noise at a step vs at a frame (paper: clean 0.685)"), "score under noise")]


def _fig_information_flow(run, fig_dir, r):
    from cos.figures import heatmap

    curves = r.details.get("dissimilarity_curves") or {}
    if not curves:
        return []
    n = r.details.get("settings", {}).get("steps") or max(int(s) + 1 + len(c) for s, c in curves.items())
    m = np.full((len(curves), n), np.nan)
    for i, (s, c) in enumerate(sorted(curves.items(), key=lambda kv: int(kv[0]))):
        m[i, int(s) + 1:int(s) + 1 + len(c)] = c
    return [(heatmap(m, fig_dir / "information_flow.png", xlabel="later step", ylabel="injection step",
                     yticks=sorted(curves, key=int), title="1 − CKA(perturbed, clean x̂0)"), "CKA dissimilarity")]


def _fig_energy(run, fig_dir, r):
    from cos.figures import curves, heatmap

    d, out = r.details, []
    if d.get("energy_block_frame"):
        m = np.array(d["energy_block_frame"])
        out.append((heatmap(m, fig_dir / "energy.png", xlabel="latent frame", ylabel="block",
                            title="token energy at step 0 (blocks × frames)"), "token energy"))
    if d.get("fg_bg_ratio_per_block"):
        x = np.arange(len(d["fg_bg_ratio_per_block"]))
        fg, sp = d["fg_bg_ratio_per_block"], d["sparsity_per_block"]
        out.append((curves(x, {"fg/bg ratio": (fg, fg, fg), "sparsity (Gini)": (sp, sp, sp)},
                           fig_dir / "energy_profile.png", xlabel="block", ylabel="value",
                           title="foreground/background ratio and sparsity per block"), "ratio and sparsity"))
    return out


def _fig_swap(run, fig_dir, r):
    from cos.figures import bars

    f = r.details.get("flip_rate_per_block") or {}
    v = list(f.values())
    return [(bars(list(f), v, v, v, fig_dir / "swap_flip.png", ylabel="flip rate",
                  title="grounding outcome flips per swapped block (step 0)"), "flip rate per block")] if f else []


def _fig_ensemble(run, fig_dir, r):
    from cos.figures import bars

    names = ["baseline", "mid", "early", "all"]
    e = [r.details.get(f"score_{n}") for n in names]
    if not all(e):
        return []
    return [(bars(names, [x["value"] for x in e], [x["ci_low"] for x in e], [x["ci_high"] for x in e],
                  fig_dir / "ensemble.png", ylabel="score", paper=[PAPER_NUMBERS["ensemble.mid_layers"][n] for n in names],
                  title="score per ensemble window (Table 2)"), "score per window")]


def _fig_frames(run, fig_dir, r):
    from cos.figures import curves

    s = r.details.get("score_per_frame_count") or {}
    if not s:
        return []
    x = sorted(s, key=int)
    v = [s[k] for k in x]
    return [(curves([int(k) for k in x], {"measured": (v, v, v)}, fig_dir / "frames.png", xlabel="frames",
                    ylabel="score", title="score against frame count (Table 3; the smallest is the single-frame setting)"),
             "score per frame count")]


def _fig_curves(key_a, key_b, label_a, label_b, name, ylabel):
    def draw(run, fig_dir, r):
        from cos.figures import curves

        a = r.details.get(key_a)
        if not a:
            return []
        series = {label_a: (a, a, a)}
        if key_b and r.details.get(key_b):
            b = r.details[key_b]
            series[label_b] = (b, b, b)
        return [(curves(np.arange(len(a)), series, fig_dir / f"{name}.png", xlabel="step", ylabel=ylabel,
                        title=name.replace("_", " ")), name)]
    return draw


def _fig_bench(run, fig_dir, r):
    from cos.figures import bars

    s = r.details.get("score") or {}
    names = [n for n in ("all", "id", "ood") if s.get(n)]
    if not names:
        return []
    return [(bars(names, [s[n]["value"] for n in names], [s[n]["ci_low"] for n in names],
                  [s[n]["ci_high"] for n in names], fig_dir / "bench.png", ylabel="score",
                  paper=[PAPER_NUMBERS["bench.table1"][n] for n in names],
                  title=f"benchmark score (random candidate {r.details.get('random_candidate', 0):.2f})"), "score")]


FIGURES: dict[str, Callable] = {
    "cos.superposition": _fig_superposition,
    "cos.not_frames": lambda run, fig_dir, r: [],
    "noise.step_vs_frame": _fig_step_vs_frame,
    "noise.information_flow": _fig_information_flow,
    "memory.persistence": _fig_curves("anchor_fidelity_per_step", None, "anchor fidelity", "", "memory", "fidelity"),
    "selfcorrection.rate": lambda run, fig_dir, r: [],
    "perception.before_action": _fig_curves("grounding_per_step", "motion_per_step", "grounding (target share)",
                                            "motion (target change)", "perception_before_action", "value"),
    "layers.energy_profile": _fig_energy,
    "layers.swap_flip": _fig_swap,
    "ensemble.mid_layers": _fig_ensemble,
    "frames.count": _fig_frames,
    "distill.four_step": lambda run, fig_dir, r: [],
    "bench.table1": _fig_bench,
}


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
    from cos.registry import ClaimResult

    for r in map(ClaimResult.from_dict, data["claims"]):
        figs = []
        if have_mpl and r.status not in ("skipped", "error"):
            try:
                figs = FIGURES.get(r.id, lambda *a: [])(run, fig_dir, r)
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

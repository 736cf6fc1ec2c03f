"""Pictures of what the claims recorded: x̂0 filmstrips, curves with bands, heatmaps, bars, the decision.
matplotlib is an optional extra (`pip install -e .[report]`); every function here saves a PNG (linked by the
Markdown) and an SVG beside it, and returns the PNG path.

Legibility: figures are drawn at the size they are shown (≤ 10 in at 100 dpi fits the report's 1100 px column
unscaled), with no text under FONT pt, constrained layout (nothing clipped) and wrapped titles. An interval
that was not recorded is not drawn as a zero-width bar: the bar has no error bar and the figure says so."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

FONT = 9          # pt, the smallest text on any figure (at 100 dpi the PNG is shown at its own size)
DPI = 100
CLAIMED = "#1a7f37"    # the claimed side of a threshold
PAPER = "tab:red"

Interval = tuple[float, float] | None


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("figures need matplotlib: pip install -e '.[report]'") from e
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": FONT,
                         "ytick.labelsize": FONT, "legend.fontsize": FONT, "figure.titlesize": 10,
                         "svg.fonttype": "none"})
    return plt


def wrap(text: str, inches: float) -> str:
    """A title wrapped to the figure's width (about 10 characters of 10 pt text per inch, with margin)."""
    return "\n".join(textwrap.wrap(text, max(20, int(inches * 10)))) if text else ""


def threshold_line(ax, threshold: float | None, direction: str | None, *, axis: str = "y",
                   label: str = "threshold") -> None:
    """The decision threshold as a dashed line, and the claimed side (where the whole CI must lie) shaded."""
    if threshold is None or direction not in (">", "<"):
        return
    line = ax.axhline if axis == "y" else ax.axvline
    line(threshold, ls="--", lw=1.2, color="k", label=f"{label} ({direction} {threshold:g})")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    lo, hi = min(lo, threshold), max(hi, threshold)
    span = (threshold, hi) if direction == ">" else (lo, threshold)
    (ax.axhspan if axis == "y" else ax.axvspan)(*span, color=CLAIMED, alpha=0.08, lw=0, label="claimed side")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)


def _err(est: np.ndarray, intervals: Sequence[Interval]) -> tuple[np.ndarray, list[int]]:
    """Error-bar extents (2, n) and the indices that have no recorded interval (drawn without a bar)."""
    err, missing = np.zeros((2, len(est))), []
    for i, (e, iv) in enumerate(zip(est, intervals)):
        if iv is None or iv[0] is None or iv[1] is None:
            missing.append(i)
            continue
        err[:, i] = [max(e - iv[0], 0.0), max(iv[1] - e, 0.0)]
    return err, missing


def bars(labels: Sequence[str], est: Sequence[float], intervals: Sequence[Interval], path: str | Path, *,
         ylabel: str, title: str = "", paper: Sequence[float | None] | None = None,
         threshold: float | None = None, direction: str | None = None,
         spans: dict[str, Sequence[int]] | None = None) -> Path:
    """Measured values with their 95% CIs. `paper`: the paper's value of the *same* quantity, drawn as a red
    bar-wide mark on the bar's centre (the paper's numbers of another quantity or benchmark belong in the caption,
    never beside the bars). `threshold`/`direction`: the decision line. `spans`: labelled groups of bar indices
    shaded behind the bars (e.g. the blocks a claim compares). An error bar is drawn only where an interval was
    recorded: a bar without one is hatched, the legend and title say so."""
    plt = _plt()
    n = len(labels)
    width = min(10.0, 0.55 * n + 2.4)
    fig, ax = plt.subplots(figsize=(width, 3.4), layout="constrained")
    x = np.arange(n)
    e = np.asarray(est, float)
    err, missing = _err(e, intervals)
    for i, (name, idx) in enumerate((spans or {}).items()):
        for j, k in enumerate(sorted(idx)):
            ax.axvspan(k - 0.5, k + 0.5, color=("tab:orange", "tab:purple", "tab:olive")[i % 3], alpha=0.12, lw=0,
                       label=name if j == 0 else None)
    has = [i for i in range(n) if i not in missing]
    ax.bar(x[has], e[has], color="tab:blue", width=0.6, label="measured (95% CI)" if has else None)
    if has:   # caps only on bars that have an interval: a zero-length cap would read as a certain value
        ax.errorbar(x[has], e[has], yerr=err[:, has], fmt="none", ecolor="k", capsize=3, lw=1)
    if missing:
        ax.bar(x[missing], e[missing], color="tab:blue", width=0.6, hatch="//", edgecolor="white",
               label="measured (no interval)")
    if paper is not None and any(p is not None for p in paper):
        px = [i for i, p in enumerate(paper) if p is not None]
        ax.hlines([paper[i] for i in px], [i - 0.3 for i in px], [i + 0.3 for i in px], color=PAPER, lw=2.5,
                  label="paper (same quantity)", zorder=3)
    threshold_line(ax, threshold, direction)
    ax.set_xticks(x, labels, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_ylabel(ylabel), ax.grid(alpha=0.3, axis="y")
    which = "any bar" if len(missing) == n else ", ".join(labels[i] for i in missing)
    note = f" Hatched: no interval recorded ({which})." if missing else ""
    ax.set_title(wrap(title + note, width), loc="left")
    ax.legend(loc="best")
    return _save(fig, path)


def curves(x: Sequence[float], series: dict[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
           path: str | Path, *, xlabel: str, ylabel: str, hlines: dict[str, float] | None = None, title: str = "",
           spans: dict[str, tuple[float, float]] | None = None, threshold: float | None = None,
           direction: str | None = None) -> Path:
    """Lines with shaded 95% bands: series name → (estimate, ci_low, ci_high) over x (ci None: no band, and the
    legend says so); hlines: reference levels; spans: labelled x ranges (e.g. the windows a claim compares)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    for i, (name, (lo_x, hi_x)) in enumerate((spans or {}).items()):
        ax.axvspan(lo_x, hi_x, color=("tab:orange", "tab:purple", "tab:olive")[i % 3], alpha=0.12, lw=0, label=name)
    for name, (est, lo, hi) in series.items():
        banded = lo is not None and hi is not None
        line, = ax.plot(x, est, marker="o", ms=3, label=name + ("" if banded else " (no interval recorded)"))
        if banded:
            ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    for name, y in (hlines or {}).items():   # red only for the paper's numbers; a decision level is black
        ax.axhline(y, ls=":" if "paper" in name else "--", lw=1.2, color=PAPER if "paper" in name else "k", label=name)
    threshold_line(ax, threshold, direction)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(wrap(title, 5.6), loc="left")
    return _save(fig, path)


def heatmap(matrix: np.ndarray, path: str | Path, *, xlabel: str, ylabel: str, cbar_label: str,
            xticks: Sequence | None = None, yticks: Sequence | None = None, title: str = "",
            cmap: str = "viridis", mark: tuple[int, int, str] | None = None) -> Path:
    """One matrix as an image with a labelled colour bar (CKA step × step, energy block × frame). `mark`:
    (row, column, label) of the cell a claim decides on, outlined."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    w = min(10.0, max(4.5, 0.38 * m.shape[1] + 2.6))
    fig, ax = plt.subplots(figsize=(w, min(8.0, max(3.2, 0.32 * m.shape[0] + 1.8))), layout="constrained")
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05).set_label(cbar_label)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), [str(t) for t in xticks])
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), [str(t) for t in yticks])
    if mark is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((mark[1] - 0.5, mark[0] - 0.5), 1, 1, fill=False, ec="red", lw=2, label=mark[2]))
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.18), frameon=False)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    ax.set_title(wrap(title, w), loc="left")
    return _save(fig, path)


def decision(rows: Sequence[tuple[str, float, Interval]], path: str | Path, *, threshold: float, direction: str,
             xlabel: str, title: str = "") -> Path:
    """The decision itself: each estimate with its 95% CI as a horizontal interval, the threshold, and the
    claimed side shaded (the claim holds when the whole interval lies in it)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(rows) + 1.9), layout="constrained")
    y = np.arange(len(rows))[::-1]
    for yi, (name, v, iv) in zip(y, rows):
        if iv is not None and None not in iv:
            ax.hlines(yi, iv[0], iv[1], color="tab:blue", lw=3)
        ax.plot([v], [yi], "o", color="tab:blue" if iv is not None else "tab:gray", ms=6)
    ax.set_yticks(y, [wrap(r[0], 2.0) for r in rows])
    ax.set_ylim(-0.8, len(rows) - 0.2)
    pad = max(1e-3, 0.15 * (max([abs(v) for _, v, _ in rows] + [abs(threshold)]) or 1))
    vals = [v for _, v, iv in rows] + [x for *_, iv in rows if iv for x in iv if x is not None] + [threshold]
    ax.set_xlim(min(vals) - pad, max(vals) + pad)
    threshold_line(ax, threshold, direction, axis="x")
    ax.set_xlabel(wrap(xlabel, 4.0)), ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="lower right" if direction == "<" else "lower left")
    ax.set_title(wrap(title, 6.4), loc="left")
    return _save(fig, path)


STATUS_COLOUR = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700", "skipped": "#6e7781",
                 "error": "#8250df"}


def forest(rows: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Every claim's headline interval relative to its own threshold, one line each, coloured by the row's
    status (read from the row, never decided here). Each row is scaled to its own reach (the largest distance of
    its estimate or bounds from the threshold), so 0 is every threshold and the claimed side is always right;
    the real numbers are written beside. A row without an interval is a grey point (no bar); a row without an
    estimate (skipped, error) is its status word alone."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.0, 0.36 * len(rows) + 1.4), layout="constrained")
    y = np.arange(len(rows))[::-1]
    nums = []
    for yi, r in zip(y, rows):
        col = STATUS_COLOUR.get(r["status"], "k")
        d = r.get("details") or {}
        t, sign = d.get("threshold"), (1 if d.get("direction", ">") == ">" else -1)
        m, lo, hi = r.get("measured"), r.get("ci_low"), r.get("ci_high")
        nums.append("")
        if m is None or t is None:
            continue
        pts = [v for v in (m, lo, hi) if v is not None]
        reach = max(abs(v - t) for v in pts) or 1.0
        f = lambda v: sign * (v - t) / reach
        if lo is not None and hi is not None:
            ax.hlines(yi, min(f(lo), f(hi)), max(f(lo), f(hi)), color=col, lw=3)
            num = f"{m:.3g} [{lo:.3g}, {hi:.3g}]"
        else:
            num = f"{m:.3g} (no interval)"
        ax.plot([f(m)], [yi], "o", color=col if lo is not None else "tab:gray", ms=6)
        nums[-1] = f"{num}, {d.get('direction', '>')} {t:g}"
    # tick labels, not free text: constrained layout keeps them inside the figure
    ax.set_yticks(y, [f"{r['id']}  {r['status']}" for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows):
        tick.set_color(STATUS_COLOUR.get(r["status"], "k"))
    right = ax.twinx()
    right.set_ylim(-0.7, len(rows) - 0.3)
    right.set_yticks(y, nums)
    ax.axvline(0, ls="--", lw=1.2, color="k")
    ax.axvspan(0, 1.08, color=CLAIMED, alpha=0.08, lw=0)
    ax.set_xlim(-1.08, 1.08), ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xticks([-1, 0, 1], ["wrong side", "threshold", "claimed side"])
    ax.set_xlabel("each interval relative to its own threshold, scaled to its own reach")
    ax.set_title(wrap(title, 10.0), loc="left")
    return _save(fig, path)


def filmstrips(strips: Sequence[tuple[str, np.ndarray]], path: str | Path, *,
               candidates: np.ndarray | None = None, candidate_labels: Sequence[str] | None = None,
               title: str = "") -> Path:
    """Small multiples: several x̂0 filmstrips (name, (R, F, H, W, 3)) as one figure, one panel of rows ×
    frames per strip, and the candidate videos ((K, F, H, W, 3)) once at the top (not in every strip)."""
    groups = ([("candidates", candidates)] if candidates is not None else []) + list(strips)
    frames = np.concatenate([g for _, g in groups])
    labels = [f"{candidate_labels[i] if candidate_labels else i}" for i in range(len(candidates))] \
        if candidates is not None else []
    for name, g in strips:
        labels += [f"{name} {i}" if i == 0 else f"{i}" for i in range(len(g))]
    return filmstrip(frames, path, row_labels=labels, title=title)


def filmstrip(frames: np.ndarray, path: str | Path, *, row_labels: Sequence[str] | None = None,
              weights: np.ndarray | None = None, candidate_labels: Sequence[str] | None = None,
              title: str = "") -> Path:
    """Rows × frames grid of RGB images (R, F, H, W, 3) in [0, 1] or uint8 (e.g. decoded x̂0 per step), with
    the candidate distribution of each row (R, K) drawn as bars at the row's end when `weights` is given."""
    plt = _plt()
    if frames.dtype == np.uint8:
        frames = frames.astype(np.float32) / 255.0
    r, f = frames.shape[:2]
    if weights is None:
        return _mosaic(plt, frames, path, row_labels, title)
    extra = 1
    cell = 0.62
    width = min(10.0, cell * (f + 2.2 * extra) + 1.4)
    fig, axes = plt.subplots(r, f + extra, figsize=(width, cell * r + 1.2), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1] * f + [2.2] * extra})
    for i in range(r):
        for j in range(f):
            ax = axes[i, j]
            ax.imshow(np.clip(frames[i, j], 0, 1), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"f{j}", fontsize=FONT)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=FONT, rotation=0, ha="right", va="center")
        if weights is not None:
            ax = axes[i, f]
            w = weights[i]
            ax.bar(range(len(w)), w, color=["tab:green"] + ["tab:gray"] * (len(w) - 1))
            ax.set_ylim(0, 1), ax.set_xticks([]), ax.set_yticks([0, 1])
            if i == 0:
                ax.set_title("p(candidate)", fontsize=FONT)
            if i == r - 1 and candidate_labels is not None:
                ax.set_xticks(range(len(w)), candidate_labels, fontsize=FONT)
    if title:
        fig.suptitle(wrap(title, width), fontsize=10)
    return _save(fig, path)


GAP = 0.8     # the grey between a mosaic's frames: apart from white content at a frame's edge and the tasks' 0.5 grey


def mosaic(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """(R, F, H, W, 3) frames in [0, 1] as one (R·(H+gap)−gap, F·(W+gap)−gap, 3) image with grey (GAP) gaps of a
    tenth of a frame; and the gap."""
    r, f, h, w = frames.shape[:4]
    gap = max(1, round(0.1 * max(h, w)))
    grid = np.full((r * (h + gap) - gap, f * (w + gap) - gap, 3), GAP, dtype=np.float32)
    for i in range(r):
        for j in range(f):
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = np.clip(frames[i, j, ..., :3], 0, 1)
    return grid, gap


def _mosaic(plt, frames: np.ndarray, path: str | Path, row_labels: Sequence[str] | None, title: str) -> Path:
    """`filmstrip` without weights: the rows × frames grid as one image on one axes (`mosaic`), square pixels, row
    labels on the left and frame numbers on top. An axes per frame under constrained layout took 25 s for the
    report's 48 × 9 strip on a CPU. The axes is placed by hand from the labels' measured extents: a layout engine
    cannot see where an equal-aspect image's labels end."""
    r, f, h, w = frames.shape[:4]
    grid, gap = mosaic(frames)
    fig = plt.figure(figsize=(10.0, 10.0))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(grid, interpolation="nearest")
    every = -(-f // 20)     # at most ~20 frame numbers: more would overlap
    ax.set_xticks([j * (w + gap) + (w - 1) / 2 for j in range(0, f, every)], [f"f{j}" for j in range(0, f, every)],
                  fontsize=FONT)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    labels = [x if len(x) <= 60 else x[:59] + "…" for x in map(str, row_labels)] if row_labels is not None else [""] * r
    ax.set_yticks([i * (h + gap) + (h - 1) / 2 for i in range(r)], labels, fontsize=FONT)
    for side in ax.spines.values():
        side.set_visible(False)
    renderer = fig.canvas.get_renderer()
    inch = fig.dpi
    label_w = max([t.get_window_extent(renderer).width for t in ax.get_yticklabels()] + [0.0]) / inch
    tick_h = max([t.get_window_extent(renderer).height for t in ax.get_xticklabels()] + [0.0]) / inch
    pad = 0.15
    left = label_w + 2 * pad
    image_w = max(1.0, min(0.62 * f, 10.0 - left - pad))
    image_h = image_w * grid.shape[0] / grid.shape[1]
    width = left + image_w + pad
    sup = fig.suptitle(wrap(title, width), fontsize=10, va="top") if title else None
    title_h = sup.get_window_extent(renderer).height / inch + pad if sup is not None else 0.0
    top = tick_h + 2 * pad + title_h
    height = top + image_h + pad
    fig.set_size_inches(width, height)
    ax.set_position((left / width, pad / height, image_w / width, image_h / height))
    if sup is not None:
        sup.set_y(1.0 - pad / height)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """PNG (linked by the Markdown, inlined in the HTML) and SVG beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.savefig(path.with_suffix(".svg"))
    _plt().close(fig)
    return path

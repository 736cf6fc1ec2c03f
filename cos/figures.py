"""Pictures of what the claims recorded: x̂0 filmstrips, curves with bands, heatmaps. matplotlib is an optional
extra (`pip install -e .[report]`); every function here returns a saved PNG path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("figures need matplotlib: pip install -e '.[report]'") from e
    return plt


def filmstrip(frames: np.ndarray, path: str | Path, *, row_labels: Sequence[str] | None = None,
              weights: np.ndarray | None = None, candidate_labels: Sequence[str] | None = None,
              title: str = "") -> Path:
    """Rows × frames grid of RGB images (R, F, H, W, 3) in [0, 1] (e.g. decoded x̂0 per step), with the
    candidate distribution of each row (R, K) drawn as bars at the row's end when `weights` is given."""
    plt = _plt()
    r, f = frames.shape[:2]
    extra = 1 if weights is not None else 0
    fig, axes = plt.subplots(r, f + extra, figsize=(0.8 * (f + 1.6 * extra), 0.8 * r + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * f + [1.6] * extra})
    for i in range(r):
        for j in range(f):
            ax = axes[i, j]
            ax.imshow(np.clip(frames[i, j], 0, 1), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"f{j}", fontsize=7)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
        if weights is not None:
            ax = axes[i, f]
            w = weights[i]
            ax.bar(range(len(w)), w, color=["tab:green"] + ["tab:gray"] * (len(w) - 1))
            ax.set_ylim(0, 1), ax.set_xticks([]), ax.tick_params(labelsize=5)
            if i == 0:
                ax.set_title("p(candidate)", fontsize=7)
            if i == r - 1 and candidate_labels is not None:
                ax.set_xticks(range(len(w)), candidate_labels, fontsize=5)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def curves(x: Sequence[float], series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
           path: str | Path, *, xlabel: str, ylabel: str, hlines: dict[str, float] | None = None,
           title: str = "") -> Path:
    """Lines with shaded confidence bands: series name → (estimate, ci_low, ci_high) over x; hlines are
    reference levels (a clean baseline, the paper's value)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    for name, (est, lo, hi) in series.items():
        line, = ax.plot(x, est, marker="o", ms=3, label=name)
        ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="k" if "baseline" in name else "tab:red", label=name)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    ax.legend(fontsize=6), ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def heatmap(matrix: np.ndarray, path: str | Path, *, xlabel: str, ylabel: str, xticks: Sequence | None = None,
            yticks: Sequence | None = None, title: str = "", cmap: str = "viridis") -> Path:
    """One matrix as an image with a colour bar (CKA step × step, energy block × frame)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(0.35 * m.shape[1] + 1.8, 0.3 * m.shape[0] + 1.2))
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), [str(t) for t in xticks], fontsize=6)
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), [str(t) for t in yticks], fontsize=6)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def bars(labels: Sequence[str], est: Sequence[float], lo: Sequence[float], hi: Sequence[float], path: str | Path,
         *, ylabel: str, paper: Sequence[float | None] | None = None, title: str = "") -> Path:
    """Measured values with error bars; the paper's value, where it gives one, as a red tick beside."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.6 * len(labels) + 2, 2.8))
    x = np.arange(len(labels))
    e = np.asarray(est, float)
    ax.bar(x, e, yerr=[e - np.asarray(lo, float), np.asarray(hi, float) - e], capsize=3, color="tab:blue",
           label="measured")
    if paper is not None:
        px = [i for i, p in enumerate(paper) if p is not None]
        ax.scatter([i + 0.3 for i in px], [paper[i] for i in px], marker="_", s=200, color="tab:red",
                   label="paper", zorder=3)
    ax.set_xticks(x, labels, fontsize=6, rotation=30, ha="right")
    ax.set_ylabel(ylabel), ax.grid(alpha=0.3, axis="y"), ax.legend(fontsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path

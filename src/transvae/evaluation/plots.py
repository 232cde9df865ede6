"""The report's figures (matplotlib, Agg backend), each returned as a ``data:image/png`` URI.

Numbers reach a figure only as data and through matplotlib's own text rendering; the report
embeds the PNG, so nothing here is HTML.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

ERROR_VMAX = 64.0  # heat maps show |error| (mean over RGB, in uint8 levels) on a fixed 0..64 scale


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(*args, **kwargs):
    """``plt.subplots`` on the non-interactive Agg backend (headless machines)."""
    return _pyplot().subplots(*args, **kwargs)


def save_figure(fig, path) -> None:
    """Lay out ``fig``, write it to ``path`` (its folder made) and close it."""
    from pathlib import Path

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)


def fig_uri(fig) -> str:
    """A matplotlib figure -> ``data:image/png;base64,...`` (the figure is closed)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def error_heatmap(original: np.ndarray, reconstruction: np.ndarray, vmax: float = ERROR_VMAX) -> np.ndarray:
    """Per-pixel |error| averaged over RGB, coloured with 'inferno' on [0, vmax]: (H, W, 3) uint8."""
    import matplotlib

    err = np.abs(original.astype(np.float32) - reconstruction.astype(np.float32)).mean(-1)  # (H, W)
    rgba = matplotlib.colormaps["inferno"](np.clip(err / vmax, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def colorbar(vmax: float = ERROR_VMAX) -> np.ndarray:
    """The heat maps' colour scale as a (12, 256, 3) uint8 strip."""
    import matplotlib

    ramp = np.linspace(0.0, 1.0, 256)[None, :].repeat(12, 0)
    return (matplotlib.colormaps["inferno"](ramp)[..., :3] * 255 + 0.5).astype(np.uint8)


def psnr_distributions(series: list[tuple[int, list[float]]]) -> str | None:
    """Histogram of per-image PSNR per resolution; ``series`` is [(resolution, finite values)]."""
    import matplotlib.ticker

    series = [(res, v) for res, v in series if v]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    lo = min(min(v) for _, v in series)
    hi = max(max(v) for _, v in series)
    bins = np.linspace(math.floor(lo), math.ceil(hi) + 1e-9, 30)
    for res, v in series:
        ax.hist(v, bins=bins, alpha=0.55, label=f"{res}px (mean {np.mean(v):.2f} dB, n={len(v)})")
    ax.set_xlabel("per-image PSNR (dB)")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title("Per-image PSNR distribution")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_uri(fig)


def metric_vs_resolution(summaries: list[dict], metrics: list[str], titles: list[str]) -> str | None:
    """One panel per metric, value against resolution (log2 x axis); None with one resolution."""
    if len(summaries) < 2:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    res = [s["resolution"] for s in summaries]
    for ax, m, title in zip(axes[0], metrics, titles, strict=True):
        key = "psnr_finite_mean" if m == "psnr" else m
        vals = [s.get(key) if s.get(key) is not None else np.nan for s in summaries]
        ax.plot(res, vals, "o-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res, [str(r) for r in res])
        ax.set_xlabel("resolution (px)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig_uri(fig)


def tsne(embedding: list[list[float]], resolution: int) -> str:
    """The first t-SNE run's points coloured by KDE density (as VA-VAE's visualisation)."""
    from scipy.stats import gaussian_kde

    plt = _pyplot()
    pts = np.asarray(embedding)
    dens = gaussian_kde(pts.T)(pts.T)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=dens, s=4, cmap="viridis", alpha=0.7)
    fig.colorbar(sc, ax=ax, label="KDE density")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of latent vectors ({resolution}px)")
    return fig_uri(fig)

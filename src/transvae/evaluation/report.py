"""Writing the evaluation outputs: results.json, results.md, report.html (and latent_stats.json).

The HTML report is a single self-contained file (CSS inline, images and plots embedded as
base64 PNG), so it opens from disk in any browser with no server and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.files import atomic_write_text
from .runner import ResolutionResult

ERROR_VMAX = 64.0  # heat maps show |error| (mean over RGB, in uint8 levels) on a fixed 0..64 scale
METRIC_INFO = {  # name -> (label, higher is better, format)
    "psnr": ("PSNR (dB) ↑", True, "{:.2f}"),
    "ssim": ("SSIM ↑", True, "{:.4f}"),
    "lpips": ("LPIPS ↓", False, "{:.4f}"),
    "rfid": ("rFID ↓", False, "{:.2f}"),
}


def json_safe(obj):
    """Replace non-finite floats by None (JSON has no inf/nan) and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def summary_for_json(summary: dict) -> dict:
    """``summary`` with PSNR = inf written as ``"psnr": null, "psnr_infinite": true``."""
    out = dict(summary)
    if "psnr" in out and isinstance(out["psnr"], float) and math.isinf(out["psnr"]):
        out["psnr_infinite"] = True
    return json_safe(out)


def fmt(name: str, value) -> str:
    """Format a metric for tables: ``inf`` for identical-image PSNR, ``–`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return METRIC_INFO[name][2].format(value)


def metric_value(summary: dict, name: str):
    """A summary's metric, mapping the JSON form of an infinite PSNR (null + flag) back to inf."""
    if summary.get(f"{name}_infinite"):
        return math.inf
    return summary.get(name)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a crash leaves the previous file or the new one)."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


# -- markdown --------------------------------------------------------------------------------
def markdown_table(results: list[dict], metrics: list[str]) -> str:
    """| Resolution | Images | metric ... | rows for each resolution."""
    head = "| Resolution | Images | " + " | ".join(METRIC_INFO[m][0] for m in metrics) + " |"
    sep = "|---:|---:|" + "---:|" * len(metrics)
    rows = [
        f"| {r['resolution']} | {r['num_images']} | "
        + " | ".join(fmt(m, metric_value(r, m)) for m in metrics)
        + " |"
        for r in results
    ]
    return "\n".join([head, sep, *rows])


def write_markdown(path: Path, payload: dict, metrics: list[str]) -> None:
    lines = [
        f"# Reconstruction evaluation: {payload['model']['name']}",
        "",
        f"- Model: `{payload['model']['path']}` ({payload['model']['parameters'] / 1e6:.2f} M parameters)",
        f"- Data: `{payload['data']['path']}` ({payload['data']['num_files']} files"
        + (f", first {payload['data']['limit']}" if payload["data"].get("limit") else "")
        + ")",
        f"- Device: {payload['run']['device']}, autocast dtype {payload['run']['dtype']}",
        "",
        markdown_table(payload["results"], metrics),
        "",
        "Protocol:",
        "",
        *[f"- **{k}**: {v}" for k, v in payload["protocol"].items()],
    ]
    if any(r.get("psnr_num_identical") for r in payload["results"]):
        lines += [
            "",
            "PSNR is ∞ when some reconstructions are identical to their input (see `psnr_finite_mean`).",
        ]
    lat = payload.get("latent")
    if lat:
        lines += [
            "",
            "## Latent space",
            "",
            "| Resolution | scaling_factor | shift_factor | density CV | Gini | norm. entropy | probe top-1 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in lat:
            s, u, p = r.get("statistics") or {}, r.get("uniformity") or {}, r.get("linear_probe") or {}
            cells = [
                _f(s.get("scaling_factor"), 4),
                _f(s.get("shift_factor"), 4),
                _f(u.get("density_cv"), 4),
                _f(u.get("gini_coefficient"), 4),
                _f(u.get("normalized_entropy"), 4),
                _f(p.get("top1"), 4),
            ]
            lines.append(f"| {r['resolution']} | " + " | ".join(cells) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _f(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


# -- images and plots ------------------------------------------------------------------------
def png_data_uri(img: np.ndarray | Image.Image) -> str:
    """uint8 (H, W, 3) array or PIL image -> ``data:image/png;base64,...``."""
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def error_heatmap(original: np.ndarray, reconstruction: np.ndarray, vmax: float = ERROR_VMAX) -> np.ndarray:
    """Per-pixel |error| averaged over RGB, coloured with 'inferno' on [0, vmax]: (H, W, 3) uint8."""
    import matplotlib

    err = np.abs(original.astype(np.float32) - reconstruction.astype(np.float32)).mean(-1)  # (H, W)
    rgba = matplotlib.colormaps["inferno"](np.clip(err / vmax, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def _fig_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_psnr_distributions(results: list[ResolutionResult]) -> str | None:
    """Histogram of per-image PSNR per resolution (identical images, PSNR inf, are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    series = [
        (r.resolution, [p["psnr"] for p in r.per_image if "psnr" in p and math.isfinite(p["psnr"])])
        for r in results
    ]
    series = [(res, v) for res, v in series if v]
    if not series:
        return None
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
    return _fig_uri(fig)


def plot_metric_vs_resolution(summaries: list[dict], metrics: list[str]) -> str | None:
    """One panel per metric, value against resolution (log2 x axis); None with one resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(summaries) < 2:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    res = [s["resolution"] for s in summaries]
    for ax, m in zip(axes[0], metrics, strict=True):
        key = "psnr_finite_mean" if m == "psnr" else m
        vals = [s.get(key) if s.get(key) is not None else np.nan for s in summaries]
        ax.plot(res, vals, "o-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res, [str(r) for r in res])
        ax.set_xlabel("resolution (px)")
        ax.set_title(METRIC_INFO[m][0])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _fig_uri(fig)


def plot_tsne(embedding: list[list[float]], resolution: int) -> str:
    """The first t-SNE run's points coloured by KDE density (as VA-VAE's visualisation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    pts = np.asarray(embedding)
    dens = gaussian_kde(pts.T)(pts.T)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=dens, s=4, cmap="viridis", alpha=0.7)
    fig.colorbar(sc, ax=ax, label="KDE density")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of latent vectors ({resolution}px)")
    return _fig_uri(fig)


def colorbar_uri(vmax: float = ERROR_VMAX) -> str:
    ramp = np.linspace(0.0, 1.0, 256)[None, :].repeat(12, 0)
    import matplotlib

    rgb = (matplotlib.colormaps["inferno"](ramp)[..., :3] * 255 + 0.5).astype(np.uint8)
    return png_data_uri(rgb)


# -- html ------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .meta td{text-align:left}
.ex img{width:var(--w);image-rendering:pixelated;display:block} .ex td{vertical-align:top}
.small{color:#666;font-size:.85em} code{background:#f5f5f5;padding:0 3px}
"""


def _table(summaries: list[dict], metrics: list[str]) -> str:
    head = "".join(f"<th>{html.escape(METRIC_INFO[m][0])}</th>" for m in metrics)
    rows = []
    for s in summaries:
        cells = "".join(f"<td>{fmt(m, metric_value(s, m))}</td>" for m in metrics)
        rows.append(f"<tr><td>{s['resolution']}</td><td>{s['num_images']}</td>{cells}</tr>")
    return f"<table><tr><th>Resolution</th><th>Images</th>{head}</tr>{''.join(rows)}</table>"


def _examples_html(res: ResolutionResult, metrics: list[str]) -> str:
    if not res.worst:
        return ""
    width = max(160, min(res.resolution, 320))  # upscale tiny crops so they can be inspected
    rows = []
    for e in res.worst:
        scores = "<br>".join(
            f"{html.escape(METRIC_INFO[k][0].split(' ')[0])}: {fmt(k, v)}"
            for k, v in e.scores.items()
            if k in metrics
        )
        rows.append(
            f"<tr><td class='l'><code>{html.escape(e.path)}</code><br>{scores}</td>"
            f"<td><img alt='input' src='{png_data_uri(e.original)}'></td>"
            f"<td><img alt='reconstruction' src='{png_data_uri(e.reconstruction)}'></td>"
            f"<td><img alt='error' src='{png_data_uri(error_heatmap(e.original, e.reconstruction))}'></td></tr>"
        )
    return (
        f"<h3>{res.resolution}px: the {len(res.worst)} lowest-PSNR images</h3>"
        f"<table class='ex' style='--w:{width}px'><tr><th class='l'>image</th><th>input</th>"
        f"<th>reconstruction</th><th>|error| heat map</th></tr>{''.join(rows)}</table>"
    )


# The report's latent-analysis table: payload section -> (row label, format of the section's values)
_LATENT_ROWS = {
    "statistics": [
        ("scaling_factor (1/std)", "{scaling_factor:.5f}"),
        ("shift_factor (mean)", "{shift_factor:.5f}"),
        ("scaling_factor without shift (1/RMS)", "{scaling_factor_no_shift:.5f}"),
        ("latents", "{num_latents} × {channels} channels"),
    ],
    "uniformity": [
        ("density CV ↓", "{density_cv:.4f}"),
        ("Gini coefficient ↓", "{gini_coefficient:.4f}"),
        ("normalised entropy ↑", "{normalized_entropy:.4f}"),
        ("t-SNE vectors × runs", "{num_vectors} × {repeats}"),
    ],
    "linear_probe": [("linear probe top-1", "{top1:.4f} ({num_classes} classes, chance {chance:.3f})")],
}


def write_html(path: Path, payload: dict, results: list[ResolutionResult], metrics: list[str]) -> None:
    """The self-contained HTML report (see the module docstring)."""
    m, d, run = payload["model"], payload["data"], payload["run"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>transvae evaluate: {html.escape(m['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Reconstruction evaluation: {html.escape(m['name'])}</h1>",
        "<table class='meta'>",
        f"<tr><th class='l'>model</th><td><code>{html.escape(str(m['path']))}</code> "
        f"({m['parameters'] / 1e6:.2f} M parameters, f{m['spatial_compression_ratio']}, {m['latent_channels']} latent channels)</td></tr>",
        f"<tr><th class='l'>data</th><td><code>{html.escape(str(d['path']))}</code>, {d['num_files']} files"
        + (f" (first {d['limit']})" if d.get("limit") else "")
        + "</td></tr>",
        f"<tr><th class='l'>run</th><td>{html.escape(run['date'])}, {html.escape(run['device'])}, "
        f"autocast {html.escape(run['dtype'])}, transvae {html.escape(run['transvae_version'])}</td></tr>",
        "</table>",
        "<h2>Metrics</h2>",
        _table(payload["results"], metrics),
        "<p class='small'>Means of per-image values (PSNR, SSIM, LPIPS) and one set-level rFID, on uint8 images.</p>",
    ]
    curve = plot_metric_vs_resolution(payload["results"], metrics)
    if curve:
        parts.append(f"<h2>Metrics against resolution</h2><img alt='metrics vs resolution' src='{curve}'>")
    hist = plot_psnr_distributions(results)
    if hist:
        parts.append(f"<h2>Per-image PSNR</h2><img alt='PSNR distribution' src='{hist}'>")
    parts.append(
        "<h2>Worst reconstructions</h2><p class='small'>Sorted by PSNR, lowest first. Heat map: |input − reconstruction| "
        f"averaged over RGB, 0 <img alt='colour bar' src='{colorbar_uri()}' style='width:160px;height:10px'> "
        f"{ERROR_VMAX:.0f}+ grey levels (of 255).</p>"
    )
    parts += [_examples_html(r, metrics) for r in results]
    lat = payload.get("latent")
    if lat:
        parts.append("<h2>Latent space</h2>")
        for r, res in zip(lat, results, strict=True):
            rows = [
                (label, fmt.format(**r[section]))
                for section, section_rows in _LATENT_ROWS.items()
                if r.get(section)
                for label, fmt in section_rows
            ]
            if r.get("linear_probe_skipped"):
                rows += [("linear probe", html.escape(r["linear_probe_skipped"]))]
            body = "".join(f"<tr><th class='l'>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
            parts.append(f"<h3>{r['resolution']}px</h3><table>{body}</table>")
            if res.extras.get("tsne_embedding"):
                parts.append(
                    f"<img alt='t-SNE' src='{plot_tsne(res.extras['tsne_embedding'], r['resolution'])}'>"
                )
    skipped = [(r.resolution, s) for r in results for s in r.skipped]
    if skipped:
        items = "".join(
            f"<li>{res}px <code>{html.escape(s['path'])}</code>: {html.escape(s['reason'])}</li>"
            for res, s in skipped
        )
        parts.append(f"<h2>Skipped files</h2><ul>{items}</ul>")
    proto = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in payload["protocol"].items()
    )
    parts.append(f"<h2>Protocol</h2><ul>{proto}</ul>")
    cmd = payload["run"].get("command")
    if cmd:
        parts.append(f"<p class='small'>Command: <code>{html.escape(cmd)}</code></p>")
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts))


def write_outputs(
    out_dir: Path, payload: dict, results: list[ResolutionResult], metrics: list[str]
) -> dict[str, Path]:
    """Write results.json, results.md and report.html (+ latent_stats.json when present) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "results.md",
        "html": out_dir / "report.html",
    }
    write_json(paths["json"], payload)
    write_markdown(paths["markdown"], payload, metrics)
    write_html(paths["html"], payload, results, metrics)
    if payload.get("latent"):
        paths["latent"] = out_dir / "latent_stats.json"
        write_json(
            paths["latent"],
            {k: payload[k] for k in ("model", "data", "run")}
            | {"latent_source": payload["latent_source"], "results": payload["latent"]},
        )
    return paths

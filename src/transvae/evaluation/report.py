"""Writing evaluation outputs, for ``evaluate`` and ``gen-eval`` alike.

- ``results.json`` (``write_json``), ``results.md`` (``evaluate``), and one self-contained
  ``report.html`` per run: CSS inline, images and plots embedded as base64 PNG, so it opens
  from disk in any browser with no server and can be mailed around.
- One HTML skeleton (``write_page``), one table writer (``html_table``), one grid writer
  (``write_grid``). Every value that reaches the HTML goes through ``esc`` (file names, paths,
  settings read from a samples folder's ``sampling.json``, error messages, numbers): only the
  ``Markup`` this module builds itself is inserted as is.
- Every file is written atomically (``transvae.utils.files``): a crash leaves the old file or
  the new one, and a symbolic link planted at an output path is replaced, never followed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.io import png_bytes
from ..metrics.base import metric_class
from ..utils.files import atomic_write_bytes, atomic_write_text
from . import plots

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .meta td{text-align:left}
.ex img{width:var(--w);image-rendering:pixelated;display:block} .ex td{vertical-align:top}
.small{color:#666;font-size:.85em} code{background:#f5f5f5;padding:0 3px}
"""
GRID_IMAGES = 36


# -- values --------------------------------------------------------------------------------------
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


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a crash leaves the previous file or the new one)."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def metric_value(summary: dict, key: str):
    """A summary's metric, mapping the JSON form of an infinite PSNR (null + flag) back to inf."""
    if summary.get(f"{key}_infinite"):
        return math.inf
    return summary.get(key)


def label(name: str) -> str:
    """The table heading of a registered metric (with ↑ / ↓)."""
    return metric_class(name).label


def fmt(name: str, value) -> str:
    """Format a metric's value: ``∞`` for identical-image PSNR, ``–`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if not isinstance(value, (int, float)):
        return str(value)
    return metric_class(name).fmt.format(value)


# -- HTML ----------------------------------------------------------------------------------------
class Markup(str):
    """Text that is already HTML (built by this module from escaped parts); adding plain text to
    it escapes that text."""

    def __add__(self, other: Any) -> Markup:
        return Markup(str.__add__(self, esc(other)))

    def __radd__(self, other: Any) -> Markup:
        return Markup(str.__add__(esc(other), self))


def esc(value: Any) -> Markup:
    """``value`` as HTML text: escaped, unless it is ``Markup`` already."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Concatenate, escaping every part that is not ``Markup``."""
    return Markup(sep.join(esc(p) for p in parts))


def tag(name: str, content: Any = "", cls: str | None = None, style: str | None = None) -> Markup:
    """``<name class='cls' style='style'>content</name>``, content and attributes escaped."""
    attrs = "".join(f" {k}='{esc(v)}'" for k, v in (("class", cls), ("style", style)) if v is not None)
    return Markup(f"<{name}{attrs}>{esc(content)}</{name}>")


def code(value: Any) -> Markup:
    return tag("code", value)


def img(uri: str, alt: str, style: str | None = None) -> Markup:
    """An embedded image (``uri`` is a ``data:image/png;base64,...`` URI this module made)."""
    return Markup(f"<img alt='{esc(alt)}' src='{esc(uri)}'" + (f" style='{esc(style)}'>" if style else ">"))


def html_table(
    rows: Sequence[Sequence[Any]],
    header: Sequence[Any] | None = None,
    row_headers: bool = False,
    cls: str | None = None,
    style: str | None = None,
) -> Markup:
    """One table; every cell is escaped unless it is ``Markup``.

    Args:
        rows: the cells of each row.
        header: the header row (``<th>``), or None.
        row_headers: the first cell of each row is a left-aligned ``<th>`` (a key / value table).
        cls, style: the table's class and style attributes.
    """
    lines = [tag("tr", join(tag("th", h) for h in header))] if header else []
    for row in rows:
        cells = (
            [tag("th", row[0], cls="l"), *(tag("td", c) for c in row[1:])]
            if row_headers
            else [tag("td", c) for c in row]
        )
        lines.append(tag("tr", join(cells)))
    return tag("table", join(lines), cls=cls, style=style)


def html_list(items: Iterable[Any]) -> Markup:
    return tag("ul", join(tag("li", x) for x in items))


def write_page(path: Path, title: str, parts: Iterable[Any]) -> None:
    """The one report skeleton: a self-contained HTML page, written atomically.

    Args:
        path: the ``report.html`` to write.
        title: the page's title and heading (escaped).
        parts: its body, in order (escaped unless ``Markup``).
    """
    head = Markup(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>")
    body = join([head, Markup(f"<style>{CSS}</style></head><body>"), tag("h1", title), *parts], "\n")
    atomic_write_text(path, body + Markup("\n</body></html>\n"))


# -- images --------------------------------------------------------------------------------------
def png_data_uri(image: np.ndarray | Image.Image) -> str:
    """uint8 (H, W, 3) array or PIL image -> ``data:image/png;base64,...``."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_grid(images: torch.Tensor, ncol: int = 6) -> np.ndarray:
    """uint8 (N, 3, H, W) -> one (rows*(H+2), ncol*(W+2), 3) uint8 grid (torchvision's make_grid)."""
    import torchvision

    grid = torchvision.utils.make_grid(images, nrow=min(ncol, len(images)), padding=2, pad_value=255)
    return grid.permute(1, 2, 0).numpy()


def write_grid(path: Path, images: torch.Tensor, ncol: int = 6) -> np.ndarray:
    """Write ``image_grid(images)`` as a PNG (atomically) and return it."""
    grid = image_grid(images, ncol)
    atomic_write_bytes(path, png_bytes(grid))
    return grid


def small(text: Any) -> Markup:
    return tag("p", text, cls="small")


def _key(name: str) -> str:
    return name.replace("-", "_")  # a metric's results key (latent-fd -> latent_fd)


# -- transvae evaluate ---------------------------------------------------------------------------
def markdown_table(results: list[dict], metrics: list[str]) -> str:
    """| Resolution | Images | metric ... | rows for each resolution."""
    head = "| Resolution | Images | " + " | ".join(label(m) for m in metrics)
    folder = any("rfid_torch_fidelity" in r for r in results)  # the torch-fidelity protocol's second rFID
    head += " | rFID by torch-fidelity ↓ |" if folder else " |"
    sep = "|---:|---:|" + "---:|" * (len(metrics) + folder)
    rows = [
        f"| {r['resolution']} | {r['num_images']} | "
        + " | ".join(fmt(m, metric_value(r, _key(m))) for m in metrics)
        + (f" | {fmt('rfid', r.get('rfid_torch_fidelity'))} |" if folder else " |")
        for r in results
    ]
    return "\n".join([head, sep, *rows])


def _f(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def write_markdown(path: Path, payload: dict, metrics: list[str]) -> None:
    """``results.md``: the metric table, the protocol and the latent analysis."""
    m, d = payload["model"], payload["data"]
    lines = [
        f"# Reconstruction evaluation: {m['name']}",
        "",
        f"- Model: `{m['path']}` ({m['parameters'] / 1e6:.2f} M parameters)",
        f"- Data: `{d['path']}` ({d['num_files']} files"
        + (f", first {d['limit']}" if d.get("limit") else "")
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
    if payload.get("latent"):
        lines += [
            "",
            "## Latent space",
            "",
            "| Resolution | scaling_factor | shift_factor | density CV | Gini | norm. entropy | probe top-1 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in payload["latent"]:
            s, u, p = r.get("statistics") or {}, r.get("uniformity") or {}, r.get("linear_probe") or {}
            cells = [s.get("scaling_factor"), s.get("shift_factor"), u.get("density_cv")]
            cells += [u.get("gini_coefficient"), u.get("normalized_entropy"), p.get("top1")]
            lines.append(f"| {r['resolution']} | " + " | ".join(_f(c, 4) for c in cells) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _examples_html(res, metrics: list[str]) -> Markup:
    """The lowest-PSNR reconstructions of one resolution: input | reconstruction | error heat map."""
    if not res.worst:
        return Markup("")
    width = max(160, min(res.resolution, 320))  # upscale tiny crops so they can be inspected
    rows = []
    for e in res.worst:
        scores = [f"{label(k).split(' ')[0]}: {fmt(k, v)}" for k, v in e.scores.items() if k in metrics]
        heat = plots.error_heatmap(e.original, e.reconstruction)
        rows.append(
            [
                join([code(e.path), *(Markup("<br>") + x for x in scores)]),
                img(png_data_uri(e.original), "input"),
                img(png_data_uri(e.reconstruction), "reconstruction"),
                img(png_data_uri(heat), "error"),
            ]
        )
    header = ["image", "input", "reconstruction", "|error| heat map"]
    return join(
        [
            tag("h3", f"{res.resolution}px: the {len(res.worst)} lowest-PSNR images"),
            html_table(rows, header, cls="ex", style=f"--w:{width}px"),
        ]
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


def _latent_html(payload: dict, results: list) -> list[Markup]:
    parts = [tag("h2", "Latent space")]
    for r, res in zip(payload["latent"], results, strict=True):
        rows = [
            (name, form.format(**r[section]))
            for section, section_rows in _LATENT_ROWS.items()
            if r.get(section)
            for name, form in section_rows
        ]
        if r.get("linear_probe_skipped"):
            rows.append(("linear probe", r["linear_probe_skipped"]))
        parts += [tag("h3", f"{r['resolution']}px"), html_table(rows, row_headers=True)]
        if res.extras.get("tsne_embedding"):
            parts.append(img(plots.tsne(res.extras["tsne_embedding"], r["resolution"]), "t-SNE"))
    return parts


def write_html(path: Path, payload: dict, results: list, metrics: list[str]) -> None:
    """``evaluate``'s report (see the module docstring); ``results`` are the ``ResolutionResult``s."""
    m, d, run = payload["model"], payload["data"], payload["run"]
    meta = [
        (
            "model",
            join(
                [
                    code(m["path"]),
                    f" ({m['parameters'] / 1e6:.2f} M parameters, f{m['spatial_compression_ratio']}, {m['latent_channels']} latent channels)",
                ]
            ),
        ),
        (
            "data",
            join(
                [
                    code(d["path"]),
                    f", {d['num_files']} files" + (f" (first {d['limit']})" if d.get("limit") else ""),
                ]
            ),
        ),
        (
            "run",
            f"{run['date']}, {run['device']}, autocast {run['dtype']}, transvae {run['transvae_version']}",
        ),
    ]
    rows = [
        [r["resolution"], r["num_images"], *(fmt(x, metric_value(r, _key(x))) for x in metrics)]
        for r in payload["results"]
    ]
    parts = [
        html_table(meta, row_headers=True, cls="meta"),
        tag("h2", "Metrics"),
        html_table(rows, ["Resolution", "Images", *(label(x) for x in metrics)]),
        small("Means of per-image values (PSNR, SSIM, LPIPS) and set-level values (rFID), on uint8 images."),
    ]
    curve = plots.metric_vs_resolution(payload["results"], metrics, [label(x) for x in metrics])
    if curve:
        parts += [tag("h2", "Metrics against resolution"), img(curve, "metrics vs resolution")]
    series = [
        (r.resolution, [p["psnr"] for p in r.per_image if math.isfinite(p.get("psnr", math.nan))])
        for r in results
    ]
    hist = plots.psnr_distributions(series)
    if hist:
        parts += [tag("h2", "Per-image PSNR"), img(hist, "PSNR distribution")]
    bar = img(png_data_uri(plots.colorbar()), "colour bar", "width:160px;height:10px")
    parts += [
        tag("h2", "Worst reconstructions"),
        tag("p", join(["Sorted by PSNR, lowest first. Heat map: |input − reconstruction| averaged over RGB, 0 ",
                       bar, f" {plots.ERROR_VMAX:.0f}+ grey levels (of 255)."]), cls="small"),
        *(_examples_html(r, metrics) for r in results),
    ]  # fmt: skip
    if payload.get("latent"):
        parts += _latent_html(payload, results)
    skipped = [
        join([f"{r.resolution}px ", code(s["path"]), f": {s['reason']}"]) for r in results for s in r.skipped
    ]
    if skipped:
        parts += [tag("h2", "Skipped files"), html_list(skipped)]
    parts += [
        tag("h2", "Protocol"),
        html_list(join([tag("b", k), f": {v}"]) for k, v in payload["protocol"].items()),
    ]
    if run.get("command"):
        parts.append(tag("p", join(["Command: ", code(run["command"])]), cls="small"))
    write_page(path, f"Reconstruction evaluation: {m['name']}", parts)


def write_outputs(out_dir: Path, payload: dict, results: list, metrics: list[str]) -> dict[str, Path]:
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


# -- transvae gen-eval ---------------------------------------------------------------------------
def _generation_rows(payload: dict) -> list[list[Any]]:
    """Metric | value | computed on | weights or settings, for each metric of a gen-eval run."""
    r = json_safe(payload["results"])
    rows = []
    for name in payload["metrics"]:
        k = _key(name)
        if r.get(k) is None:
            continue
        value = fmt(name, r[k]) + (f" ± {fmt(name, r[k + '_std'])}" if r.get(k + "_std") is not None else "")
        counts = r.get(f"{k}_images", r.get(f"{k}_latents"))
        if isinstance(counts, dict):
            counts = ", ".join(f"{v} {side}" for side, v in counts.items())
        elif counts is not None:
            counts = f"{counts} samples"
        notes = [str(r[x]) for x in (f"{k}_weights", f"{k}_stats", f"{k}_reference") if r.get(x) is not None]
        if r.get(f"{k}_patch") is not None:
            notes.insert(0, f"{r[k + '_patch']}x{r[k + '_patch']} latent patches")
        rows.append([label(name), value, "" if counts is None else counts, "; ".join(notes)])
    return rows


def write_generation_report(
    out: Path,
    payload: dict[str, Any],
    samples: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> dict[str, Path]:
    """Write ``out/results.json``, ``out/report.html`` and the grids of a ``gen-eval`` run.

    Args:
        out: output folder (created).
        payload: the results of ``evaluate_generation``.
        samples, reference: uint8 (N, 3, H, W) first images of each set for the grids (or None).
    Returns:
        {"json": path, "html": path} and the grids written ("samples", "reference").
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "html": out / "report.html"}
    write_json(paths["json"], payload)
    meta = [
        (k, code(payload.get(k))) for k in ("samples", "reference", "reference_latents") if payload.get(k)
    ]
    parts = [
        html_table(meta, row_headers=True, cls="meta"),
        tag("h2", "Metrics"),
        html_table(_generation_rows(payload), ["metric", "value", "computed on", "weights / settings"]),
        small("FID, sFID and lFD fall with more samples: compare values computed on equal counts."),
    ]
    sampling = payload.get("sampling")
    if isinstance(sampling, dict):  # read from the samples folder: every value is escaped
        rows = [
            (k, json.dumps(v) if not isinstance(v, str) else v)
            for k, v in sampling.items()
            if k != "latent_stats"
        ]
        parts += [
            tag("h2", "Sampling settings (sampling.json)"),
            html_table(rows, row_headers=True, cls="meta"),
        ]
    for title, images in (("Samples", samples), ("Reference", reference)):
        if images is not None and len(images):
            paths[title.lower()] = out / f"{title.lower()}_grid.png"
            grid = write_grid(paths[title.lower()], images)
            parts += [tag("h2", f"{title} (first {len(images)})"), img(png_data_uri(grid), title)]
    if payload.get("skipped"):
        items = [join([code(x["path"]), f": {x['reason']}"]) for x in payload["skipped"]]
        parts += [tag("h2", "Skipped files"), html_list(items)]
    if payload.get("command"):
        parts.append(tag("p", join(["Command: ", code(payload["command"])]), cls="small"))
    write_page(paths["html"], "Generation evaluation", parts)
    return paths

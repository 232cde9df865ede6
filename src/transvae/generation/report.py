"""``gen-eval`` outputs: ``results.json``, a self-contained ``report.html`` and the sample grids
(``samples_grid.png``, ``reference_grid.png``).

The HTML embeds its images as base64 PNGs and reuses the evaluation report's style, so it opens
from disk anywhere (``transvae.evaluation.report``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import png_bytes
from ..evaluation.report import CSS, json_safe, png_data_uri, write_json
from ..utils.files import atomic_write_bytes

GRID_IMAGES = 36
_LABELS = {
    "fid": "FID ↓",
    "is": "Inception Score ↑",
    "latent_fd": "latent Fréchet distance (lFD) ↓",
}


def image_grid(images: torch.Tensor, ncol: int = 6) -> np.ndarray:
    """uint8 (N, 3, H, W) -> one (rows*(H+2), ncol*(W+2), 3) uint8 grid (torchvision's make_grid)."""
    import torchvision

    grid = torchvision.utils.make_grid(images, nrow=min(ncol, len(images)), padding=2, pad_value=255)
    return grid.permute(1, 2, 0).numpy()


def _first_images(src, n: int = GRID_IMAGES) -> torch.Tensor | None:
    if src is None:
        return None
    got: list[torch.Tensor] = []
    for x in src.batches(n):
        got.append(x)
        if sum(len(g) for g in got) >= n:
            break
    return torch.cat(got)[:n] if got else None


def write_generation_report(
    out: Path, payload: dict[str, Any], samples=None, reference=None
) -> dict[str, Path]:
    """Write ``out/results.json`` and ``out/report.html``.

    Args:
        out: output folder (created).
        payload: the results of ``evaluate_generation``.
        samples / reference: ``ImageSource``s whose first images make the grids (or None).
    Returns:
        {"json": path, "html": path} and the grids written (``"samples"``, ``"reference"``).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "html": out / "report.html"}
    write_json(paths["json"], payload)
    r = json_safe(payload["results"])
    rows = []
    for key, label in _LABELS.items():
        if r.get(key) is not None:
            val = f"{r[key]:.4f}" if key != "is" else f"{r[key]:.3f} ± {r.get('is_std', 0.0):.3f}"
            rows.append(f"<tr><th class='l'>{html.escape(label)}</th><td>{val}</td></tr>")
    notes = []
    if "fid_images" in r:
        notes.append(
            f"FID on {r['fid_images']['samples']} samples vs {r['fid_images']['reference']} reference images ({html.escape(str(r.get('fid_weights')))})."
        )
    if "latent_fd_latents" in r:
        c = r["latent_fd_latents"]
        notes.append(
            f"lFD: {r['latent_fd_patch']}x{r['latent_fd_patch']} latent patches of {c['samples']} generated vs "
            f"{c['reference']} real latents (<code>{html.escape(str(r.get('latent_fd_reference')))}</code>), "
            f"normalised with {html.escape(str(r.get('latent_fd_stats')))}; compare values at equal counts."
        )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>transvae gen-eval</title><style>{CSS}</style></head><body>",
        "<h1>Generation evaluation</h1>",
        "<table class='meta'>",
        f"<tr><th class='l'>samples</th><td><code>{html.escape(payload['samples'])}</code></td></tr>",
        f"<tr><th class='l'>reference</th><td><code>{html.escape(str(payload.get('reference')))}</code></td></tr>",
        "</table><h2>Metrics</h2>",
        f"<table>{''.join(rows)}</table>",
        "".join(f"<p class='small'>{n}</p>" for n in notes),
    ]
    s = payload.get("sampling") or {}
    if s.get("sampler"):
        desc = ", ".join(f"{k} {v}" for k, v in s["sampler"].items())
        parts.append(
            f"<p class='small'>Sampler: {html.escape(desc)}; seed {s.get('seed')}; {s.get('num')} samples.</p>"
        )
    for title, src in (("Samples", samples), ("Reference", reference)):
        imgs = _first_images(src)
        if imgs is not None:
            grid = image_grid(imgs)
            paths[title.lower()] = out / f"{title.lower()}_grid.png"
            atomic_write_bytes(paths[title.lower()], png_bytes(grid))
            parts.append(
                f"<h2>{title} (first {len(imgs)})</h2><img alt='{title}' src='{png_data_uri(grid)}'>"
            )
    if payload.get("skipped"):
        items = "".join(
            f"<li><code>{html.escape(x['path'])}</code>: {html.escape(x['reason'])}</li>"
            for x in payload["skipped"]
        )
        parts.append(f"<h2>Skipped files</h2><ul>{items}</ul>")
    if payload.get("command"):
        parts.append(f"<p class='small'>Command: <code>{html.escape(payload['command'])}</code></p>")
    parts.append("</body></html>")
    paths["html"].write_text("\n".join(parts), encoding="utf-8")
    return paths

"""Colour fidelity of an autoencoder: what ``transvae.metrics.colour``'s figures say about a model.

- ``reconstruct_uint8``: a model's reconstructions (posterior mode) of uint8 images, quantised
  as validation and saved PNGs are;
- ``colour_summary``: PSNR and ``colour_report`` of a set (optionally the low-pass CIEDE2000);
- ``colour_fidelity``: that for a folder of held-out tiles and the synthetic colour chart
  (``transvae quickstart``'s ``metrics.json``);
- ``contrast_response``: the inputs' contrast scaled about their mean, and the output's: a
  faithful autoencoder follows (ratio 1), one that learned a typical contrast pulls every input
  towards it;
- ``chart_cells``: the mean colour of each flat cell of ``transvae.data.synthetic.colour_chart``
  in and out, their CIEDE2000 and the Lab hue-angle error;
- ``colour_exact_blur``: a blur that keeps every colour (bicubic down- and up-sampling), the
  reference for what CIEDE2000 and contrast a reconstruction with no colour error gets at a PSNR;
- ``load_uint8``: image files as a uint8 batch; ``cut_tiles`` / ``join_tiles`` / ``chart_tiles``:
  images in tiles of the crop size.

Images are uint8 ``(B, 3, H, W)`` tensors, as in ``transvae.metrics.colour``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..metrics.colour import ciede2000_map, colour_report, low_pass, rgb_to_lab, split_luma_chroma
from ..metrics.psnr import psnr_per_image

__all__ = [
    "CHART_COLS",
    "CHART_ROWS",
    "CHART_SIDE",
    "chart_cells",
    "chart_tiles",
    "colour_exact_blur",
    "colour_fidelity",
    "colour_summary",
    "contrast_response",
    "cut_tiles",
    "join_tiles",
    "load_uint8",
    "reconstruct_uint8",
]

CHART_SIDE = 256  # the synthetic colour chart: about this side, in whole tiles
# the flat rows of the chart (transvae.data.synthetic) and the colours of rows 0, 3 and 4
CHART_ROWS = ("primary/secondary", "grey", "skin", "pastel", "dark")
CHART_COLS = ("red", "green", "blue", "cyan", "magenta", "yellow", "orange", "violet")


def reconstruct_uint8(model, x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Reconstructions (posterior mode) of uint8 images, quantised as validation and PNGs are.

    Args:
        model: an autoencoder (``transvae.from_pretrained``), on the CPU.
        x: (B, 3, H, W) uint8.
        batch_size: images per forward.
    Returns:
        (B, 3, H, W) uint8.
    """
    from ..data.io import tensor_to_uint8

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].float().div(127.5).sub(1.0)  # as pil_to_tensor
            out.append(tensor_to_uint8(model(xb, sample_posterior=False).sample).cpu())
    model.train(was_training)
    return torch.cat(out)


def load_uint8(paths, side: int | None = None) -> torch.Tensor:
    """Image files of equal size (or each resized and centre-cropped to ``side`` x ``side``, the
    evaluation protocol's ``resize_center_crop``) -> (B, 3, H, W) uint8."""
    from ..data.io import load_image
    from ..data.transforms import resize_center_crop

    ims = [load_image(p) for p in paths]
    ims = [np.asarray(resize_center_crop(im, side)[0] if side else im) for im in ims]
    return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).contiguous()


def cut_tiles(image: torch.Tensor, size: int) -> torch.Tensor:
    """The whole ``size`` x ``size`` tiles of a (3, H, W) image, row by row: (n, 3, size, size)."""
    c, h, w = image.shape
    rows, cols = h // size, w // size
    x = image[:, : rows * size, : cols * size].reshape(c, rows, size, cols, size)
    return x.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, size, size).contiguous()


def join_tiles(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 3, t, t) tiles, row by row -> the (1, 3, rows * t, cols * t) image."""
    _, c, t, _ = tiles.shape
    return tiles.view(rows, cols, c, t, t).permute(2, 0, 3, 1, 4).reshape(1, c, rows * t, cols * t)


def chart_tiles(resolution: int, side: int = CHART_SIDE) -> torch.Tensor:
    """The synthetic colour chart (side: the multiple of ``resolution`` nearest ``side``) in
    ``resolution`` x ``resolution`` tiles, row by row: (k * k, 3, resolution, resolution) uint8."""
    from ..data.synthetic import colour_chart

    k = max(1, round(side / resolution))
    return cut_tiles(torch.from_numpy(colour_chart(k * resolution)).permute(2, 0, 1), resolution)


def colour_summary(
    ref: torch.Tensor, rec: torch.Tensor, lowpass: bool = False, digits: int | None = None
) -> dict:
    """``psnr`` (mean over images) and ``colour_report`` of a set; with ``lowpass``,
    ``ciede2000_lowpass`` (CIEDE2000 of 4 x 4 block means: colour without detail) and
    ``ciede2000_luma_only`` / ``ciede2000_chroma_only`` (of the error's luma or chroma part alone,
    ``split_luma_chroma``); ``digits`` rounds every figure (for reading)."""
    out = {"psnr": float(psnr_per_image(ref, rec).mean()), **colour_report(ref, rec)}
    if lowpass:
        out["ciede2000_lowpass"] = colour_report(low_pass(ref), low_pass(rec))["ciede2000_mean"]
        luma, chroma = split_luma_chroma(ref, rec)
        out["ciede2000_luma_only"] = float(ciede2000_map(ref, luma).mean())
        out["ciede2000_chroma_only"] = float(ciede2000_map(ref, chroma).mean())
    if digits is None:
        return out
    return {
        k: (np.round(v, digits).tolist() if isinstance(v, list) else round(v, digits)) for k, v in out.items()
    }


def colour_fidelity(model, val: Path, resolution: int) -> dict:
    """Colour figures (``colour_summary`` with the low-pass CIEDE2000, pixels of the set pooled) of
    the held-out tiles and of the synthetic colour chart in tiles of the crop size.

    Args:
        model: the trained autoencoder.
        val: the folder of held-out tiles (``transvae quickstart``'s ``prepare_data``).
        resolution: the crop size (the chart is cut into tiles of it).
    Returns:
        ``{"held_out": summary, "chart": summary}``.
    """
    from ..data.io import list_images

    sets = (("held_out", load_uint8(list_images(val))), ("chart", chart_tiles(resolution)))
    return {name: colour_summary(ref, reconstruct_uint8(model, ref), lowpass=True) for name, ref in sets}


def contrast_response(model, x: torch.Tensor, factors=(0.5, 1.0, 1.5), batch_size: int = 8) -> list[dict]:
    """For each factor s: the images' contrast scaled about each image's per-channel mean
    (``mean + s (x - mean)``, rounded to uint8), and the mean per-image, per-channel standard
    deviation of those inputs (``std_in``) and of their reconstructions (``std_out``).

    Returns:
        one ``{"factor", "std_in", "std_out", "ratio"}`` per factor (ratio = std_out / std_in).
    """
    out = []
    for s in factors:
        xf = x.double()
        m = xf.mean((2, 3), keepdim=True)
        xs = (m + s * (xf - m)).round().clamp(0, 255).to(torch.uint8)
        rec = reconstruct_uint8(model, xs, batch_size)
        si, so = (y.double().flatten(2).std(2).mean().item() for y in (xs, rec))
        out.append({"factor": s, "std_in": round(si, 2), "std_out": round(so, 2), "ratio": round(so / si, 3)})
    return out


def _cell_mean(x: torch.Tensor, r: int, k: int, c: int) -> torch.Tensor:
    """The mean colour (rounded, (1, 3, 1, 1) uint8) of the centre half of cell (r, k) of side c."""
    rows, cols = slice(r * c + c // 4, r * c + 3 * c // 4), slice(k * c + c // 4, k * c + 3 * c // 4)
    return x[:1, :, rows, cols].double().mean((2, 3)).round().to(torch.uint8)[..., None, None]


def chart_cells(ref: torch.Tensor, out: torch.Tensor) -> list[dict]:
    """The 40 flat cells of the colour chart (rows 0-4 of ``transvae.data.synthetic.colour_chart``),
    worst first: each cell's mean colour in and out (the centre half of the cell), their
    CIEDE2000, and for chromatic cells (C* > 10) the Lab hue-angle error in degrees (else None).

    Args:
        ref: (1, 3, S, S) uint8, the whole chart; out: its reconstruction.
    """
    c = ref.shape[-1] // 8
    cells = []
    for r, row in enumerate(CHART_ROWS):
        for k in range(8):
            a, b = _cell_mean(ref, r, k, c), _cell_mean(out, r, k, c)
            la, lb = rgb_to_lab(a).reshape(3), rgb_to_lab(b).reshape(3)
            dh = None
            if np.hypot(la[1], la[2]) > 10:
                h = np.degrees(np.arctan2(lb[2], lb[1]) - np.arctan2(la[2], la[1]))
                dh = round(float((h + 180) % 360 - 180), 1)
            cells.append({
                "cell": f"{row} {CHART_COLS[k]}" if r in (0, 3, 4) else f"{row} {k}",
                "in": a.flatten().tolist(), "out": b.flatten().tolist(),
                "ciede2000": round(float(ciede2000_map(a, b)), 2), "hue_error_deg": dh,
            })  # fmt: skip
    return sorted(cells, key=lambda d: -d["ciede2000"])


def colour_exact_blur(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic down-sampling by ``factor`` and back up (PIL): a blur that keeps every colour.

    Args:
        x: (B, 3, H, W) uint8.
    Returns:
        (B, 3, H, W) uint8.
    """
    from PIL import Image

    h, w = x.shape[-2:]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    ims = [Image.fromarray(a.permute(1, 2, 0).numpy()).resize(small, Image.BICUBIC) for a in x.cpu()]
    out = [np.asarray(im.resize((w, h), Image.BICUBIC)) for im in ims]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

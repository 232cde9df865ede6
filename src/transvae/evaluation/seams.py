"""Seams of tiled inference, measured: where a tiled decode (or encode-decode) differs from the
untiled one.

A large image decoded in overlapping tiles is compared with the same image decoded in one pass
(``InferenceRunner(..., tiled=False)``), on two sets of pixels:

- the **bands** around tile borders: pixels within ``band`` of an interior tile edge (where a
  tile lacks the context beyond it and where neighbouring tiles are blended);
- the **rest** of the image.

``psnr_band`` / ``psnr_rest`` are the PSNR (dB, on uint8 images) of the tiled result against the
untiled one there; a seam shows as ``psnr_band`` well below ``psnr_rest`` (the default tiling is
chosen so that the two are within 0.5 dB). ``gradient_jump`` is the mean absolute difference
between neighbouring pixels across the lines where the blend weights of two tiles cross (the
middle of each overlap), in the tiled result, divided by the same in the untiled one: 1 means no
step at the seam, 1.5 a visible edge. ``psnr_total`` is the whole image's.
"""

from __future__ import annotations

import math

import torch

from ..data.io import tensor_to_uint8
from ..inference.runner import InferenceRunner
from ..inference.tiling import tile_starts


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR of uint8 images a, b (3, H, W) over the pixels of ``mask`` (H, W)."""
    if not bool(mask.any()):
        return math.nan
    d = (a.double() - b.double())[:, mask]
    mse = float(d.pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def seam_layout(size: int, tile: int, overlap: int) -> tuple[list[int], list[int]]:
    """(interior tile edges, blend midlines) along one axis of ``size`` output pixels."""
    starts = tile_starts(size, tile, overlap)
    edges = sorted({s for s in starts[1:]} | {s + tile for s in starts[:-1]})
    mids = [(b + a + tile) // 2 for a, b in zip(starts[:-1], starts[1:], strict=True)]
    return edges, mids


def compare_seams(tiled: torch.Tensor, untiled: torch.Tensor, tile: int, overlap: int, band: int = 8) -> dict:
    """The seam figures (module docstring) of a tiled vs an untiled result.

    Args:
        tiled, untiled: (3, H, W) images in [-1, 1] (or uint8).
        tile, overlap: the tiling, in the images' pixels.
        band: half-width of the band around each interior tile edge, in pixels.
    """
    a = tiled if tiled.dtype == torch.uint8 else tensor_to_uint8(tiled)
    b = untiled if untiled.dtype == torch.uint8 else tensor_to_uint8(untiled)
    _, h, w = a.shape
    (ey, my), (ex, mx) = seam_layout(h, tile, overlap), seam_layout(w, tile, overlap)
    mask = torch.zeros(h, w, dtype=torch.bool)
    for e in ey:
        mask[max(0, e - band) : e + band, :] = True
    for e in ex:
        mask[:, max(0, e - band) : e + band] = True

    def step(img: torch.Tensor) -> float:  # mean |difference| across the blend midlines
        img = img.double()
        diffs = [(img[:, m, :] - img[:, m - 1, :]).abs().mean() for m in my if 0 < m < h]
        diffs += [(img[:, :, m] - img[:, :, m - 1]).abs().mean() for m in mx if 0 < m < w]
        return float(torch.stack(diffs).mean()) if diffs else math.nan

    base = step(b)
    return {
        "psnr_total": _psnr(a, b, torch.ones(h, w, dtype=torch.bool)),
        "psnr_band": _psnr(a, b, mask),
        "psnr_rest": _psnr(a, b, ~mask),
        "gradient_jump": step(a) / base if base > 0 else math.nan,
        "band_fraction": float(mask.float().mean()),
        "tiles": len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap)),
    }


@torch.inference_mode()
def measure_seams(runner: InferenceRunner, image: torch.Tensor, band: int = 8) -> dict:
    """Decode and encode-decode ``image`` tiled (the runner's tile size and overlap) and untiled,
    and compare (``compare_seams``).

    Args:
        runner: an ``InferenceRunner`` (its ``tile_size`` / ``tile_overlap`` are measured).
        image: (1, 3, H, W) in [-1, 1], H and W multiples of the compression ratio.
        band: half-width of the border bands in pixels.
    Returns:
        ``{"decode": {...}, "reconstruct": {...}, "tile_size", "tile_overlap", "psnr_vs_input"}``;
        ``psnr_vs_input``: PSNR of the untiled and of the tiled encode-decode against ``image``
        itself (what tiling costs, or gains, in reconstruction quality).
    """
    tile, overlap = runner.tile_size, runner.tile_overlap
    z = runner.encode(image, tiled=False).latent
    full = runner.decode(z, tiled=False)[0]
    decode = compare_seams(runner.decode(z, tiled=True)[0], full, tile, overlap, band)
    tiled = runner.decode(runner.encode(image, tiled=True).latent, tiled=True)[0]
    rec = compare_seams(tiled, full, tile, overlap, band)
    src, every = tensor_to_uint8(image[0]), torch.ones(image.shape[-2:], dtype=torch.bool)
    vs_input = {k: _psnr(tensor_to_uint8(v), src, every) for k, v in (("untiled", full), ("tiled", tiled))}
    return {"decode": decode, "reconstruct": rec, "tile_size": tile, "tile_overlap": overlap, "psnr_vs_input": vs_input}

"""Tiled encoding and decoding with overlapping tiles and linearly blended seams.

TransVAE's attention is global, so untiled inference of a huge image needs memory that grows
with the square of its token count. Tiling bounds that memory: the input is cut into
overlapping tiles, each tile goes through the network on its own, and the outputs are merged
with weights that ramp linearly across every overlap (the scheme of diffusers'
``AutoencoderKL`` tiling, written as a weighted average so that tiles of any layout blend).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    The last tile is moved back to end exactly at ``length`` so every tile has the full size
    (a thin edge tile would see too little context); if ``length <= tile`` there is one tile.
    """
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap {overlap} for tile {tile}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, ramp_before: int, ramp_after: int, device: torch.device) -> torch.Tensor:
    """1D blending weights: linear ramps (never exactly 0) over the first/last ``ramp_*`` entries."""
    w = torch.ones(n, device=device)
    if ramp_before > 0:
        w[:ramp_before] = (torch.arange(ramp_before, device=device) + 0.5) / ramp_before
    if ramp_after > 0:
        w[n - ramp_after :] = torch.minimum(
            w[n - ramp_after :], (torch.arange(ramp_after, 0, -1, device=device) - 0.5) / ramp_after
        )
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    scale_num: int = 1,
    scale_den: int = 1,
    tile_batch: int = 1,
    on_tiles: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Apply a resolution-changing network ``fn`` to ``x`` tile by tile and blend the results.

    Args:
        fn: maps (N, C, th, tw) to (N, C', th * num / den, tw * num / den).
        x: (B, C, H, W) input.
        tile: tile size in input elements (square tiles; clipped to H or W when larger).
        overlap: overlap between neighbouring tiles, in input elements.
        scale_num, scale_den: output elements per input element (1/f for the encoder, f/1
            for the decoder); ``tile``, ``overlap`` and H, W must map to whole output elements.
        tile_batch: tiles of one image passed to ``fn`` together (memory vs speed).
        on_tiles: called with the number of tiles just processed (a progress bar's ``update``).
    Returns:
        (B, C', H * num / den, W * num / den), blended with linear ramps across overlaps.
    """
    b, _, h, w = x.shape
    for name, v in (("tile", tile), ("overlap", overlap), ("height", h), ("width", w)):
        if (v * scale_num) % scale_den:
            raise ValueError(
                f"{name} {v} does not map to a whole number of output elements ({scale_num}/{scale_den})"
            )
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    ramp = overlap * scale_num // scale_den
    oh, ow = th * scale_num // scale_den, tw * scale_num // scale_den
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    out = weight = None
    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i : i + tile_batch]
        tiles = torch.cat([x[:, :, y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk])  # (n*B, C, th, tw)
        y = fn(tiles)  # (n*B, C', oh, ow)
        if out is None:
            full = (b, y.shape[1], h * scale_num // scale_den, w * scale_num // scale_den)
            out = torch.zeros(full, device=y.device, dtype=torch.float32)
            weight = torch.zeros(full[-2:], device=y.device, dtype=torch.float32)
        for j, (y0, x0) in enumerate(chunk):
            # ramp only on sides that have a neighbour; image borders keep full weight
            wy = _ramp(oh, ramp if y0 > 0 else 0, ramp if y0 + th < h else 0, y.device)
            wx = _ramp(ow, ramp if x0 > 0 else 0, ramp if x0 + tw < w else 0, y.device)
            wt = wy[:, None] * wx[None, :]  # (oh, ow)
            oy, ox = y0 * scale_num // scale_den, x0 * scale_num // scale_den
            out[:, :, oy : oy + oh, ox : ox + ow] += y[j * b : (j + 1) * b].float() * wt
            weight[oy : oy + oh, ox : ox + ow] += wt
        if on_tiles is not None:
            on_tiles(len(chunk))
    return (out / weight).to(y.dtype)


def needs_tiling(height: int, width: int, max_pixels: int | None) -> bool:
    """True when an image of ``height`` x ``width`` pixels exceeds the ``max_pixels`` budget."""
    return max_pixels is not None and height * width > max_pixels

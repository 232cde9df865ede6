"""Padding images to a multiple of the compression ratio, and cropping the result back.

TransVAE runs at any resolution (RoPE is computed for the actual grid), but the encoder halves
the resolution ``log2(f)`` times, so H and W must be multiples of ``f``. We pad the right and
bottom edges only, so the latent grid of the unpadded region stays aligned with the image's
top-left corner and ``crop`` is a plain slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (left, right, top, bottom), the order of torch.nn.functional.pad for the last two dims
Pad = tuple[int, int, int, int]


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Smallest (H', W') >= (height, width) with both divisible by ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int, mode: str) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    if mode == "reflect" and max(before, after) >= x.shape[dim]:
        # Reflection needs pad < size; tiny images (e.g. 5 px wide padded to 16) replicate instead.
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad, mode="constant", value=0.0)
    return F.pad(x, pad, mode=mode)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, Pad]:
    """Pad the right and bottom of ``x`` so that H and W are multiples of ``multiple``.

    Args:
        x: (B, C, H, W) or (C, H, W) images.
        multiple: usually ``model.spatial_compression_ratio``.
        mode: ``"reflect"`` (default; falls back to ``"replicate"`` on an axis shorter than its
            pad), ``"replicate"`` or ``"constant"`` (zeros, i.e. mid-grey in [-1, 1]).
    Returns:
        (x_padded, pad) with x_padded (..., H', W') and pad = (left, right, top, bottom) as
        accepted by ``crop``.
    """
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"pad mode must be 'reflect', 'replicate' or 'constant', got {mode!r}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if x.ndim not in (3, 4):
        raise ValueError(f"expected a (B, C, H, W) or (C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, w, multiple)
    pad: Pad = (0, pw - w, 0, ph - h)
    if ph == h and pw == w:
        return x, pad
    squeeze = x.ndim == 3
    y = x[None] if squeeze else x
    # F.pad's reflect/replicate modes need a float tensor; pad each axis on its own so that
    # each can fall back to replicate independently.
    y = _pad_axis(y, 0, pad[1], -1, mode)
    y = _pad_axis(y, 0, pad[3], -2, mode)  # (B, C, H', W')
    return (y[0] if squeeze else y), pad


def crop(x: torch.Tensor, pad: Pad, scale: int = 1) -> torch.Tensor:
    """Undo ``pad_to_multiple``: remove ``pad`` (divided by ``scale``) from the borders of ``x``.

    Args:
        x: (..., H', W') tensor, e.g. a reconstruction (scale 1) or a latent grid (scale ``f``).
        pad: (left, right, top, bottom) in pixels, as returned by ``pad_to_multiple``.
        scale: pixels per element of ``x`` along H and W; with ``scale=f`` the latents of
            the unpadded region are kept (rounding partially padded latent cells outwards).
    Returns:
        (..., H' - top - bottom, W' - left - right) for ``scale=1``.
    """
    left, right, top, bottom = (int(p) for p in pad)
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")
    h, w = x.shape[-2:]
    # round the start down and the end up, so a partially padded latent cell is kept
    t, b = top // scale, h - bottom // scale
    lft, r = left // scale, w - right // scale
    if b <= t or r <= lft:
        raise ValueError(f"cannot crop pad {pad} (scale {scale}) from a {h}x{w} tensor")
    return x[..., t:b, lft:r]

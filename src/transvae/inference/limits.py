"""Sizes checked before memory is allocated: when to tile, and what cannot fit at all.

``auto_max_pixels`` is the default ``--max-pixels``: the largest image (in padded pixels) whose
untiled pass is estimated (``transvae.utils.memory.estimate_memory``, on the meta device) to fit
in half of the device's free memory, capped at ``DEFAULT_PIXEL_CAP`` so that a single untiled
pass stays short (attention time grows with the square of the token count). Anything larger is
encoded and decoded in tiles, whose memory does not grow with the image.

Tiling bounds the network's memory, not the full-size tensors every pass keeps (the padded input,
the blended output and its weights, the uint8 copy that is saved): ``full_size_bytes`` counts
those, and ``check_full_size`` refuses an image or latent whose full-size tensors alone would
not fit, with a message naming the sizes, before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..utils.memory import available_bytes, estimate_memory, format_bytes

__all__ = [
    "DEFAULT_PIXEL_CAP",
    "auto_max_pixels",
    "check_batch_fits",
    "check_full_size",
    "full_size_bytes",
    "loadable_pixels",
]

DEFAULT_PIXEL_CAP = 2048 * 2048
# float32 (3, H, W) tensors alive at once in a tiled pass: padded input (12 B/px), blended output
# and its per-pixel weights (16 B/px), the cropped output (12 B/px), uint8 copy (3 B/px): ~48 B/px
FULL_SIZE_BYTES_PER_PIXEL = 48
_REFERENCE_SIDE = 512


def auto_max_pixels(
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    fraction: float = 0.5,
    cap: int = DEFAULT_PIXEL_CAP,
) -> int:
    """The default tiling threshold for ``model`` on ``device`` (see the module docstring).

    Args:
        model: an ``AutoencoderBase`` (a meta copy is measured; its weights are not touched).
        device: where inference runs (its free memory is read now).
        dtype: the compute dtype (bf16 / fp16 halve the activations).
        fraction: share of the free memory one untiled pass may use.
        cap: upper bound in pixels.
    Returns:
        pixels (H * W of the padded image) above which images are tiled; at least one
        compression-ratio cell.
    """
    f = int(getattr(model, "spatial_compression_ratio", 1))
    free = available_bytes(device)
    if free is None:
        return cap
    side = max(f, _REFERENCE_SIDE // f * f)
    est = estimate_memory(model, 1, side, side, train=False, dtype_bytes=2 if dtype != torch.float32 else 4)
    per_pixel = est["activations"] / (side * side) + FULL_SIZE_BYTES_PER_PIXEL
    budget = fraction * free - est["weights"]
    return int(max(f * f, min(cap, budget / per_pixel)))


# per image and pixel besides the network: the uint8 crop, its float copy, the uint8 output (~16 B)
IMAGE_BYTES_PER_PIXEL = 16


def check_batch_fits(
    model: torch.nn.Module,
    resolutions: Sequence[int],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    extra_bytes_per_pixel: int = 0,
) -> None:
    """Refuse, before any image is read, a square size whose batch cannot fit in the free memory
    (an untiled pass over ``batch_size`` images of R x R, as ``evaluate`` and ``extract-latents``
    run).

    The autoencoder's inference memory is estimated on the meta device
    (``transvae.utils.memory.estimate_memory``: milliseconds even for R = 100000); the images and
    ``extra_bytes_per_pixel`` (e.g. LPIPS features) are added per pixel. An estimate, good to a
    small factor: enough to refuse a size that would get the process killed, never a promise.

    Raises:
        MemoryError: naming ``--resolution R``, ``--batch-size``, both sizes and what to change.
    """
    free = available_bytes(device)
    if free is None:
        return
    per_px = IMAGE_BYTES_PER_PIXEL + extra_bytes_per_pixel
    for r in sorted(set(resolutions), reverse=True):
        try:
            e = estimate_memory(model, 1, r, r, train=False, dtype_bytes=2 if dtype != torch.float32 else 4)
        except TypeError:  # not an AutoencoderBase (a stand-in model): nothing to estimate
            return
        per_image = e["activations"] + per_px * r * r
        need = e["weights"] + batch_size * per_image
        if need <= free:
            continue
        fits = int((free - e["weights"]) // per_image) if per_image != float("inf") else 0
        hint = (
            f"use --batch-size {fits} or less"
            if fits >= 1
            else "use a smaller --resolution (even one image does not fit)"
        )
        raise MemoryError(
            f"--resolution {r} with --batch-size {batch_size} needs about {format_bytes(need)} (estimate), "
            f"more than the {format_bytes(free)} free on {device}; {hint}"
        )


def full_size_bytes(height: int, width: int, batch: int = 1) -> int:
    """Bytes of the full-size tensors of a pass over ``batch`` images of ``height`` x ``width``."""
    return FULL_SIZE_BYTES_PER_PIXEL * batch * height * width


def check_full_size(height: int, width: int, device: torch.device, what: str = "image") -> None:
    """Raise ``MemoryError`` (one line, with the sizes) when the full-size tensors of one
    ``height`` x ``width`` image cannot fit in the device's free memory, even tiled."""
    need = full_size_bytes(height, width)
    free = available_bytes(device)
    if free is not None and need > free:
        raise MemoryError(
            f"{what} of {width}x{height} pixels needs about {format_bytes(need)} for its full-size tensors "
            f"even when tiled; {format_bytes(free)} is free on {device}"
        )


def loadable_pixels(device: torch.device) -> tuple[int | None, str]:
    """The most pixels an image may declare in its header to be loaded for ``device``, and the
    reason given for larger ones (checked before decoding; None: unknown free memory)."""
    free = available_bytes(device)
    if free is None:
        return None, ""
    return free // FULL_SIZE_BYTES_PER_PIXEL, (
        f"its full-size tensors would need more than the {format_bytes(free)} free on {device}"
    )

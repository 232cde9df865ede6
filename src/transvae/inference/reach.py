"""How far a change travels through a trained autoencoder: the measured reach that sets the default
tile overlap.

Tiling cuts an image (or a latent grid) into overlapping tiles; near a tile's edge the network
misses the context beyond it, and the blend across the overlap hides that only when the overlap
covers the band the missing context reaches into. For a CNN that band is its receptive field;
TransVAE's attention is global, but what one latent pixel does to the output still decays with
distance. ``decoder_reach`` measures it directly: one latent pixel of a real image's latent grid
is perturbed (by the latent's own standard deviation, all channels) and the radius is the
Chebyshev distance, in output pixels, beyond which the change of the decoded image stays below
``threshold`` of its peak. ``encoder_reach`` does the same from one pixel block of the image to the
latent grid. Both depend on the weights (a random model is far less local than a trained one),
so they are measured on the model itself, once per runner, on a tile-sized input.
"""

from __future__ import annotations

import torch

from ..models.base import AutoencoderBase


def _radius(change: torch.Tensor, center: tuple[int, int], threshold: float) -> int:
    """Smallest Chebyshev distance from ``center`` beyond which ``change`` (H, W) stays below
    ``threshold`` times its peak (0 when nothing changed)."""
    peak = float(change.max())
    if peak <= 0:
        return 0
    h, w = change.shape
    ys = torch.arange(h).view(-1, 1) - center[0]
    xs = torch.arange(w).view(1, -1) - center[1]
    dist = torch.maximum(ys.abs(), xs.abs())
    far = dist[change > threshold * peak]
    return int(far.max()) if far.numel() else 0


def _test_image(model: AutoencoderBase, side: int) -> tuple[torch.Tensor, int]:
    """The image a reach is measured on and the index of its centre latent pixel (on both axes).

    The image is a natural one (scikit-image's astronaut, bundled with the package's
    dependencies), (1, 3, S, S) in [-1, 1] on the model's device and dtype, where S is ``side``
    rounded down to a multiple of the compression ratio f (at least f).
    """
    import numpy as np
    from PIL import Image
    from skimage import data

    f = model.spatial_compression_ratio
    side = max(f, side // f * f)
    im = Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    return x.to(model.device, model.dtype), side // f // 2


@torch.inference_mode()
def decoder_reach(model: AutoencoderBase, side: int = 256, threshold: float = 0.01) -> int:
    """Radius in output pixels of what one latent pixel changes in the decoded image.

    Args:
        model: a trained autoencoder (eval mode; its device and dtype are used).
        side: image side of the measurement (a multiple of the compression ratio; the latent
            grid is ``side / f`` square and the perturbed pixel is its centre).
        threshold: fraction of the peak change counted as "reached".
    Returns:
        the radius in pixels (at least the compression ratio f).
    """
    f = model.spatial_compression_ratio
    x, c = _test_image(model, side)
    z = model.encode(x).mode()
    dz = torch.zeros_like(z)
    dz[:, :, c, c] = z.std()
    change = (model.decode(z + dz) - model.decode(z)).abs().float().mean(dim=(0, 1))  # (H, W)
    center = (c * f + f // 2, c * f + f // 2)
    return max(f, _radius(change, center, threshold))


@torch.inference_mode()
def encoder_reach(model: AutoencoderBase, side: int = 256, threshold: float = 0.01) -> int:
    """Radius in pixels of the image region whose change moves a latent pixel (one f x f block
    of the image is perturbed; the latent change's radius in latent pixels, times f)."""
    f = model.spatial_compression_ratio
    x, c = _test_image(model, side)
    dx = torch.zeros_like(x)
    dx[:, :, c * f : (c + 1) * f, c * f : (c + 1) * f] = 0.5
    change = (model.encode(x + dx).mode() - model.encode(x).mode()).abs().float().mean(dim=(0, 1))
    return f * max(1, _radius(change, (c, c), threshold))


def overlap_for(reach: int, tile: int, f: int) -> int:
    """The tile overlap that hides a ``reach``-pixel band of missing context: twice the reach (the
    blend ramps each tile's compromised band out), rounded up to a multiple of f, at most half a
    tile."""
    overlap = -(-2 * reach // f) * f
    return max(f, min(overlap, tile // 2 // f * f))

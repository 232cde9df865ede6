"""Reference reconstructions: what trivial per-patch codes of a latent's size achieve.

An autoencoder with spatial compression f and C latent channels keeps C numbers per f x f
patch. Two codes that need no training set the scale of a reconstruction score:

- ``patch_mean_reconstruction``: every f x f patch replaced by its mean colour (3 numbers);
- ``patch_pca_reconstruction``: every patch projected on the first C principal components of
  training patches (C numbers: the best *linear* per-patch code of the latent's size).

Both return uint8 images, rounded as the metrics' quantisation does; score them with the same
PSNR / SSIM as the models (``psnr_per_image``). A model above the first has learned more than
patch colour; the second is what a per-patch linear autoencoder reaches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .image_fd import fit_pca

__all__ = ["from_patches", "patch_mean_reconstruction", "patch_pca_reconstruction", "to_patches"]


def to_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N H/p W/p, 3 p^2) float rows, channel-major within a row."""
    return F.unfold(x.float(), kernel_size=p, stride=p).transpose(1, 2).reshape(-1, x.shape[1] * p * p)


def from_patches(patches: torch.Tensor, shape: torch.Size | tuple[int, ...], p: int) -> torch.Tensor:
    """Inverse of ``to_patches``, rounded and clamped to uint8."""
    n, c, h, w = shape
    cols = patches.reshape(n, (h // p) * (w // p), c * p * p).transpose(1, 2)
    return F.fold(cols, (h, w), kernel_size=p, stride=p).round().clamp(0, 255).to(torch.uint8)


def patch_mean_reconstruction(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 with every ``patch`` x ``patch`` block replaced by its mean colour."""
    v = to_patches(images, patch)
    means = v.view(v.shape[0], 3, -1).mean(-1, keepdim=True).expand(-1, -1, patch * patch)
    return from_patches(means.reshape(v.shape), images.shape, patch)


def patch_pca_reconstruction(
    train: torch.Tensor, images: torch.Tensor, patch: int, components: int
) -> torch.Tensor:
    """(N, 3, H, W) uint8 with every patch projected on the first ``components`` principal axes
    of the patches of ``train`` ((M, 3, H', W') uint8, the same patch grid rule)."""
    mean, axes = fit_pca(to_patches(train, patch), components)
    v = to_patches(images, patch).double()
    return from_patches(((v - mean) @ axes @ axes.T + mean).float(), images.shape, patch)

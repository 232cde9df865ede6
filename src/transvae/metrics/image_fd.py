"""A weight-free image Frechet distance: images of different tokenizers compared in one space.

FID needs the Inception weights; where they cannot be had (offline machines, CI), this is a
documented stand-in that needs nothing but the training photos. Features are **thumbnails
projected on a fixed PCA basis**:

1. every image (uint8, any size with the same aspect ratio) is area-averaged to ``size`` x
   ``size`` (default 16: colour layout and coarse structure; detail finer than 1/16 of the
   image is not seen), scaled to [0, 1] and flattened to 3 size^2 numbers;
2. those vectors are projected on the first ``components`` principal axes (default 64) of the
   thumbnails of a fixed set of training photos (``fit_thumbnail_basis``; deterministic, an
   SVD), after subtracting their mean;
3. ``image_frechet_distance`` fits a Gaussian to each set's projected features and returns the
   Frechet distance ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

The basis does not depend on the images being scored, so every tokenizer's generated samples,
its reconstructions and the held-out photos are compared in the same space. Each set needs more
images than ``components``. It measures how well generated images match real ones in colour
and layout statistics; it is not FID (no semantics) and its values are not comparable to FID's.

    basis = fit_thumbnail_basis(train_u8)                   # (N, 3, H, W) uint8 training photos
    image_frechet_distance(heldout_u8, generated_u8, basis)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .frechet import frechet_distance

__all__ = ["ThumbnailBasis", "fit_pca", "fit_thumbnail_basis", "image_frechet_distance", "thumbnail_features"]


@dataclass
class ThumbnailBasis:
    """The fixed feature space: thumbnail side, the training thumbnails' mean (D,) and the first
    principal axes (D, K), D = 3 size^2."""

    size: int
    mean: torch.Tensor
    axes: torch.Tensor
    fitted_on: int = 0  # how many images the basis was fitted on

    def describe(self) -> dict:
        """``size``, ``components`` and ``fitted_on``, for a results file."""
        return {"size": self.size, "components": self.axes.shape[1], "fitted_on": int(self.fitted_on)}


def fit_pca(rows: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), first ``components`` principal axes (D, K)) of (N, D) rows, in float64."""
    rows = rows.double()
    mean = rows.mean(0)
    _, _, vh = torch.linalg.svd(rows - mean, full_matrices=False)
    return mean, vh[:components].T


def thumbnail_features(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3 size^2) float64 thumbnails in [0, 1] (area average)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    small = F.adaptive_avg_pool2d(images.double() / 255.0, size)
    return small.flatten(1)


def fit_thumbnail_basis(images: torch.Tensor, size: int = 16, components: int = 64) -> ThumbnailBasis:
    """The feature space of ``image_frechet_distance``, fitted on (N, 3, H, W) uint8 training photos."""
    feats = thumbnail_features(images, size)
    if components > min(feats.shape):
        raise ValueError(f"{components} components need at least that many images and 3 x {size}^2 >= it")
    mean, axes = fit_pca(feats, components)
    return ThumbnailBasis(size, mean, axes, fitted_on=images.shape[0])


def _gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


def image_frechet_distance(real: torch.Tensor, fake: torch.Tensor, basis: ThumbnailBasis) -> float:
    """Frechet distance between two image sets in the fixed thumbnail-PCA space (see the module).

    Args:
        real, fake: (N, 3, H, W) and (M, 3, H', W') uint8 images (the same aspect ratio).
        basis: from ``fit_thumbnail_basis`` on training photos (the same for every set compared).
    Returns:
        the distance (>= 0; 0 for identical sets).
    Raises:
        ValueError: a set has no more images than the basis has components.
    """
    k = basis.axes.shape[1]
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"each set needs more than {k} images, got {real.shape[0]} and {fake.shape[0]}")
    a, b = ((thumbnail_features(x, basis.size) - basis.mean) @ basis.axes for x in (real, fake))
    return max(frechet_distance(*_gaussian(a), *_gaussian(b)), 0.0)

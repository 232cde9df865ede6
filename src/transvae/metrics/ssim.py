"""SSIM per image pair on uint8 images, the set value being the mean over images.

The Gaussian-window SSIM of Wang et al. (11x11, sigma 1.5, K1 0.01, K2 0.03, data range 255),
averaged over channels and over the "valid" part of the SSIM map, i.e. without the 5-pixel
border whose windows would reach outside the image. This is scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
channel_axis=-1, data_range=255)`` and the original MATLAB ``ssim.m``. The SSIM map itself comes
from torchmetrics; torchmetrics' own mean includes the reflect-padded border, which differs from
scikit-image by up to ~1e-2, so the border is cropped before averaging.
"""

from __future__ import annotations

import torch

from .base import PairMetric, check_pair, register_metric

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): the 11x11 window of torchmetrics and scikit-image


@torch.no_grad()
def ssim_per_image(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Gaussian-window SSIM of each image pair on uint8 images (see the module docstring).

    Args:
        target: (B, 3, H, W) uint8 reference images, H and W > 10.
        pred: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B,) float64 mean SSIM over channels and the valid (border-cropped) pixels.
    """
    # imported here: torchmetrics takes seconds to import and most users of this package never need it
    from torchmetrics.functional.image import structural_similarity_index_measure

    check_pair(target, pred)
    r = SSIM_RADIUS
    if min(target.shape[-2:]) <= 2 * r:
        raise ValueError(
            f"SSIM needs images larger than {2 * r + 1}x{2 * r + 1}, got {tuple(target.shape[-2:])}"
        )
    _, ssim_map = structural_similarity_index_measure(
        pred.double(),
        target.double(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        data_range=255.0,
        k1=0.01,
        k2=0.03,
        return_full_image=True,
    )  # (B, 3, H, W)
    return ssim_map[..., r:-r, r:-r].flatten(1).mean(1)


@register_metric("ssim")
class SSIM(PairMetric):
    """Mean per-image SSIM; images of 10 px or less (no valid window) score NaN, and so does the mean."""

    label = "SSIM ↑"
    protocol = (
        "mean over images of Gaussian-window SSIM (11x11, sigma 1.5, K1 0.01, K2 0.03, data range 255), "
        "averaged over channels and the valid region (5-pixel border excluded), as scikit-image"
    )

    def score(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        if min(target.shape[-2:]) <= 2 * SSIM_RADIUS:
            return torch.full((len(target),), float("nan"), dtype=torch.float64)
        return ssim_per_image(target, pred)

"""PSNR per image pair on uint8 images, the set value being the mean over images.

PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels of one image: scikit-image's
``peak_signal_noise_ratio(a, b, data_range=255)``. Identical images give +inf; the mean is then
+inf too, so the results also say how many images were identical and the mean of the others.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import PairMetric, _std, check_pair, register_metric


@torch.no_grad()
def psnr_per_image(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """PSNR of each image pair in dB, on uint8 images (data range 255).

    Args:
        target: (B, 3, H, W) uint8 reference images.
        pred: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B,) float64; +inf where the two images are identical.
    """
    check_pair(target, pred)
    mse = (target.double() - pred.double()).pow(2).flatten(1).mean(1)  # (B,)
    # 10 log10(255^2 / 0) = +inf on purpose: callers report identical images explicitly
    return 10.0 * torch.log10(255.0**2 / mse)


@register_metric("psnr")
class PSNR(PairMetric):
    """Mean per-image PSNR (dB); identical pairs (+inf) are counted and left out of the finite mean."""

    label = "PSNR (dB) ↑"
    fmt = "{:.2f}"
    protocol = (
        "mean over images of 10 log10(255^2 / MSE), MSE over all pixels and channels of the uint8 image"
    )

    def __init__(self) -> None:
        super().__init__()
        for s in ("finite_total", "finite_sq", "finite_count"):
            self.add_state(s, torch.zeros((), dtype=torch.float64))

    def score(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return psnr_per_image(target, pred)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        v = super().update(target, pred)
        self._accumulate(v[torch.isfinite(v)], ("finite_total", "finite_sq", "finite_count"))
        return v

    def compute(self) -> dict[str, Any]:
        """``psnr`` (+inf if any pair is identical), ``psnr_num_identical``, ``psnr_finite_mean``,
        ``psnr_std`` (over the finite values; None when there are none)."""
        n, nf = int(self.count), int(self.finite_count)
        mean = float(self.total) / n if n else float("nan")
        fmean = float(self.finite_total) / nf if nf else None
        return {
            "psnr": mean,
            "psnr_num_identical": n - nf,
            "psnr_finite_mean": fmean,
            "psnr_std": _std(float(self.finite_sq), fmean, nf) if nf else None,
        }

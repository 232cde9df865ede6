"""Latent Frechet distance (lFD): a download-free proxy of FID that ranks generator checkpoints.

FID compares Inception features of generated and real images; its weights cannot always be had
(offline machines, CI). lFD compares generated latents with held-out real latents directly, in
the tokenizer's normalised latent space (``LatentStats.normalize``: zero mean, unit variance per
channel), so it needs no network at all.

The feature is the **k x k patch** of the latent grid (default 2 x 2, every position, stride 1):
a vector of ``C * k * k`` values (128 for f16d32). Each latent contributes
``(h - k + 1) (w - k + 1)`` feature vectors, so a few dozen latents already give far more vectors
than dimensions and the covariance is full rank. A whole-latent feature (C h w = 8192 values at
f16d32 / 256 px) would need more than 8192 samples before its covariance is even invertible.
Patches see the per-position channel statistics and the correlations between neighbours, which
is what a poorly trained generator gets wrong first; they do not see global layout.

The distance is ``transvae.metrics.frechet``'s, over float64 running sums. Like FID, lFD is
biased upwards with fewer samples: compare values computed with the same numbers of latents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..utils.memory import available_bytes, format_bytes
from .base import MetricInputError, register_metric
from .frechet import FrechetDistance

DEFAULT_PATCH = 2


def latent_patches(z: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """Every ``patch`` x ``patch`` window of a latent grid as a row.

    Args:
        z: (B, C, h, w) latents, h and w >= ``patch``.
        patch: window side.
    Returns:
        (B * (h - patch + 1) * (w - patch + 1), C * patch * patch) float64.
    """
    if z.ndim != 4 or min(z.shape[-2:]) < patch:
        raise ValueError(f"expected (B, C, h, w) latents with h, w >= {patch}, got {tuple(z.shape)}")
    cols = F.unfold(z.double(), kernel_size=patch)  # (B, C*k*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@register_metric("latent-fd")
class LatentFrechetDistance(FrechetDistance):
    """Streaming lFD between generated and real latents, both normalised the same way.

    ``update({"latents": z}, real)`` (or ``update_real(z)`` / ``update_fake(z)``) with (B, C, h, w)
    latents; ``compute()`` once.

    Args:
        channels: latent channels C (None: taken from the first latents).
        latent_fd_patch: patch side k (features have C k^2 dimensions).
        device: where the running sums live.
    """

    needs = frozenset({"latents", "reference_latents"})
    features = ("latents",)
    unit = "latents"
    label = "latent Fréchet distance (lFD) ↓"
    protocol = "Frechet distance between every k x k patch of the normalised generated and real latents"

    def __init__(
        self,
        channels: int | None = None,
        latent_fd_patch: int = DEFAULT_PATCH,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        if latent_fd_patch < 1:
            raise ValueError(f"patch must be >= 1, got {latent_fd_patch}")
        self.channels, self.patch = channels, latent_fd_patch
        self.device = torch.device(device)

    @property
    def dim(self) -> int | None:
        """Feature dimensions C k^2 (None until the channels are known)."""
        return None if self.channels is None else self.channels * self.patch * self.patch

    @property
    def min_rows(self) -> int:
        return (self.dim or 0) + 1  # a full-rank covariance needs more rows than dimensions

    def shortfall(self) -> str:
        return f"more than {self.dim} patch vectors per set (C x {self.patch}^2)"

    def check(self, sizes: Mapping[str, Any]) -> None:
        """Refuse a patch larger than either latent grid, different channel counts, and statistics
        that cannot fit in memory, before anything is allocated."""
        shapes = [tuple(s) for s in (sizes.get("latent_shape"), sizes.get("reference_latent_shape")) if s]
        for _, h, w in shapes:
            if self.patch > min(h, w):
                raise MetricInputError(
                    f"--latent-fd-patch {self.patch} is larger than the {h}x{w} latent grid: use at most {min(h, w)}"
                )
        if len({s[0] for s in shapes}) > 1:
            raise MetricInputError(
                f"generated latents have {shapes[0][0]} channels, the reference latents {shapes[1][0]}"
            )
        if shapes:
            dim = shapes[0][0] * self.patch**2
            need = 2 * dim * dim * 8  # two float64 D x D outer-product sums
            free = available_bytes(self.device)
            if free is not None and need > free // 2:
                raise MetricInputError(
                    f"--latent-fd-patch {self.patch} on {shapes[0][0]}-channel latents needs two {dim}x{dim} "
                    f"float64 covariances ({format_bytes(need)}), more than half the {format_bytes(free)} free "
                    f"on {self.device}: use a smaller --latent-fd-patch"
                )

    def rows(self, z: torch.Tensor) -> torch.Tensor:
        if self.channels is None and z.ndim == 4:
            self.channels = z.shape[1]
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, h, w) latents, got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("latents contain NaN or Inf")
        return latent_patches(z, self.patch).to(self.device)

    def update_real(self, z: torch.Tensor) -> None:
        """Add held-out real latents, (B, C, h, w) normalised."""
        self.update({"latents": z}, real=True)

    def update_fake(self, z: torch.Tensor) -> None:
        """Add generated latents, (B, C, h, w) normalised."""
        self.update({"latents": z}, real=False)

    @property
    def num_rows(self) -> tuple[int, int]:
        """(real, generated) feature vectors seen so far."""
        return self.real.count, self.fake.count

    def reset_fake(self) -> None:
        """Forget the generated side only (score the next checkpoint against the same real set)."""
        self.fake.reset()

    def compute(self) -> dict[str, Any]:
        """``{"latent_fd": distance, "latent_fd_patch": k}``.

        Raises:
            NotEnoughDataError: a set has no more patch vectors than dimensions.
        """
        return {**super().compute(), "latent_fd_patch": self.patch}

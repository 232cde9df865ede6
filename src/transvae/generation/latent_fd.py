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

The Frechet distance itself is torchmetrics' (the one FID uses): ``||mu_r - mu_g||^2 + Tr(S_r +
S_g - 2 (S_r S_g)^(1/2))`` over float64 running sums. Like FID, lFD is biased upwards with fewer
samples: compare values computed with the same numbers of latents.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_PATCH = 2


class _Rows(nn.Module):
    """Identity "feature network": the rows given to the metric already are the features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


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


class LatentFrechetDistance:
    """Streaming lFD: ``update_real`` / ``update_fake`` with normalised latents, ``compute`` once.

    Args:
        channels: latent channels C.
        patch: patch side k (features have C k^2 dimensions).
        device: where the running sums live.
    """

    def __init__(self, channels: int, patch: int = DEFAULT_PATCH, device: torch.device | str = "cpu"):
        from torchmetrics.image.fid import FrechetInceptionDistance

        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.channels, self.patch = channels, patch
        self.dim = channels * patch * patch
        # sync_on_compute=False: the caller decides which process computes (no hidden collectives)
        self.metric = FrechetInceptionDistance(feature=_Rows(self.dim), sync_on_compute=False).to(device)
        self.device = torch.device(device)

    def _rows(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, h, w) latents, got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("latents contain NaN or Inf")
        return latent_patches(z, self.patch).to(self.device)

    @torch.no_grad()
    def update_real(self, z: torch.Tensor) -> None:
        """Add held-out real latents, (B, C, h, w) normalised."""
        self.metric.update(self._rows(z), real=True)

    @torch.no_grad()
    def update_fake(self, z: torch.Tensor) -> None:
        """Add generated latents, (B, C, h, w) normalised."""
        self.metric.update(self._rows(z), real=False)

    @property
    def num_rows(self) -> tuple[int, int]:
        """(real, generated) feature vectors seen so far."""
        m = self.metric
        return int(m.real_features_num_samples), int(m.fake_features_num_samples)

    def compute(self) -> float:
        """The Frechet distance between the two sets (each needs more rows than dimensions)."""
        real, fake = self.num_rows
        if min(real, fake) <= self.dim:
            raise ValueError(
                f"lFD needs more than {self.dim} patch vectors per set (C x {self.patch}^2), got "
                f"{real} real and {fake} generated: use more latents"
            )
        return float(self.metric.compute().double().clamp_min(0.0))

    def reset_fake(self) -> None:
        """Forget the generated side only (score the next checkpoint against the same real set)."""
        m = self.metric
        m.fake_features_sum.zero_()
        m.fake_features_cov_sum.zero_()
        m.fake_features_num_samples.zero_()

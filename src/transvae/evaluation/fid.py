"""FID between two image sets: reconstruction FID (originals vs reconstructions) and generation FID.

The metric is torchmetrics' ``FrechetInceptionDistance``: features are accumulated as float64
sums and outer-product sums over the whole set (never per batch), and the Fréchet distance
||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) is computed once at the end.

The feature network is the standard FID InceptionV3 (the TF "pt_inception-2015-12-05" weights
ported by torch-fidelity / pytorch-fid, 2048-d pool features; uint8 images are resized to
299x299 inside the network, as in torch-fidelity). Any ``nn.Module`` mapping uint8
(B, 3, H, W) images to (B, D) features can replace it (tests use small random networks).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from .weights import inception_checkpoint, unusable_inception


class FIDMetric:
    """Streaming rFID: ``update(real_uint8, fake_uint8)`` per batch, ``compute()`` once.

    Args:
        feature_net: custom feature extractor (uint8 (B, 3, H, W) -> (B, D)); None for InceptionV3.
        weights_path: local InceptionV3 weights (CLI ``--fid-weights``); None looks in the torch
            hub cache and downloads if missing.
        device: where features are computed.
    Raises:
        WeightsUnavailableError: InceptionV3 weights neither local nor downloadable, or unreadable.
    """

    def __init__(
        self,
        feature_net: nn.Module | None = None,
        weights_path: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
    ):
        from torchmetrics.image.fid import FrechetInceptionDistance  # slow import, only when needed

        if feature_net is None:
            path = inception_checkpoint(weights_path)
            try:
                self.metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
            except (RuntimeError, KeyError, OSError, ValueError) as e:
                raise unusable_inception(path, e) from e
            self.source = str(path)
        else:
            self.metric = FrechetInceptionDistance(feature=feature_net, normalize=False)
            self.source = f"custom feature network {type(feature_net).__name__}"
        self.metric = self.metric.to(device or "cpu")
        self.device = torch.device(device or "cpu")

    def reset(self) -> None:
        """Forget all features (real and fake), e.g. before the next resolution."""
        self.metric.reset()
        # reset_real_features=True is the default, but be explicit: both sides change with resolution
        self.metric.real_features_sum.zero_()
        self.metric.real_features_cov_sum.zero_()
        self.metric.real_features_num_samples.zero_()

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Add one batch of originals and reconstructions, both (B, 3, H, W) uint8."""
        self.update_real(real)
        self.update_fake(fake)

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        """Add reference images only, (B, 3, H, W) uint8 (sets of different sizes, e.g. generation)."""
        if images.dtype != torch.uint8:
            raise ValueError("FID expects uint8 images")
        self.metric.update(images.to(self.device), real=True)

    @torch.no_grad()
    def update_fake(self, images: torch.Tensor) -> None:
        """Add generated / reconstructed images only, (B, 3, H, W) uint8."""
        if images.dtype != torch.uint8:
            raise ValueError("FID expects uint8 images")
        self.metric.update(images.to(self.device), real=False)

    def compute(self) -> float:
        """rFID over everything added since the last reset (needs at least 2 images)."""
        return float(self.metric.compute().double().clamp_min(0.0))

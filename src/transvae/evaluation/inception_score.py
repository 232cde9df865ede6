"""Inception Score (IS) of a generated image set, with the FID network's weights.

torchmetrics' ``InceptionScore`` over the logits of the same TF-ported InceptionV3 that FID
uses (``logits_unbiased``, 1008 classes, as torch-fidelity and the ADM evaluator), 10 splits.
The weights come from the same places as FID's (``--fid-weights PATH``, the torch hub cache, a
download); any ``nn.Module`` mapping uint8 (B, 3, H, W) images to (B, K) logits can replace
the network (tests use small random networks).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn as nn

from .weights import inception_checkpoint, unusable_inception


class ISMetric:
    """Streaming IS: ``update(uint8 images)`` per batch, ``compute()`` -> (mean, std) over splits.

    Args:
        feature_net: custom logits network (uint8 (B, 3, H, W) -> (B, K)); None for InceptionV3.
        weights_path: local InceptionV3 weights (``--fid-weights``); None: hub cache or download.
        splits: IS splits (10 as in the original and the ADM evaluator).
        device: where the network runs.
        seed: seed of the shuffle torchmetrics applies before splitting (a fixed number).
    Raises:
        WeightsUnavailableError: InceptionV3 weights neither local nor downloadable, or unreadable.
    """

    def __init__(
        self,
        feature_net: nn.Module | None = None,
        weights_path: str | os.PathLike | None = None,
        splits: int = 10,
        device: torch.device | str | None = None,
        seed: int = 0,
    ):
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.image.inception import InceptionScore

        if feature_net is None:
            path = inception_checkpoint(weights_path)
            try:
                feature_net = NoTrainInceptionV3(
                    name="inception-v3-compat",
                    features_list=["logits_unbiased"],
                    feature_extractor_weights_path=str(path),
                )
            except (RuntimeError, KeyError, OSError, ValueError) as e:
                raise unusable_inception(path, e) from e
            self.source = str(path)
        else:
            self.source = f"custom feature network {type(feature_net).__name__}"
        with warnings.catch_warnings():  # "will save all extracted features": 1008 floats per image
            warnings.simplefilter("ignore", UserWarning)
            self.metric = InceptionScore(feature=feature_net, splits=splits, sync_on_compute=False)
        self.metric = self.metric.to(device or "cpu")
        self.device = torch.device(device or "cpu")
        self.seed = seed

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        """Add generated images, (B, 3, H, W) uint8."""
        if images.dtype != torch.uint8:
            raise ValueError("IS expects uint8 images")
        self.metric.update(images.to(self.device))

    def compute(self) -> tuple[float, float]:
        """(mean, std) of the score over the splits (needs at least ``splits`` images)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, std = self.metric.compute()
        return float(mean), float(std)

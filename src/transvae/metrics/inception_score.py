"""Inception Score (Salimans et al., 2016) of a generated image set.

torchmetrics' ``InceptionScore`` over the logits of the FID InceptionV3 (``logits_unbiased``,
1008 classes, as torch-fidelity and the ADM evaluator; ``transvae.metrics.features``), 10
splits of the shuffled set (the shuffle seeded), reported as the mean and the standard deviation
over the splits.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from .base import MetricInputError, NotEnoughDataError, SetMetric, register_metric


@register_metric("is")
class InceptionScore(SetMetric):
    """Streaming IS of the samples.

    Args:
        is_splits: IS splits (10 as in the original and the ADM evaluator).
        seed: seed of the shuffle applied before splitting.
    """

    needs = frozenset({"samples"})
    network = "inception"
    features = ("logits_unbiased",)
    label = "Inception Score ↑"
    fmt = "{:.3f}"
    protocol = (
        "exp(E KL(p(y|x) || p(y))) over the 1008 InceptionV3 logits of the samples, mean over 10 splits"
    )

    def __init__(self, is_splits: int = 10, seed: int = 0):
        from torchmetrics.image.inception import InceptionScore as _TorchmetricsIS

        super().__init__()
        self.splits, self.seed = is_splits, seed
        with warnings.catch_warnings():  # "will save all extracted features": 1008 floats per image
            warnings.simplefilter("ignore", UserWarning)
            # the features given to update() are the logits already: the "network" is the identity
            self.metric = _TorchmetricsIS(feature=nn.Identity(), splits=is_splits, sync_on_compute=False)

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.metric.features)

    def check(self, sizes: Mapping[str, Any]) -> None:
        n = sizes.get("samples")
        if n is not None and n < self.splits:
            raise MetricInputError(f"is needs at least {self.splits} samples (one per split), got {n}")

    @torch.no_grad()
    def update(self, features: Mapping[str, torch.Tensor], real: bool) -> None:
        if real:
            raise ValueError("the Inception Score reads generated samples only")
        self.metric.update(features["logits_unbiased"].float())

    def reset(self) -> None:
        super().reset()
        self.metric.reset()

    def compute(self) -> dict[str, Any]:
        """``{"is": mean, "is_std": std}`` over the splits.

        Raises:
            NotEnoughDataError: fewer samples than splits.
        """
        if self.count < self.splits:
            raise NotEnoughDataError(f"is needs at least {self.splits} samples, got {self.count}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, std = self.metric.compute()
        return {"is": float(mean), "is_std": float(std)}

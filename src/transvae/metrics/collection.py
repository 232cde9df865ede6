"""Feeding a list of metrics: each input to the metrics that need it, each feature network run once.

    metrics = build_metrics(["fid", "sfid", "is", "precision"], is_splits=10)
    mc = MetricCollection(metrics, feature_networks(metrics, {"inception": weights}), device="cuda")
    for x in sample_batches: mc.update_images(x, real=False)
    for x in reference_batches: mc.update_images(x, real=True)
    results = mc.compute()    # {"fid": ..., "sfid": ..., "is": ..., "is_std": ..., "precision": ...}

Inputs (``transvae.metrics.base.INPUTS``) and the methods that take them:

- ``update_pairs(originals, reconstructions)``: every metric that needs ``pairs``; per-image
  metrics return their values, set metrics (rFID) get the features of both sides;
- ``update_images(images, real)``: set metrics that need ``reference`` (real) / ``samples``;
- ``update_latents(z, real)``: set metrics that need ``reference_latents`` / ``latents``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from .base import Metric, NotEnoughDataError, PairMetric, SetMetric


class MetricCollection:
    """Metrics and the feature networks they read.

    Args:
        metrics: metric instances (``build_metrics``).
        networks: feature networks by name (``feature_networks``); every ``network`` that a set
            metric declares must be here, unless it reads latents.
        device: where images go before a feature network sees them.
    """

    def __init__(
        self,
        metrics: Sequence[Metric],
        networks: dict[str, nn.Module] | None = None,
        device: torch.device | str = "cpu",
    ):
        self.metrics = list(metrics)
        self.networks = dict(networks or {})
        self.device = torch.device(device)
        self.counts: Counter[str] = Counter()  # items added per input name
        missing = {m.network for m in self.sets() if m.network} - set(self.networks)
        if missing:
            raise ValueError(f"no feature network given for {sorted(missing)}")

    def pairs(self) -> list[PairMetric]:
        return [m for m in self.metrics if isinstance(m, PairMetric)]

    def sets(self, need: str | None = None) -> list[SetMetric]:
        """The set metrics (those that need ``need``, if given)."""
        return [m for m in self.metrics if isinstance(m, SetMetric) and (need is None or need in m.needs)]

    def _features(self, images: torch.Tensor, metrics: list[SetMetric]) -> dict[str, torch.Tensor]:
        """Run each network that ``metrics`` read once on ``images``, for the union of their
        features; a metric without a network reads the uint8 images themselves (``"images"``)."""
        wanted: dict[str, set[str]] = {}
        for m in metrics:
            if m.network is not None:
                wanted.setdefault(m.network, set()).update(m.features)
        out: dict[str, torch.Tensor] = {"images": images}
        with torch.no_grad():
            for name, feats in wanted.items():
                out.update(self.networks[name](images.to(self.device), sorted(feats)))
        return out

    def update_pairs(self, target: torch.Tensor, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add a batch of (originals, reconstructions), uint8 (B, 3, H, W) each.

        Returns:
            the per-image (B,) values of each per-image metric, by name.
        """
        scores = {m.name: m.update(target, pred) for m in self.pairs()}
        sets = self.sets("pairs")
        if sets:
            for images, real in ((target, True), (pred, False)):
                feats = self._features(images, sets)
                for m in sets:
                    m.update(feats, real)
        self.counts["pairs"] += len(target)
        return scores

    def update_images(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of reference (``real``) or generated images, uint8 (B, 3, H, W)."""
        role = "reference" if real else "samples"
        sets = self.sets(role)
        if sets:
            feats = self._features(images, sets)
            for m in sets:
                m.update(feats, real)
        self.counts[role] += len(images)

    def update_latents(self, z: torch.Tensor, real: bool) -> None:
        """Add a batch of real (``real``) or generated latents, (B, C, h, w) normalised."""
        role = "reference_latents" if real else "latents"
        for m in self.sets(role):
            m.update({"latents": z}, real)
        self.counts[role] += len(z)

    def reset(self) -> None:
        for m in self.metrics:
            m.reset()
        self.counts.clear()

    def compute(self, strict: bool = True) -> dict[str, Any]:
        """Every metric's results, merged.

        Args:
            strict: raise ``NotEnoughDataError`` for a metric that is not defined on what was
                added; False reports it as ``{key: None}`` instead.
        """
        out: dict[str, Any] = {}
        for m in self.metrics:
            try:
                out.update(m.compute())
            except NotEnoughDataError:
                if strict:
                    raise
                out[m.key] = None
        return out

    def _network_attr(self, m: Metric, attr: str) -> str | None:
        """``attr`` (``source``, ``pipeline``) of the network ``m`` computes on, or None."""
        net = self.networks.get(m.network) if m.network else None
        return getattr(net, attr, None)

    def protocols(self) -> dict[str, str]:
        """How each metric is computed, with the source of its network's weights."""
        out = {}
        for m in self.metrics:
            source, pipeline = self._network_attr(m, "source"), self._network_attr(m, "pipeline")
            out[m.name] = (
                m.protocol + (f"; {pipeline}" if pipeline else "") + (f"; weights {source}" if source else "")
            )
        return out

    def weights_sources(self) -> dict[str, str]:
        """Where each metric's pretrained network came from (metrics without one are absent)."""
        sources = {m.name: m.weights_source or self._network_attr(m, "source") for m in self.metrics}
        return {name: source for name, source in sources.items() if source}

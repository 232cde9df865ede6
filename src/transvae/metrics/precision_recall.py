"""Improved precision and recall (Kynkaanniemi et al., 2019), as ADM's evaluator computes them.

Each set of InceptionV3 pool features (2048-d) defines a manifold: the union of balls around its
points, each ball's radius the distance to that point's k-th nearest neighbour in the same set
(k = 3). **Precision** is the fraction of generated samples inside the reference manifold (are
the samples realistic?), **recall** the fraction of reference images inside the samples'
manifold (is the reference's variety covered?).

Differences from ADM's ``ManifoldEstimator``, on purpose: distances are computed in float64 (ADM
first tries float16), so a point right on a ball's border may count differently; the numbers
are otherwise the same definition (squared Euclidean distances, ``<=`` the radius, the point
itself excluded from its own neighbours).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import MetricInputError, NotEnoughDataError, SetMetric, register_metric

BLOCK = 1024  # rows of the distance matrix computed at once


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, D), (m, D) -> (n, m) squared Euclidean distances, float64, clamped at 0."""
    a, b = a.double(), b.double()
    d = a.square().sum(1, keepdim=True) - 2.0 * (a @ b.T) + b.square().sum(1)[None]
    return d.clamp_min_(0.0)


def knn_radii(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Squared distance from each row of ``x`` to its k-th nearest other row.

    Args:
        x: (N, D) features, N > k.
        k: neighbourhood size.
    Returns:
        (N,) float64.
    """
    # the (k+1)-th smallest distance of a row: the row itself is the smallest, at 0
    return torch.cat(
        [
            torch.kthvalue(_sq_distances(x[i : i + BLOCK], x), k + 1, dim=1).values
            for i in range(0, len(x), BLOCK)
        ]
    )


def in_manifold(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each query lies in at least one ball (``points``, squared ``radii``).

    Args:
        queries: (M, D).
        points: (N, D) ball centres.
        radii: (N,) squared radii.
    Returns:
        (M,) bool.
    """
    return torch.cat(
        [
            (_sq_distances(queries[i : i + BLOCK], points) <= radii[None]).any(1)
            for i in range(0, len(queries), BLOCK)
        ]
    )


class _Manifold(SetMetric):
    """Shared by precision and recall: the pool features of both sets, kept whole; the share of
    one set (the queries) that lies in the manifold of the other."""

    needs = frozenset({"samples", "reference"})
    network = "inception"
    features = ("2048",)
    queries_are_samples: bool  # precision: samples in the reference manifold; recall: the converse

    def __init__(self, nearest_k: int = 3):
        super().__init__()
        self.k = nearest_k
        self.add_state("real_features", [], reduce="cat")
        self.add_state("fake_features", [], reduce="cat")

    def check(self, sizes: Mapping[str, Any]) -> None:
        for side in ("samples", "reference"):
            n = sizes.get(side)
            if n is not None and n <= self.k:
                raise MetricInputError(f"{self.name} needs more than k = {self.k} {side}, got {n}")

    @torch.no_grad()
    def update(self, features: Mapping[str, torch.Tensor], real: bool) -> None:
        # the tensor itself is kept (no copy): precision and recall share the batches they are given
        (self.real_features if real else self.fake_features).append(features["2048"])

    def compute(self) -> dict[str, Any]:
        """``{key: fraction}`` of the queries inside the other set's manifold.

        Raises:
            NotEnoughDataError: a set of k images or fewer.
        """
        real = torch.cat(self.real_features) if self.real_features else torch.empty(0, 0)
        fake = torch.cat(self.fake_features).to(real.device) if self.fake_features else torch.empty(0, 0)
        if min(len(real), len(fake)) <= self.k:
            raise NotEnoughDataError(
                f"{self.name} needs more than k = {self.k} images per set, got {len(fake)} samples "
                f"and {len(real)} reference"
            )
        queries, points = (fake, real) if self.queries_are_samples else (real, fake)
        return {self.key: float(in_manifold(queries, points, knn_radii(points, self.k)).double().mean())}


@register_metric("precision")
class Precision(_Manifold):
    """Fraction of samples inside the reference manifold (k-NN balls of the reference images):
    are the samples realistic? ``nearest_k``: k of the k-NN radii (3, as ADM)."""

    label = "precision ↑"
    queries_are_samples = True
    protocol = (
        "fraction of samples within the k=3 nearest-neighbour ball of a reference image (pool features)"
    )


@register_metric("recall")
class Recall(_Manifold):
    """Fraction of reference images inside the samples' manifold (k-NN balls of the samples):
    is the reference's variety covered? ``nearest_k``: k of the k-NN radii (3, as ADM)."""

    label = "recall ↑"
    queries_are_samples = False
    protocol = (
        "fraction of reference images within the k=3 nearest-neighbour ball of a sample (pool features)"
    )

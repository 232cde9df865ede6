"""The Frechet distance between two Gaussians fitted to feature sets: FID, sFID and lFD share it.

    d = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

Each set is kept as float64 running sums (sum and sum of outer products of its feature rows),
accumulated over the whole set, never per batch; the covariances are the unbiased ones (n - 1,
as ``numpy.cov``). ``Tr((S_r S_g)^(1/2))`` is the sum of the square roots of the eigenvalues of
``S_r S_g`` (real and non-negative for two covariance matrices, up to rounding), the same
number SciPy's ``sqrtm`` gives (tests check it against SciPy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .base import NotEnoughDataError, SetMetric


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
    Returns:
        the distance as a float64 number (may be slightly negative by rounding for equal sets).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    trace_sqrt = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    d = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt
    return float(d)


class GaussianStatistics:
    """Running mean and covariance of feature rows, as float64 sums (allocated at the first rows)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None  # (D,)
        self.outer: torch.Tensor | None = None  # (D, D)

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        """Add (N, D) feature rows."""
        rows = rows.double()
        if self.sum is None:
            d = rows.shape[1]
            self.sum = torch.zeros(d, dtype=torch.float64, device=rows.device)
            self.outer = torch.zeros(d, d, dtype=torch.float64, device=rows.device)
        elif rows.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature rows of {rows.shape[1]} numbers, earlier ones had {self.sum.shape[0]}")
        self.sum += rows.sum(0)
        self.outer += rows.T @ rows
        self.count += rows.shape[0]

    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    def covariance(self) -> torch.Tensor:
        mu = self.mean()
        return (self.outer - self.count * torch.outer(mu, mu)) / (self.count - 1)

    def sync(self, device: torch.device | str | None = None) -> None:
        """Sum the statistics of every process (each must have added rows)."""
        dist = torch.distributed
        for name in ("sum", "outer"):
            t = getattr(self, name).to(device or getattr(self, name).device)
            dist.all_reduce(t)
            setattr(self, name, t)
        n = torch.tensor(self.count, device=device or self.sum.device)
        dist.all_reduce(n)
        self.count = int(n)


class FrechetDistance(SetMetric):
    """Base of the Frechet-distance metrics: one ``GaussianStatistics`` per set.

    Subclasses set ``features`` (the one feature they read) and may override ``rows`` (how a
    batch of features becomes rows) and ``min_rows``.
    """

    unit: ClassVar[str] = "images"
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.real, self.fake = GaussianStatistics(), GaussianStatistics()

    @property
    def min_rows(self) -> int:
        """Rows each set needs for the distance to be defined (2: a covariance needs two)."""
        return 2

    def shortfall(self) -> str:
        """What each set needs, for the error message."""
        return f"at least {self.min_rows} {self.unit} per set"

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) features -> (N, D) rows; by default one row per item."""
        return x.reshape(len(x), -1)

    @torch.no_grad()
    def update(self, features: Mapping[str, torch.Tensor], real: bool) -> None:
        (self.real if real else self.fake).update(self.rows(features[self.features[0]]))

    def reset(self) -> None:
        super().reset()
        self.real.reset()
        self.fake.reset()

    def sync(self, device: torch.device | str | None = None) -> None:
        super().sync(device)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            self.real.sync(device)
            self.fake.sync(device)

    def compute(self) -> dict[str, Any]:
        """``{key: distance}`` (clamped at 0) between everything added to each side.

        Raises:
            NotEnoughDataError: a side has fewer than ``min_rows`` rows.
        """
        if min(self.real.count, self.fake.count) < self.min_rows:
            raise NotEnoughDataError(
                f"{self.name} needs {self.shortfall()}, got {self.fake.count} generated and "
                f"{self.real.count} real: use more {self.unit}"
            )
        d = frechet_distance(
            self.real.mean(), self.real.covariance(), self.fake.mean(), self.fake.covariance()
        )
        return {self.key: max(d, 0.0)}

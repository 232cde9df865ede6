"""Diagonal Gaussian posterior returned by every autoencoder's ``encode``."""

from __future__ import annotations

import torch

# the log-variance's clamp (LDM / diffusers), so that ``exp`` never overflows
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussianDistribution:
    """Diagonal Gaussian over a latent grid, as in LDM and diffusers.

    Args:
        parameters: (B, 2*C, h, w) tensor, mean and log-variance concatenated on dim 1.
        deterministic: if True, the variance is zero and ``sample()`` returns the mean.

    The log-variance is clamped to [-30, 20] (LDM/diffusers) so that ``exp`` never overflows.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)  # (B, C, h, w) each
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if deterministic:
            self.var = self.std = torch.zeros_like(self.mean)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample z = mean + std * eps, (B, C, h, w)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The mean (deterministic latent), (B, C, h, w)."""
        return self.mean

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> torch.Tensor:
        """KL(self || other) summed over (C, h, w), one value per sample: (B,).

        With ``other=None`` the prior is the standard normal. This is LDM's *sum* convention;
        the training loss divides it by the batch size (see ``losses/reconstruction.py``).
        """
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        dims = list(range(1, self.mean.ndim))
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var
            + self.var / other.var
            - 1.0
            - self.logvar
            + other.logvar,
            dim=dims,
        )

    def nll(self, sample: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``sample`` summed over (C, h, w): (B,)."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        log2pi = torch.log(torch.tensor(2.0 * torch.pi, device=sample.device, dtype=sample.dtype))
        dims = list(range(1, sample.ndim))
        return 0.5 * torch.sum(log2pi + self.logvar + (sample - self.mean).pow(2) / self.var, dim=dims)

"""Rectified flow: the training objective of LightningDiT (SiT's linear interpolant).

With data ``x1`` (normalised latents), noise ``x0 ~ N(0, I)`` and ``t`` in [0, 1]:

    x_t = t * x1 + (1 - t) * x0,        target velocity u = x1 - x0,

so ``t = 0`` is pure noise and ``t = 1`` is data, and sampling integrates ``dx/dt = v(x, t)``
from 0 to 1 (``transvae.generation.sampling``). LightningDiT's two additions (FasterDiT / SD3):

- logit-normal timesteps: ``t = sigmoid(n)``, ``n ~ N(mean, std)`` (0, 1 in its recipes), which
  spends more training on the middle of the path than a uniform ``t``;
- the cosine term (``use_cosine_loss``): ``1 - cos(v, u)`` along the channel axis, averaged over
  positions, added to the mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class RectifiedFlow:
    """The loss of a velocity model on the linear path.

    Attributes:
        logit_normal: sample t from a logit-normal instead of U(0, 1).
        logit_mean, logit_std: parameters of the normal before the sigmoid.
        cosine_loss: add LightningDiT's cosine term to the MSE.
    """

    logit_normal: bool = True
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cosine_loss: bool = True

    def sample_t(
        self,
        n: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        device_rng: bool = False,
    ) -> torch.Tensor:
        """(n,) training times in (0, 1): drawn with ``generator`` (or the global CPU RNG) and
        moved to ``device``, or drawn on ``device`` itself when ``device_rng``."""
        where = device if device_rng else "cpu"
        if self.logit_normal:
            t = torch.sigmoid(
                torch.randn(n, generator=generator, device=where) * self.logit_std + self.logit_mean
            )
        else:
            t = torch.rand(n, generator=generator, device=where)
        return t.to(device)

    @staticmethod
    def interpolate(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Point and velocity on the path.

        Args:
            x1: (B, C, h, w) data; x0: (B, C, h, w) noise; t: (B,) times.
        Returns:
            (x_t, u), both (B, C, h, w).
        """
        tt = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
        return tt * x1 + (1 - tt) * x0, x1 - x0

    def loss(
        self, model: nn.Module, x1: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training loss.

        Args:
            model: ``v = model(x_t, t, y)``.
            x1: (B, C, h, w) normalised latents; y: (B,) labels.
            generator: optional CPU generator for t and the noise (default: the RNG of x1's device).
        Returns:
            (scalar loss, {"mse", "cos"} detached scalars for logging).
        """
        if generator is None:  # the device's own RNG (checkpointed by the training engine)
            x0 = torch.randn_like(x1)
            t = self.sample_t(x1.shape[0], x1.device, device_rng=True)
        else:
            x0 = torch.randn(x1.shape, generator=generator).to(x1.device, x1.dtype)
            t = self.sample_t(x1.shape[0], x1.device, generator)
        xt, u = self.interpolate(x1, x0, t)
        v = model(xt, t, y).float()  # (B, C, h, w)
        mse = (v - u).pow(2).mean()
        logs = {"mse": mse.detach()}
        loss = mse
        if self.cosine_loss:
            cos = (1 - F.cosine_similarity(v, u, dim=1)).mean()  # over the channel axis, per position
            loss = loss + cos
            logs["cos"] = cos.detach()
        return loss, logs

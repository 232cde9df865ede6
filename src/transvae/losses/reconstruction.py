"""Pixel reconstruction (L1) and KL regularisation terms, with the reduction convention used here.

Convention (the same for every term of ``VAELoss``): the objective is LDM's objective divided by
``N = 3 * H * W``, the number of elements of one image. LDM sums the per-pixel L1 (plus the
per-image LPIPS, broadcast over pixels) over all pixels and the KL over all latent elements, and
averages both over the batch. Dividing all of it by ``N`` gives

* L1: mean over all ``B * 3 * H * W`` elements (``F.l1_loss``),
* LPIPS: mean over the batch of the per-image distance,
* KL: ``posterior.kl()`` (summed over latent elements) summed over the batch, divided by
  ``B * N`` -- i.e. LDM's ``torch.sum(kl) / kl.shape[0]`` divided by ``N``,

so the paper's weights (1.0, 1.0, 1e-8) weigh the terms exactly as they do in LDM / VA-VAE code,
at any resolution, while logged values stay in familiar per-pixel units (L1 ~ 0.05).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.distributions import DiagonalGaussianDistribution


def l1_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements, computed in fp32.

    Args:
        x: (B, 3, H, W) target images.
        x_rec: (B, 3, H, W) reconstructions.
    Returns:
        Scalar tensor.
    """
    return F.l1_loss(x_rec.float(), x.float())


def kl_loss(
    posterior: DiagonalGaussianDistribution, image_elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL divergence to the standard normal, reduced as documented in this module.

    Computed in fp32 even when the encoder ran under bf16 autocast (the sum has ~1e4 elements).

    Args:
        posterior: the encoder's posterior, moments (B, 2C, h, w).
        image_elements: ``N = 3 * H * W`` of the input images.
    Returns:
        ``(kl, kl_per_image)``: the term added to the loss (``kl_per_image / N``) and LDM's
        logged value ``sum(kl) / B`` (KL summed over latent elements, averaged over the batch).
    """
    post = DiagonalGaussianDistribution(posterior.parameters.float(), deterministic=posterior.deterministic)
    kl_per_image = post.kl().mean()  # == torch.sum(kl) / B (LDM)
    return kl_per_image / image_elements, kl_per_image

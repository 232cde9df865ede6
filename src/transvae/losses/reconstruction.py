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


# ITU-R BT.601 (full range): the luma row Y and the chroma rows (Cb, Cr) of an RGB difference. A
# change of Y alone is a grey shift (the same in R, G and B); the chroma rows do not see it.
LUMA_ROW = (0.299, 0.587, 0.114)
CHROMA_ROWS = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma_l1_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of the BT.601 chroma (Cb, Cr) of the reconstruction, in fp32.

    A grey shift of every channel costs nothing here; a change of hue or saturation does. Per
    unit of RGB error, a chroma error moves CIEDE2000 about twice as far as a luminance one
    (docs/training.md, "Colour fidelity"); this term lets a run weigh it more than L1 does.

    Args:
        x, x_rec: (B, 3, H, W) target images and reconstructions.
    Returns:
        Scalar tensor: the mean over ``B * 2 * H * W`` chroma elements.
    """
    d = x_rec.float() - x.float()
    rows = torch.tensor(CHROMA_ROWS, dtype=d.dtype, device=d.device)
    return torch.einsum("kc,bchw->bkhw", rows, d).abs().mean()


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

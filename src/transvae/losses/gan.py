"""PatchGAN discriminator, hinge losses and the adaptive loss weight (Esser et al., 2021; LDM).

The discriminator is taming-transformers' / LDM's ``NLayerDiscriminator`` (a pix2pix PatchGAN:
4x4 convolutions, BatchNorm, LeakyReLU 0.2) with its ``weights_init``. ``adaptive_weight`` is
the one function that computes every adaptive weight of ``VAELoss`` (GAN at the decoder's last
layer, VF at the encoder's last layer).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def weights_init(m: nn.Module) -> None:
    """taming/LDM initialisation: conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# LDM's PatchGAN (pix2pix's NLayerDiscriminator): the defaults of ``NLayerDiscriminator`` and of
# ``LossConfig``'s ``disc_layers`` / ``disc_ndf``
DISC_LAYERS = 3
DISC_NDF = 64


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: one logit per overlapping patch.

    Args:
        in_channels: image channels.
        ndf: width of the first layer (doubled per layer, at most 8x).
        n_layers: number of stride-2 layers (3 in the paper: 70x70 receptive field).
    """

    def __init__(self, in_channels: int = 3, ndf: int = DISC_NDF, n_layers: int = DISC_LAYERS):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last one keeps the resolution
            layers += [
                # no bias: BatchNorm follows
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, 1, h, w) patch logits (h ~ H/8 - 2 for 3 layers)."""
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))])`` in fp32."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating (softplus) discriminator loss, LDM's ``vanilla_d_loss``, in fp32."""
    return 0.5 * (F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of both GAN losses (as in LDM): ``-E[D(x_rec)]`` in fp32."""
    return -logits_fake.float().mean()


def _grad_or_zero(loss: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    if not loss.requires_grad:  # e.g. a disabled term, or evaluation under torch.no_grad()
        return torch.zeros_like(param)
    (grad,) = torch.autograd.grad(loss, param, retain_graph=True, allow_unused=True)
    return torch.zeros_like(param) if grad is None else grad


def adaptive_weight(
    nll_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_value: float,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Adaptive weight ``||d nll / d w|| / (||d g / d w|| + eps)``, clamped to [0, max_value], detached.

    Balances a term ``g_loss`` against the reconstruction loss ``nll_loss`` by the size of their
    gradients at one weight tensor ``w`` (taming/LDM for the GAN at the decoder's last layer,
    VA-VAE for the VF loss at the encoder's last layer). Neither loss is back-propagated into
    ``.grad``; the graph is retained for the caller's backward. Without a graph (evaluation
    under ``torch.no_grad()``) the numerator is 0 and so is the weight, as in LDM's eval path.

    Args:
        nll_loss: scalar reconstruction loss.
        g_loss: scalar loss to balance.
        last_layer: the parameter at which gradients are compared (e.g. ``model.last_decoder_layer()``).
        max_value: upper clamp.
        eps: added to the denominator (taming/LDM/VA-VAE: 1e-4).
    Returns:
        Scalar fp32 tensor without grad.
    """
    if not last_layer.requires_grad:
        raise ValueError(
            "adaptive_weight: last_layer does not require grad (is that part of the model frozen?)"
        )
    nll_grad = _grad_or_zero(nll_loss, last_layer).float()
    g_grad = _grad_or_zero(g_loss, last_layer).float()
    weight = torch.linalg.vector_norm(nll_grad) / (torch.linalg.vector_norm(g_grad) + eps)
    return weight.clamp(0.0, max_value).detach()

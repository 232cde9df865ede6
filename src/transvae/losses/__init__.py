"""Training losses of TransVAE (Section 3.1, Appendix D, Appendix F of the paper).

L1 + LPIPS-VGG16 + KL (1.0 / 1.0 / 1e-8), a PatchGAN hinge loss (0.1, adaptive weight at the
decoder's last layer) and VA-VAE's VF alignment loss to DINOv2 (0.1, adaptive weight at the
encoder's last layer). Everything lives outside the autoencoder's state dict. See
``docs/losses.md`` for the reduction convention and how pretrained weights are found.

    >>> from transvae.losses import LossConfig, VAELoss
    >>> loss_fn = VAELoss(LossConfig(lpips_weight=0, vf_weight=0, gan_weight=0), model)
    >>> total, logs = loss_fn(x, model(x), model, step=0, stage=1)
"""

from .alignment import DinoFeatures, VFLoss, vf_terms
from .common import MissingWeightsError
from .composite import LossConfig, VAELoss, to_floats
from .gan import NLayerDiscriminator, adaptive_weight, generator_loss, hinge_d_loss, vanilla_d_loss
from .perceptual import LPIPSLoss
from .reconstruction import kl_loss, l1_loss

__all__ = [
    "DinoFeatures",
    "LPIPSLoss",
    "LossConfig",
    "MissingWeightsError",
    "NLayerDiscriminator",
    "VAELoss",
    "VFLoss",
    "adaptive_weight",
    "generator_loss",
    "hinge_d_loss",
    "kl_loss",
    "l1_loss",
    "to_floats",
    "vanilla_d_loss",
    "vf_terms",
]

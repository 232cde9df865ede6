"""``LossConfig`` and ``VAELoss``: the paper's training objective (Section 3.1, Appendix D).

    stage 1: L1 + LPIPS + KL + VF                 (encoder and decoder train)
    stage 2: L1 + LPIPS + KL + GAN (+ VF, logged)  (encoder frozen, decoder trains)

with weights 1.0 / 1.0 / 1e-8 / 0.1 (GAN, adaptive) / 0.1 (VF, adaptive). The reduction
convention (LDM's objective divided by the number of image elements) is explained in
``losses/reconstruction.py`` and ``docs/losses.md``. With the encoder frozen in stage 2 the VF
and KL terms cannot move any trained weight, so VF is computed for logging only there (``transvae
train``'s stage 2 builds the loss without it: DINOv2 is not loaded for a number).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..models.base import AutoencoderBase, AutoencoderOutput
from ..utils.config import ConfigError, from_dict
from .alignment import DINO_IMAGE_SCALE, DINO_MODEL, MARGIN_COS, MARGIN_DIST, DinoFeatures, VFLoss
from .gan import (
    DISC_LAYERS,
    DISC_NDF,
    NLayerDiscriminator,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    vanilla_d_loss,
)
from .perceptual import LPIPSLoss
from .reconstruction import kl_loss, l1_loss


@dataclass
class LossConfig:
    """Every loss option; each field is the config key ``loss.<field>``.

    Weights (a weight of 0 disables the term and builds / loads nothing for it):
        l1_weight: L1 reconstruction (1.0).
        lpips_weight: LPIPS-VGG16 (1.0).
        kl_weight: KL to N(0, I) (1e-8, LDM's sum convention, see ``reconstruction.py``).
        gan_weight: PatchGAN generator term, times the adaptive weight (0.1).
        vf_weight: VF alignment term, times the adaptive weight (0.1).
        anchor_weight: latent-anchor term of a full fine-tune (0: off): the relative squared
            distance of the posterior means to the starting encoder's (``training.tasks.finetune``).
    GAN:
        disc_start: global step from which the GAN terms are active (stage 2 only).
        disc_layers, disc_ndf: PatchGAN depth and width (3, 64).
        disc_loss: ``"hinge"`` (paper/LDM) or ``"vanilla"``.
        disc_lr_mult: discriminator LR relative to the autoencoder's (for the trainer; LDM: 1).
        adaptive_max: clamp of the GAN adaptive weight, in LDM units (1e4, see ``docs/losses.md``).
    VF (VA-VAE):
        vf_margin_cos, vf_margin_dist: margins (0.5, 0.25).
        vf_cos_weight, vf_dist_weight: weights of the two terms (1.0, 1.0).
        vf_adaptive: use the adaptive weight at the encoder's last layer (VA-VAE: True).
        vf_adaptive_max: clamp of the VF adaptive weight, in LDM units (VA-VAE: 1e8).
        vf_image_scale: DINOv2 input size / image size (224 / 256).
    Pretrained networks:
        lpips_net: LPIPS trunk (``"vgg"`` = VGG16).
        lpips_weights: local torchvision state dict of the trunk (else torch hub cache/download).
        dino_model: timm name of the DINOv2 model.
        dino_weights: local DINOv2 weights file (else Hugging Face cache/download).
        pretrained: False builds randomly initialised LPIPS/DINOv2 stand-ins (tests only).
    """

    l1_weight: float = 1.0
    lpips_weight: float = 1.0
    kl_weight: float = 1e-8
    gan_weight: float = 0.1
    vf_weight: float = 0.1
    anchor_weight: float = 0.0
    disc_start: int = 0
    disc_layers: int = DISC_LAYERS
    disc_ndf: int = DISC_NDF
    disc_loss: str = "hinge"
    disc_lr_mult: float = 1.0
    adaptive_max: float = 1e4
    vf_margin_cos: float = MARGIN_COS
    vf_margin_dist: float = MARGIN_DIST
    vf_cos_weight: float = 1.0
    vf_dist_weight: float = 1.0
    vf_adaptive: bool = True
    vf_adaptive_max: float = 1e8
    vf_image_scale: float = DINO_IMAGE_SCALE
    lpips_net: str = "vgg"
    lpips_weights: str | None = None
    dino_model: str = DINO_MODEL
    dino_weights: str | None = None
    pretrained: bool = True

    def __post_init__(self) -> None:
        for name in (
            "l1_weight",
            "lpips_weight",
            "kl_weight",
            "gan_weight",
            "vf_weight",
            "anchor_weight",
            "disc_lr_mult",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"loss.{name} must be a finite number >= 0, got {v!r}")
        for name in ("adaptive_max", "vf_adaptive_max", "vf_image_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"loss.{name} must be > 0, got {getattr(self, name)!r}")
        if self.disc_loss not in ("hinge", "vanilla"):
            raise ConfigError(f"loss.disc_loss must be 'hinge' or 'vanilla', got {self.disc_loss!r}")
        if self.disc_layers < 1 or self.disc_ndf < 1 or self.disc_start < 0:
            raise ConfigError("loss.disc_layers and loss.disc_ndf must be >= 1, loss.disc_start >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        """Build from plain data (``{"lpips_weight": 0, ...}``), refusing unknown keys and wrong types."""
        return from_dict(cls, d, prefix="loss.", what="loss config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class VAELoss(nn.Module):
    """The autoencoder's training loss and the discriminator's loss.

    Builds only what non-zero weights need: no LPIPS network when ``lpips_weight == 0``, no
    DINOv2 / projection when ``vf_weight == 0``, no discriminator when ``gan_weight == 0``.
    Frozen pretrained networks are never in ``state_dict()``, so ``state_dict()`` holds exactly
    the trained loss parameters (discriminator, VF projection) for checkpoints.

    Args:
        cfg: the loss options.
        model: the autoencoder (read for its latent channels only; not stored).
    """

    def __init__(self, cfg: LossConfig, model: AutoencoderBase):
        super().__init__()
        self.cfg = cfg
        self.lpips: LPIPSLoss | None = None
        if cfg.lpips_weight > 0:
            self.lpips = LPIPSLoss(cfg.lpips_net, pretrained=cfg.pretrained, weights=cfg.lpips_weights)
        self.vf: VFLoss | None = None
        if cfg.vf_weight > 0:
            dino = DinoFeatures(cfg.dino_model, cfg.pretrained, cfg.dino_weights, cfg.vf_image_scale)
            self.vf = VFLoss(
                model.latent_channels,
                dino,
                cfg.vf_margin_cos,
                cfg.vf_margin_dist,
                cfg.vf_cos_weight,
                cfg.vf_dist_weight,
            )
        self.discriminator: nn.Module | None = None
        if cfg.gan_weight > 0:
            self.discriminator = NLayerDiscriminator(model.config.in_channels, cfg.disc_ndf, cfg.disc_layers)
        self._d_loss = hinge_d_loss if cfg.disc_loss == "hinge" else vanilla_d_loss

    # -- parameters for the trainer's two optimizers ----------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        """Trainable loss parameters optimised together with the autoencoder (the VF projection)."""
        return list(self.vf.proj.parameters()) if self.vf is not None else []

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The discriminator's parameters ([] when ``gan_weight == 0``)."""
        return list(self.discriminator.parameters()) if self.discriminator is not None else []

    def gan_active(self, step: int, stage: int) -> bool:
        """Whether the GAN terms count at this step: stage 2, a discriminator, ``step >= disc_start``."""
        _check_stage(stage)
        return self.discriminator is not None and stage == 2 and step >= self.cfg.disc_start

    # -- losses --------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, out: AutoencoderOutput, model: AutoencoderBase, step: int, stage: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Autoencoder-side loss.

        Args:
            x: (B, 3, H, W) input images in [-1, 1].
            out: ``model(x)``; ``out.sample`` (B, 3, H, W), ``out.latent`` (B, C, H/f, W/f).
            model: the unwrapped autoencoder (its last encoder/decoder layers give the adaptive weights).
            step: global step (for ``disc_start``).
            stage: 1 (L1 + LPIPS + KL + VF) or 2 (encoder frozen: + GAN from ``disc_start``).
        Returns:
            ``(total, logs)``: the scalar loss to back-propagate, and every term and weight, as
            detached 0-d tensors (or floats for constant weights): reading them is left to the
            caller, so a training step needs no extra host synchronisation (``to_floats``).
            Terms: total, nll (weighted L1 + LPIPS), l1, lpips, kl, kl_per_image, vf, vf_cos,
            vf_dist, g_loss; weights: w_l1, w_lpips, w_kl, w_vf, w_vf_adaptive, w_gan,
            w_gan_adaptive. Disabled terms are absent (stage 1 has no GAN keys).
        """
        _check_stage(stage)
        cfg = self.cfg
        x_rec = out.sample
        n = x[0].numel()  # 3*H*W: the objective is LDM's divided by this (see reconstruction.py)
        logs: dict[str, torch.Tensor | float] = {}

        l1 = l1_loss(x, x_rec)
        nll = cfg.l1_weight * l1
        logs.update(l1=l1, w_l1=cfg.l1_weight)
        if self.lpips is not None:
            lp = self.lpips(x, x_rec).mean()
            nll = nll + cfg.lpips_weight * lp
            logs.update(lpips=lp, w_lpips=cfg.lpips_weight)
        kl, kl_per_image = kl_loss(out.posterior, n)
        total = nll + cfg.kl_weight * kl
        logs.update(nll=nll, kl=kl, kl_per_image=kl_per_image, w_kl=cfg.kl_weight)

        if self.vf is not None:
            if stage == 1:
                vf, vf_cos, vf_dist = self.vf(x, out.latent)
                w_ad = (
                    adaptive_weight(nll, vf, model.last_encoder_layer(), cfg.vf_adaptive_max / n)
                    if cfg.vf_adaptive
                    else torch.ones((), device=x.device)
                )
                w_vf = cfg.vf_weight * w_ad
                total = total + w_vf * vf
            else:  # frozen encoder: VF cannot train anything, log it only
                with torch.no_grad():
                    vf, vf_cos, vf_dist = self.vf(x, out.latent)
                w_ad = w_vf = 0.0
            logs.update(vf=vf, vf_cos=vf_cos, vf_dist=vf_dist, w_vf=w_vf, w_vf_adaptive=w_ad)

        if self.gan_active(step, stage):
            g = generator_loss(self.discriminator(x_rec))
            w_ad = adaptive_weight(nll, g, model.last_decoder_layer(), cfg.adaptive_max / n)
            w_gan = cfg.gan_weight * w_ad
            total = total + w_gan * g
            logs.update(g_loss=g, w_gan=w_gan, w_gan_adaptive=w_ad)

        logs["total"] = total
        return total, _detach(logs)

    def discriminator_loss(
        self, x: torch.Tensor, x_rec: torch.Tensor, step: int, stage: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminator loss on real ``x`` and (detached) reconstructions ``x_rec``.

        Before ``disc_start`` or in stage 1 the loss is multiplied by 0 (as LDM's ``adopt_weight``):
        back-propagating it is harmless and gives every discriminator parameter a (zero) gradient.
        Check ``gan_active(step, stage)`` to skip the work instead.

        Args:
            x: (B, 3, H, W) real images in [-1, 1].
            x_rec: (B, 3, H, W) reconstructions; detached here, so no gradient reaches the autoencoder.
            step: global step.
            stage: 1 or 2.
        Returns:
            ``(d_loss, logs)`` with logs d_loss, logits_real, logits_fake, d_factor (detached
            0-d tensors or floats, see ``forward``).
        """
        if self.discriminator is None:
            raise RuntimeError("discriminator_loss: loss.gan_weight is 0, there is no discriminator")
        factor = 1.0 if self.gan_active(step, stage) else 0.0
        # Two calls, as in LDM: BatchNorm statistics of real and fake batches stay separate.
        logits_real = self.discriminator(x.detach())
        logits_fake = self.discriminator(x_rec.detach())
        d_loss = factor * self._d_loss(logits_real, logits_fake)
        logs = {
            "d_loss": d_loss,
            "logits_real": logits_real.float().mean(),
            "logits_fake": logits_fake.float().mean(),
            "d_factor": factor,
        }
        return d_loss, _detach(logs)


def _check_stage(stage: int) -> None:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def _detach(logs: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor | float]:
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}


def to_floats(logs: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """A loss's logs as Python floats, with a single device synchronisation."""
    keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
    values = torch.stack([logs[k].detach().float().reshape(()) for k in keys]).tolist() if keys else []
    out = {k: float(v) for k, v in logs.items() if not isinstance(v, torch.Tensor)}
    out.update(zip(keys, values, strict=True))
    return {k: out[k] for k in logs}

"""VF (vision foundation) alignment loss of VA-VAE (Yao et al., 2025), used by TransVAE.

A trainable 1x1 convolution projects the latent (C channels) to the width of a frozen DINOv2
(timm ``vit_large_patch14_dinov2``, 1024). Two margin terms compare it with DINOv2's patch
tokens of the input image:

* cosine term: ``mean_ij relu(1 - m_cos - cos(P z_ij, f_ij))`` (margin 0.5),
* distance-matrix term: ``mean_{b,i,j} relu(|cos(P z_i, P z_j) - cos(f_i, f_j)| - m_dist)``
  (margin 0.25), i.e. the token-to-token similarity structures must agree.

Grids. DINOv2 sees the image resized to ``vf_image_scale`` of its size (VA-VAE: 256 -> 224, a
16x16 token grid for a 256x256 image; patch 14), rounded to whole patches, so its grid is read
off the actual input shape. When the latent grid is finer than DINOv2's (f8 models: 32x32 vs
16x16 at 256) the latent is average-pooled to the DINOv2 grid (the paper's Appendix F, option 1);
when it is coarser (f32) the DINOv2 features are pooled to the latent grid. Any size and aspect
ratio works.

Differences from VA-VAE's code, on purpose: images in [-1, 1] are mapped to [0, 1] before the
ImageNet normalisation (VA-VAE normalises [-1, 1] inputs as if they were [0, 1]), and the resize
is bicubic with antialiasing instead of bilinear.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.pretrained import load_dinov2
from .common import FrozenNetwork

# VA-VAE's settings: the defaults of ``DinoFeatures`` / ``VFLoss`` and of ``LossConfig``'s
# ``dino_model`` / ``vf_*`` options, defined once here
DINO_MODEL = "vit_large_patch14_dinov2"  # DINOv2 ViT-L/14, width 1024
DINO_IMAGE_SCALE = 0.875  # DINOv2 input size / image size: 224 / 256
MARGIN_COS = 0.5
MARGIN_DIST = 0.25


def vf_terms(
    z: torch.Tensor, feats: torch.Tensor, margin_cos: float, margin_dist: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two margin terms of the VF loss, in fp32.

    Args:
        z: (B, D, h, w) projected latent.
        feats: (B, D, h, w) foundation-model features on the same grid.
        margin_cos: cosine margin m1 (0.5); pairs with ``cos >= 1 - m1`` cost nothing.
        margin_dist: distance-matrix margin m2 (0.25); differences ``<= m2`` cost nothing.
    Returns:
        ``(cos_term, dist_term)``, scalars.
    """
    if z.shape != feats.shape:
        raise ValueError(f"vf_terms: shapes differ, {tuple(z.shape)} vs {tuple(feats.shape)}")
    z, feats = z.float(), feats.float()
    cos = F.cosine_similarity(z, feats, dim=1)  # (B, h, w)
    cos_term = F.relu(1.0 - margin_cos - cos).mean()
    zn = F.normalize(z.flatten(2), dim=1)  # (B, D, N)
    fn = F.normalize(feats.flatten(2), dim=1)  # (B, D, N)
    sim_z = zn.transpose(1, 2) @ zn  # (B, N, N)
    sim_f = fn.transpose(1, 2) @ fn  # (B, N, N)
    dist_term = F.relu((sim_z - sim_f).abs() - margin_dist).mean()
    return cos_term, dist_term


class DinoFeatures(FrozenNetwork):
    """Frozen DINOv2 patch-token features of images in [-1, 1], on a grid derived from the input size.

    Args:
        model_name: timm model name (``vit_large_patch14_dinov2``; tests use a small variant).
        pretrained: load pretrained weights (``transvae.models.pretrained.load_dinov2``: from
            ``weights`` or timm's Hugging Face source); False gives a random stand-in (tests only).
        weights: optional local weights file (``loss.dino_weights``): timm's ``model.safetensors``
            or Meta's original ``dinov2_vitl14_pretrain.pth`` (timm converts it).
        image_scale: DINOv2 input size relative to the image (VA-VAE: 224 / 256 = 0.875).
    """

    def __init__(
        self,
        model_name: str = DINO_MODEL,
        pretrained: bool = True,
        weights: str | None = None,
        image_scale: float = DINO_IMAGE_SCALE,
    ):
        model = load_dinov2(
            model_name,
            weights,
            pretrained,
            option="loss.dino_weights",
            hint="or disable the VF loss with --loss.vf_weight=0",
        )
        super().__init__(model)
        cfg = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.patch_size: tuple[int, int] = tuple(model.patch_embed.patch_size)
        self.dim: int = model.num_features
        self.image_scale = image_scale

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """DINOv2 token grid for an image of this size (e.g. 256x256 -> 16x16, 320x480 -> 20x30)."""
        ph, pw = self.patch_size
        return max(1, round(height * self.image_scale / ph)), max(1, round(width * self.image_scale / pw))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, D, gh, gw) fp32 patch-token features."""
        gh, gw = self.grid(*x.shape[-2:])
        size = (gh * self.patch_size[0], gw * self.patch_size[1])
        x = (x.float() + 1.0) / 2.0
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        tokens = self.net.forward_features(x)[:, self.net.num_prefix_tokens :]  # (B, gh*gw, D)
        if tokens.shape[1] != gh * gw:
            raise RuntimeError(f"DINOv2 returned {tokens.shape[1]} tokens for a {gh}x{gw} grid")
        return tokens.float().transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (B, D, gh, gw)


class VFLoss(nn.Module):
    """VA-VAE's VF loss: frozen DINOv2 + trainable 1x1 projection + two margin terms.

    Args:
        latent_channels: C of the autoencoder's latent.
        dino: the frozen feature extractor.
        margin_cos: cosine margin (0.5).
        margin_dist: distance-matrix margin (0.25).
        cos_weight: weight of the cosine term (1.0).
        dist_weight: weight of the distance-matrix term (1.0).
    """

    def __init__(
        self,
        latent_channels: int,
        dino: DinoFeatures,
        margin_cos: float = MARGIN_COS,
        margin_dist: float = MARGIN_DIST,
        cos_weight: float = 1.0,
        dist_weight: float = 1.0,
    ):
        super().__init__()
        self.dino = dino
        # VA-VAE projects the latent up to the DINOv2 width ("reverse_proj"), without bias.
        self.proj = nn.Conv2d(latent_channels, dino.dim, kernel_size=1, bias=False)
        self.margin_cos, self.margin_dist = margin_cos, margin_dist
        self.cos_weight, self.dist_weight = cos_weight, dist_weight

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """VF loss of latent ``z`` for images ``x``.

        Args:
            x: (B, 3, H, W) input images in [-1, 1].
            z: (B, C, h, w) latent of ``x`` (any compression ratio).
        Returns:
            ``(vf, cos_term, dist_term)`` with ``vf = cos_weight * cos_term + dist_weight * dist_term``.
        """
        feats = self.dino(x)  # (B, D, gh, gw), no grad
        grid = (min(z.shape[-2], feats.shape[-2]), min(z.shape[-1], feats.shape[-1]))
        if tuple(z.shape[-2:]) != grid:  # f8: pool the latent to the DINOv2 grid (Appendix F)
            z = F.adaptive_avg_pool2d(z, grid)
        if tuple(feats.shape[-2:]) != grid:  # coarser latents (f32): pool the features instead
            feats = F.adaptive_avg_pool2d(feats, grid)
        # The projection runs in the caller's precision (bf16 autocast is fine); terms are fp32.
        cos_term, dist_term = vf_terms(self.proj(z), feats, self.margin_cos, self.margin_dist)
        return self.cos_weight * cos_term + self.dist_weight * dist_term, cos_term, dist_term

"""Baseline families of the paper's comparisons (Sections 3.1-3.4, Appendix C and G).

Importing this module registers them (``transvae.models`` imports it):

- ``cnn-vae-*``  CNN-VAE (LDM / VA-VAE), Table 4: ``cnn_vae.CNNVAE``.
- ``vit-vae-*``  ViT-VAE, Table 5: a single-stage ``TransVAE`` config (16x16 patch embedding,
  pixel-shuffle head, learned absolute position embedding, plain MLP ratio 4), the first rung
  of the design ladder (``ladder.py``).
- ``swin-vae-*`` Swin-VAE, Table 6: ``swin_vae.SwinVAE`` (timm's Swin stages).
- ``asym-vae-*`` Transformer encoder + CNN decoder, Appendix G: ``asym_vae.AsymVAE``.

Choices and measured parameter counts are documented in ``docs/architecture.md``.
"""

from __future__ import annotations

from . import asym_vae, cnn_vae, swin_vae  # noqa: F401  (registers their variants)
from .registry import register_model, register_models
from .transvae import TransVAE

# ViT-VAE: everything that makes TransVAE differ from a plain ViT switched off.
VIT_VAE_DEFAULTS = dict(
    num_cnn_stages=0,
    patch_size=16,
    patch_embed="patch",
    patch_out="pixelshuffle",
    pos_embed="learned",
    ffn_type="mlp",
    mlp_ratio=4.0,
    qkv_norm="none",
    dc_shortcut=False,
    latent_kernel=1,
    head_dim=64,
)

# Table 5: (depth, width, paper (encoder, decoder) params in millions)
_TABLE5 = {
    "t": (8, 512, (26, 25)),
    "b": (12, 768, (86, 85)),
    "l": (24, 1024, (303, 302)),
    "h": (24, 1536, (681, 680)),
    "g": (24, 2048, (1200, 1300)),
}
register_models(
    TransVAE,
    "vit-vae",
    {
        f"vit-vae-{size}-f16d32": ("Table 5", pp, {**VIT_VAE_DEFAULTS, "dims": (width,), "depths": (depth,)})
        for size, (depth, width, pp) in _TABLE5.items()
    },
)

# CPU-sized members: name -> (description, config values over VIT_VAE_DEFAULTS); all at sample_size 64
_CPU_MEMBERS = {
    "vit-vae-mini-f16d32": (
        "CPU-sized, matches transvae-mini",
        dict(dims=(128,), depths=(4,), head_dim=32),
    ),
    "vit-vae-mini-f8d16": (
        "CPU-sized f8d16 (8x8 patches), matches transvae-mini-f8d16",
        dict(latent_channels=16, patch_size=8, dims=(128,), depths=(4,), head_dim=32),
    ),
    "vit-vae-nano-f16d32": ("smallest, for unit tests", dict(dims=(32,), depths=(2,), head_dim=16)),
}
for _name, (_desc, _kw) in _CPU_MEMBERS.items():
    register_model(
        _name, TransVAE, family="vit-vae", description=_desc, **(VIT_VAE_DEFAULTS | _kw), sample_size=64
    )

"""Architectures of published LDM-family autoencoders, for checkpoints that carry no config.

An LDM / SD / VA-VAE checkpoint is a bare state dict: the architecture comes from a preset
(or an LDM YAML, ``ldm.py``). Each preset is a ``CNNVAEConfig`` plus the latent scaling its
diffusion models use, kept as the converted model's ``metadata`` (``scaling_factor``,
``shift_factor``: diffusion latents are ``(z - shift_factor) * scaling_factor``). The values are
those of the models' published diffusers configs. SD and SDXL (likewise SD3 and FLUX.1) share an
architecture and differ only in the scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..base import ConfigError


@dataclass(frozen=True)
class Preset:
    """A published autoencoder's architecture and latent scaling.

    Attributes:
        name: the preset's name (``sd-vae``), also the converted model's ``model_name``.
        description: what it is, for listings.
        config: ``CNNVAEConfig`` values.
        metadata: ``scaling_factor`` / ``shift_factor`` of its diffusion models ({} if none).
    """

    name: str
    description: str
    config: dict[str, Any]
    metadata: dict[str, float] = field(default_factory=dict)


# LDM kl-f8 (SD 1.x/2.x, SDXL): 4 levels (1, 2, 4, 4) x 128, 2 ResBlocks (3 in the decoder), no
# attention outside the MidBlock, 32 GroupNorm groups, 1x1 quant convs around the latent.
_KL_F8 = dict(
    latent_channels=4,
    base_dim=128,
    ch_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    decoder_num_res_blocks=3,
    stage_attn=False,
    mid_block=True,
    mid_attn=True,
    norm_groups=32,
    quant_conv=True,
    post_quant_conv=True,
)
# SD3 / FLUX.1: kl-f8 with 16 channels and without the quant convs
_KL_F8_D16 = {**_KL_F8, "latent_channels": 16, "quant_conv": False, "post_quant_conv": False}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "sd-vae",
            "Stable Diffusion 1.x / 2.x VAE (LDM kl-f8, 4 channels)",
            _KL_F8,
            {"scaling_factor": 0.18215},
        ),
        Preset("sdxl-vae", "SDXL VAE (kl-f8 architecture, 4 channels)", _KL_F8, {"scaling_factor": 0.13025}),
        Preset(
            "sd3-vae",
            "Stable Diffusion 3 VAE (f8, 16 channels, no quant convs)",
            _KL_F8_D16,
            {"scaling_factor": 1.5305, "shift_factor": 0.0609},
        ),
        Preset(
            "flux-vae",
            "FLUX.1 VAE (ae.safetensors; f8, 16 channels, no quant convs)",
            _KL_F8_D16,
            {"scaling_factor": 0.3611, "shift_factor": 0.1159},
        ),
        Preset(
            "vavae-f16d32",
            "VA-VAE f16d32 (LightningDiT tokenizer; attention at the lowest resolution)",
            # LightningDiT tokenizer/configs/vavae_f16d32.yaml: ch 128, ch_mult [1, 1, 2, 2, 4],
            # num_res_blocks 2, attn_resolutions [16] at resolution 256, z_channels = embed_dim = 32.
            # LightningDiT normalises its latents per channel (latents_stats.pt), not by a factor.
            {**_KL_F8, "latent_channels": 32, "ch_mult": (1, 1, 2, 2, 4), "stage_attn": True},
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a one-line ``ConfigError`` listing the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]

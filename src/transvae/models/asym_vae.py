"""Asymmetric VAE (paper Appendix G): a TransVAE encoder with a CNN-VAE decoder.

The paper's initial design; it beats the symmetric TransVAE at Tiny size (~60M parameters) but
was unstable when scaled up. The encoder is ``transvae.Encoder`` configured by the usual
``TransVAEConfig`` fields; the decoder is ``cnn_vae.CNNDecoder`` configured by the ``dec_*``
fields (the ``CNNVAEConfig`` fields with a ``dec_`` prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import AutoencoderBase, ConfigError
from .cnn_vae import CNNDecoder, CNNVAEConfig
from .registry import register_architecture, register_model
from .transvae import Encoder, TransVAEConfig

# ``CNNVAEConfig`` field of the decoder -> the ``AsymVAEConfig`` field that sets it
DECODER_FIELDS = {
    "base_dim": "dec_base_dim",
    "ch_mult": "dec_ch_mult",
    "decoder_num_res_blocks": "dec_num_res_blocks",
    "stage_attn": "dec_stage_attn",
    "mid_block": "dec_mid_block",
    "mid_attn": "dec_mid_attn",
}


@dataclass
class AsymVAEConfig(TransVAEConfig):
    """``TransVAEConfig`` (encoder) plus the CNN decoder's settings.

    Attributes:
        dec_base_dim, dec_ch_mult, dec_num_res_blocks, dec_stage_attn, dec_mid_block,
        dec_mid_attn: ``base_dim``, ``ch_mult``, ``decoder_num_res_blocks``, ``stage_attn``,
            ``mid_block`` and ``mid_attn`` of the CNN-VAE decoder (see ``CNNVAEConfig``).
    """

    architecture = "asym-vae"
    # defaults: those of the CNN-VAE decoder
    dec_base_dim: int = CNNVAEConfig.base_dim
    dec_ch_mult: tuple[int, ...] = CNNVAEConfig.ch_mult
    dec_num_res_blocks: int = CNNVAEConfig.decoder_num_res_blocks
    dec_stage_attn: bool = CNNVAEConfig.stage_attn
    dec_mid_block: bool = CNNVAEConfig.mid_block
    dec_mid_attn: bool = CNNVAEConfig.mid_attn

    def __post_init__(self):
        super().__post_init__()
        dec = self.decoder_config()
        if dec.compression != self.compression:
            raise ConfigError(
                f"encoder compression {self.compression} != CNN decoder compression {dec.compression} "
                f"(dec_ch_mult needs {len(self.dims)} stages for patch_size 1)"
            )

    def decoder_config(self) -> CNNVAEConfig:
        """The ``CNNVAEConfig`` of the decoder: the ``dec_*`` fields under their CNN-VAE names
        (``DECODER_FIELDS``), with this config's channels and latent kernel."""
        shared = {k: getattr(self, k) for k in ("in_channels", "latent_channels", "latent_kernel")}
        return CNNVAEConfig(**shared, **{k: getattr(self, f) for k, f in DECODER_FIELDS.items()})


@register_architecture
class AsymVAE(AutoencoderBase):
    """Transformer (TransVAE) encoder + CNN (LDM) decoder."""

    config_class = AsymVAEConfig
    encoder_class = Encoder
    decoder_class = CNNDecoder

    def decoder_config(self) -> CNNVAEConfig:
        """The CNN decoder's config (``AsymVAEConfig.decoder_config``)."""
        return self.config.decoder_config()


register_model(
    "asym-vae-t-f16d32",
    AsymVAE,
    family="asym-vae",
    description="Appendix G: TransVAE-T encoder + CNN-VAE-T decoder",
)
register_model(
    "asym-vae-mini-f16d32",
    AsymVAE,
    family="asym-vae",
    description="CPU-sized, matches transvae-mini",
    depths=(1, 1, 2, 2, 2),
    dims=(32, 32, 64, 64, 128),
    head_dim=32,
    sample_size=64,
    dec_base_dim=20,
)

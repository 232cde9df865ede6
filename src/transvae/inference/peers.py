"""Autoencoders to compare against, behind one ``encode(x) -> z`` / ``decode(z) -> image`` handle.

``build_autoencoder(name)`` accepts a registered transvae model (``transvae-t-f16d32``, the
``cnn-vae-*`` / ``vit-vae-*`` baselines, ...), the same with ``+channels-last`` (channels-last
weights and inputs), or one of the published architectures below, built with random weights
through diffusers (timing and memory depend on the architecture, not on the weights):

- ``flux-vae-config``: the FLUX.1 VAE (``black-forest-labs/FLUX.1-dev`` ``vae/config.json``):
  ``AutoencoderKL``, 16 latent channels, blocks [128, 256, 512, 512], 2 layers per block, f8,
  no quant convs;
- ``sd-vae-config``: the Stable Diffusion VAE: the same blocks, 4 latent channels, quant convs;
- ``dc-ae-f32c32-config``: DC-AE f32c32-in-1.0 (efficientvit ``dc_ae_f32c32``; diffusers'
  ``scripts/convert_dcae_to_diffusers.py``) as ``AutoencoderDC``: widths [128, 256, 512, 512,
  1024, 1024], encoder depths [0, 4, 8, 2, 2, 2], decoder [0, 5, 10, 2, 2, 2], ReLU linear
  attention in the last three stages, pixel-(un)shuffle resampling.

``tiny=True`` keeps the classes and layouts at a quarter of the width (dry runs).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.flops import encode_decode_flops

__all__ = ["PEERS", "AutoencoderHandle", "autoencoder_handle_flops", "build_autoencoder"]

CHANNELS_LAST = "+channels-last"
_KL = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, act_fn="silu", mid_block_add_attention=True,
)  # fmt: skip
_DC_WIDTHS = (128, 256, 512, 512, 1024, 1024)
# name -> (diffusers class, config, the config of its tiny version)
PEERS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "flux-vae-config": (
        "AutoencoderKL",
        dict(_KL, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
        dict(block_out_channels=(32, 32, 64, 64)),
    ),
    "sd-vae-config": (
        "AutoencoderKL",
        dict(_KL, latent_channels=4, use_quant_conv=True, use_post_quant_conv=True),
        dict(block_out_channels=(32, 32, 64, 64)),
    ),
    "dc-ae-f32c32-config": (
        "AutoencoderDC",
        dict(
            latent_channels=32,
            encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
            decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
            encoder_block_out_channels=_DC_WIDTHS,
            decoder_block_out_channels=_DC_WIDTHS,
            encoder_layers_per_block=(0, 4, 8, 2, 2, 2),
            decoder_layers_per_block=(0, 5, 10, 2, 2, 2),
            encoder_qkv_multiscales=((),) * 6,
            decoder_qkv_multiscales=((),) * 6,
            decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 3,
            decoder_act_fns=("relu",) * 3 + ("silu",) * 3,
            downsample_block_type="pixel_unshuffle",
            upsample_block_type="pixel_shuffle",
        ),  # fmt: skip
        dict(
            encoder_block_out_channels=(32, 32, 64, 64, 128, 128),
            decoder_block_out_channels=(32, 32, 64, 64, 128, 128),
        ),
    ),
}


class AutoencoderHandle:
    """A model reduced to ``encode(x) -> z`` (the posterior mode) and ``decode(z) -> image``.

    Args:
        name: what it was built from.
        module: the network.
        api: ``"transvae"`` (``encode`` returns a posterior), ``"kl"`` (diffusers
            ``AutoencoderKL``: ``.latent_dist``) or ``"dc"`` (``AutoencoderDC``: ``.latent``).
        channels_last: convert inputs to channels-last (the weights are converted by ``build``).
    """

    def __init__(self, name: str, module: torch.nn.Module, api: str, channels_last: bool = False):
        self.name, self.module, self.api, self.channels_last = name, module, api, channels_last
        self.params = sum(p.numel() for p in module.parameters())

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module.encode(self._layout(x))
        if self.api == "kl":
            return out.latent_dist.mode()
        return out.latent if self.api == "dc" else out.mode()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.module.decode(self._layout(z))
        return out.sample if self.api in ("kl", "dc") else out


def build_autoencoder(name: str, device: torch.device | str = "cpu", tiny: bool = False) -> AutoencoderHandle:
    """A registered model or a ``PEERS`` architecture with random weights on ``device``, in eval mode.

    Args:
        name: see the module docstring; ``NAME+channels-last`` for channels-last weights and inputs.
        device: ``"meta"`` builds the structure only (FLOP counts).
        tiny: quarter-width diffusers peers (registered models are unchanged).
    Raises:
        KeyError: an unknown name (the message lists the registered ones).
        ImportError: diffusers (or its class) is missing for a peer.
    """
    if name.endswith(CHANNELS_LAST):
        h = build_autoencoder(name.removesuffix(CHANNELS_LAST), device, tiny)
        h.module.to(memory_format=torch.channels_last)
        return AutoencoderHandle(name, h.module, h.api, channels_last=True)
    if name in PEERS:
        import diffusers

        cls_name, config, small = PEERS[name]
        with torch.device(device):
            module = getattr(diffusers, cls_name)(**{**config, **(small if tiny else {})})
        return AutoencoderHandle(name, module.eval(), api="kl" if cls_name == "AutoencoderKL" else "dc")
    from ..models import create_model

    return AutoencoderHandle(name, create_model(name, device=device).eval(), api="transvae")


def autoencoder_handle_flops(name: str, resolution: int, tiny: bool = False) -> tuple[float, float]:
    """(encode, decode) GFLOP of one ``resolution`` x ``resolution`` image of ``build_autoencoder(name)``,
    counted on the meta device (``models.flops``)."""
    h = build_autoencoder(name, "meta", tiny)
    h.module.requires_grad_(False)  # see models.flops.autoencoder_flops
    x = torch.empty(1, 3, resolution, resolution, device="meta")
    return encode_decode_flops(h.encode, h.decode, x)

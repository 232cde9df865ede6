"""DC-AE (Chen et al., "Deep Compression Autoencoder", SANA's autoencoder) as a transvae model.

DC-AE does not map onto a transvae architecture: its blocks are EfficientViT blocks (multi-scale
ReLU linear attention + GLU MBConv) with RMS / batch norms, and its encoder outputs a latent,
not a distribution. So the model is wrapped: ``DCAE`` holds diffusers' own ``AutoencoderDC``
encoder and decoder (the code users already run) behind the transvae ``AutoencoderBase`` API:

- ``encode(x)`` returns a zero-variance ``DiagonalGaussianDistribution`` whose mean is DC-AE's
  latent (``sample()`` returns it too, ``kl()`` is 0); ``self.encoder(x)`` gives the moments
  (latent, then a constant log-variance of -30, the clamp floor) that tiled inference expects;
- ``decode(z)`` is DC-AE's decoder;
- ``save_pretrained`` / ``from_pretrained`` write and read the transvae format: ``config.json``
  holds ``architecture: "diffusers-dc-ae"`` and the diffusers options as validated data
  (``DCAEConfig``), ``model.safetensors`` the weights, named ``encoder.net.*`` (diffusers:
  ``encoder.*``) and ``decoder.*`` (as in diffusers).

diffusers is imported when a model is built, not when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .base import AutoencoderBase, ConfigError, ModelConfig
from .registry import register_architecture

_BLOCKS = ("ResBlock", "EfficientViTBlock")
_NORMS = ("rms_norm", "batch_norm", "layer_norm")
_ACTS = ("silu", "swish", "relu", "gelu", "mish")
_DOWN = ("pixel_unshuffle", "conv", "Conv")  # diffusers: anything but pixel_unshuffle is a strided conv
_UP = ("pixel_shuffle", "interpolate")
LOGVAR_FLOOR = -30.0  # DiagonalGaussianDistribution's clamp: the log-variance of "no variance"


def _per_stage(value: str | tuple[str, ...], n: int) -> tuple[str, ...]:
    return (value,) * n if isinstance(value, str) else tuple(value)


@dataclass
class DCAEConfig(ModelConfig):
    """The options of diffusers' ``AutoencoderDC`` (its defaults for missing keys), validated.

    Attributes:
        latent_channels: C of the latent.
        attention_head_dim: head width of the EfficientViT blocks' linear attention.
        encoder_block_types, decoder_block_types: ``ResBlock`` / ``EfficientViTBlock``, one or
            one per stage.
        encoder_block_out_channels, decoder_block_out_channels: width per stage; ``len - 1``
            2x down / upsamplings.
        encoder_layers_per_block, decoder_layers_per_block: blocks per stage.
        encoder_qkv_multiscales, decoder_qkv_multiscales: multi-scale q/k/v kernel sizes per stage.
        upsample_block_type: ``pixel_shuffle`` or ``interpolate``.
        downsample_block_type: ``pixel_unshuffle`` or ``conv`` (strided).
        decoder_norm_types, decoder_act_fns: per decoder stage, or one for all.
        encoder_out_shortcut, decoder_in_shortcut: DC-AE's channel-averaging shortcuts at the latent.
        decoder_conv_act_fn: activation before the decoder's output conv.
    """

    architecture = "diffusers-dc-ae"
    latent_channels: int = 32
    attention_head_dim: int = 32
    encoder_block_types: str | tuple[str, ...] = "ResBlock"
    decoder_block_types: str | tuple[str, ...] = "ResBlock"
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    upsample_block_type: str = "pixel_shuffle"
    downsample_block_type: str = "pixel_unshuffle"
    decoder_norm_types: str | tuple[str, ...] = "rms_norm"
    decoder_act_fns: str | tuple[str, ...] = "silu"
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act_fn: str = "relu"

    def __post_init__(self):
        """Refuse what diffusers would only catch with an assert or a shape error mid-build."""
        n = len(self.encoder_block_out_channels)
        problems = []
        if n < 1 or len(self.decoder_block_out_channels) != n:
            problems.append(
                f"encoder_block_out_channels ({n}) and decoder_block_out_channels "
                f"({len(self.decoder_block_out_channels)}) must have one entry per stage, as many each"
            )
        for side in ("encoder", "decoder"):
            widths = getattr(self, f"{side}_block_out_channels")
            for key in (f"{side}_layers_per_block", f"{side}_qkv_multiscales"):
                if len(getattr(self, key)) != len(widths):
                    problems.append(f"{key} needs {len(widths)} entries (one per stage)")
            for key, allowed in ((f"{side}_block_types", _BLOCKS),) + (
                (("decoder_norm_types", _NORMS), ("decoder_act_fns", _ACTS)) if side == "decoder" else ()
            ):
                values = _per_stage(getattr(self, key), len(widths))
                if len(values) != len(widths) or any(v not in allowed for v in values):
                    problems.append(
                        f"{key} must be one of {list(allowed)} or one per stage, got {getattr(self, key)!r}"
                    )
            if any(
                k < 1 or k > 31 or k % 2 == 0 for ks in getattr(self, f"{side}_qkv_multiscales") for k in ks
            ):
                problems.append(f"{side}_qkv_multiscales must hold odd kernel sizes from 1 to 31")
            types = _per_stage(getattr(self, f"{side}_block_types"), len(widths))
            for w, t in zip(widths, types, strict=False):
                if t == "EfficientViTBlock" and w % self.attention_head_dim:
                    problems.append(
                        f"width {w} of an EfficientViTBlock stage is not a multiple of attention_head_dim"
                    )
        if self.decoder_conv_act_fn not in _ACTS:
            problems.append(f"decoder_conv_act_fn must be one of {list(_ACTS)}")
        if self.downsample_block_type not in _DOWN:
            problems.append(f"downsample_block_type must be one of {list(_DOWN[:2])}")
        if self.upsample_block_type not in _UP:
            problems.append(f"upsample_block_type must be one of {list(_UP)}")
        if not problems and n:
            problems += self._shortcut_problems()
        if problems:
            raise ConfigError("DC-AE config: " + "; ".join(problems))

    def _shortcut_problems(self) -> list[str]:
        """DC-AE's shortcuts average or repeat channel groups: the widths must divide evenly."""
        out = []
        enc, dec, c = self.encoder_block_out_channels, self.decoder_block_out_channels, self.latent_channels
        for i in range(len(enc) - 1):
            if self.encoder_layers_per_block[i] and (4 * enc[i]) % enc[i + 1]:
                out.append(
                    f"encoder widths {enc[i]} -> {enc[i + 1]}: 4 * {enc[i]} is not a multiple of {enc[i + 1]}"
                )
            if self.downsample_block_type == "pixel_unshuffle" and enc[i + 1] % 4:
                out.append(f"encoder width {enc[i + 1]} is not a multiple of 4 (pixel_unshuffle)")
            if self.decoder_layers_per_block[i] and (4 * dec[i]) % dec[i + 1]:
                out.append(
                    f"decoder widths {dec[i + 1]} -> {dec[i]}: 4 * {dec[i]} is not a multiple of {dec[i + 1]}"
                )
        if self.encoder_out_shortcut and enc[-1] % c:
            out.append(
                f"encoder width {enc[-1]} is not a multiple of latent_channels {c} (encoder_out_shortcut)"
            )
        if self.decoder_in_shortcut and dec[-1] % c:
            out.append(
                f"decoder width {dec[-1]} is not a multiple of latent_channels {c} (decoder_in_shortcut)"
            )
        return out

    @property
    def compression(self) -> int:
        return 2 ** (len(self.encoder_block_out_channels) - 1)

    def diffusers_kwargs(self) -> dict[str, Any]:
        """The arguments of ``diffusers.AutoencoderDC`` (lists where diffusers' configs have lists)."""
        d = self.to_dict()
        d["encoder_qkv_multiscales"] = [list(t) for t in self.encoder_qkv_multiscales]
        d["decoder_qkv_multiscales"] = [list(t) for t in self.decoder_qkv_multiscales]
        return d


class LatentAsMoments(nn.Module):
    """A deterministic encoder's latent as Gaussian moments: (B, 3, H, W) -> (B, 2C, h, w),
    the latent then a constant log-variance of -30 (zero variance after the posterior's clamp).

    Args:
        net: the encoder, (B, 3, H, W) -> (B, C, h, w).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)  # (B, C, h, w)
        return torch.cat([z, torch.full_like(z, LOGVAR_FLOOR)], dim=1)  # (B, 2C, h, w)


@register_architecture
class DCAE(AutoencoderBase):
    """diffusers' ``AutoencoderDC`` behind the transvae API (see the module docstring).

    Args:
        config: a ``DCAEConfig``.
    """

    config_class = DCAEConfig
    deterministic_posterior = True

    def __init__(self, config: DCAEConfig):
        super().__init__(config)
        from diffusers import AutoencoderDC

        dc = AutoencoderDC(**config.diffusers_kwargs())
        self.encoder = LatentAsMoments(dc.encoder)
        self.decoder = dc.decoder

    def last_decoder_layer(self) -> nn.Parameter:
        """The decoder's output conv weight (a conv, or the conv of an upsampling block)."""
        out = self.decoder.conv_out
        return out.weight if isinstance(out, nn.Conv2d) else out.conv.weight

    def last_encoder_layer(self) -> nn.Parameter:
        return self.encoder.net.conv_out.weight

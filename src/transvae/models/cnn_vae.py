"""CNN-VAE baseline: the LDM / VA-VAE convolutional encoder and decoder (paper Table 4, Appendix E).

    encoder: conv_in 3x3 -> per stage [ResBlock (+ attention) x num_res_blocks] -> 3x3 stride-2 down
             -> MidBlock (ResBlock, attention, ResBlock) -> GroupNorm, SiLU -> conv_out 3x3
    decoder: conv_in 3x3 -> MidBlock -> per stage (reversed) [ResBlock (+ attention) x
             decoder_num_res_blocks] -> nearest 2x + 3x3 conv -> GroupNorm, SiLU -> conv_out 3x3

The registered ``cnn-vae-*`` variants use the "modern" configuration of Appendix C (attention in
the lowest-resolution stage, as LDM's ``attn_resolutions=[16]`` at 256 px, plus the MidBlock
attention); ``stage_attn=False, mid_attn=False`` gives the attention-free baseline of Section 3.
Choices and measured counts are in ``docs/architecture.md``.

The same module holds the published LDM-family autoencoders (SD 1.x/2.x/XL, SD3, FLUX.1, VA-VAE),
converted by ``transvae.models.convert``: their differences are config options whose defaults
keep the baseline as it was (``norm_groups``, ``attn_stages``, ``quant_conv``, ``post_quant_conv``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import AutoencoderBase, ConfigError, ModelConfig
from .blocks import ResBlock, compute_layout, group_norm, run_blocks
from .registry import register_architecture, register_model


@dataclass
class CNNVAEConfig(ModelConfig):
    """Configuration of the CNN-VAE baseline.

    Attributes:
        base_dim: channels of the first stage; stage i has ``base_dim * ch_mult[i]``.
        ch_mult: channel multiplier per stage; ``len(ch_mult) - 1`` 2x downsamplings.
        num_res_blocks: ResBlocks per encoder stage (2 in LDM / VA-VAE).
        decoder_num_res_blocks: ResBlocks per decoder stage (LDM uses ``num_res_blocks + 1``,
            which is why the decoder is larger than the encoder in Table 4).
        stage_attn: self-attention after every ResBlock of the lowest-resolution stage
            ("StageAttn", Appendix E).
        mid_block: the MidBlock (ResBlock, [attention], ResBlock) next to the latent.
        mid_attn: the attention inside the MidBlock ("MidAttn", Appendix E).
        latent_kernel: kernel size of the convs into and out of the latent.
        norm_groups: GroupNorm groups of every norm; None: ``num_groups(width)`` per norm (32 at
            LDM's widths, >= 4 channels a group in narrow models). LDM fixes 32, diffusers
            ``norm_num_groups``; the converters set it.
        attn_stages: the stages (0 = full resolution) with attention after every ResBlock, in
            the encoder and the mirrored decoder stage: LDM's ``attn_resolutions`` as stage
            indices. None: the lowest-resolution stage if ``stage_attn``, else none.
        quant_conv: LDM's 1x1 conv on the encoder's moments (2C -> 2C): SD 1.x/2.x/XL and
            VA-VAE have it, SD3 and FLUX.1 do not.
        post_quant_conv: LDM's 1x1 conv on the latent before the decoder (C -> C).
        channels_last: compute in the channels-last layout on CPUs (``compute_layout``: faster
            there). The converters set False: an imported VAE then computes in the NCHW layout of
            its source, and its float32 outputs equal the source's to 1e-5 (channels-last kernels
            round differently, by ~3e-5 on decoded images).
    """

    architecture = "cnn-vae"
    latent_channels: int = 32
    base_dim: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    decoder_num_res_blocks: int = 3
    stage_attn: bool = True
    mid_block: bool = True
    mid_attn: bool = True
    latent_kernel: int = 3
    norm_groups: int | None = None
    attn_stages: tuple[int, ...] | None = None
    quant_conv: bool = False
    post_quant_conv: bool = False
    channels_last: bool = True

    def __post_init__(self):
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ConfigError(f"ch_mult must be a non-empty list of positive ints, got {self.ch_mult}")
        if self.num_res_blocks < 1 or self.decoder_num_res_blocks < 1 or self.base_dim < 1:
            raise ConfigError("base_dim, num_res_blocks and decoder_num_res_blocks must be >= 1")
        if self.mid_attn and not self.mid_block:
            raise ConfigError("mid_attn=True needs mid_block=True (pass mid_attn=False to drop the MidBlock)")
        if self.norm_groups is not None:
            bad = sorted({d for d in self.stage_dims() if d % self.norm_groups})
            if bad:
                raise ConfigError(f"norm_groups={self.norm_groups} does not divide the stage width(s) {bad}")
        if self.attn_stages is not None:
            if not self.stage_attn:
                raise ConfigError(
                    "attn_stages replaces stage_attn: leave stage_attn at true (attn_stages=[] for no attention)"
                )
            n = len(self.ch_mult)
            if len(set(self.attn_stages)) != len(self.attn_stages) or any(i >= n for i in self.attn_stages):
                raise ConfigError(
                    f"attn_stages must list distinct stage indices below {n} (len(ch_mult)), got {list(self.attn_stages)}"
                )

    @property
    def compression(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def stage_dims(self) -> list[int]:
        return [self.base_dim * m for m in self.ch_mult]

    def attention_stages(self) -> frozenset[int]:
        """The stage indices with attention after every ResBlock (``attn_stages`` / ``stage_attn``)."""
        if self.attn_stages is not None:
            return frozenset(self.attn_stages)
        return frozenset({len(self.ch_mult) - 1} if self.stage_attn else ())

    def norm_layer(self) -> Callable[[int], nn.Module]:
        """``norm_layer(channels)``: the GroupNorm of every norm in the model (``norm_groups``)."""
        return partial(group_norm, groups=self.norm_groups)


class AttnBlock(nn.Module):
    """LDM's single-head spatial self-attention: GroupNorm, 1x1 q/k/v, SDPA, 1x1 out, residual.

    Args:
        dim: channels of the (B, C, H, W) input.
        norm_layer: builds the norm (default ``group_norm``).
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = group_norm):
        super().__init__()
        self.norm = norm_layer(dim)
        self.q = nn.Conv2d(dim, dim, 1)
        self.k = nn.Conv2d(dim, dim, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (t(y).flatten(2).transpose(1, 2)[:, None] for t in (self.q, self.k, self.v))  # (B,1,N,C)
        y = F.scaled_dot_product_attention(q, k, v)[:, 0].reshape(b, h, w, c).permute(0, 3, 1, 2)  # NHWC view
        return x + self.proj_out(y)


class ConvResample(nn.Module):
    """LDM's resampling by 2 with a 3x3 conv.

    Down: padding (0, 1, 0, 1), then the conv with stride 2: (B, C, H, W) -> (B, C, H/2, W/2).
    Up (``up=True``): nearest 2x, then the conv (padding 1): (B, C, H, W) -> (B, C, 2H, 2W).
    """

    def __init__(self, dim: int, up: bool = False):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(dim, dim, 3, padding=1) if up else nn.Conv2d(dim, dim, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class CNNStage(nn.Module):
    """ResBlocks (each optionally followed by attention) at one resolution, on (B, C, H, W)."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        attn: bool,
        norm_layer: Callable[[int], nn.Module] = group_norm,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(ResBlock(in_dim if i == 0 else dim, dim, norm_layer=norm_layer))
            if attn:
                layers.append(AttnBlock(dim, norm_layer))
        self.blocks = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, x, self.gradient_checkpointing)


class MidBlock(nn.Module):
    """The "sandwich" next to the latent: ResBlock, [attention], ResBlock."""

    def __init__(self, dim: int, attn: bool, norm_layer: Callable[[int], nn.Module] = group_norm):
        super().__init__()
        self.block_1 = ResBlock(dim, norm_layer=norm_layer)
        self.attn_1 = AttnBlock(dim, norm_layer) if attn else nn.Identity()
        self.block_2 = ResBlock(dim, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _stages(cfg: CNNVAEConfig, order: list[int], depth: int) -> nn.ModuleList:
    """The ``CNNStage`` of each stage index in ``order`` (the encoder's or the decoder's), each of
    ``depth`` ResBlocks taking the width of the stage before it in ``order`` (the first its own)."""
    dims, attn, norm = cfg.stage_dims(), cfg.attention_stages(), cfg.norm_layer()
    widths = [dims[i] for i in order]
    return nn.ModuleList(
        CNNStage(p, d, depth, i in attn, norm)
        for i, p, d in zip(order, [widths[0], *widths[:-1]], widths, strict=True)
    )


class CNNEncoder(nn.Module):
    """Image (B, 3, H, W) -> Gaussian moments (B, 2*latent, H/f, W/f)."""

    def __init__(self, cfg: CNNVAEConfig):
        super().__init__()
        dims, norm = cfg.stage_dims(), cfg.norm_layer()
        self.conv_in = nn.Conv2d(cfg.in_channels, dims[0], 3, padding=1)
        self.stages = _stages(cfg, list(range(len(dims))), cfg.num_res_blocks)
        self.downs = nn.ModuleList([ConvResample(d) for d in dims[:-1]] + [nn.Identity()])
        self.mid = MidBlock(dims[-1], cfg.mid_attn, norm) if cfg.mid_block else nn.Identity()
        self.norm_out = norm(dims[-1])
        k, c2 = cfg.latent_kernel, 2 * cfg.latent_channels
        self.conv_out = nn.Conv2d(dims[-1], c2, k, padding=k // 2)
        self.quant_conv = nn.Conv2d(c2, c2, 1) if cfg.quant_conv else nn.Identity()
        self.layout = compute_layout if cfg.channels_last else _as_is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(self.layout(x))  # (B, d0, H, W)
        for stage, down in zip(self.stages, self.downs, strict=True):
            x = down(stage(x))  # (B, d_i, H/2^(i+1), W/2^(i+1)); no down after the last stage
        x = self.mid(x)
        x = self.conv_out(F.silu(self.norm_out(x), inplace=not torch.is_grad_enabled()))
        return self.quant_conv(x).contiguous()  # (B, 2*latent, H/f, W/f)


def _as_is(x: torch.Tensor) -> torch.Tensor:
    return x


class CNNDecoder(nn.Module):
    """Latent (B, latent, h, w) -> image (B, 3, h*f, w*f)."""

    def __init__(self, cfg: CNNVAEConfig):
        super().__init__()
        dims, norm = cfg.stage_dims(), cfg.norm_layer()
        k, c = cfg.latent_kernel, cfg.latent_channels
        self.post_quant_conv = nn.Conv2d(c, c, 1) if cfg.post_quant_conv else nn.Identity()
        self.conv_in = nn.Conv2d(c, dims[-1], k, padding=k // 2)
        self.mid = MidBlock(dims[-1], cfg.mid_attn, norm) if cfg.mid_block else nn.Identity()
        order = list(reversed(range(len(dims))))  # deepest stage first
        self.stages = _stages(cfg, order, cfg.decoder_num_res_blocks)
        self.ups = nn.ModuleList([ConvResample(dims[i], up=True) for i in order[:-1]] + [nn.Identity()])
        self.norm_out = norm(dims[0])
        self.conv_out = nn.Conv2d(dims[0], cfg.in_channels, 3, padding=1)
        self.layout = compute_layout if cfg.channels_last else _as_is

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.post_quant_conv(self.layout(z))  # (B, latent, h, w)
        x = self.mid(self.conv_in(z))  # (B, d_last, h, w)
        for stage, up in zip(self.stages, self.ups, strict=True):
            x = up(stage(x))
        return self.conv_out(
            F.silu(self.norm_out(x), inplace=not torch.is_grad_enabled())
        ).contiguous()  # (B, 3, H, W)


@register_architecture
class CNNVAE(AutoencoderBase):
    """The CNN-VAE baseline (LDM / VA-VAE Encoder and Decoder).

    Initialised as LDM / VA-VAE (PyTorch's default for convs, GroupNorm 1/0), written out in
    ``init_weights`` and shared by every model's convs; no residual branch is rescaled.
    """

    config_class = CNNVAEConfig
    encoder_class = CNNEncoder
    decoder_class = CNNDecoder


# --- Table 4 (f16d32): base dim and paper (encoder, decoder) params in millions -------------
# Table 4's "Depth 3" is the decoder's ResBlocks per stage; with LDM's num_res_blocks=2 in the
# encoder (+1 in the decoder) this is VA-VAE's f16d32 configuration and reproduces the counts.
_TABLE4 = {"t": (128, (29, 41)), "b": (192, (64, 93)), "l": (384, (332, 371)), "h": (512, (450, 660))}
_TABLE4["g"] = (768, (1000, 1500))
for _size, (_dim, _pp) in _TABLE4.items():
    register_model(
        f"cnn-vae-{_size}-f16d32",
        CNNVAE,
        family="cnn-vae",
        paper_params=_pp,
        description="Table 4 (StageAttn + MidAttn)",
        base_dim=_dim,
    )
register_model(
    "cnn-vae-mini-f16d32",
    CNNVAE,
    family="cnn-vae",
    description="CPU-sized, matches transvae-mini",
    base_dim=20,
)
register_model(
    "cnn-vae-mini-f8d16",
    CNNVAE,
    family="cnn-vae",
    description="CPU-sized f8d16 (LDM's f8 pattern [1,2,4,4]), matches transvae-mini-f8d16",
    latent_channels=16,
    base_dim=16,
    ch_mult=(1, 2, 4, 4),
)
register_model(
    "cnn-vae-nano-f16d32",
    CNNVAE,
    family="cnn-vae",
    description="smallest, for unit tests",
    base_dim=8,
    num_res_blocks=1,
    decoder_num_res_blocks=1,
)

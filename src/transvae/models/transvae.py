"""TransVAE: a shallow CNN front-end plus a deep Transformer backbone (paper Sections 3.2-3.3).

One configurable encoder/decoder pair covers TransVAE, ViT-VAE and every rung of the paper's
design ladder between them; the knobs are fields of ``TransVAEConfig`` and are documented in
``docs/architecture.md``. With the defaults it is the TransVAE of Figure 2(e) / Table 3:

    encoder: conv_in 3x3 -> [ResBlock x d1] -> down -> [ResBlock x d2] -> down
             -> [TransVAE block x d3] -> down -> ... -> norm -> conv_out 3x3 -> (mean, logvar)
    decoder: the mirror image, with up-sampling, and no MidBlock in either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import QKV_NORMS
from .base import AutoencoderBase, ConfigError, StagedConfig
from .blocks import (
    ConvHead,
    ConvStem,
    DownSample,
    LearnedPosEmbed,
    ResBlock,
    TransformerBlock,
    UpSample,
    compute_layout,
    num_groups,
    run_blocks,
)
from .pos_embed import rope_2d
from .registry import register_architecture, register_model


@dataclass
class TransVAEConfig(StagedConfig):
    """Configuration of TransVAE and of the ViT-VAE / design-ladder models built from it.

    Attributes:
        dims: channel width of each stage (encoder order).
        depths: number of blocks in each stage.
        num_cnn_stages: how many leading stages are ResBlock (CNN) stages; the rest are
            Transformer stages. 2 for TransVAE, 0 for a pure ViT.
        patch_size: downsampling before the first stage (1 for TransVAE, 16 for ViT-VAE).
            The compression ratio is ``patch_size * 2 ** (len(dims) - 1)``.
        patch_embed: ``"seqconv"`` (overlapping convs: a ``ConvStem`` of stride-2 3x3 convs
            with norm and activation for ``patch_size > 1``, DC-AE's ConvPixelUnshuffle
            between stages) or ``"patch"`` (non-overlapping convs).
        patch_out: ``"seqconv"`` (interpolate + 3x3 conv, each 2x; a ``ConvHead`` with norm
            and activation for ``patch_size > 1``) or ``"pixelshuffle"`` for the decoder's
            head and between-stage upsampling.
        pos_embed: ``"rope"`` (2D RoPE on Q/K), ``"learned"`` (absolute, resized at other
            resolutions) or ``"none"``.
        ffn_type: ``"fullconv"``, ``"dwconv"`` or ``"mlp"``; ``mlp_ratio`` is its expansion.
        qkv_norm: ``"rms"`` (RMSNorm right before the Q/K/V projections, the paper's literal
            reading), ``"qk"`` (RMSNorm on each head's queries and keys) or ``"none"``.
            ``config.json`` files with the former boolean load as ``true -> "rms"``,
            ``false -> "none"``.
        dc_shortcut: DC-AE's parameter-free shortcut around every down/up-sampling.
        head_dim: attention head width (64 in the paper).
        latent_kernel: kernel size of the convs into and out of the latent (3 in Appendix B).
        sample_size: training resolution; only used to size learned position embeddings.
        rope_theta: RoPE base frequency.
    """

    architecture = "transvae"
    latent_channels: int = 32
    dims: tuple[int, ...] = (128, 128, 256, 256, 512)
    depths: tuple[int, ...] = (3, 3, 3, 3, 3)
    num_cnn_stages: int = 2
    patch_size: int = 1
    patch_embed: str = "seqconv"
    patch_out: str = "seqconv"
    pos_embed: str = "rope"
    ffn_type: str = "fullconv"
    mlp_ratio: float = 1.0
    qkv_norm: str = "rms"
    dc_shortcut: bool = True
    head_dim: int = 64
    latent_kernel: int = 3
    sample_size: int = 256
    rope_theta: float = 10000.0

    def check(self) -> None:
        if not 0 <= self.num_cnn_stages <= len(self.dims):
            raise ConfigError(f"num_cnn_stages must be in [0, {len(self.dims)}], got {self.num_cnn_stages}")
        for key, allowed in (
            ("patch_embed", ("seqconv", "patch")),
            ("patch_out", ("seqconv", "pixelshuffle")),
            ("pos_embed", ("rope", "learned", "none")),
            ("ffn_type", ("fullconv", "dwconv", "mlp")),
            ("qkv_norm", QKV_NORMS),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.latent_kernel not in (1, 3):
            raise ConfigError(f"latent_kernel must be 1 or 3, got {self.latent_kernel}")
        for d, kind in zip(self.dims, self.stage_kinds(), strict=True):
            if kind == "transformer" and d % self.head_dim:
                raise ConfigError(
                    f"Transformer stage width {d} is not a multiple of head_dim {self.head_dim}"
                )

    @classmethod
    def from_dict(cls, d: dict) -> TransVAEConfig:
        """As ``ModelConfig.from_dict``; a boolean ``qkv_norm`` (config files written before it
        became a choice) is read as ``True -> "rms"``, ``False -> "none"``."""
        if isinstance(d.get("qkv_norm"), bool):
            d = {**d, "qkv_norm": "rms" if d["qkv_norm"] else "none"}
        return super().from_dict(d)

    def stage_kinds(self) -> list[str]:
        return ["cnn" if i < self.num_cnn_stages else "transformer" for i in range(len(self.dims))]

    @property
    def num_transformer_blocks(self) -> int:
        return sum(d for d, k in zip(self.depths, self.stage_kinds(), strict=True) if k == "transformer")

    def stem_channels(self) -> list[int]:
        """Output widths of the ``ConvStem`` steps for ``patch_size = p > 1``: d0/(p/2), ..., d0/2,
        d0 (at least 8), e.g. [16, 32, 64, 128] for d0 = 128, p = 16."""
        n = int(math.log2(self.patch_size))
        return [max(self.dims[0] >> (n - 1 - k), 8) for k in range(n)]


class Stage(nn.Module):
    """A stack of ResBlocks or Transformer blocks at one resolution, on (B, C, H, W)."""

    def __init__(self, cfg: TransVAEConfig, dim: int, depth: int, kind: str, grid: tuple[int, int]):
        super().__init__()
        self.kind, self.head_dim, self.rope_theta = kind, cfg.head_dim, cfg.rope_theta
        self.use_rope = kind == "transformer" and cfg.pos_embed == "rope"
        self.gradient_checkpointing = False
        if kind == "cnn":
            self.blocks = nn.ModuleList([ResBlock(dim) for _ in range(depth)])
        else:
            self.blocks = nn.ModuleList(
                [
                    TransformerBlock(dim, cfg.head_dim, cfg.mlp_ratio, cfg.ffn_type, cfg.qkv_norm)
                    for _ in range(depth)
                ]
            )
        self.pos_embed = (
            LearnedPosEmbed(dim, grid) if kind == "transformer" and cfg.pos_embed == "learned" else None
        )

    def residual_branch_outputs(self) -> list[nn.Linear]:
        """The last layer of every residual branch of this stage's stream (for ``init_weights``):
        attention and FFN outputs of a Transformer stage; none for a ResBlock stage, whose convs
        keep the LDM init of the CNN-VAE (docs/architecture.md)."""
        if self.kind == "cnn":
            return []
        return [layer for blk in self.blocks for layer in blk.residual_outputs()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cnn":
            return run_blocks(self.blocks, x, self.gradient_checkpointing)
        b, c, h, w = x.shape
        # One copy here (free when x is channels-last) keeps the residual stream contiguous;
        # otherwise every LayerNorm of the stage copies its permuted input again.
        t = x.flatten(2).transpose(1, 2).contiguous()  # (B, N, C)
        if self.pos_embed is not None:
            t = t + self.pos_embed((h, w)).to(t.dtype)
        rope = rope_2d(h, w, self.head_dim, self.rope_theta, device=x.device) if self.use_rope else None
        t = run_blocks(self.blocks, t, self.gradient_checkpointing, (h, w), rope)
        # the tokens are the channels-last layout of the feature map: a view, no copy
        return t.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last


class OutNorm(nn.Module):
    """GroupNorm after a CNN stage, LayerNorm over channels after a Transformer stage."""

    def __init__(self, dim: int, kind: str):
        super().__init__()
        self.norm = (
            nn.GroupNorm(num_groups(dim), dim, eps=1e-6) if kind == "cnn" else nn.LayerNorm(dim, eps=1e-6)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, nn.GroupNorm):
            return self.norm(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _stage_grids(cfg: TransVAEConfig) -> list[tuple[int, int]]:
    grids, s = [], cfg.sample_size // cfg.patch_size
    for _ in cfg.dims:
        grids.append((max(s, 1), max(s, 1)))
        s //= 2
    return grids


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> Gaussian moments (B, 2*latent, H/f, W/f)."""

    def __init__(self, cfg: TransVAEConfig):
        super().__init__()
        kinds, grids, d0 = cfg.stage_kinds(), _stage_grids(cfg), cfg.dims[0]
        if cfg.patch_size == 1:
            self.conv_in = nn.Conv2d(cfg.in_channels, d0, 3, padding=1)
        elif cfg.patch_embed == "patch":
            self.conv_in = nn.Conv2d(cfg.in_channels, d0, cfg.patch_size, stride=cfg.patch_size)
        else:  # SeqConv stem: log2(p) x (overlapping stride-2 3x3 conv, norm, activation)
            self.conv_in = ConvStem(cfg.in_channels, cfg.stem_channels())
        self.downs = nn.ModuleList(
            [nn.Identity()]
            + [
                DownSample(a, b, cfg.patch_embed, cfg.dc_shortcut)
                for a, b in zip(cfg.dims[:-1], cfg.dims[1:], strict=True)
            ]
        )
        self.stages = nn.ModuleList(
            Stage(cfg, d, n, k, g) for d, n, k, g in zip(cfg.dims, cfg.depths, kinds, grids, strict=True)
        )
        self.norm_out = OutNorm(cfg.dims[-1], kinds[-1])
        k = cfg.latent_kernel
        self.conv_out = nn.Conv2d(cfg.dims[-1], 2 * cfg.latent_channels, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(compute_layout(x))  # (B, d0, H/p, W/p)
        for down, stage in zip(self.downs, self.stages, strict=True):
            x = stage(down(x))  # (B, d_i, H/(p 2^i), W/(p 2^i))
        return self.conv_out(
            F.silu(self.norm_out(x), inplace=not torch.is_grad_enabled())
        ).contiguous()  # (B, 2*latent, H/f, W/f)


class Decoder(nn.Module):
    """Latent (B, latent, h, w) -> image (B, 3, h*f, w*f)."""

    def __init__(self, cfg: TransVAEConfig):
        super().__init__()
        kinds, grids = cfg.stage_kinds(), _stage_grids(cfg)
        k = cfg.latent_kernel
        self.conv_in = nn.Conv2d(cfg.latent_channels, cfg.dims[-1], k, padding=k // 2)
        self.stages = nn.ModuleList(
            Stage(cfg, d, n, kd, g)
            for d, n, kd, g in reversed(list(zip(cfg.dims, cfg.depths, kinds, grids, strict=True)))
        )
        dims_rev = list(reversed(cfg.dims))
        self.ups = nn.ModuleList(
            [
                UpSample(a, b, cfg.patch_out, cfg.dc_shortcut)
                for a, b in zip(dims_rev[:-1], dims_rev[1:], strict=True)
            ]
            + [nn.Identity()]
        )
        self.norm_out = OutNorm(cfg.dims[0], kinds[0])
        p = cfg.patch_size
        self.head, self.shuffle = nn.Identity(), nn.Identity()
        if p == 1:
            self.conv_out = nn.Conv2d(cfg.dims[0], cfg.in_channels, 3, padding=1)
        elif cfg.patch_out == "pixelshuffle":
            self.conv_out = nn.Conv2d(cfg.dims[0], cfg.in_channels * p * p, 1)
            self.shuffle = nn.PixelShuffle(p)
        else:  # SeqConv head: log2(p) x (overlapping 2x upsampling, norm, activation), 3x3 conv
            widths = cfg.stem_channels()
            self.head = ConvHead(widths, cfg.dc_shortcut)
            self.conv_out = nn.Conv2d(widths[0], cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(compute_layout(z))  # (B, d_last, h, w)
        for stage, up in zip(self.stages, self.ups, strict=True):
            x = up(stage(x))
        x = self.head(
            F.silu(self.norm_out(x), inplace=not torch.is_grad_enabled())
        )  # (B, c, H or H/p, W or W/p)
        return self.shuffle(self.conv_out(x)).contiguous()  # (B, 3, H, W)


@register_architecture
class TransVAE(AutoencoderBase):
    """The TransVAE autoencoder (and, through its config, ViT-VAE and the ladder between)."""

    config_class = TransVAEConfig
    encoder_class = Encoder
    decoder_class = Decoder


# --- The paper's variants (Appendix B, Table 3): paper (encoder, decoder) params in millions ---
_TABLE3 = {
    "transvae-l-f8d16": dict(
        latent_channels=16, depths=(3, 3, 6, 8), dims=(192, 384, 768, 1536), pp=(353, 366)
    ),
    "transvae-t-f16d32": dict(depths=(3, 3, 3, 3, 3), dims=(128, 128, 256, 256, 512), pp=(21, 23)),
    "transvae-b-f16d32": dict(depths=(3, 3, 3, 3, 3), dims=(128, 128, 256, 512, 1024), pp=(67, 73)),
    "transvae-l-f16d32": dict(depths=(3, 3, 3, 4, 6), dims=(192, 192, 384, 768, 1536), pp=(266, 279)),
    "transvae-h-f16d32": dict(depths=(3, 3, 4, 6, 8), dims=(256, 256, 512, 1024, 2048), pp=(633, 658)),
    "transvae-g-f16d32": dict(depths=(3, 3, 4, 8, 10), dims=(320, 320, 640, 1280, 2560), pp=(1100, 1200)),
}
for _name, _kw in _TABLE3.items():
    _pp = _kw.pop("pp")
    register_model(_name, TransVAE, family="transvae", paper_params=_pp, description="Table 3", **_kw)

# --- CPU-sized members for tests, quick starts and small-scale experiments ---
# The paper's width pattern (Tiny: [w, w, 2w, 2w, 4w] at f16, L-f8: [w, 2w, 4w, 8w]) with
# GroupNorm at >= 4 channels per group (blocks.num_groups), at CPU depth.
_CPU_MEMBERS = {  # name: (description, config values); all at sample_size 64
    "transvae-mini-f16d32": (
        "CPU-sized (~1.8M params), Tiny's width pattern",
        dict(depths=(1, 1, 2, 2, 2), dims=(32, 32, 64, 64, 128), head_dim=32),
    ),
    "transvae-nano-f16d32": (
        "smallest, for unit tests",
        dict(depths=(1, 1, 1, 1, 1), dims=(16, 16, 32, 32, 64), head_dim=16),
    ),
    "transvae-mini-f8d16": (
        "CPU-sized f8d16 (~1.5M params), L-f8's width pattern",
        dict(latent_channels=16, depths=(1, 1, 2, 2), dims=(16, 32, 64, 128), head_dim=32),
    ),
}
for _name, (_desc, _kw) in _CPU_MEMBERS.items():
    register_model(_name, TransVAE, family="transvae", description=_desc, **_kw, sample_size=64)

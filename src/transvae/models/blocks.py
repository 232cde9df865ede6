"""Building blocks shared by TransVAE, ViT-VAE and the design ladder.

Layouts: CNN parts work on (B, C, H, W); Transformer blocks work on tokens (B, N, C) with the
grid size (H, W) passed alongside, so nothing assumes a square or a fixed grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .mlp import FeedForward


def num_groups(channels: int, max_groups: int = 32, min_group_channels: int = 4) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is at most
    ``max_groups`` and leaves at least ``min_group_channels`` channels per group.

    The paper's widths (>= 128) give LDM's 32 groups (4+ channels each); narrow CPU-sized
    models keep the same >= 4 channels per group instead of degenerating to instance norm.
    """
    for g in range(min(max_groups, channels // min_group_channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """LDM's ``Normalize``: GroupNorm with eps 1e-6 over ``channels``.

    Args:
        channels: C of the (B, C, H, W) input.
        groups: the number of groups; None picks ``num_groups(channels)`` (32 for LDM's widths,
            >= 4 channels a group for narrow models). Converted LDM / diffusers models pass their
            fixed count (LDM: 32, diffusers: ``norm_num_groups``).
    """
    return nn.GroupNorm(num_groups(channels) if groups is None else groups, channels, eps=1e-6)


def compute_layout(x: torch.Tensor) -> torch.Tensor:
    """The memory layout the encoders and decoders compute in: channels-last (NHWC) on CPUs,
    where it is oneDNN's native layout (its convolutions and pooling run faster, and a
    Transformer stage's (B, N, C) tokens are a free view of it), the caller's layout elsewhere.
    Values are the same up to float rounding; the models return standard-layout tensors.

    Args:
        x: (B, C, H, W).
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ResBlock(nn.Module):
    """ResNet block of CNN-VAEs: (GroupNorm, SiLU, 3x3 conv) twice, plus a skip.

    Args:
        in_ch, out_ch: channels; a 1x1 conv matches the skip when they differ.
        dropout: dropout before the second conv (0 in the paper).
        norm_layer: ``norm_layer(channels)`` builds each norm (default ``group_norm``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        dropout: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = group_norm,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.norm1 = norm_layer(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = norm_layer(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd the activations are updated in place: at full resolution each
        # avoided copy is a fresh 32 MB tensor per 128-channel 256^2 map (same result bitwise).
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))  # (B, C, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        skip = self.skip(x)
        # (under autocast h may be bf16 and the skip fp32: then add out of place, promoting as before)
        return h.add_(skip) if inplace and h.dtype == torch.promote_types(h.dtype, skip.dtype) else skip + h


class DownSample(nn.Module):
    """2x spatial downsampling.

    ``kind="seqconv"`` (TransVAE): overlapping 3x3 conv to ``out_ch/4`` channels, then
    pixel-unshuffle (DC-AE's ConvPixelUnshuffle). ``kind="patch"``: non-overlapping 2x2 conv,
    stride 2 (ViT-style patch merging). With ``shortcut=True`` DC-AE's parameter-free path is
    added: pixel-unshuffle, then average groups of channels down to ``out_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, kind: str = "seqconv", shortcut: bool = True):
        super().__init__()
        if kind == "seqconv":
            if out_ch % 4:
                raise ValueError(f"seqconv downsampling needs out_ch divisible by 4, got {out_ch}")
            self.conv = nn.Conv2d(in_ch, out_ch // 4, 3, padding=1)
            self.unshuffle = nn.PixelUnshuffle(2)
        elif kind == "patch":
            self.conv = nn.Conv2d(in_ch, out_ch, 2, stride=2)
            self.unshuffle = nn.Identity()
        else:
            raise ValueError(f"unknown downsample kind '{kind}', expected 'seqconv' or 'patch'")
        if shortcut and (4 * in_ch) % out_ch:
            raise ValueError(f"DC shortcut needs 4*in_ch divisible by out_ch ({in_ch} -> {out_ch})")
        self.kind, self.shortcut, self.out_ch = kind, shortcut, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unshuffle(self.conv(x))  # (B, out, H/2, W/2)
        if self.shortcut:
            if x.shape[1] == self.out_ch:
                # Averaging the 4 unshuffled copies of each channel is a 2x2 average pool;
                # computed as one, it skips materialising the unshuffled map (same values).
                s = F.avg_pool2d(x, 2)
            else:
                u = F.pixel_unshuffle(x, 2)  # (B, 4*in, H/2, W/2)
                b, c, h, w = u.shape
                s = u.view(b, self.out_ch, c // self.out_ch, h, w).mean(dim=2)
            y = y + s
        return y


# Which taps of a 3x3 kernel over a nearest-2x-upsampled map hit input row (col) p of the 2x2
# window of sub-pixel phase a: phase 0 sees rows (i-1, i) with taps (0 | 1+2), phase 1 sees
# rows (i, i+1) with taps (0+1 | 2). Used by ``UpSample.interpolate_conv``.
_PHASE_TAPS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


class UpSample(nn.Module):
    """2x spatial upsampling, the mirror of ``DownSample``.

    ``kind="seqconv"``: nearest 2x interpolation then an overlapping 3x3 conv (DC-AE's
    InterpolateConv). ``kind="pixelshuffle"``: 1x1 conv to ``4*out_ch`` then pixel-shuffle.
    With ``shortcut=True``: duplicate channels to ``4*out_ch`` then pixel-shuffle (DC-AE).
    """

    def __init__(self, in_ch: int, out_ch: int, kind: str = "seqconv", shortcut: bool = True):
        super().__init__()
        if kind == "seqconv":
            self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        elif kind == "pixelshuffle":
            self.conv = nn.Conv2d(in_ch, 4 * out_ch, 1)
        else:
            raise ValueError(f"unknown upsample kind '{kind}', expected 'seqconv' or 'pixelshuffle'")
        if shortcut and (4 * out_ch) % in_ch:
            raise ValueError(f"DC shortcut needs 4*out_ch divisible by in_ch ({in_ch} -> {out_ch})")
        self.kind, self.shortcut, self.repeats = kind, shortcut, 4 * out_ch // in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut_grid(x) if self.shortcut else None  # (B, out, H, 2, W, 2) view
        if self.kind == "seqconv":
            return self.interpolate_conv(x, shortcut)
        y = F.pixel_shuffle(self.conv(x), 2)  # (B, out, 2H, 2W)
        return y if shortcut is None else y + shortcut.reshape(y.shape)

    def interpolate_conv(self, x: torch.Tensor, add_grid: torch.Tensor | None = None) -> torch.Tensor:
        """``conv3x3(nearest_2x(x))`` (plus ``add_grid``, a (B, O, H, 2, W, 2) sub-pixel view),
        computed at the input resolution as one stride-2 transposed convolution.

        Nearest upsampling repeats every pixel in a 2x2 block, so output row 2h + a (a = 0, 1)
        of the 3x3 conv sees only input rows h - 1 + a + p (p = 0, 1), through the sum of the
        3x3 taps that land on the same input row (``_PHASE_TAPS``): 4 instead of 9 multiply-adds
        per output pixel and no upsampled copy of ``x``. A transposed convolution with stride 2,
        padding 1 and a 4x4 kernel computes exactly these sums when its tap ky = 3 - a - 2p
        holds the summed taps of (a, p) (the same for columns), and writes the four sub-pixel
        phases interleaved. Equal to the two-step form up to float rounding
        (tests/test_models.py); the output keeps the memory layout of ``x`` (channels-last on
        CPUs, ``compute_layout``).
        """
        b, _, h, w = x.shape
        weight = self.conv.weight  # (O, I, 3, 3)
        o, i = weight.shape[:2]
        taps = weight.new_tensor(_PHASE_TAPS)  # (phase, 2x2 tap, 3x3 tap)
        # (I, O, p, a, q, b), flipped so that index (2p' + a') of the 4x4 kernel is 3 - a - 2p
        kernel = torch.einsum("apk,oikl,bql->iopaqb", taps, weight, taps).flip(2, 3, 4, 5).reshape(i, o, 4, 4)
        y = F.conv_transpose2d(x, kernel, self.conv.bias, stride=2, padding=1)  # (B, O, 2H, 2W)
        if add_grid is None:
            return y
        if torch.is_grad_enabled() or y.dtype != torch.promote_types(y.dtype, add_grid.dtype):
            # (under autocast y may be bf16 and the shortcut fp32: add out of place, promoting)
            return (y.view(b, o, h, 2, w, 2) + add_grid).reshape(b, o, 2 * h, 2 * w)
        y.view(b, o, h, 2, w, 2).add_(add_grid)  # in place, broadcast from the shortcut's view
        return y

    def shortcut_grid(self, x: torch.Tensor) -> torch.Tensor:
        """DC-AE's shortcut ``pixel_shuffle(x.repeat_interleave(r, dim=1), 2)`` as a
        (B, out, H, 2, W, 2) view of ``x`` where possible (no copy).

        Output channel ``o`` at sub-pixel ``(i, j)`` reads input channel ``o * 4/r + (2i + j) // r``;
        for ``r = 4`` that is the nearest 2x upsampling of ``x``.
        """
        b, c, h, w = x.shape
        r, out = self.repeats, c * self.repeats // 4
        if r == 4:
            return x.view(b, out, h, 1, w, 1).expand(b, out, h, 2, w, 2)
        if r == 2:  # rows from channel 2o + i, repeated along columns
            return x.view(b, out, 2, h, w).permute(0, 1, 3, 2, 4).unsqueeze(-1).expand(b, out, h, 2, w, 2)
        return F.pixel_shuffle(x.repeat_interleave(r, dim=1), 2).view(b, out, h, 2, w, 2)

    def shortcut_path(self, x: torch.Tensor) -> torch.Tensor:
        """The DC shortcut as a (B, out, 2H, 2W) tensor."""
        b, _, h, w = x.shape
        g = self.shortcut_grid(x)
        return g.reshape(b, g.shape[1], 2 * h, 2 * w)


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block; with the defaults, the TransVAE block of Figure 2(e)."""

    def __init__(
        self,
        dim: int,
        head_dim: int = 64,
        mlp_ratio: float = 1.0,
        ffn_type: str = "fullconv",
        qkv_norm: str = "rms",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, head_dim, qkv_norm=qkv_norm)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FeedForward(dim, mlp_ratio, ffn_type)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], rope=None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)  # (B, N, C)
        return x + self.ffn(self.norm2(x), hw)

    def residual_outputs(self) -> list[nn.Linear]:
        """The last layer of each residual branch (attention, FFN): what ``init_weights`` scales."""
        return [self.attn.proj, self.ffn.fc2]


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, use_checkpoint: bool, *args) -> torch.Tensor:
    """Apply ``blocks`` in order, optionally with activation checkpointing."""
    for blk in blocks:
        if use_checkpoint and torch.is_grad_enabled():
            x = checkpoint(blk, x, *args, use_reentrant=False)
        else:
            x = blk(x, *args)
    return x


class LearnedPosEmbed(nn.Module):
    """Learned absolute position embedding for a ``grid`` of tokens, bicubically resized to
    other grids at run time (as DeTok does), so the model still runs at other resolutions."""

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.weight = nn.Parameter(torch.zeros(1, dim, *grid))

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        w = self.weight
        if tuple(hw) != tuple(self.grid):
            w = F.interpolate(w.float(), size=hw, mode="bicubic", align_corners=False).to(w.dtype)
        return w.flatten(2).transpose(1, 2)  # (1, N, C)


class ConvStem(nn.Module):
    """Overlapping convolutional patch embedding for ``patch_size > 1`` ("SeqConv" encoder).

    XCiT's / DHVT's convolutional stem, which the paper's SeqConv follows: log2(p) steps of a
    3x3 convolution with stride 2 (overlapping windows), GroupNorm and SiLU, the widths doubling
    up to the token width; the last step has no activation (its output is the residual stream).
    (B, in, H, W) -> (B, widths[-1], H/p, W/p).

    Args:
        in_ch: image channels.
        widths: output channels of each step, e.g. ``[d/8, d/4, d/2, d]`` for p = 16.
    """

    def __init__(self, in_ch: int, widths: list[int]):
        super().__init__()
        chans = [in_ch, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(num_groups(c), c, eps=1e-6) for c in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = norm(conv(x))  # (B, widths[i], H/2^(i+1), W/2^(i+1))
            if i < last:
                x = F.silu(x)
        return x


class ConvHead(nn.Module):
    """The decoder's mirror of ``ConvStem`` ("SeqConv" decoder): log2(p) steps of SeqConv
    upsampling (nearest 2x + 3x3 conv, with DC-AE's shortcut when ``shortcut``), GroupNorm and
    SiLU; the widths halve from the token width down to the stem's first width.
    (B, widths[-1], h, w) -> (B, widths[0], h*p, w*p); the decoder's ``conv_out`` follows.

    Args:
        widths: the stem's widths in encoder order (``[d/8, d/4, d/2, d]`` for p = 16).
        shortcut: DC-AE's parameter-free shortcut around each upsampling.
    """

    def __init__(self, widths: list[int], shortcut: bool = False):
        super().__init__()
        chans = [*reversed(widths), widths[0]]  # d, d/2, ..., d/8, d/8
        self.ups = nn.ModuleList(
            UpSample(a, b, "seqconv", shortcut) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(num_groups(c), c, eps=1e-6) for c in chans[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for up, norm in zip(self.ups, self.norms, strict=True):
            x = F.silu(norm(up(x)))  # (B, c, 2h, 2w)
        return x


def init_conv_(conv: nn.Conv2d) -> None:
    """The convolution init of every model: LDM / VA-VAE's (PyTorch's default for ``Conv2d``),
    written out. Weight: Kaiming-uniform with ``a = sqrt(5)``, i.e. U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), a variance of 1/(3 fan_in); bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in = conv.weight[0].numel()
    nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
    if conv.bias is not None:
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(conv.bias, -bound, bound)


def init_weights(module: nn.Module, residual_streams: list[list[nn.Linear]] | tuple = ()) -> None:
    """The parameter initialisation used by every model in this package, written out.

    - Conv2d (every ResBlock, resampler, stem, FFN conv and latent conv, in every model):
      ``init_conv_``, the LDM / VA-VAE scheme that the CNN-VAE baseline reproduces, so the
      CNN parts of all models start alike (docs/architecture.md shows the activations per stage).
    - Linear: truncated normal (std 0.02), zero bias (ViT / timm).
    - Residual branches: ``residual_streams`` lists, per residual stream (one stage of blocks
      between two resamplings), the last Linear of every branch that adds into it; each is
      re-drawn with std ``0.02 / sqrt(n)``, ``n`` = the number of branches of that stream
      (GPT-2's rule, applied per stream), so a stage's blocks together add about as much
      variance as one branch however deep the stage is.
    - Norms: weight 1, bias 0. Learned position embeddings: truncated normal (std 0.02).

    Args:
        module: the model.
        residual_streams: lists of residual-branch output layers, one list per stream.
    """
    if any(p.is_meta for p in module.parameters()):
        return  # device="meta" builds structure only; random init ops on meta tensors are slow
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            init_conv_(m)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, LearnedPosEmbed):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
    for stream in residual_streams:
        std = 0.02 / math.sqrt(max(len(stream), 1))
        for layer in stream:
            if not isinstance(layer, nn.Linear):
                raise TypeError(
                    f"residual-branch output layers must be nn.Linear, got {type(layer).__name__}"
                )
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)

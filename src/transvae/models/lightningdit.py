"""LightningDiT: the class-conditional diffusion Transformer the paper trains on TransVAE latents.

The architecture of VA-VAE's LightningDiT (Yao et al., CVPR 2025), which the paper follows for
its downstream experiments (Section 4.3, Appendix D): a DiT (Peebles & Xie) whose blocks use

- RMSNorm instead of LayerNorm, a SwiGLU feed-forward (hidden width 2/3 x 4 x D),
- 2D rotary position embedding on queries and keys, computed for the actual latent grid (any
  H x W, square or not; ``transvae.models.pos_embed``), plus DiT's fixed 2D sin-cos absolute
  embedding, also computed per grid (in DiT's channel order; generators saved before
  ``pos_embed_order`` existed keep the row-first order they were trained with),
- optional QK-norm (RMSNorm over each head's queries and keys; off in LightningDiT's recipes,
  the usual cure when a large model's loss turns NaN),
- adaLN-zero conditioning on the sum of a timestep embedding and a class embedding, with label
  dropout (an extra "null" class) so that one network serves classifier-free guidance.

The network predicts the rectified-flow velocity ``v(x_t, t, y)`` for ``t`` in [0, 1] (0 is
noise, 1 is data; ``transvae.generation.flow``). The named variants (``lightningdit-b-1`` ...
``lightningdit-nano-1``) are registered at the end of this file and built with
``transvae.create_model``; ``save_pretrained`` / ``from_pretrained`` come from the one
``PersistenceMixin`` every model shares.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..utils.config import ConfigError, ConfigFields
from ..utils.config import from_dict as config_from_dict
from .attention import Attention, RMSNorm
from .mlp import GeluMLP, SwiGLUFFN
from .persistence import PersistenceMixin
from .pos_embed import POS_EMBED_ORDERS, rope_2d, sincos_pos_embed_2d
from .registry import register_architecture, register_models

ARCHITECTURE = "lightningdit"


class GeneratorConfigError(ConfigError):
    """A generator config has unknown keys, wrong types or impossible values."""


class _Size(NamedTuple):
    depth: int
    hidden_size: int
    num_heads: int
    paper_params: float  # millions


# B, L and XL are the widths and depths of DiT (Peebles & Xie, Table 1) that LightningDiT keeps;
# ``paper_params`` is the count DiT publishes for the size (B ~130M, L ~458M, XL ~675M); the counts
# of our models, measured on the meta device, are within 2% of them (``transvae list``).
_SIZES = {
    "b": _Size(12, 768, 12, 130.0),
    "l": _Size(24, 1024, 16, 458.0),
    "xl": _Size(28, 1152, 16, 675.0),
}
_XL = _SIZES["xl"]  # the config's defaults


@dataclass(frozen=True)
class LightningDiTConfig(ConfigFields):
    """Hyper-parameters of a LightningDiT; the defaults are LightningDiT-XL/1 on f16d32 latents.

    Attributes:
        in_channels: latent channels of the tokenizer (16 for f8d16, 32 for f16d32).
        patch_size: latent pixels per token side (1 or 2).
        hidden_size: token width D.
        depth: number of blocks.
        num_heads: attention heads (head width D / heads must be divisible by 4 for 2D RoPE).
        mlp_ratio: feed-forward width as a multiple of D (SwiGLU uses 2/3 of it).
        num_classes: class labels; one more "null" class is added when ``class_dropout > 0``.
        class_dropout: probability that a training label is replaced by the null class (CFG).
        swiglu / rmsnorm / rope / qk_norm: the LightningDiT block options (see the module doc).
        abs_pos_embed: also add the fixed 2D sin-cos embedding (LightningDiT does).
        pos_embed_order: channel order of that embedding: ``"cols_first"`` (DiT's and
            LightningDiT's ``get_2d_sincos_pos_embed``, the default for new models) or
            ``"rows_first"`` (generators saved before this field existed; ``from_dict`` reads a
            stored config without the field as that).
        rope_theta: RoPE base frequency.
        gradient_checkpointing: recompute block activations in backward.
    """

    architecture: ClassVar[str] = ARCHITECTURE
    in_channels: int = 32
    patch_size: int = 1
    hidden_size: int = _XL.hidden_size
    depth: int = _XL.depth
    num_heads: int = _XL.num_heads
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout: float = 0.1
    swiglu: bool = True
    rmsnorm: bool = True
    rope: bool = True
    qk_norm: bool = False
    abs_pos_embed: bool = True
    pos_embed_order: str = "cols_first"
    rope_theta: float = 10000.0
    gradient_checkpointing: bool = False

    def __post_init__(self):
        positive = ("in_channels", "patch_size", "hidden_size", "depth", "num_heads", "num_classes")
        for k in positive:
            if getattr(self, k) < 1:
                raise GeneratorConfigError(f"generator config '{k}' must be >= 1, got {getattr(self, k)}")
        if not (self.mlp_ratio > 0 and math.isfinite(self.mlp_ratio)):
            raise GeneratorConfigError(f"generator config 'mlp_ratio' must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise GeneratorConfigError(f"'class_dropout' must be in [0, 1), got {self.class_dropout}")
        if self.hidden_size % self.num_heads:
            raise GeneratorConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.pos_embed_order not in POS_EMBED_ORDERS:
            raise GeneratorConfigError(
                f"'pos_embed_order' must be one of {list(POS_EMBED_ORDERS)}, got {self.pos_embed_order!r}"
            )
        head_dim = self.hidden_size // self.num_heads
        if (self.rope or self.abs_pos_embed) and head_dim % 4:
            raise GeneratorConfigError(
                f"2D position embeddings need a head width divisible by 4, got {head_dim}"
            )
        # a size guard before any allocation: XL is 1152 x 28; 16384 x 256 would be ~200B parameters
        if self.hidden_size > 16384 or self.depth > 256 or self.patch_size > 16 or self.num_classes > 100_000:
            raise GeneratorConfigError(
                f"generator size out of range (hidden_size {self.hidden_size} <= 16384, depth {self.depth} "
                f"<= 256, patch_size {self.patch_size} <= 16, num_classes {self.num_classes} <= 100000)"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LightningDiTConfig:
        """Build from plain data with the project's one config parser: unknown keys and wrong
        types are errors that list the valid keys.

        A mapping without ``pos_embed_order`` is a ``config.json`` written before the field
        existed, whose model was trained with the row-first table: it is read as ``"rows_first"``
        (the registered variants pass ``"cols_first"`` explicitly, so new models get DiT's order).
        """
        if isinstance(d, dict) and "pos_embed_order" not in d:
            d = {**d, "pos_embed_order": "rows_first"}
        try:
            return config_from_dict(cls, d, what="generator config")
        except GeneratorConfigError:
            raise
        except ConfigError as e:
            raise GeneratorConfigError(str(e)) from e


# -- embeddings -----------------------------------------------------------------------------
class TimestepEmbedder(nn.Module):
    """Scalar t in [0, 1] -> sinusoidal features (as DiT / SiT: max period 10000) -> 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) -> (B, dim) features [cos | sin] (GLIDE / DiT layout)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float()[:, None] * freqs[None]  # (B, half)
        emb = torch.cat([args.cos(), args.sin()], -1)
        return F.pad(emb, (0, dim % 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, D)."""
        return self.mlp(self.sinusoid(t, self.frequency_size).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class label -> vector; with ``dropout > 0`` an extra row (index ``num_classes``) is the
    unconditional "null" label used by classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout: float):
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        self.table = nn.Embedding(num_classes + (1 if dropout > 0 else 0), hidden_size)

    @property
    def null_label(self) -> int | None:
        """Index of the unconditional label, or None if the model was trained without dropout."""
        return self.num_classes if self.dropout > 0 else None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) int64 labels (``null_label`` allowed) -> (B, D); drops labels while training."""
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)


# -- blocks -----------------------------------------------------------------------------------
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: (B, N, D) tokens, (B, D) shift / scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class LightningDiTBlock(nn.Module):
    """Pre-norm Transformer block with adaLN-zero modulation by the conditioning vector.

    Args:
        dim, num_heads, mlp_ratio, qk_norm: widths and attention options.
        norm_layer: token norm class (``RMSNorm`` or an affine-free LayerNorm).
        mlp_layer: feed-forward class taking ``(dim, mlp_ratio)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        norm_layer: type[nn.Module],
        mlp_layer: type[nn.Module],
    ):
        super().__init__()
        self.norm1 = norm_layer(dim, eps=1e-6)
        # the package's one attention: QK-norm is its "qk" option (RMSNorm per head), keys as DiT's
        self.attn = Attention(dim, dim // num_heads, qkv_norm="qk" if qk_norm else "none")
        self.norm2 = norm_layer(dim, eps=1e-6)
        self.mlp = mlp_layer(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope) -> torch.Tensor:
        """x: (B, N, D) tokens, c: (B, D) conditioning."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), rope)  # (B, N, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map from tokens to patches of the velocity."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, norm_layer: type[nn.Module]):
        super().__init__()
        self.norm = norm_layer(dim, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p*p*C)


def _affine_free_layernorm(dim: int, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps, elementwise_affine=False)


# -- the model --------------------------------------------------------------------------------
@register_architecture
class LightningDiT(PersistenceMixin, nn.Module):
    """Class-conditional velocity model on latent grids of any size (multiples of the patch).

    Args:
        config: the hyper-parameters (``LightningDiTConfig``).
    """

    config_class = LightningDiTConfig
    kind = "generator"

    def __init__(self, config: LightningDiTConfig):
        super().__init__()
        self.config = cfg = config
        self._model_name = ""
        d, p = cfg.hidden_size, cfg.patch_size
        norm_layer = RMSNorm if cfg.rmsnorm else _affine_free_layernorm
        mlp_layer = SwiGLUFFN if cfg.swiglu else GeluMLP
        self.x_embedder = nn.Conv2d(cfg.in_channels, d, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout)
        self.blocks = nn.ModuleList(
            LightningDiTBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, norm_layer, mlp_layer)
            for _ in range(cfg.depth)
        )
        self.final_layer = FinalLayer(d, p, cfg.in_channels, norm_layer)
        self._grid_cache: dict[tuple, tuple] = {}  # position tables per (grid, device): not state
        self.initialize_weights()

    @property
    def model_name(self) -> str:
        return self._model_name or ARCHITECTURE

    @property
    def null_label(self) -> int | None:
        return self.y_embedder.null_label

    def num_parameters(self, part: str = "total") -> int:
        """Parameter count (a generator has one part: ``"total"``)."""
        if part != "total":
            raise ValueError(f"a generator has no '{part}' part; use 'total'")
        return sum(p.numel() for p in self.parameters())

    def table_row(self) -> dict[str, Any]:
        """The columns of ``transvae list`` that describe a generator."""
        cfg = self.config
        return {
            "patch_size": cfg.patch_size,
            "in_channels": cfg.in_channels,
            "hidden_size": cfg.hidden_size,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "total_params": self.num_parameters(),
        }

    def config_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: the architecture, the registered name and the config."""
        return {"architecture": ARCHITECTURE, "model_name": self.model_name, **self.config.to_dict()}

    def initialize_weights(self) -> None:
        """DiT's initialisation, written out: Xavier-uniform linears with zero bias (the patch
        embedding too, as a linear map), N(0, 0.02) label table and timestep MLP, and zero for
        every adaLN modulation and for the output layer (each block starts as the identity)."""
        if any(p.is_meta for p in self.parameters()):
            return  # device="meta" builds the structure only
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _positions(self, h: int, w: int, device: torch.device):
        """(abs embedding (1, N, D) or None, RoPE (cos, sin) or None) for an h x w token grid."""
        key = (h, w, str(device))
        if key not in self._grid_cache:
            cfg = self.config
            pos = None
            if cfg.abs_pos_embed:
                pos = sincos_pos_embed_2d(h, w, cfg.hidden_size, device, cfg.pos_embed_order)[None]
            rope = rope_2d(h, w, cfg.head_dim, cfg.rope_theta, device) if cfg.rope else None
            if len(self._grid_cache) > 16:
                self._grid_cache.clear()
            self._grid_cache[key] = (pos, rope)
        return self._grid_cache[key]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict the velocity.

        Args:
            x: (B, C, H, W) noisy latents x_t, H and W multiples of ``patch_size``.
            t: (B,) times in [0, 1] (0 = noise, 1 = data).
            y: (B,) int64 class labels (``null_label`` for unconditional).
        Returns:
            (B, C, H, W) velocity.
        """
        b, c, hh, ww = x.shape
        p = self.config.patch_size
        if c != self.config.in_channels or hh % p or ww % p:
            raise ValueError(
                f"expected latents (B, {self.config.in_channels}, H, W) with H, W multiples of {p}, "
                f"got {tuple(x.shape)}"
            )
        h, w = hh // p, ww // p
        pos, rope = self._positions(h, w, x.device)
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, N, D)
        if pos is not None:
            tokens = tokens + pos.to(tokens.dtype)
        cond = self.t_embedder(t) + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            if self.config.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, cond, rope, use_reentrant=False)
            else:
                tokens = block(tokens, cond, rope)  # (B, N, D)
        out = self.final_layer(tokens, cond)  # (B, N, p*p*C)
        out = out.view(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        return out.reshape(b, c, hh, ww)


# -- the named variants -----------------------------------------------------------------------
# ``mini`` and ``nano`` are CPU-sized members for tests and small experiments. Each variant names
# ``pos_embed_order`` because ``from_dict`` reads a config without it as an old, row-first one.


def _dit(depth: int, hidden_size: int, num_heads: int, patch_size: int) -> dict:
    """The config values of a variant (``pos_embed_order`` named: see above)."""
    return dict(
        depth=depth,
        hidden_size=hidden_size,
        num_heads=num_heads,
        patch_size=patch_size,
        pos_embed_order="cols_first",
    )


_VARIANTS = {  # name: (description, published parameters in millions or None, config values)
    f"lightningdit-{size}-{patch}": (
        f"LightningDiT-{size.upper()}/{patch}",
        params,
        _dit(depth, dim, heads, patch),
    )
    for size, (depth, dim, heads, params) in _SIZES.items()
    for patch in (1, 2)
}
_VARIANTS["lightningdit-mini-1"] = ("CPU-sized: 6 blocks of width 256", None, _dit(6, 256, 4, 1))
_VARIANTS["lightningdit-nano-1"] = ("test-sized: 2 blocks of width 64", None, _dit(2, 64, 2, 1))
register_models(LightningDiT, "lightningdit", _VARIANTS)

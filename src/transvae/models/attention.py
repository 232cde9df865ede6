"""Self-attention and its normalisation, shared by every Transformer in the package: TransVAE's
blocks, ViT-VAE / the design ladder and LightningDiT.

One ``Attention`` serves all of them: per-head width ``head_dim``, an optional normalisation
around QKV (``"rms"``: RMSNorm of the token before the projection, TransVAE Section 3.3.2;
``"qk"``: RMSNorm of each head's queries and keys, LightningDiT's QK-norm; ``"none"``) and 2D
RoPE on queries and keys for the actual token grid (``pos_embed.rope_2d``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pos_embed import apply_rope_2d


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose weight follows the input's dtype: under bf16 autocast the input is
    bf16 while the weight stays fp32, and torch then falls back from its fused kernel (with a
    warning) to the unfused one; the fused kernel accumulates in fp32 either way. The package's
    one RMSNorm (TransVAE's attention, LightningDiT); same parameters and state-dict keys as
    ``nn.RMSNorm``. Input (..., *normalized_shape) -> same shape and dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, w, self.eps)


QKV_NORMS = ("rms", "qk", "none")


class Attention(nn.Module):
    """Multi-head self-attention with an optional normalisation around QKV and 2D RoPE on Q and K.

    Uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU).

    Args:
        dim: token width; heads = dim // head_dim.
        qkv_norm: ``"rms"``: RMSNorm over the token right before the Q, K, V projections (the
            literal reading of Section 3.3.2); ``"qk"``: RMSNorm over each head's queries and keys
            after the projection (QK-norm, LightningDiT's ``use_qknorm``); ``"none"``.
            Behind the block's pre-LayerNorm, ``"rms"`` is the identity at initialisation
            (docs/architecture.md).
    """

    def __init__(self, dim: int, head_dim: int = 64, qkv_norm: str = "rms", qkv_bias: bool = True):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"attention width {dim} is not a multiple of head_dim {head_dim}")
        if qkv_norm not in QKV_NORMS:
            raise ValueError(f"qkv_norm must be one of {QKV_NORMS}, got {qkv_norm!r}")
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.norm = RMSNorm(dim, eps=1e-6) if qkv_norm == "rms" else nn.Identity()
        self.qk_norm = qkv_norm == "qk"
        self.q_norm = RMSNorm(head_dim, eps=1e-6) if self.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps=1e-6) if self.qk_norm else nn.Identity()
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, N, head_dim)
        qk = torch.stack((self.q_norm(qkv[0]), self.k_norm(qkv[1]))) if self.qk_norm else qkv[:2]
        if rope is not None:
            q, k = apply_rope_2d(qk, *rope).unbind(0)  # queries and keys in one pass
        else:
            q, k = qk.unbind(0)  # each (B, heads, N, head_dim)
        v = qkv[2]
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))  # (B, N, C)

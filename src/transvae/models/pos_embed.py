"""2D position embeddings computed for the actual token grid: rotary (RoPE) and sin-cos.

Both are computed per call for the grid of the current input (nothing cached in fixed-size
buffers), so any H x W and aspect ratio works.

- ``rope_2d`` / ``apply_rope_2d``: rotary embedding of queries and keys; half of each head's
  rotary dimensions rotate with the token's row, the other half with its column, so a model
  trained at 256^2 runs at 1024^2 (TransVAE Section 3.2.1; LightningDiT).
- ``sincos_pos_embed_2d``: DiT's fixed absolute embedding (LightningDiT adds it to its tokens),
  in DiT's channel order (column half first) or the row-first order of older transvae generators.
"""

from __future__ import annotations

import torch


def rope_2d(
    height: int,
    width: int,
    head_dim: int,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for a (height, width) grid, flattened row-major.

    Args:
        height, width: token grid size.
        head_dim: per-head channel count; must be divisible by 4.
        theta: RoPE base frequency.
    Returns:
        (cos, sin), each (height*width, head_dim) in float32.
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    inv_freq = 1.0 / theta ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    fr = torch.outer(rows, inv_freq)  # (H, d/4)
    fc = torch.outer(cols, inv_freq)  # (W, d/4)
    fr = fr[:, None, :].expand(height, width, quarter)
    fc = fc[None, :, :].expand(height, width, quarter)
    # Layout per axis half: [f, f] so that rotate_half pairs channel i with i + d/4.
    angles = torch.cat([fr, fr, fc, fc], dim=-1).reshape(height * width, head_dim)  # (N, d)
    return angles.cos(), angles.sin()


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    Args:
        x: (..., N, head_dim), e.g. (B, heads, N, head_dim) or (2, B, heads, N, head_dim) for
            queries and keys at once.
        cos, sin: (N, head_dim) from ``rope_2d``.
    Returns:
        Same shape and dtype as ``x`` (the rotation is computed in float32).
    """
    dtype = x.dtype
    x = x.float()
    q = x.shape[-1] // 4
    # Channels are [row a, row b | col a, col b] quarters; rotate_half within each axis half
    # maps them to [-b, a | -d, c]. The sign lives in the (small) sin table, so rotating x
    # is one flip of the quarter pairs, and x * cos + x_rot * sin is a product and one fused
    # multiply-add: 3 passes over x instead of ~6 with chunk/cat/neg/mul/add (the same result
    # up to the rounding of the fused multiply-add).
    x_rot = x.unflatten(-1, (2, 2, q)).flip(-2).flatten(-3)  # (..., N, d): [b, a | d, c]
    s = sin.unflatten(-1, (2, 2, q))
    sin_signed = torch.stack((-s[..., 0, :], s[..., 1, :]), dim=-2).flatten(-3)  # (N, d)
    return (x * cos).addcmul_(x_rot, sin_signed).to(dtype)


POS_EMBED_ORDERS = ("cols_first", "rows_first")


def sincos_pos_embed_2d(
    height: int, width: int, dim: int, device=None, order: str = "cols_first"
) -> torch.Tensor:
    """DiT's fixed 2D sin-cos position embedding for a (height, width) grid, tokens row-major.

    Each half of the channels encodes one coordinate as [sin | cos] over dim/4 frequencies
    ``10000^(-i / (dim/4))``. ``order`` says which half comes first:

    - ``"cols_first"``: the column (x) half first, then the row (y) half. This is DiT's and
      LightningDiT's ``get_2d_sincos_pos_embed``: it builds ``np.meshgrid(grid_w, grid_h)``, whose
      first array holds each token's column, and encodes that first (under the name ``emb_h``).
    - ``"rows_first"``: the row half first: what transvae's generators used before the option
      existed (kept so that those saved generators load with identical outputs).

    Returns:
        (height * width, dim) float32.
    """
    if order not in POS_EMBED_ORDERS:
        raise ValueError(f"order must be one of {POS_EMBED_ORDERS}, got {order!r}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float64)
    cols = torch.arange(width, device=device, dtype=torch.float64)
    er = torch.outer(rows, omega)  # (H, d/4)
    ec = torch.outer(cols, omega)  # (W, d/4)
    er = torch.cat([er.sin(), er.cos()], -1)[:, None, :].expand(height, width, 2 * quarter)
    ec = torch.cat([ec.sin(), ec.cos()], -1)[None, :, :].expand(height, width, 2 * quarter)
    halves = [ec, er] if order == "cols_first" else [er, ec]
    return torch.cat(halves, -1).reshape(height * width, 4 * quarter).float()  # (N, dim)

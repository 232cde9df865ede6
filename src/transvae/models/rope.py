"""2D rotary position embedding (RoPE) computed for the actual token grid.

Half of each head's rotary dimensions rotate with the token's row, the other half with its
column. Nothing is cached in a fixed-size buffer: ``rope_2d`` is called with the feature grid
of the current input, so any H x W and aspect ratio works, and a model trained at 256^2 runs
at 1024^2 (TransVAE Section 3.2.1).
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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    Args:
        x: (B, heads, N, head_dim).
        cos, sin: (N, head_dim) from ``rope_2d``.
    Returns:
        (B, heads, N, head_dim), same dtype as ``x`` (the rotation is computed in float32).
    """
    dtype = x.dtype
    x = x.float()
    rows, cols = x.chunk(2, dim=-1)  # each (B, h, N, d/2): row half, column half
    c_r, c_c = cos.chunk(2, dim=-1)
    s_r, s_c = sin.chunk(2, dim=-1)
    rows = rows * c_r + _rotate_half(rows) * s_r
    cols = cols * c_c + _rotate_half(cols) * s_c
    return torch.cat([rows, cols], dim=-1).to(dtype)

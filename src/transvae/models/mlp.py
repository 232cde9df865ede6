"""Token feed-forward networks: TransVAE's convolutional FFN and the MLPs of DiT / LightningDiT.

- ``FeedForward``: the plain ViT MLP or TransVAE's FFN with a depth-wise / full 3x3 conv on the
  token grid after the input projection (Section 3.3.1, Figure 2e); it takes the grid size.
- ``SwiGLUFFN``: LightningDiT's SwiGLU (timm's), hidden width ``int(2/3 * mlp_ratio * dim)``.
- ``GeluMLP``: DiT's Linear -> GELU (tanh) -> Linear (timm's ``Mlp``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import Mlp, SwiGLU


class FeedForward(nn.Module):
    """Token FFN. ``kind``:

    - ``"mlp"``: Linear(dim, r*dim), GELU, Linear (plain ViT MLP).
    - ``"dwconv"``: as ``mlp`` with a depth-wise 3x3 conv (plus residual) after the input projection.
    - ``"fullconv"``: as ``mlp`` with a full 3x3 conv (plus residual) after the input
      projection; TransVAE uses it with ``mlp_ratio=1`` (Section 3.3.1, Figure 2e).
    """

    def __init__(self, dim: int, mlp_ratio: float = 1.0, kind: str = "fullconv"):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        if kind == "mlp":
            self.conv = None
        elif kind == "dwconv":
            self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        elif kind == "fullconv":
            self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        else:
            raise ValueError(f"unknown ffn kind '{kind}', expected 'mlp', 'dwconv' or 'fullconv'")
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.kind = kind

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h = self.fc1(x)  # (B, N, hidden)
        if self.conv is not None:
            b, n, c = h.shape
            # (B, N, hidden) tokens are the channels-last layout of the map: views, no copies
            g = h.reshape(b, *hw, c).permute(0, 3, 1, 2)  # (B, hidden, H, W)
            h = h + self.conv(g).permute(0, 2, 3, 1).reshape(b, n, c)  # residual around the conv path
        return self.fc2(self.act(h))  # (B, N, C)


class SwiGLUFFN(SwiGLU):
    """timm's SwiGLU with LightningDiT's hidden width ``int(2/3 * mlp_ratio * dim)``, so that it
    has the parameter count of the GELU MLP it replaces."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__(dim, int(2 / 3 * mlp_ratio * dim))


class GeluMLP(Mlp):
    """DiT's MLP: Linear -> GELU (tanh) -> Linear, width ``mlp_ratio * dim``."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__(dim, int(mlp_ratio * dim), act_layer=lambda: nn.GELU(approximate="tanh"))

"""LPIPS perceptual loss (Zhang et al., 2018) from the ``lpips`` package.

The network comes from ``transvae.models.pretrained.load_lpips``, the loader the LPIPS metric
uses too: the calibrated linear heads ship inside the ``lpips`` package; the ImageNet trunk
(VGG16 by default) is read from ``loss.lpips_weights`` (a local torchvision state dict, ``.pth``
or ``.safetensors``) or else from the torch hub cache
(``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``) or a download. The weights are resolved
*before* the network is built, so an offline machine fails at once with an error naming the
options. ``pretrained=False`` builds a random trunk (tests; never touches disk caches or the
network).
"""

from __future__ import annotations

import torch

from ..models.pretrained import LPIPS_TRUNKS, load_lpips
from .common import FrozenNetwork


class LPIPSLoss(FrozenNetwork):
    """Frozen LPIPS distance, always evaluated in fp32 (also under bf16 autocast).

    Args:
        net: trunk, ``"vgg"`` (the paper's VGG16), ``"alex"`` or ``"squeeze"``.
        pretrained: load the ImageNet trunk; False gives a random trunk under the package's
            calibrated heads (a stand-in for tests).
        weights: optional local path of the trunk's torchvision state dict (``loss.lpips_weights``).
    """

    def __init__(self, net: str = "vgg", pretrained: bool = True, weights: str | None = None):
        if net not in LPIPS_TRUNKS:
            raise ValueError(f"loss.lpips_net must be one of {sorted(LPIPS_TRUNKS)}, got {net!r}")
        model, _ = load_lpips(
            net,
            weights,
            pretrained,
            option="loss.lpips_weights",
            hint="or disable the term with --loss.lpips_weight=0",
        )
        super().__init__(model)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance.

        Args:
            x: (B, 3, H, W) images in [-1, 1].
            y: (B, 3, H, W) images in [-1, 1].
        Returns:
            (B,) fp32 distances.
        """
        # fp32: LPIPS unit-normalises feature vectors and averages tiny squared differences.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.net(x.float(), y.float()).flatten()

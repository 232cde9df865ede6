"""LPIPS per image pair (Zhang et al., 2018), the set value being the mean over images.

``lpips`` package v0.1, spatially averaged, on the uint8 images mapped back to [-1, 1]. The
network (VGG16 trunk by default, or AlexNet) comes from ``transvae.models.pretrained.load_lpips``,
the loader the LPIPS training loss uses too: ``--lpips-weights PATH``, the torch hub cache or a
download. It runs in float32.
"""

from __future__ import annotations

import os

import torch

from ..models.pretrained import load_lpips
from .base import PairMetric, register_metric, uint8_to_unit


@register_metric("lpips")
class LPIPS(PairMetric):
    """Mean per-image LPIPS distance (0 for identical images).

    Args:
        lpips_net: trunk, "vgg" or "alex".
        lpips_weights: local trunk weights (``--lpips-weights``); None: hub cache or download.
        random_feature_networks: a random trunk (tests only: the numbers are not LPIPS).
        device: where the network runs.
    Raises:
        WeightsUnavailableError: the trunk's weights are neither local nor downloadable.
    """

    label = "LPIPS ↓"
    higher_is_better = False
    network = "lpips-vgg"  # "lpips-alex" with lpips_net="alex"
    bytes_per_pixel = 1024  # the features of five VGG stages for both images, ~122 channels in fp32

    def __init__(
        self,
        lpips_net: str = "vgg",
        lpips_weights: str | os.PathLike | None = None,
        random_feature_networks: bool = False,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.net, self._source = load_lpips(lpips_net, lpips_weights, pretrained=not random_feature_networks)
        self.net = self.net.to(device)
        self.net_name, self.network = lpips_net, f"lpips-{lpips_net}"
        self.device = torch.device(device)
        self.protocol = (
            "mean over images of LPIPS v0.1 (spatial average) on the uint8 images mapped to [-1, 1]; "
            f"backbone {lpips_net}, weights {self._source}"
        )

    @property
    def weights_source(self) -> str:
        return self._source

    def score(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        a, b = uint8_to_unit(target.to(self.device)), uint8_to_unit(pred.to(self.device))
        return self.net(a, b, normalize=False).flatten().double()  # (B,)

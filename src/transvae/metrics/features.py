"""Feature networks that set metrics read, in a registry (as torch-fidelity's feature extractors).

A feature extractor maps uint8 images (B, 3, H, W) to named feature tensors; FID, sFID, IS,
precision and recall each declare the network (``Metric.network``) and the outputs
(``Metric.features``) they read, and ``MetricCollection`` runs each network once per batch for
all of them: one load, one forward pass, many metrics.

``inception`` is the FID InceptionV3 of torch-fidelity (its own forward, so images of any size
are resized to 299x299 with TF1-compatible bilinear interpolation, without antialiasing, exactly
as torch-fidelity and the TF / ADM evaluators), with three outputs:

- ``"2048"``: the pool features (FID, precision, recall);
- ``"logits_unbiased"``: the 1008 logits without the bias (IS, as torch-fidelity and ADM);
- ``"spatial"``: ADM's sFID feature, TF's ``mixed_6/conv`` (torch-fidelity's
  ``Mixed_6d.branch1x1`` output, after its ReLU, 17 x 17 x 192), first 7 channels, flattened in
  TF's channels-last order: 17 * 17 * 7 = 2023 numbers per image.

``inception-pytorch-fid`` is the same network and weights with pytorch-fid's input stage
(``x / 255`` resized to 299 by ``F.interpolate(bilinear, align_corners=False)``, then ``2x - 1``),
the pipeline of pytorch-fid and of the evaluation scripts copied from it (e.g. LightningDiT's
``tools/calculate_fid.py``): its numbers are pytorch-fid's, which differ from torch-fidelity's in
the resize.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.pretrained import load_inception

_EXTRACTORS: dict[str, Callable[..., nn.Module]] = {}
SPATIAL_CHANNELS = 7  # ADM's evaluator keeps the first 7 of mixed_6/conv's 192 channels


def register_feature_extractor(name: str):
    """Decorator: register ``builder(weights=None, random_init=False) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _EXTRACTORS[name] = builder
        return builder

    return deco


def list_feature_extractors() -> list[str]:
    return sorted(_EXTRACTORS)


def build_feature_extractor(
    name: str, weights: str | os.PathLike | None = None, random_init: bool = False
) -> nn.Module:
    """The registered extractor ``name``, in eval mode on the CPU.

    Args:
        name: e.g. "inception".
        weights: a local weights file (else the torch hub cache or a download).
        random_init: a small random stand-in with the same outputs (tests only).
    Raises:
        ValueError: unknown name. WeightsUnavailableError: weights neither local nor downloadable.
    """
    if name not in _EXTRACTORS:
        raise ValueError(f"unknown feature network {name!r}; choose from {', '.join(sorted(_EXTRACTORS))}")
    return _EXTRACTORS[name](weights=weights, random_init=random_init).eval()


def feature_networks(
    metrics: Iterable,
    weights: dict[str, str | os.PathLike | None] | None = None,
    random_init: bool = False,
    given: dict[str, nn.Module] | None = None,
    device: torch.device | str = "cpu",
    variants: dict[str, str] | None = None,
) -> dict[str, nn.Module]:
    """Every registered extractor that ``metrics`` read, each built once.

    Args:
        metrics: metric instances (their ``network`` attributes).
        weights: local weights per network name (``{"inception": "--fid-weights" value}``).
        random_init: random stand-ins (tests only).
        given: ready networks by name, used instead of building (e.g. test stand-ins).
        device: where the networks go.
        variants: the registered extractor to build for a network name, e.g.
            ``{"inception": "inception-pytorch-fid"}`` (pytorch-fid's resize for FID).
    """
    nets = dict(given or {})
    for name in dict.fromkeys(m.network for m in metrics):
        if name in _EXTRACTORS and name not in nets:
            builder = (variants or {}).get(name, name)
            nets[name] = build_feature_extractor(builder, (weights or {}).get(name), random_init)
    return {k: v.to(device) for k, v in nets.items()}


class InceptionFeatures(nn.Module):
    """torch-fidelity's FID InceptionV3 with the outputs set metrics read (module docstring).

    Args:
        net: a ``FeatureExtractorInceptionV3`` returning ("2048", "logits_unbiased").
        source: where its weights came from (recorded in the results).
    """

    provides = ("2048", "logits_unbiased", "spatial")

    def __init__(self, net: nn.Module, source: str):
        super().__init__()
        self.net, self.source = net, source

    @torch.no_grad()
    def forward(self, x: torch.Tensor, features: Collection[str] = provides) -> dict[str, torch.Tensor]:
        """uint8 (B, 3, H, W) images -> {"2048": (B, 2048), "logits_unbiased": (B, 1008),
        "spatial": (B, 2023)}, float32, only the requested names."""
        grabbed: list[torch.Tensor] = []

        def grab(_module, _inputs, out):  # (B, 192, 17, 17) after ReLU
            grabbed.append(out[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(out), -1).float())

        hook = self.net.Mixed_6d.branch1x1.register_forward_hook(grab) if "spatial" in features else None
        try:
            pool, logits = self.trunk(x)
        finally:
            if hook is not None:
                hook.remove()
        out = {"2048": pool, "logits_unbiased": logits}
        if grabbed:
            out["spatial"] = grabbed[0]
        return {k: out[k] for k in features}

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> (pool features, unbiased logits): torch-fidelity's own forward."""
        return self.net(x)


# torch-fidelity's InceptionV3 modules in the order of its forward (and of pytorch-fid's blocks)
_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)  # fmt: skip


class PytorchFIDInceptionFeatures(InceptionFeatures):
    """``InceptionFeatures`` with pytorch-fid's input stage (module docstring)."""

    pipeline = (
        "pytorch-fid's input stage instead of torch-fidelity's: x / 255 resized to 299 by torch bilinear "
        "interpolation (align_corners=False, no antialiasing), then 2x - 1"
    )

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.interpolate(x.float() / 255.0, size=(299, 299), mode="bilinear", align_corners=False)
        h = 2.0 * h - 1.0
        for name in _LAYERS:
            h = getattr(self.net, name)(h)
        pool = h.flatten(1)  # (B, 2048)
        return pool, pool @ self.net.fc.weight.T  # the logits without the bias, as torch-fidelity's


class RandomFeatures(nn.Module):
    """A small fixed random network with InceptionFeatures' outputs (64 / 10 / 112 numbers),
    standing in for it in offline tests. Its numbers are not FID, IS or anything published."""

    provides = InceptionFeatures.provides
    source = "random feature network (test stand-in)"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 64, 4, stride=4)
        self.head = nn.Linear(64, 10)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.05)
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.5)
            self.head.bias.zero_()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, features: Collection[str] = provides) -> dict[str, torch.Tensor]:
        h = torch.relu(self.conv(x.float() / 127.5 - 1.0))  # (B, 64, H/4, W/4)
        pool = h.mean(dim=(2, 3))  # (B, 64)
        spatial = nn.functional.adaptive_avg_pool2d(h[:, :SPATIAL_CHANNELS], 4).flatten(1)  # (B, 112)
        out = {"2048": pool, "logits_unbiased": self.head(pool * 10), "spatial": spatial}
        return {k: out[k] for k in features}


@register_feature_extractor("inception")
def inception(weights: str | os.PathLike | None = None, random_init: bool = False) -> nn.Module:
    """The FID InceptionV3 (``--fid-weights``), or ``RandomFeatures`` with ``random_init``."""
    return RandomFeatures() if random_init else InceptionFeatures(*load_inception(weights))


@register_feature_extractor("inception-pytorch-fid")
def inception_pytorch_fid(weights: str | os.PathLike | None = None, random_init: bool = False) -> nn.Module:
    """The FID InceptionV3 with pytorch-fid's resize (``--fid-weights``), or ``RandomFeatures``."""
    return RandomFeatures() if random_init else PytorchFIDInceptionFeatures(*load_inception(weights))


def save_random_inception(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random-weight InceptionV3 in the file format of the FID weights (torchvision's
    architecture and parameter names, 1008 classes), loadable by ``load_inception``,
    torch-fidelity and torchmetrics: a stand-in to compare FID pipelines offline.

    The batch-norm statistics are set from one random batch, so that activations stay in a sane
    range through the network. The numbers it gives are not FID.

    Args:
        path: the ``.pth`` file to write.
        seed: torch seed of the weights.
    """
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(
            weights=None, aux_logits=False, num_classes=1008, init_weights=True
        )
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # a cumulative average: one batch sets the statistics
        with torch.no_grad():
            net.train()(torch.randn(4, 3, 299, 299))
    torch.save(net.state_dict(), path)
    return Path(path)

"""LPIPS perceptual loss (Zhang et al., 2018) from the ``lpips`` package.

The calibrated linear heads ship inside the ``lpips`` package. The ImageNet backbone (VGG16 by
default) is torchvision's: it is read from ``loss.lpips_weights`` (a local torchvision state dict,
``.pth`` or ``.safetensors``) or else through torchvision's weights enum, i.e. the torch hub cache
(``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``) or a download. The weights are resolved
*before* the network is built, so an offline machine fails at once with an error naming the
options. ``pretrained=False`` builds a randomly initialised network (tests; never touches disk
caches or the network).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .common import FrozenNetwork, MissingWeightsError, load_state_dict_file

# torchvision weights of each LPIPS trunk (the ones ``lpips`` itself would download).
_TORCHVISION_WEIGHTS = {
    "vgg": ("VGG16_Weights", "IMAGENET1K_V1"),
    "alex": ("AlexNet_Weights", "IMAGENET1K_V1"),
    "squeeze": ("SqueezeNet1_1_Weights", "IMAGENET1K_V1"),
}


def _backbone_state_dict(net: str, path: str | None) -> dict[str, torch.Tensor]:
    """The torchvision state dict of the LPIPS trunk, from ``path`` or torchvision's sources."""
    if path:
        return load_state_dict_file(path, "loss.lpips_weights")
    import torchvision.models as tvm

    enum_name, member = _TORCHVISION_WEIGHTS[net]
    weights = getattr(getattr(tvm, enum_name), member)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # offline, proxy, corrupt cache: all end the same way for the user
        cache = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise MissingWeightsError(
            f"LPIPS needs torchvision's ImageNet {net} weights ({weights.url}), which are not in the "
            f"torch hub cache ({cache}) and could not be downloaded ({type(e).__name__}: {e}). "
            f"Set loss.lpips_weights=/path/to/{weights.url.rsplit('/', 1)[-1]}, copy the file to {cache}, "
            f"or disable the term with --loss.lpips_weight=0"
        ) from e


def _load_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Copy torchvision ``features.{i}.*`` tensors into ``lpips``' sliced trunk.

    ``lpips`` keeps torchvision's layer index as each layer's name inside its slices
    (``net.slice2.5`` is ``features.5``), so the mapping is read off the module names.
    """
    missing = []
    with torch.no_grad():
        for slice_mod in model.net.children():
            for idx, layer in slice_mod.named_children():
                for pname, param in layer.named_parameters():
                    key = f"features.{idx}.{pname}"
                    src = state_dict.get(key)
                    if src is None or src.shape != param.shape:
                        missing.append(key)
                        continue
                    param.copy_(src)
    if missing:
        raise MissingWeightsError(
            f"{source} is not a torchvision state dict of the LPIPS trunk: missing or mis-shaped "
            f"{missing[:4]}{' ...' if len(missing) > 4 else ''}"
        )


def _build_lpips(net: str, pretrained: bool) -> nn.Module:
    """``lpips.LPIPS`` with the calibrated heads (if ``pretrained``) and a random trunk.

    Built on the meta device and materialised afterwards: torchvision's VGG16 constructor would
    otherwise allocate and initialise its 120M-parameter classifier, which LPIPS throws away
    (seconds of CPU and 0.5 GB per construction).
    """
    import lpips

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notice
        # pnet_rand=True: no download; the trunk is loaded by _load_backbone. use_dropout=True:
        # the shipped heads are stored under the dropout layout ("lin0.model.1.weight"); dropout
        # is inactive since the network stays in eval mode.
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, use_dropout=True, verbose=False)
    # lpips' constant buffers (input scaling) are created on the CPU even under the meta device.
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if any(b.is_meta for b in buffers.values()):
        raise RuntimeError("unsupported lpips version: constant buffers were created on the meta device")
    model.to_empty(device="cpu")
    for name, b in buffers.items():
        model.get_buffer(name).copy_(b)
    for m in model.modules():  # random init of everything (the stand-in when not pretrained)
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    if pretrained:
        path = Path(lpips.__file__).parent / "weights" / f"v{model.version}" / f"{net}.pth"
        if not path.is_file():
            raise MissingWeightsError(f"the lpips package has no calibrated heads at {path}")
        heads = torch.load(path, map_location="cpu", weights_only=True)
        result = model.load_state_dict(heads, strict=False)
        if result.unexpected_keys or len(heads) != len(model.lins):
            raise MissingWeightsError(f"{path} does not match lpips' {net} heads: {result.unexpected_keys}")
    return model.eval()


class LPIPSLoss(FrozenNetwork):
    """Frozen LPIPS distance, always evaluated in fp32 (also under bf16 autocast).

    Args:
        net: trunk, ``"vgg"`` (the paper's VGG16), ``"alex"`` or ``"squeeze"``.
        pretrained: load the ImageNet trunk and the calibrated linear heads; False gives a
            randomly initialised stand-in (tests only).
        weights: optional local path of the trunk's torchvision state dict (``loss.lpips_weights``).
    """

    def __init__(self, net: str = "vgg", pretrained: bool = True, weights: str | None = None):
        if net not in _TORCHVISION_WEIGHTS:
            raise ValueError(f"loss.lpips_net must be one of {sorted(_TORCHVISION_WEIGHTS)}, got {net!r}")
        # Resolve the weights first: offline, this fails before any construction.
        state_dict = _backbone_state_dict(net, weights) if pretrained else None
        model = _build_lpips(net, pretrained)
        if state_dict is not None:
            _load_backbone(model, state_dict, weights or "torchvision's weights")
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

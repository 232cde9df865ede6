"""Per-image reconstruction metrics on uint8 images: PSNR, SSIM and LPIPS.

Conventions (VA-VAE / DC-AE evaluators, see docs/evaluation.md):

- Both images are quantised to uint8 before any metric, exactly as a saved PNG would be.
- PSNR and SSIM are computed per image and the set value is the mean of the per-image values.
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels of one image (scikit-image's
  ``peak_signal_noise_ratio(..., data_range=255)``); identical images give +inf.
- SSIM is the Gaussian-window SSIM of Wang et al. (11x11, sigma 1.5, K1 0.01, K2 0.03, data
  range 255), averaged over the "valid" part of the SSIM map, i.e. without the 5-pixel border
  whose windows would reach outside the image. This is scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=255)`` and the original MATLAB ``ssim.m``. The SSIM map itself
  comes from torchmetrics; torchmetrics' own mean includes the reflect-padded border, which
  differs from scikit-image by up to ~1e-2, so we crop the border before averaging.
- LPIPS (Zhang et al.) via the ``lpips`` package, on the uint8 images mapped back to [-1, 1].
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .weights import WeightsUnavailableError, load_torch_checkpoint, torchvision_checkpoint

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): the 11x11 window of torchmetrics and scikit-image
LPIPS_NETS = ("vgg", "alex")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise ValueError(f"metrics are computed on uint8 images, got {a.dtype} and {b.dtype}")


@torch.no_grad()
def psnr_per_image(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """PSNR of each image pair in dB, on uint8 images (data range 255).

    Args:
        target: (B, 3, H, W) uint8 reference images.
        pred: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B,) float64; +inf where the two images are identical.
    """
    _check_pair(target, pred)
    mse = (target.double() - pred.double()).pow(2).flatten(1).mean(1)  # (B,)
    # 10 log10(255^2 / 0) = +inf on purpose: callers report identical images explicitly
    return 10.0 * torch.log10(255.0**2 / mse)


@torch.no_grad()
def ssim_per_image(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Gaussian-window SSIM of each image pair on uint8 images (see the module docstring).

    Args:
        target: (B, 3, H, W) uint8 reference images, H and W > 10.
        pred: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B,) float64 mean SSIM over channels and the valid (border-cropped) pixels.
    """
    # imported here: torchmetrics takes seconds to import and most users of this package never need it
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(target, pred)
    r = SSIM_RADIUS
    if min(target.shape[-2:]) <= 2 * r:
        raise ValueError(
            f"SSIM needs images larger than {2 * r + 1}x{2 * r + 1}, got {tuple(target.shape[-2:])}"
        )
    _, ssim_map = structural_similarity_index_measure(
        pred.double(),
        target.double(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        data_range=255.0,
        k1=0.01,
        k2=0.03,
        return_full_image=True,
    )  # (B, 3, H, W)
    return ssim_map[..., r:-r, r:-r].flatten(1).mean(1)


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1] (the inverse of ``tensor_to_uint8`` on the grid)."""
    return x.float().div(127.5).sub(1.0)


class LPIPSMetric(nn.Module):
    """LPIPS distance per image pair, wrapping ``lpips.LPIPS`` (spatially averaged, version 0.1).

    Build it with ``build_lpips``. Inputs are uint8 images; the network runs in float32.
    """

    def __init__(self, net: nn.Module, net_name: str, weights_source: str):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.net_name = net_name
        self.weights_source = weights_source

    @torch.no_grad()
    def forward(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 pair -> (B,) float64 LPIPS (0 for identical images)."""
        _check_pair(target, pred)
        d = self.net(uint8_to_unit(target), uint8_to_unit(pred), normalize=False)  # (B, 1, 1, 1)
        return d.flatten().double()


def _load_lpips_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy backbone weights into ``lpips.LPIPS.net``.

    ``state`` is either a torchvision classifier checkpoint (``features.<i>.<param>`` keys, e.g.
    vgg16-397923af.pth) or a full LPIPS state dict (``net.slice<k>.<i>.<param>`` and ``lin<k>`` keys).
    lpips splits torchvision's ``features`` into slices that keep the original layer indices, so
    ``net.slice<k>.<i>.weight`` is ``features.<i>.weight``.
    """
    if any(k.startswith("net.slice") for k in state):
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("scaling_layer")]
        if missing or unexpected:
            raise WeightsUnavailableError(
                f"{source} is not an LPIPS state dict for this network (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return
    mapped = {}
    for key in model.net.state_dict():
        _, idx_param = key.split(".", 1)  # "slice2.5.weight" -> "5.weight"
        src = f"features.{idx_param}"
        if src not in state:
            raise WeightsUnavailableError(
                f"{source} has no tensor '{src}': not a torchvision checkpoint of this network"
            )
        mapped[key] = state[src]
    model.net.load_state_dict(mapped, strict=True)


def build_lpips(
    net: str = "vgg",
    weights_path: str | os.PathLike | None = None,
    random_init: bool = False,
    device: torch.device | str | None = None,
) -> LPIPSMetric:
    """LPIPS with a VGG16 or AlexNet backbone.

    The small linear heads ship inside the ``lpips`` package; the backbone is torchvision's
    ImageNet classifier, loaded from (first that applies):

    1. ``weights_path``: a torchvision checkpoint (vgg16-397923af.pth / alexnet-owt-7be5be79.pth)
       or a full ``lpips.LPIPS`` state dict;
    2. the torch hub cache (``$TORCH_HOME/hub/checkpoints``), downloading there if missing.

    Args:
        net: "vgg" or "alex".
        weights_path: local backbone weights (CLI ``--lpips-weights``).
        random_init: random backbone (tests only; the numbers are not LPIPS).
        device: where to put the network.
    Raises:
        WeightsUnavailableError: the weights are neither local nor downloadable.
    """
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS network '{net}', choose from {LPIPS_NETS}")
    # find the weights first: a missing file should fail before the slow network construction
    state = None
    if random_init:
        source = "random backbone (test stand-in)"
    elif weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsUnavailableError(f"--lpips-weights {path}: no such file")
        state, source = load_torch_checkpoint(path), str(path)
    else:
        arch = {"vgg": "vgg16", "alex": "alexnet"}[net]
        state, source = torchvision_checkpoint(arch, option="--lpips-weights")
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand=True: never let lpips/torchvision download on their own; we load the backbone below
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if state is not None:
        _load_lpips_backbone(model, state, source)
    return LPIPSMetric(model, net, source).to(device or "cpu")

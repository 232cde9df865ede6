"""Finding the pretrained feature networks of LPIPS and FID: local file, torch hub cache, download.

Every failure raises ``WeightsUnavailableError`` with a message that names the command-line
option to point at a local copy, so that offline machines get one actionable line.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# torch-fidelity's port of the TF FID Inception (pt_inception-2015-12-05); torchmetrics uses the same file.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
# pytorch-fid's file holds the same converted TF weights under the same parameter names
INCEPTION_FILENAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


def hub_checkpoint_dir() -> Path:
    """Where torch.hub / torchvision cache downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a plain state dict (tensors only, ``weights_only=True``) from a ``.pth``/``.safetensors`` file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise WeightsUnavailableError(f"cannot read weights file {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    return state


def unusable_inception(path: str | os.PathLike, error: Exception) -> WeightsUnavailableError:
    """The one-line error for an InceptionV3 file that exists but does not load."""
    return WeightsUnavailableError(
        f"{path} is not a usable FID InceptionV3 checkpoint ({type(error).__name__}: {str(error)[:200]}); "
        f"pass --fid-weights PATH to weights-inception-2015-12-05-6726825d.pth"
    )


def _download(url: str, dest: Path, what: str, option: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".partial")
    try:
        torch.hub.download_url_to_file(url, str(tmp), progress=True)
        os.replace(tmp, dest)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, SSL errors ...
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"the {what} weights are not in {dest.parent} and could not be downloaded from {url} "
            f"({type(e).__name__}: {e}); download that file elsewhere and pass {option} PATH "
            f"(or copy it to {dest})"
        ) from e
    return dest


def torchvision_checkpoint(arch: str, option: str) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of a torchvision classifier ("vgg16", "alexnet") from the hub cache or the web.

    Returns:
        (state dict, the file it came from).
    """
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).IMAGENET1K_V1.url
    dest = hub_checkpoint_dir() / Path(url).name
    if not dest.is_file():
        _download(url, dest, f"torchvision {arch}", option)
    return load_torch_checkpoint(dest), str(dest)


def inception_checkpoint(weights_path: str | os.PathLike | None, option: str = "--fid-weights") -> Path:
    """Path of the FID Inception weights: ``weights_path``, else the hub cache, else a download."""
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsUnavailableError(f"{option} {path}: no such file")
        return path
    for name in INCEPTION_FILENAMES:
        if (hub_checkpoint_dir() / name).is_file():
            return hub_checkpoint_dir() / name
    return _download(INCEPTION_URL, hub_checkpoint_dir() / INCEPTION_FILENAMES[0], "FID InceptionV3", option)

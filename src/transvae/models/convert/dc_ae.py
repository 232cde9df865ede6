"""diffusers ``AutoencoderDC`` folders (DC-AE, SANA's autoencoder) -> the wrapped ``DCAE``.

``config.json`` is parsed as data into ``DCAEConfig`` (unknown keys refused, diffusers' defaults
for missing ones); ``scaling_factor`` goes to ``model.metadata``. The weights keep diffusers' names
except the encoder's, which gain the wrapper's ``net.`` (``encoder.conv_in`` ->
``encoder.net.conv_in``). Why DC-AE is wrapped rather than mapped: ``models/dc_ae.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import ConfigError
from ..dc_ae import DCAE, DCAEConfig
from .diffusers_kl import load_diffusers_folder

CLASS_NAME = "AutoencoderDC"
MODEL_NAME = "diffusers-autoencoder-dc"


def model_config(raw: Any, path: Path | str) -> tuple[DCAEConfig, dict[str, Any]]:
    """``config.json`` data of an ``AutoencoderDC`` -> (``DCAEConfig``, metadata)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a JSON object")
    data = {k: v for k, v in raw.items() if not k.startswith("_")}
    scale = data.pop("scaling_factor", 1.0)  # diffusers' default
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ConfigError(f"{path}: scaling_factor must be a number, got {scale!r}")
    try:
        cfg = DCAEConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return cfg, {"scaling_factor": float(scale)}


def diffusers_name(key: str) -> tuple[str, ...]:
    """The diffusers name of a ``DCAE`` tensor: ``encoder.net.X`` -> ``encoder.X``."""
    return ("encoder." + key[len("encoder.net.") :],) if key.startswith("encoder.net.") else (key,)


def convert_folder(folder: Path, name: str = MODEL_NAME) -> DCAE:
    """Load a diffusers ``AutoencoderDC`` folder as a ``DCAE``.

    Args:
        folder: holds ``config.json`` and ``diffusion_pytorch_model.safetensors``.
        name: the model's ``model_name``.
    Returns:
        the wrapped model (float32, CPU, eval mode); ``metadata["scaling_factor"]`` from the config.
    Raises:
        ConfigError: an unsupported config or weights that do not fit it (one line).
        FileNotFoundError: no safetensors weights (a pickled ``.bin`` is never read).
    """
    return load_diffusers_folder(folder, name, model_config, DCAE, lambda cfg: diffusers_name, CLASS_NAME)

"""Import the autoencoders users already run as transvae models.

=========================================  ==========================================  ===========
source                                     becomes                                     module
=========================================  ==========================================  ===========
diffusers ``AutoencoderKL`` folder / repo  ``CNNVAE`` (SD 1.x/2.x, SDXL, SD3, FLUX.1)  diffusers_kl
LDM / SD / FLUX / VA-VAE checkpoint file   ``CNNVAE``, architecture from a preset or   ldm
(.ckpt .pt .pth .safetensors)              an LDM YAML (``presets.py``)
diffusers ``AutoencoderDC`` folder / repo  ``DCAE``: diffusers' modules, wrapped       dc_ae
=========================================  ==========================================  ===========

    >>> model = convert("stabilityai/sd-vae-ft-mse")                  # or a local folder
    >>> model = convert("vae-ft-mse-840000-ema-pruned.ckpt", preset="sd-vae")
    >>> model.metadata["scaling_factor"]
    0.18215
    >>> model.save_pretrained("sd-vae/")                               # every command loads it

``transvae.from_pretrained`` calls ``convert`` for such sources too. Every file is read as data
(JSON, ``yaml.safe_load``, safetensors, ``torch.load(weights_only=True)``); what a file contains
selects the converter, never what is fetched, imported or executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...utils.config import read_json
from ..base import AutoencoderBase, ConfigError, ModelConfig
from ..persistence import CONFIG_NAME, Converter, register_converter, resolve_model_folder
from . import dc_ae, diffusers_kl, ldm
from .presets import PRESETS, Preset, get_preset
from .weights import SAFETENSORS_SUFFIX, TORCH_SUFFIXES

__all__ = ["PRESETS", "Preset", "Source", "convert", "detect", "diffusers_model_config", "get_preset"]

KINDS = {
    "checkpoint": "LDM-family checkpoint file",
    diffusers_kl.MODEL_NAME: "diffusers AutoencoderKL folder",
    dc_ae.MODEL_NAME: "diffusers AutoencoderDC folder",
    "transvae": "transvae model folder",
}
_CONVERTERS = {diffusers_kl.CLASS_NAME: diffusers_kl, dc_ae.CLASS_NAME: dc_ae}


@dataclass(frozen=True)
class Source:
    """What ``detect`` found.

    Attributes:
        kind: a key of ``KINDS``: ``checkpoint``, ``diffusers-autoencoder-kl``,
            ``diffusers-autoencoder-dc`` or ``transvae``.
        path: the file, or the folder holding ``config.json`` (after a Hub download).
    """

    kind: str
    path: Path

    @property
    def description(self) -> str:
        return KINDS[self.kind]


def detect(source: str | os.PathLike, subfolder: str | None = None, revision: str | None = None) -> Source:
    """Tell what ``source`` is: a checkpoint file (by suffix) or a folder (by its ``config.json``).

    An ``owner/name`` that is not a local path is downloaded from the Hub (``config.json`` and
    the safetensors weights only).

    Args:
        source: a file, a folder or a Hub repo id.
        subfolder: the model's folder inside ``source`` (``"vae"`` of a diffusers pipeline).
        revision: Hub revision.
    Raises:
        ConfigError: an unknown file format or ``config.json`` class (one line).
        FileNotFoundError: no such file, folder or repo (one line that starts with what to do).
    """
    p = Path(source)
    if p.is_file():
        if subfolder:
            raise ConfigError(f"{p} is a file; subfolder applies to folders and Hub repos")
        suffix = p.suffix.lower()
        if suffix in TORCH_SUFFIXES or suffix == SAFETENSORS_SUFFIX:
            return Source("checkpoint", p)
        raise ConfigError(
            f"{p}: not a checkpoint ({SAFETENSORS_SUFFIX}, {', '.join(TORCH_SUFFIXES)}) and not a model folder"
        )
    folder = resolve_model_folder(source, revision, subfolder)
    raw = read_json(folder / CONFIG_NAME, what="model config")
    cls = raw.get("_class_name") if isinstance(raw, dict) else None
    if cls in _CONVERTERS:
        return Source(_CONVERTERS[cls].MODEL_NAME, folder)
    if isinstance(raw, dict) and ("architecture" in raw or cls == "AutoencoderTransVAE"):
        return Source("transvae", folder)
    if cls is not None:
        raise ConfigError(
            f"{folder / CONFIG_NAME} is a diffusers config of {cls!r}; transvae converts "
            f"{' and '.join(_CONVERTERS)} (other autoencoders: not supported)"
        )
    raise ConfigError(f"{folder / CONFIG_NAME} is neither a transvae nor a diffusers autoencoder config")


def convert(
    source: str | os.PathLike,
    preset: str | None = None,
    ldm_config: str | os.PathLike | None = None,
    name: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
) -> AutoencoderBase:
    """Convert a published autoencoder to a transvae model.

    Args:
        source: a diffusers ``AutoencoderKL`` / ``AutoencoderDC`` folder or Hub repo id, or a
            checkpoint file (``.ckpt`` / ``.pt`` / ``.pth`` / ``.safetensors``).
        preset: for a checkpoint file: a name from ``PRESETS`` (``sd-vae``, ``sdxl-vae``,
            ``sd3-vae``, ``flux-vae``, ``vavae-f16d32``).
        ldm_config: for a checkpoint file: an LDM YAML describing the architecture instead.
        name: the model's ``model_name`` (default: the preset's name, or
            ``diffusers-autoencoder-kl`` / ``-dc`` / ``ldm-autoencoder-kl``).
        subfolder: the model's folder inside ``source`` (``"vae"`` of a diffusers pipeline).
        revision: Hub revision.
    Returns:
        the model (float32, CPU, eval mode); ``model.metadata`` holds ``scaling_factor`` /
        ``shift_factor`` (and ``latents_mean`` / ``latents_std``, ``force_upcast`` where the
        source has them) and ``converted_from``.
    Raises:
        ConfigError: an unsupported source, config or option, or weights that do not fit the
            architecture (one line naming the first tensor that differs).
        FileNotFoundError: no such source, or only pickled weights in a diffusers folder.
    """
    src = detect(source, subfolder, revision)
    if src.kind == "checkpoint":
        return ldm.convert_checkpoint(src.path, preset, ldm_config, name)
    if preset is not None or ldm_config is not None:
        raise ConfigError(
            f"{src.path} is a {src.description} whose config.json describes the architecture; "
            "a preset or an LDM config applies to checkpoint files only"
        )
    if src.kind == "transvae":
        raise ConfigError(
            f"{src.path} is already a transvae model folder: load it with transvae.from_pretrained"
        )
    converter = diffusers_kl if src.kind == diffusers_kl.MODEL_NAME else dc_ae
    return converter.convert_folder(src.path, name or converter.MODEL_NAME)


def diffusers_model_config(
    raw: Any, path: Path | str
) -> tuple[type[AutoencoderBase], ModelConfig, str, dict[str, Any]]:
    """The transvae architecture a diffusers ``config.json`` converts to: (class, config, name,
    metadata), as ``persistence.read_config_and_metadata`` returns for a native folder."""
    from ..cnn_vae import CNNVAE
    from ..dc_ae import DCAE

    cls = raw.get("_class_name") if isinstance(raw, dict) else None
    if cls == diffusers_kl.CLASS_NAME:
        cfg, meta = diffusers_kl.model_config(raw, path)
        return CNNVAE, cfg, diffusers_kl.MODEL_NAME, meta
    if cls == dc_ae.CLASS_NAME:
        cfg, meta = dc_ae.model_config(raw, path)
        return DCAE, cfg, dc_ae.MODEL_NAME, meta
    raise ConfigError(f"{path}: transvae converts {' and '.join(_CONVERTERS)} configs, not {cls!r}")


def _claims(raw: Any) -> bool:
    """Whether a folder's ``config.json`` is a diffusers autoencoder this package converts."""
    return isinstance(raw, dict) and raw.get("_class_name") in _CONVERTERS


# plug into transvae.models.persistence.load_model / read_config (which never imports this package)
register_converter(Converter(claims=_claims, read_config=diffusers_model_config, convert=convert))

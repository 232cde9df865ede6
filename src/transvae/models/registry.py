"""timm-style model registry: ``list_models()`` and ``create_model(name, **overrides)``."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import AutoencoderBase, ConfigError, ModelConfig

_ARCHITECTURES: dict[str, type[AutoencoderBase]] = {}


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its class, default config values and a short description."""

    name: str
    cls: type[AutoencoderBase]
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    paper_params: tuple[float, float] | None = None  # (encoder, decoder) in millions, from the paper
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_architecture(cls: type[AutoencoderBase]) -> type[AutoencoderBase]:
    """Class decorator: makes ``cls`` loadable from a ``config.json`` naming its architecture."""
    _ARCHITECTURES[cls.config_class.architecture] = cls
    return cls


def register_model(
    name: str,
    cls: type[AutoencoderBase],
    family: str = "",
    paper_params: tuple[float, float] | None = None,
    description: str = "",
    **defaults: Any,
) -> None:
    """Register a named variant of ``cls`` with the given config values."""
    if name in _MODELS:
        raise ValueError(f"model '{name}' is already registered")
    cls.config_class.from_dict(defaults)  # fail at import time on a bad table entry
    _MODELS[name] = ModelEntry(name, cls, dict(defaults), family, paper_params, description)


def _ensure_registered() -> None:
    # Importing the model modules fills the registry (dc_ae imports diffusers only to build a model).
    from . import baselines, dc_ae, transvae  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """All registered model names, optionally filtered by a glob ``pattern`` (e.g. ``"transvae-*"``)."""
    _ensure_registered()
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def get_model_entry(name: str) -> ModelEntry:
    _ensure_registered()
    if name not in _MODELS:
        close = fnmatch.filter(sorted(_MODELS), f"*{name.split('-')[0]}*") or sorted(_MODELS)
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(close)}")
    return _MODELS[name]


def get_architecture(architecture: str) -> type[AutoencoderBase]:
    _ensure_registered()
    if architecture not in _ARCHITECTURES:
        raise ConfigError(f"unknown architecture '{architecture}'; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[architecture]


def build_model(
    cls: type[AutoencoderBase],
    config: ModelConfig,
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> AutoencoderBase:
    """Instantiate ``cls(config)``, directly on ``device`` (``"meta"`` allocates nothing)."""
    if device is not None:
        with torch.device(device):
            model = cls(config)
    else:
        model = cls(config)
    model._model_name = name
    if dtype is not None:
        model = model.to(dtype)
    return model


def create_model(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    pretrained: str | None = None,
    **overrides: Any,
) -> AutoencoderBase:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``, e.g. ``"transvae-t-f16d32"``.
        device: where to allocate the parameters; ``"meta"`` builds the structure only.
        dtype: optional parameter dtype.
        pretrained: optional path or Hub repo of weights saved with ``save_pretrained``.
        **overrides: config values that replace the variant's defaults (e.g. ``ffn_type="mlp"``);
            an unknown key is an error that lists the valid ones.
    """
    entry = get_model_entry(name)
    config = entry.cls.config_class.from_dict({**entry.defaults, **overrides})
    if pretrained is not None:
        from .hub import load_model

        return load_model(pretrained, device=device, dtype=dtype, expected_config=config)
    return build_model(entry.cls, config, name, device=device, dtype=dtype)


def model_table(pattern: str | None = None) -> list[dict[str, Any]]:
    """Rows for ``transvae list``: name, family, parameters (measured on the meta device) and paper counts."""
    rows = []
    for name in list_models(pattern):
        entry = _MODELS[name]
        m = create_model(name, device="meta")
        enc, dec = m.num_parameters("encoder"), m.num_parameters("decoder")
        row = {
            "name": name,
            "family": entry.family,
            "ratio": m.spatial_compression_ratio,
            "latent_channels": m.latent_channels,
            "encoder_params": enc,
            "decoder_params": dec,
            "total_params": m.num_parameters("total"),
        }
        if entry.paper_params is not None:
            pe, pd = entry.paper_params
            row["paper_encoder_params"] = int(pe * 1e6)
            row["paper_decoder_params"] = int(pd * 1e6)
            row["encoder_rel_diff"] = round(enc / (pe * 1e6) - 1, 4)
            row["decoder_rel_diff"] = round(dec / (pd * 1e6) - 1, 4)
        rows.append(row)
    return rows

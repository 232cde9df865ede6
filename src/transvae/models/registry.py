"""The one model registry (timm-style): ``list_models()`` and ``create_model(name, **overrides)``.

It serves every network of the package alike: tokenizers (TransVAE and the autoencoders it is
compared with) and generators (LightningDiT). Each architecture class registers itself with
``@register_architecture`` (its ``config_class.architecture`` is the key a ``config.json``
names) and its named variants with ``register_model``. Importing ``transvae.models`` imports
every architecture module, so the registry is full whenever it is used; this module imports no
architecture itself.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from ..utils.config import ConfigError

KINDS = ("tokenizer", "generator")

_ARCHITECTURES: dict[str, type] = {}
_MODELS: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its class, default config values and what the paper says of it.

    Attributes:
        paper_params: published parameter counts in millions: ``(encoder, decoder)`` for a
            tokenizer, the total for a generator (None when unpublished).
    """

    name: str
    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    paper_params: tuple[float, float] | float | None = None
    description: str = ""

    @property
    def kind(self) -> str:
        return self.cls.kind


def register_architecture(cls: type) -> type:
    """Class decorator: makes ``cls`` loadable from a ``config.json`` naming its architecture."""
    if getattr(cls, "kind", None) not in KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {KINDS}")
    _ARCHITECTURES[cls.config_class.architecture] = cls
    return cls


def register_model(
    name: str,
    cls: type,
    family: str = "",
    paper_params: tuple[float, float] | float | None = None,
    description: str = "",
    **defaults: Any,
) -> None:
    """Register a named variant of ``cls`` with the given config values."""
    if name in _MODELS:
        raise ValueError(f"model '{name}' is already registered")
    cls.config_class.from_dict(defaults)  # fail at import time on a bad table entry
    _MODELS[name] = ModelEntry(name, cls, dict(defaults), family, paper_params, description)


def register_variant(name: str, base: str, **overrides: Any) -> str:
    """Register ``base`` with ``overrides`` as model ``name``, idempotently: registering the same
    name with the same settings again is a no-op, so a script (and each of its child processes,
    and a ``--resume``) can call it before ``create_model(name)`` or a Trainer run by name.

    Args:
        name: the new name, e.g. ``"bench-f16-128-cnn-vae-no-attention"``.
        base: a registered model whose settings are the starting point.
        overrides: config values replacing the base's (checked like ``create_model``'s).
    Returns:
        ``name``.
    Raises:
        ValueError: ``name`` is already registered with other settings.
    """
    entry = get_model_entry(base)
    defaults = {**entry.defaults, **overrides}
    if name in _MODELS:
        if _MODELS[name].defaults != defaults or _MODELS[name].cls is not entry.cls:
            raise ValueError(f"model '{name}' is already registered with other settings")
        return name
    register_model(name, entry.cls, family=entry.family, description=f"{base} with {overrides}", **defaults)
    return name


def register_models(cls: type, family: str, members: dict[str, tuple[str, Any, dict[str, Any]]]) -> None:
    """``register_model`` for each ``name: (description, paper_params, config values)`` of
    ``members``, in order, all variants of ``cls`` in ``family``."""
    for name, (description, paper_params, values) in members.items():
        register_model(name, cls, family=family, paper_params=paper_params, description=description, **values)


def list_models(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Registered names, optionally filtered by a glob ``pattern`` (e.g. ``"transvae-*"``) and a
    ``kind`` (``"tokenizer"`` or ``"generator"``)."""
    names = sorted(n for n, e in _MODELS.items() if kind is None or e.kind == kind)
    return fnmatch.filter(names, pattern) if pattern else names


def get_model_entry(name: str) -> ModelEntry:
    """The entry of a registered name; ``KeyError`` listing similar names when unknown."""
    if name not in _MODELS:
        close = fnmatch.filter(sorted(_MODELS), f"*{name.split('-')[0]}*") or sorted(_MODELS)
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(close)}")
    return _MODELS[name]


def get_architecture(architecture: str) -> type:
    """The class registered for a ``config.json``'s ``architecture``."""
    if architecture not in _ARCHITECTURES:
        raise ConfigError(f"unknown architecture '{architecture}'; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[architecture]


def model_config(name: str, **overrides: Any):
    """The config of a registered variant with ``overrides`` applied (nothing is built)."""
    entry = get_model_entry(name)
    return entry.cls.config_class.from_dict({**entry.defaults, **overrides})


def build_model(
    cls: type,
    config: Any,
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
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
    **overrides: Any,
) -> torch.nn.Module:
    """Build a registered model (a tokenizer or a generator).

    Args:
        name: a name from ``list_models()``, e.g. ``"transvae-t-f16d32"`` or ``"lightningdit-b-1"``.
        device: where to allocate the parameters; ``"meta"`` builds the structure only.
        dtype: optional parameter dtype.
        **overrides: config values that replace the variant's defaults (e.g. ``ffn_type="mlp"``,
            ``in_channels=16``); an unknown key is an error that lists the valid ones.

    Trained weights load with ``transvae.from_pretrained(path_or_repo)`` (``models.persistence``).
    """
    entry = get_model_entry(name)
    return build_model(entry.cls, model_config(name, **overrides), name, device=device, dtype=dtype)


def model_table(pattern: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows for ``transvae list``: name, kind, family, the model's own columns (``table_row``:
    parameters measured on the meta device) and the paper's counts beside them."""
    rows = []
    for name in list_models(pattern, kind):
        entry = _MODELS[name]
        m = create_model(name, device="meta")
        row = {"name": name, "kind": entry.kind, "family": entry.family, **m.table_row()}
        pp = entry.paper_params
        if isinstance(pp, tuple):
            for part, millions in zip(("encoder", "decoder"), pp, strict=True):
                row[f"paper_{part}_params"] = int(millions * 1e6)
                row[f"{part}_rel_diff"] = round(row[f"{part}_params"] / (millions * 1e6) - 1, 4)
        elif pp is not None:
            row["paper_params"] = int(pp * 1e6)
            row["params_rel_diff"] = round(row["total_params"] / row["paper_params"] - 1, 4)
        rows.append(row)
    return rows

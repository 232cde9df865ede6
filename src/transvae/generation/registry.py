"""Named LightningDiT variants: ``list_generators()`` / ``create_generator(name, **overrides)``.

Names follow ``lightningdit-{size}-{patch}``. B, L and XL are the widths and depths of DiT
(Peebles & Xie, Table 1) that LightningDiT keeps; ``mini`` and ``nano`` are CPU-sized members
for tests and small experiments. ``paper_params`` is the parameter count DiT publishes for the
size (B ~130M, L ~458M, XL ~675M); the counts of our models, measured on the meta device, are
within 2% of them (``transvae list``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.registry import build_model
from .lightningdit import LightningDiT, LightningDiTConfig

FAMILY = "lightningdit"


@dataclass(frozen=True)
class GeneratorEntry:
    """A registered variant: its config values, the published parameter count and a description."""

    name: str
    defaults: dict[str, Any] = field(default_factory=dict)
    paper_params: float | None = None  # millions
    description: str = ""


# size -> (depth, hidden_size, num_heads, published parameters in millions or None)
_SIZES = {
    "b": (12, 768, 12, 130.0),
    "l": (24, 1024, 16, 458.0),
    "xl": (28, 1152, 16, 675.0),
}
_GENERATORS: dict[str, GeneratorEntry] = {}


def register_generator(
    name: str, paper_params: float | None = None, description: str = "", **defaults: Any
) -> None:
    """Register a named variant with the given ``LightningDiTConfig`` values."""
    if name in _GENERATORS:
        raise ValueError(f"generator '{name}' is already registered")
    LightningDiTConfig.from_dict(defaults)  # fail at import time on a bad table entry
    _GENERATORS[name] = GeneratorEntry(name, dict(defaults), paper_params, description)


for _size, (_depth, _dim, _heads, _params) in _SIZES.items():
    for _patch in (1, 2):
        register_generator(
            f"lightningdit-{_size}-{_patch}",
            paper_params=_params,
            description=f"LightningDiT-{_size.upper()}/{_patch}",
            depth=_depth,
            hidden_size=_dim,
            num_heads=_heads,
            patch_size=_patch,
        )
register_generator(
    "lightningdit-mini-1",
    description="CPU-sized: 6 blocks of width 256",
    depth=6,
    hidden_size=256,
    num_heads=4,
    patch_size=1,
)
register_generator(
    "lightningdit-nano-1",
    description="test-sized: 2 blocks of width 64",
    depth=2,
    hidden_size=64,
    num_heads=2,
    patch_size=1,
)


def list_generators(pattern: str | None = None) -> list[str]:
    """Registered generator names, optionally filtered by a glob ``pattern``."""
    names = sorted(_GENERATORS)
    return fnmatch.filter(names, pattern) if pattern else names


def get_generator_entry(name: str) -> GeneratorEntry:
    if name not in _GENERATORS:
        raise KeyError(f"unknown generator '{name}'; registered: {', '.join(sorted(_GENERATORS))}")
    return _GENERATORS[name]


def generator_config(name: str, **overrides: Any) -> LightningDiTConfig:
    """The config of a registered variant with ``overrides`` (e.g. ``in_channels=16``) applied."""
    entry = get_generator_entry(name)
    return LightningDiTConfig.from_dict({**entry.defaults, **overrides})


def build_generator(
    config: LightningDiTConfig, name: str = "", device: str | torch.device | None = None
) -> LightningDiT:
    """Instantiate ``LightningDiT(config)`` directly on ``device`` (``"meta"`` allocates nothing)."""
    return build_model(LightningDiT, config, name, device=device)


def create_generator(name: str, device: str | torch.device | None = None, **overrides: Any) -> LightningDiT:
    """Build a registered generator.

    Args:
        name: a name from ``list_generators()``, e.g. ``"lightningdit-b-2"``.
        device: where to allocate the parameters; ``"meta"`` builds the structure only.
        **overrides: ``LightningDiTConfig`` values replacing the variant's (e.g. ``in_channels``,
            ``num_classes``); an unknown key is an error listing the valid ones.
    """
    return build_generator(generator_config(name, **overrides), name, device)


def generator_table(pattern: str | None = None) -> list[dict[str, Any]]:
    """Rows for ``transvae list``: parameter counts measured on the meta device for ImageNet
    (1000 classes) on f16d32 latents, with the published count where there is one."""
    rows = []
    for name in list_generators(pattern):
        entry = _GENERATORS[name]
        m = create_generator(name, device="meta")
        cfg = m.config
        row = {
            "name": name,
            "family": FAMILY,
            "patch_size": cfg.patch_size,
            "in_channels": cfg.in_channels,
            "hidden_size": cfg.hidden_size,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "total_params": m.num_parameters(),
        }
        if entry.paper_params is not None:
            row["paper_params"] = int(entry.paper_params * 1e6)
            row["params_rel_diff"] = round(row["total_params"] / row["paper_params"] - 1, 4)
        rows.append(row)
    return rows

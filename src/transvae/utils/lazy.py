"""Lazy package exports: ``from transvae.evaluation import FIDMetric`` imports only the
submodule that defines it (PEP 562 module ``__getattr__``), so light users stay light."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """Build a package's ``__getattr__``, ``__dir__`` and ``__all__`` from ``{name: submodule}``.

    Usage in ``__init__.py``: ``__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)``.
    """

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*importlib.import_module(package).__dict__, *exports])

    return __getattr__, __dir__, sorted(exports)

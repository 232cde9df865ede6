"""The metric protocol and the registry every command builds its metrics from.

A metric is a small object with state, in the manner of torchmetrics' ``Metric``:
``update(...)`` per batch, ``compute() -> dict`` once, ``reset()``. Its class says what it
needs, so a command can check every input before computing anything:

- ``needs``: which inputs it reads (``INPUTS``: ``pairs`` of originals and reconstructions,
  ``samples`` / ``reference`` image sets, ``latents`` / ``reference_latents``);
- ``network``: the pretrained network it runs (``"inception"``, ``"lpips-vgg"`` ...), or None;
- ``features``: which outputs of that network (``"2048"``, ``"spatial"`` ...).

Two kinds exist: ``PairMetric`` (a number per image pair, averaged: PSNR, SSIM, LPIPS) and
``SetMetric`` (a number per pair of sets, from network features: FID, IS, precision ...).
``transvae.metrics.collection.MetricCollection`` feeds either kind and runs each feature network
once per batch for all the metrics that read it.

Registering: decorate the class with ``@register_metric("name")`` in a module of this package;
every module here is imported when the registry is first read, so a new metric is one file.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch

# what each input is, and how the metrics see it
INPUTS: dict[str, str] = {
    "pairs": "originals and their reconstructions, uint8 (B, 3, H, W) each",
    "samples": "generated images, uint8 (B, 3, H, W)",
    "reference": "real images, uint8 (B, 3, H, W)",
    "latents": "generated latents, (B, C, h, w) normalised",
    "reference_latents": "real latents, (B, C, h, w) normalised",
}

_REGISTRY: dict[str, type[Metric]] = {}
_DISCOVERED = False


class MetricInputError(ValueError):
    """A metric cannot be computed from what it was given; the one-line message says what is missing."""


class NotEnoughDataError(MetricInputError):
    """Too few images / latents were added for the metric to be defined (e.g. FID of one image)."""


class Metric:
    """Base class: named states, ``reset``, ``sync`` across processes, ``compute``.

    Subclasses declare ``needs`` / ``network`` / ``features`` and the table ``label``, register
    their states with ``add_state`` in ``__init__`` and implement ``update`` and ``compute``.
    """

    name: ClassVar[str] = ""  # set by @register_metric
    needs: ClassVar[frozenset[str]] = frozenset()
    network: ClassVar[str | None] = None
    features: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = ""  # table heading, with ↑ / ↓
    higher_is_better: ClassVar[bool] = True
    fmt: ClassVar[str] = "{:.4f}"
    protocol: ClassVar[str] = ""  # how it is computed, recorded in results.json
    bytes_per_pixel: ClassVar[int] = 0  # extra memory per image pixel while updating (memory check)

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reduce: dict[str, str] = {}

    @property
    def key(self) -> str:
        """The metric's name as a results key (``latent-fd`` -> ``latent_fd``)."""
        return self.name.replace("-", "_")

    @property
    def weights_source(self) -> str | None:
        """Where the metric's pretrained network came from (None: it has none)."""
        return None

    def add_state(self, name: str, default: torch.Tensor | list, reduce: str = "sum") -> None:
        """Register a state: a tensor summed across processes, or a list concatenated (``"cat"``)."""
        if reduce not in ("sum", "cat"):
            raise ValueError(f"reduce must be 'sum' or 'cat', got {reduce!r}")
        self._defaults[name], self._reduce[name] = default, reduce
        setattr(self, name, default.clone() if isinstance(default, torch.Tensor) else list(default))

    def reset(self) -> None:
        """Forget everything added since construction (or the last reset)."""
        for name, default in self._defaults.items():
            setattr(self, name, default.clone() if isinstance(default, torch.Tensor) else list(default))

    def sync(self, device: torch.device | str | None = None) -> None:
        """Combine the states of every process (no-op outside ``torch.distributed``).

        Args:
            device: where the collective runs (the process's CUDA device under NCCL).
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        for name, reduce in self._reduce.items():
            value = getattr(self, name)
            if reduce == "sum":
                t = value.to(device or value.device)
                dist.all_reduce(t)
                setattr(self, name, t.to(value.device))
            else:
                gathered: list = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, value)
                setattr(self, name, [x for part in gathered for x in part])

    def check(self, sizes: Mapping[str, Any]) -> None:
        """Refuse, before any work, inputs this metric cannot be computed from.

        Args:
            sizes: what is known of the inputs: counts per input name (``{"samples": 6}``) and
                ``"latent_shape"`` / ``"reference_latent_shape"`` as (C, h, w).
        Raises:
            MetricInputError: with a one-line reason.
        """

    def compute(self) -> dict[str, Any]:
        """The metric's results, keyed by ``self.key`` (and ``<key>_<extra>`` for extras)."""
        raise NotImplementedError


class PairMetric(Metric):
    """A number per image pair (``score``), reported as the mean and the spread over images.

    ``update(target, pred)`` returns the batch's per-image values, so callers can keep them
    (per-image results, worst examples). The states are sums, so the set value is the mean over
    every image (never a mean of batch means) and processes combine exactly.
    """

    needs = frozenset({"pairs"})

    def __init__(self) -> None:
        super().__init__()
        for s in ("total", "total_sq", "count"):
            self.add_state(s, torch.zeros((), dtype=torch.float64))

    def score(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 pair -> (B,) float64 values."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Add a batch of pairs; returns its (B,) float64 per-image values (on the CPU)."""
        check_pair(target, pred)
        v = self.score(target, pred).double().cpu()
        self._accumulate(v)
        return v

    def _accumulate(
        self, v: torch.Tensor, states: tuple[str, str, str] = ("total", "total_sq", "count")
    ) -> None:
        """Add the sum, the sum of squares and the number of the values ``v`` to ``states``."""
        for name, x in zip(states, (v.sum(), v.square().sum(), len(v)), strict=True):
            getattr(self, name).add_(x)

    def compute(self) -> dict[str, Any]:
        """``{key: mean, key_std: population std}`` over every image added (NaN if none)."""
        n = int(self.count)
        if n == 0:
            return {self.key: math.nan}
        mean = float(self.total) / n
        return {self.key: mean, f"{self.key}_std": _std(float(self.total_sq), mean, n)}


class SetMetric(Metric):
    """A number per pair of sets, from the ``features`` of ``network`` (or the latents themselves).

    ``update(features, real)`` adds one batch of one set: ``features`` maps each name of
    ``self.features`` to a (B, ...) tensor (``"latents"`` for latent metrics; ``"images"``, the
    uint8 images themselves, for a metric without a ``network``); ``real`` tells the reference
    side (reference images, originals, real latents) from the generated one.
    """

    def update(self, features: Mapping[str, torch.Tensor], real: bool) -> None:
        raise NotImplementedError


def _std(total_sq: float, mean: float, n: int) -> float:
    """Population standard deviation from the sum of squares and the mean."""
    return math.sqrt(max(total_sq / n - mean * mean, 0.0))


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Refuse anything but two uint8 (B, 3, H, W) tensors of equal shape."""
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise ValueError(f"metrics are computed on uint8 images, got {a.dtype} and {b.dtype}")


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1] (the inverse of ``tensor_to_uint8`` on the grid)."""
    return x.float().div(127.5).sub(1.0)


# -- the registry ---------------------------------------------------------------------------------
def register_metric(name: str):
    """Class decorator: register a ``Metric`` subclass under ``name`` (``--metrics`` choice)."""

    def deco(cls: type[Metric]) -> type[Metric]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"metric {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    """Import every module of this package once, so that their ``@register_metric`` run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module(__name__.rsplit(".", 1)[0])
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED = True


def list_metrics(inputs: Iterable[str] | None = None) -> list[str]:
    """Registered metric names, sorted; with ``inputs``, only those computable from them.

    Args:
        inputs: available input names (``INPUTS``), e.g. ``{"samples", "reference"}``.
    """
    _discover()
    have = None if inputs is None else set(inputs)
    return sorted(n for n, cls in _REGISTRY.items() if have is None or cls.needs <= have)


def metric_class(name: str) -> type[Metric]:
    """The class registered as ``name``.

    Raises:
        ValueError: unknown name, listing the registered ones.
    """
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_metrics(names: Sequence[str], **context: Any) -> list[Metric]:
    """Instances of the named metrics, in the given order, duplicates dropped.

    Args:
        names: registered names.
        context: settings offered to every metric; each constructor takes the keyword arguments
            it declares (e.g. ``device``, ``is_splits``, ``latent_fd_patch``, ``lpips_net``) and
            ignores the rest.
    Raises:
        ValueError: an unknown name (all names are checked before any metric is built).
    """
    classes = [metric_class(n) for n in dict.fromkeys(names)]
    out = []
    for cls in classes:
        params = inspect.signature(cls.__init__).parameters
        out.append(cls(**{k: v for k, v in context.items() if k in params}))
    return out


def _as_class(m: str | Metric | type[Metric]) -> type[Metric]:
    if isinstance(m, str):
        return metric_class(m)
    return m if isinstance(m, type) else type(m)


def required_inputs(metrics: Iterable[str | Metric | type[Metric]]) -> set[str]:
    """The union of what ``metrics`` (names, classes or instances) need (``INPUTS`` names)."""
    return set().union(*(_as_class(m).needs for m in metrics))


def check_inputs(
    metrics: Iterable[str | Metric | type[Metric]],
    available: Iterable[str],
    how: Mapping[str, str] | None = None,
) -> None:
    """Refuse, before any work, metrics whose inputs are missing: one line naming all of them.

    Args:
        metrics: names, classes or instances.
        available: the input names at hand.
        how: per input, the words that name it and say how to provide it
            (``{"reference_latents": "real latents (--reference-latents DIR)"}``).
    Raises:
        MetricInputError: e.g. "latent-fd needs real latents (--reference-latents DIR)".
    """
    have, how = set(available), how or {}
    problems = []
    for m in metrics:
        cls = _as_class(m)
        missing = sorted(cls.needs - have)
        if missing:
            what = " and ".join(how.get(x, x) for x in missing)
            problems.append(f"{cls.name} needs {what}")
    if problems:
        raise MetricInputError("; ".join(problems))

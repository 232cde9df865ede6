"""Scoring generated samples (``transvae gen-eval``): the ADM suite on images, lFD on latents.

Metrics (``transvae.metrics``, by name): every registered metric whose inputs gen-eval can
provide (``METRICS``): the image metrics (``fid``, ``is`` and the rest of the ADM suite) through one
pass of the FID InceptionV3 per batch, ``latent-fd`` on latents with no network. Sources:

- images: a ``gen-sample`` output folder (its ``images/``), any image folder (recursive), or an
  ADM-style ``.npz`` (``arr_0``). Reference images of another size than the samples are
  centre-cropped and resized to it with ADM's preprocessing (``center_crop_resize``, the one
  ``extract-latents`` uses); unreadable files are skipped and counted.
- latents: a ``gen-sample`` folder (its ``latents/``) on the generated side; a folder written by
  ``transvae extract-latents`` (held-out images) on the real side. Both are normalised with the
  statistics the generator was trained with (recorded in the samples' ``sampling.json``), else
  the reference folder's ``latents_stats.pt``.

``evaluate_generation`` checks everything it can before computing anything (``preflight``):
every requested metric's inputs, each metric's own limits (enough images for IS's splits, a lFD
patch that fits the latent grid and in memory), and that the two latent sets come from the same
tokenizer at the same grid size. Then it writes ``results.json``, ``report.html`` and the grids
(``transvae.evaluation.report``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.latents import LatentDataError, LatentFolder, LatentStats, load_latent_stats
from ..data.npz import iter_npz_images, npz_info
from ..inference.generate import SETTINGS_NAME
from ..metrics.base import (
    Metric,
    MetricInputError,
    NotEnoughDataError,
    build_metrics,
    check_inputs,
    list_metrics,
)
from ..metrics.collection import MetricCollection
from ..metrics.features import feature_networks
from ..metrics.latent_fd import DEFAULT_PATCH
from ..utils.config import ConfigError, read_json
from .report import GRID_IMAGES, write_generation_report

INPUT_NAMES = ("samples", "reference", "latents", "reference_latents")
METRICS = tuple(list_metrics(INPUT_NAMES))  # every metric gen-eval can compute
# how the user provides each input, for the error naming what is missing
HOW = {
    "samples": "sample images (--samples: a gen-sample folder, an image folder or an .npz)",
    "reference": "reference images (--reference IMAGE_DIR_OR_NPZ)",
    "latents": "generated latents (--samples must be a `transvae gen-sample` output folder)",
    "reference_latents": "real latents (--reference-latents DIR, written by `transvae extract-latents` from held-out images)",
}


class SourceError(ValueError):
    """A samples / reference source cannot provide what a metric needs; the message says what to pass."""


@dataclass
class EvalOptions:
    """What ``evaluate_generation`` computes and how.

    Attributes:
        metrics: names from ``METRICS``; None: every metric the given sources allow.
        fid_weights: local InceptionV3 weights (None: torch hub cache, then a download).
        num: use at most this many images / latents per set (0 = all).
        batch_size: images per Inception batch.
        device: where the networks run.
        latent_fd_patch: patch side of the lFD feature.
        latent_stats: a latents folder whose ``latents_stats.pt`` normalises both sets for lFD
            (default: the generator's, from the samples' ``sampling.json``, else the reference's).
        is_splits: IS splits.
        force: compare latents of different tokenizers or grid sizes anyway.
        feature_networks: ready feature networks by name, replacing the pretrained ones (tests).
    """

    metrics: tuple[str, ...] | None = None
    fid_weights: str | None = None
    num: int = 0
    batch_size: int = 64
    device: str = "cpu"
    latent_fd_patch: int = DEFAULT_PATCH
    latent_stats: str | None = None
    is_splits: int = 10
    force: bool = False
    feature_networks: dict[str, nn.Module] | None = field(default=None, repr=False)


# -- sources ------------------------------------------------------------------------------------
def sampling_settings(path: Path) -> dict[str, Any] | None:
    """The ``sampling.json`` of a ``gen-sample`` folder (None: not one).

    Raises:
        SourceError: the file is there but unreadable (too large, too deep, not JSON, not an object).
    """
    f = path / SETTINGS_NAME
    if not f.is_file():
        return None
    try:
        d = read_json(f, what="sampling settings")
    except (OSError, ConfigError) as e:
        raise SourceError(str(e)) from e
    if not isinstance(d, dict):
        raise SourceError(f"{f} does not hold a JSON object")
    return d


class ImageSource:
    """Images of a folder or an ``.npz``, served as uint8 (b, 3, H, W) batches.

    Args:
        path: folder (a ``gen-sample`` output uses its ``images/``) or ``.npz`` file.
        limit: at most this many images (0 = all).
        size: (H, W) to bring images to (None: the first image's size; others must match or
            are centre-cropped and resized when square).
    """

    def __init__(self, path: str | os.PathLike, limit: int = 0, size: tuple[int, int] | None = None):
        from ..data.io import list_images

        self.path = Path(path)
        self.limit, self.size = limit, size
        self.skipped: list[tuple[str, str]] = []
        self.files: list[Path] = []
        self.is_npz = self.path.is_file() and self.path.suffix == ".npz"
        if self.is_npz:
            n, (h, w, _) = npz_info(self.path)
            self.count = min(n, limit) if limit else n
            self.native = (h, w)
        elif self.path.is_dir():
            root = self.path / "images" if (self.path / SETTINGS_NAME).is_file() else self.path
            self.files = list_images(root)[: limit or None]
            self.count = len(self.files)
            self.native = None
        else:
            raise SourceError(f"{self.path}: not a folder or an .npz file")
        if self.count == 0:
            raise SourceError(f"{self.path} holds no images")

    def probe_size(self) -> tuple[int, int] | None:
        """(H, W) of the images: the ``.npz`` header's, else the first readable file's."""
        if self.is_npz:
            return self.native
        if self.size is None:
            from PIL import Image, UnidentifiedImageError

            for f in self.files[:64]:
                try:
                    with Image.open(f) as im:  # the header only
                        return im.size[1], im.size[0]
                except (OSError, UnidentifiedImageError):
                    continue
        return self.size

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield uint8 (b, 3, H, W) batches; unreadable files are skipped (``self.skipped``)."""
        if self.is_npz:
            for block in iter_npz_images(self.path, batch_size, self.limit):
                x = torch.from_numpy(block.copy()).permute(0, 3, 1, 2)
                yield x if self.size is None else self._resize_batch(x)
            return
        buf: list[np.ndarray] = []
        for f in self.files:
            arr = self._load(f)
            if arr is None:
                continue
            buf.append(arr)
            if len(buf) == batch_size:
                yield torch.from_numpy(np.stack(buf)).permute(0, 3, 1, 2)
                buf = []
        if buf:
            yield torch.from_numpy(np.stack(buf)).permute(0, 3, 1, 2)

    def first(self, n: int = GRID_IMAGES) -> torch.Tensor | None:
        """The first ``n`` readable images, uint8 (n, 3, H, W) (for the report's grids)."""
        got: list[torch.Tensor] = []
        for x in self.batches(n):
            got.append(x)
            if sum(len(g) for g in got) >= n:
                break
        return torch.cat(got)[:n] if got else None

    def _load(self, f: Path) -> np.ndarray | None:
        from ..data.io import ImageLoadError, load_image
        from ..inference.extract import center_crop_resize

        try:
            im = load_image(f)
        except ImageLoadError as e:
            self._skip(f, e.reason)
            return None
        if self.size is None:
            self.size = (im.size[1], im.size[0])
        if (im.size[1], im.size[0]) != self.size:
            if self.size[0] != self.size[1]:
                self._skip(f, f"size {im.size[1]}x{im.size[0]} differs from {self.size}")
                return None
            im = center_crop_resize(im, self.size[0])
        return np.asarray(im, dtype=np.uint8)

    def _skip(self, f: Path, reason: str) -> None:
        if (str(f), reason) not in self.skipped:  # the grids read the first files a second time
            self.skipped.append((str(f), reason))

    def _resize_batch(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        from ..inference.extract import center_crop_resize

        if tuple(x.shape[-2:]) == tuple(self.size):
            return x
        if self.size[0] != self.size[1]:
            raise SourceError(f"{self.path}: images are {tuple(x.shape[-2:])}, the samples {self.size}")
        out = [
            np.asarray(center_crop_resize(Image.fromarray(a.permute(1, 2, 0).numpy()), self.size[0]))
            for a in x
        ]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def latent_source(path: Path, role: str) -> LatentFolder | None:
    """The latents of a source: ``gen-sample`` output -> its ``latents/``; an extract-latents
    folder -> itself; anything else -> None."""
    if path.is_dir():
        for cand in (path / "latents", path):
            if any(cand.glob("*.safetensors")):
                try:
                    return LatentFolder(cand)
                except LatentDataError as e:
                    raise SourceError(f"{role} latents in {cand}: {e}") from e
    return None


def _has_images(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".npz"
    from ..data.io import list_images

    root = path / "images" if (path / SETTINGS_NAME).is_file() else path
    return root.is_dir() and bool(list_images(root))


def tokenizer_of(folder: LatentFolder) -> str | None:
    """The tokenizer that wrote a latents folder: ``vae_model_name`` of a gen-sample folder's
    ``sampling.json``, ``model_name`` of an extract-latents folder's ``extraction.json``."""
    candidates = [(folder.folder / "extraction.json", "model_name")]
    if folder.folder.name == "latents":
        candidates.append((folder.folder.parent / SETTINGS_NAME, "vae_model_name"))
    for path, key in candidates:
        if path.is_file():
            try:
                d = read_json(path, what="settings")
            except (OSError, ConfigError):
                return None
            name = d.get(key) if isinstance(d, dict) else None
            return name if isinstance(name, str) else None
    return None


@dataclass
class Sources:
    """What ``gen-eval`` was given, opened (headers only: nothing is decoded yet)."""

    samples: Path
    reference: Path | None
    sample_images: ImageSource | None
    reference_images: ImageSource | None
    latents: LatentFolder | None
    reference_latents: LatentFolder | None
    settings: dict[str, Any] | None

    @classmethod
    def open(cls, samples: Path, reference: Path | None, reference_latents: Path | None, num: int) -> Sources:
        ref_lat = latent_source(reference_latents, "reference") if reference_latents is not None else None
        if ref_lat is None and reference is not None:
            ref_lat = latent_source(reference, "reference")
        sample_images = ImageSource(samples, num) if _has_images(samples) else None
        ref_images = None
        if reference is not None and _has_images(reference):
            # reference images are brought to the samples' size (ADM centre crop), for FID and the grids
            size = sample_images.probe_size() if sample_images is not None else None
            ref_images = ImageSource(reference, num, size=size)
        settings = sampling_settings(samples) if samples.is_dir() else None
        return cls(
            samples,
            reference,
            sample_images,
            ref_images,
            latent_source(samples, "generated"),
            ref_lat,
            settings,
        )

    def available(self) -> set[str]:
        """The input names (``transvae.metrics.base.INPUTS``) these sources provide."""
        have = {"samples": self.sample_images, "reference": self.reference_images}
        have |= {"latents": self.latents, "reference_latents": self.reference_latents}
        return {k for k, v in have.items() if v is not None}

    def sizes(self, num: int) -> dict[str, Any]:
        """Counts per input and the latent shapes, for ``Metric.check``."""
        out: dict[str, Any] = {}
        for name, src in (("samples", self.sample_images), ("reference", self.reference_images)):
            if src is not None:
                out[name] = src.count
        for name, folder in (("latents", self.latents), ("reference_latents", self.reference_latents)):
            if folder is not None:
                out[name] = min(len(folder), num) if num else len(folder)
                out[name.replace("latents", "latent_shape")] = folder.shape
        return out


# -- preflight ----------------------------------------------------------------------------------
def check_same_tokenizer(sources: Sources) -> None:
    """Refuse to compare latents of two tokenizers, or of two latent grid sizes.

    Raises:
        MetricInputError: naming both, and ``--force``.
    """
    gen, ref = sources.latents, sources.reference_latents
    a, b = tokenizer_of(gen), tokenizer_of(ref)
    if a and b and a != b:
        raise MetricInputError(
            f"the generated latents come from the tokenizer '{a}', the reference latents ({ref.folder}) from "
            f"'{b}': latent spaces of two tokenizers cannot be compared (pass --force to compute it anyway)"
        )
    if gen.shape != ref.shape:
        sa, sb = ("x".join(map(str, s)) for s in (gen.shape, ref.shape))
        raise MetricInputError(
            f"the generated latents are {sa}, the reference latents ({ref.folder}) {sb}: another resolution or "
            f"tokenizer (pass --force to compute it anyway)"
        )


def default_metrics(available: set[str]) -> list[str]:
    """Every metric the available inputs allow, in ``METRICS`` order."""
    return [m for m in METRICS if m in list_metrics(available)]


def preflight(metrics: Sequence[Metric], sources: Sources, options: EvalOptions) -> None:
    """Everything that can be checked before any image is decoded or any network loaded.

    Raises:
        MetricInputError: a metric's input is missing or cannot serve it (the message names all
            missing inputs at once, and how to provide them).
    """
    check_inputs(metrics, sources.available(), HOW)
    sizes = sources.sizes(options.num)
    for m in metrics:
        m.check(sizes)
    if any("latents" in m.needs for m in metrics) and not options.force:
        check_same_tokenizer(sources)


def latent_normalisation(sources: Sources, options: EvalOptions) -> tuple[LatentStats, str]:
    """The statistics both latent sets are normalised with, and where they come from."""
    if options.latent_stats:
        found = load_latent_stats(options.latent_stats)
        if found is None:
            raise SourceError(f"--latent-stats {options.latent_stats}: no latents_stats.pt there")
        return found, str(Path(options.latent_stats) / "latents_stats.pt")
    s = sources.settings
    if s is not None and isinstance(s.get("latent_stats"), dict):
        try:
            return LatentStats.from_dict(s["latent_stats"]), "the generator's training statistics"
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(f"{sources.samples / SETTINGS_NAME}: unusable latent_stats ({e})") from e
    ref = sources.reference_latents
    return ref.stats(save=False), str(ref.folder / "latents_stats.pt")


# -- the run ------------------------------------------------------------------------------------
def _feed(mc: MetricCollection, sources: Sources, options: EvalOptions, stats: LatentStats | None) -> None:
    """Every batch of every source to the metrics that need it (one Inception pass per batch)."""
    from tqdm.auto import tqdm

    for src, real, role in (
        (sources.sample_images, False, "samples"),
        (sources.reference_images, True, "reference"),
    ):
        if src is not None and mc.sets(role):
            for x in tqdm(src.batches(options.batch_size), desc=role, unit="batch", disable=src.count < 256):
                mc.update_images(x, real)
    for folder, real, role in (
        (sources.latents, False, "latents"),
        (sources.reference_latents, True, "reference_latents"),
    ):
        if folder is not None and mc.sets(role):
            for z in folder.iter_batches(256, limit=options.num):
                mc.update_latents(stats.normalize(z), real)


def _provenance(mc: MetricCollection, sources: Sources, stats_source: str | None) -> dict[str, Any]:
    """Per metric, what it was computed on: ``<key>_images`` / ``<key>_latents`` counts,
    ``<key>_weights``, and for latent metrics the normalisation and the reference folder."""
    out: dict[str, Any] = {}
    weights = mc.weights_sources()
    c = mc.counts
    for m in mc.metrics:
        k = m.key
        if {"samples", "reference"} <= m.needs:
            out[f"{k}_images"] = {"samples": c["samples"], "reference": c["reference"]}
        elif "samples" in m.needs:
            out[f"{k}_images"] = c["samples"]
        if "latents" in m.needs:
            out[f"{k}_latents"] = {"samples": c["latents"], "reference": c["reference_latents"]}
            out[f"{k}_stats"], out[f"{k}_reference"] = stats_source, str(sources.reference_latents.folder)
        if m.name in weights:
            out[f"{k}_weights"] = weights[m.name]
    return out


def evaluate_generation(
    samples: str | os.PathLike,
    reference: str | os.PathLike | None,
    out: str | os.PathLike,
    options: EvalOptions,
    reference_latents: str | os.PathLike | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Compute ``options.metrics`` and write ``out/results.json`` and ``out/report.html``.

    Args:
        samples: generated samples (``gen-sample`` folder, image folder or ``.npz``).
        reference: real images (folder or ``.npz``) and/or an extract-latents folder.
        out: output folder.
        options: metrics and settings.
        reference_latents: an extract-latents folder of held-out images, when ``reference`` is
            an image source.
        command: the command line, recorded in the outputs.
    Returns:
        the results payload (also in ``results.json``).
    Raises:
        ValueError: unknown metric. MetricInputError / SourceError: inputs that cannot serve the
            metrics (before any work). WeightsUnavailableError: Inception weights unavailable
            (before any image is decoded).
    """
    from ..utils.provenance import Provenance

    prov = Provenance.start(command=command or None, device=options.device)
    samples, out = Path(samples), Path(out)
    ref, ref_lat = (Path(p) if p is not None else None for p in (reference, reference_latents))
    sources = Sources.open(samples, ref, ref_lat, options.num)
    names = list(options.metrics) if options.metrics else default_metrics(sources.available())
    if not names:
        raise SourceError(
            f"no metric can be computed from {samples}: pass --reference and/or --reference-latents"
        )
    context = dict(
        is_splits=options.is_splits, latent_fd_patch=options.latent_fd_patch, device=options.device
    )
    metrics = build_metrics(names, **context)
    preflight(metrics, sources, options)
    needs_latents = any("latents" in m.needs for m in metrics)  # preflight made sure both sets exist
    stats, stats_source = latent_normalisation(sources, options) if needs_latents else (None, None)
    nets = feature_networks(
        metrics, {"inception": options.fid_weights}, given=options.feature_networks, device=options.device
    )
    mc = MetricCollection(metrics, nets, options.device)
    _feed(mc, sources, options, stats)
    try:
        results = mc.compute()
    except NotEnoughDataError as e:  # e.g. unreadable files left too few images
        raise SourceError(str(e)) from e
    grids = [s.first() if s is not None else None for s in (sources.sample_images, sources.reference_images)]
    payload = {
        "samples": str(samples),
        "reference": str(reference) if reference is not None else None,
        "reference_latents": str(reference_latents) if reference_latents is not None else None,
        "metrics": [m.name for m in metrics],
        "results": {**results, **_provenance(mc, sources, stats_source)},
        "sampling": sources.settings,
        "skipped": [{"path": p, "reason": r} for src in (sources.sample_images, sources.reference_images)
                    if src is not None for p, r in src.skipped],
        "command": command,
        "provenance": prov.finish(),
    }  # fmt: skip
    write_generation_report(out, payload, *grids)
    return payload

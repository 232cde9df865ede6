"""Scoring generated samples: FID and IS on images, the latent Frechet distance on latents.

Sources (``transvae gen-eval --samples / --reference``):

- images: a ``gen-sample`` output folder (its ``images/``), any image folder (recursive), or an
  ADM-style ``.npz`` (``arr_0``). Reference images of another size than the samples are
  centre-cropped and resized to it with ADM's preprocessing (``center_crop_resize``, the one
  ``extract-latents`` uses); unreadable files are skipped and counted.
- latents (for ``latent-fd``): a ``gen-sample`` folder (its ``latents/``) on the generated side; a
  folder written by ``transvae extract-latents`` (held-out images) on the real side. Both are
  normalised with the statistics the generator was trained with (recorded in the samples'
  ``sampling.json``), else the reference folder's ``latents_stats.pt``.

``evaluate_generation`` writes ``results.json`` and ``report.html`` (``generation.report``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.latents import LatentDataError, LatentFolder, LatentStats, load_latent_stats
from ..data.npz import iter_npz_images, npz_info
from ..inference.generate import SETTINGS_NAME
from .latent_fd import DEFAULT_PATCH, LatentFrechetDistance

METRICS = ("fid", "is", "latent-fd")


class SourceError(ValueError):
    """A samples / reference source cannot provide what a metric needs; the message says what to pass."""


@dataclass
class EvalOptions:
    """What ``evaluate_generation`` computes and how.

    Attributes:
        metrics: a subset of ``METRICS``.
        fid_weights: local InceptionV3 weights (None: torch hub cache, then a download).
        num: use at most this many images / latents per set (0 = all).
        batch_size: images per Inception batch.
        device: where the networks run.
        latent_fd_patch: patch side of the lFD feature.
        latent_stats: a latents folder whose ``latents_stats.pt`` normalises both sets for lFD
            (default: the generator's, from the samples' ``sampling.json``, else the reference's).
        is_splits: IS splits.
        feature_net / logits_net: replacements of the Inception pool / logits networks (tests).
    """

    metrics: tuple[str, ...] = ("fid", "is", "latent-fd")
    fid_weights: str | None = None
    num: int = 0
    batch_size: int = 64
    device: str = "cpu"
    latent_fd_patch: int = DEFAULT_PATCH
    latent_stats: str | None = None
    is_splits: int = 10
    feature_net: nn.Module | None = field(default=None, repr=False)
    logits_net: nn.Module | None = field(default=None, repr=False)


# -- sources ----------------------------------------------------------------------------------
def _sampling_settings(path: Path) -> dict[str, Any] | None:
    f = path / SETTINGS_NAME
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


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
            root = self.path / "images" if _sampling_settings(self.path) is not None else self.path
            self.files = list_images(root)
            if limit:
                self.files = self.files[:limit]
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

    def _load(self, f: Path) -> np.ndarray | None:
        from ..data.io import ImageLoadError, load_image
        from ..inference.extract import center_crop_resize

        try:
            im = load_image(f)
        except ImageLoadError as e:
            self.skipped.append((str(f), e.reason))
            return None
        if self.size is None:
            self.size = (im.size[1], im.size[0])
        if (im.size[1], im.size[0]) != self.size:
            if self.size[0] != self.size[1]:
                self.skipped.append((str(f), f"size {im.size[1]}x{im.size[0]} differs from {self.size}"))
                return None
            im = center_crop_resize(im, self.size[0])
        return np.asarray(im, dtype=np.uint8)

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


# -- metrics ----------------------------------------------------------------------------------
def _image_metrics(samples: ImageSource, reference: ImageSource | None, opts: EvalOptions) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from ..evaluation.fid import FIDMetric
    from ..evaluation.inception_score import ISMetric

    out: dict[str, Any] = {}
    fid = is_ = None
    if "fid" in opts.metrics:
        fid = FIDMetric(opts.feature_net, opts.fid_weights, opts.device)
    if "is" in opts.metrics:
        is_ = ISMetric(opts.logits_net, opts.fid_weights, opts.is_splits, opts.device)
        if samples.count < opts.is_splits:
            raise SourceError(f"IS needs at least {opts.is_splits} samples, got {samples.count}")
    n_fake = 0
    for x in tqdm(
        samples.batches(opts.batch_size), desc="samples", unit="batch", disable=samples.count < 256
    ):
        n_fake += x.shape[0]
        if fid is not None:
            fid.update_fake(x)
        if is_ is not None:
            is_.update(x)
    if fid is not None:
        n_real = 0
        for x in tqdm(
            reference.batches(opts.batch_size), desc="reference", unit="batch", disable=reference.count < 256
        ):
            fid.update_real(x)
            n_real += x.shape[0]
        if min(n_real, n_fake) < 2:
            raise SourceError(
                f"FID needs at least 2 images per set, got {n_fake} samples and {n_real} reference"
            )
        out["fid"] = fid.compute()
        out["fid_images"] = {"samples": n_fake, "reference": n_real}
        out["fid_weights"] = fid.source
    if is_ is not None:
        out["is"], out["is_std"] = is_.compute()
        out["is_images"] = n_fake
        out["is_weights"] = is_.source
    return out


def latent_fd(
    samples: LatentFolder,
    reference: LatentFolder,
    stats: LatentStats,
    patch: int = DEFAULT_PATCH,
    num: int = 0,
) -> dict[str, Any]:
    """lFD between generated and real latents, both normalised with ``stats``.

    Returns:
        dict with ``latent_fd``, ``latent_fd_latents`` (counts per set) and ``latent_fd_patch``.
    """
    if samples.channels != reference.channels:
        raise SourceError(
            f"generated latents have {samples.channels} channels, the reference latents {reference.channels}"
        )
    metric = LatentFrechetDistance(samples.channels, patch)
    counts = {}
    for name, folder, update in (
        ("samples", samples, metric.update_fake),
        ("reference", reference, metric.update_real),
    ):
        n = 0
        for z in folder.iter_batches(256, limit=num):
            update(stats.normalize(z))
            n += z.shape[0]
        counts[name] = n
    try:
        value = metric.compute()
    except ValueError as e:
        raise SourceError(str(e)) from e
    return {"latent_fd": value, "latent_fd_latents": counts, "latent_fd_patch": patch}


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
    """
    from .report import write_generation_report

    unknown = sorted(set(options.metrics) - set(METRICS))
    if unknown:
        raise SourceError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    samples, out = Path(samples), Path(out)
    reference = Path(reference) if reference is not None else None
    results: dict[str, Any] = {}
    ref_lat = latent_source(Path(reference_latents), "reference") if reference_latents else None
    if ref_lat is None and reference is not None:
        ref_lat = latent_source(reference, "reference")
    sample_images = ImageSource(samples, options.num) if _has_images(samples) else None
    ref_images = None
    if reference is not None and _has_images(reference):
        # reference images are brought to the samples' size (ADM centre crop), for FID and the grids
        size = sample_images.probe_size() if sample_images is not None else None
        ref_images = ImageSource(reference, options.num, size=size)
    if {"fid", "is"} & set(options.metrics):
        if sample_images is None:
            raise SourceError(f"{samples} holds no images for fid / is")
        if "fid" in options.metrics and ref_images is None:
            raise SourceError("fid needs reference images: pass --reference IMAGE_DIR_OR_NPZ")
        results.update(_image_metrics(sample_images, ref_images, options))
    settings = _sampling_settings(samples) if samples.is_dir() else None
    if "latent-fd" in options.metrics:
        gen_lat = latent_source(samples, "generated")
        if gen_lat is None:
            raise SourceError(
                f"latent-fd needs generated latents: {samples} is not a `transvae gen-sample` output folder"
            )
        if ref_lat is None:
            raise SourceError(
                "latent-fd needs real latents: pass --reference-latents DIR (written by "
                "`transvae extract-latents` from held-out images)"
            )
        if options.latent_stats:
            found = load_latent_stats(options.latent_stats)
            if found is None:
                raise SourceError(f"--latent-stats {options.latent_stats}: no latents_stats.pt there")
            stats, stats_source = found, str(Path(options.latent_stats) / "latents_stats.pt")
        elif settings is not None and "latent_stats" in settings:
            stats, stats_source = (
                LatentStats.from_dict(settings["latent_stats"]),
                "the generator's training statistics",
            )
        else:
            stats, stats_source = ref_lat.stats(save=False), f"{ref_lat.folder / 'latents_stats.pt'}"
        results.update(latent_fd(gen_lat, ref_lat, stats, options.latent_fd_patch, options.num))
        results["latent_fd_stats"] = stats_source
        results["latent_fd_reference"] = str(ref_lat.folder)
    payload = {
        "samples": str(samples),
        "reference": str(reference) if reference is not None else None,
        "metrics": list(options.metrics),
        "results": results,
        "sampling": settings,
        "skipped": [
            {"path": p, "reason": r}
            for src in (sample_images, ref_images)
            if src is not None
            for p, r in src.skipped
        ],
        "command": command,
    }
    write_generation_report(out, payload, sample_images, ref_images)
    return payload


def _has_images(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".npz"
    from ..data.io import list_images

    root = path / "images" if (path / SETTINGS_NAME).is_file() else path
    return root.is_dir() and bool(list_images(root))

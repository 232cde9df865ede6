"""Datasets for training and validation: image folders, WebDataset shards, bucketed batches.

Reproducibility contract: a training sample is addressed by ``(index, epoch, batch, height,
width)``; its random crop comes from a generator seeded by ``(seed, epoch, index)``. The batch
sampler walks epochs of a ``DistributedSampler`` (disjoint shards per rank) and can start at any
``(epoch, batch)``, which is the "data position" stored in training checkpoints.

Bad files (corrupt, truncated, zero-byte, not an image, decompression bombs) are skipped: the
sample is replaced by the next readable file and the skipped path is reported in the batch
(``batch["skipped"]``) so that the trainer counts them, even when workers load the data. With
``strict=True`` the first bad file stops the run instead (``StrictDataError``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from .io import ImageLoadError, list_images, load_image
from .transforms import ResizeTooLarge, TrainTransform, ValTransform

# how many following files a bad file may be replaced by before giving up
_MAX_REPLACEMENTS = 64


class StrictDataError(RuntimeError):
    """A bad image was met with ``strict=True`` (single-argument, so DataLoader workers re-raise it)."""


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (a fixed affine mix; no Python ``hash``)."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (2**63)


class ImageFolderDataset(Dataset):
    """All images under one or more folders (recursive), with ImageNet-style class labels.

    If every image of a root sits in a direct sub-folder of it (``root/CLASS/xxx.jpg``), the
    sorted sub-folder names are the classes (labels 0..K-1, shared across roots); otherwise
    every label is -1.

    Args:
        roots: folders (or single image files) to read.
        transform: ``TrainTransform`` or ``ValTransform``.
        seed: base seed of the per-sample generators.
        strict: raise ``StrictDataError`` on the first bad file instead of skipping it.
        max_images: keep only the first ``max_images`` files (sorted order), 0 = all.
        replace_bad: replace a bad file by the next readable one (training: keeps batch sizes
            and the data order fixed); if False the sample's ``image`` is None and ``collate``
            drops it (validation: every image counted once).
        cache_mb: keep decoded images in memory, up to this many MiB (3 bytes a pixel) in each
            process that reads the data (the main one, or each DataLoader worker), so that a
            small dataset is decoded once instead of at every sample; images met once the cache
            is full are decoded every time. 0 = off.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike],
        transform: TrainTransform | ValTransform,
        seed: int = 0,
        strict: bool = False,
        max_images: int = 0,
        replace_bad: bool = True,
        cache_mb: float = 0,
    ):
        if cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        if not roots:
            raise ValueError("no data folder given")
        files: list[Path] = []
        rels: list[tuple[Path, Path]] = []
        for root in roots:
            root = Path(root)
            found = list_images(root)  # raises FileNotFoundError for a missing folder
            files += found
            rels += [(root, f) for f in found]
        if not files:
            raise ValueError(f"no images (jpg/png/webp/...) found under {', '.join(map(str, roots))}")
        if max_images > 0:
            files, rels = files[:max_images], rels[:max_images]
        self.files = files
        self.classes = _class_names(rels)
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[f.relative_to(r).parts[0]] if self.classes else -1 for r, f in rels]
        self.transform, self.seed, self.strict, self.replace_bad = transform, seed, strict, replace_bad
        self.cache_bytes, self._cache, self._cached_bytes = int(cache_mb * 2**20), {}, 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int, int, int, int]) -> dict[str, Any]:
        """``key`` is an index or ``(index, epoch, batch, height, width)`` from ``BucketBatchSampler``.

        Returns:
            dict with ``image`` (3, H, W) in [-1, 1], ``label``, ``index`` (of the file used),
            ``epoch``, ``batch`` and ``skipped`` (list of "path: reason" strings).
        """
        if isinstance(key, tuple):
            index, epoch, batch, h, w = key
            size = (h, w) if h > 0 else None
        else:
            index, epoch, batch, size = int(key), 0, -1, None
        skipped: list[str] = []
        for k in range(min(_MAX_REPLACEMENTS, len(self.files))):
            i = (index + k) % len(self.files)
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            item = {"label": self.labels[i], "index": i, "epoch": epoch, "batch": batch, "skipped": skipped}
            try:
                return {"image": self.transform(self._load(i), g, size), **item}
            except ResizeTooLarge as r:  # a valid file of an extreme aspect ratio is a bad file too
                e = ImageLoadError(self.files[i], str(r))
            except ImageLoadError as err:
                e = err
            if self.strict:
                raise StrictDataError(f"bad image {e} (strict mode; drop --strict to skip bad files)") from e
            skipped.append(str(e))
            if not self.replace_bad:
                return {**item, "image": None, "label": -1}
        raise StrictDataError(f"{len(skipped)} bad images in a row near index {index}; last: {skipped[-1]}")

    def _load(self, i: int) -> Image.Image:
        """File ``i`` decoded (``load_image``), from the cache when it is there (``cache_mb``).
        Bad files are never cached: they raise again, and are counted, every time."""
        im = self._cache.get(i)
        if im is None:
            im = load_image(self.files[i])
            nbytes = 3 * im.width * im.height
            if self._cached_bytes + nbytes <= self.cache_bytes:
                self._cache[i], self._cached_bytes = im, self._cached_bytes + nbytes
        return im


def _class_names(rels: list[tuple[Path, Path]]) -> list[str]:
    """Sorted class folder names if every file is exactly one level below its root, else []."""
    names = set()
    for root, f in rels:
        parts = f.relative_to(root).parts if f != root else ()
        if len(parts) != 2:
            return []
        names.add(parts[0])
    return sorted(names) if len(names) > 1 else []


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples; ``skipped`` becomes the concatenated list of bad files.

    Samples whose ``image`` is None (undecodable WebDataset members) are dropped.
    """
    skipped = [p for s in samples for p in s["skipped"]]
    samples = [s for s in samples if s["image"] is not None]
    if not samples:
        return {"image": None, "skipped": skipped}
    return {
        "image": torch.stack([s["image"] for s in samples]),  # (B, 3, H, W)
        "label": torch.tensor([s["label"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "epoch": samples[0]["epoch"],
        "batch": samples[0]["batch"],
        "skipped": skipped,
    }


class BucketBatchSampler:
    """Infinite stream of batches of ``(index, epoch, batch, height, width)`` keys.

    Each epoch shuffles the dataset with ``DistributedSampler`` (seeded by ``seed + epoch``;
    each rank gets a disjoint shard) and cuts the rank's shard into batches of
    ``batch_size``; each batch gets one (height, width) bucket, drawn from a generator seeded by
    ``(seed, epoch, batch)`` so that every rank uses the same size at the same step.

    Args:
        dataset: the dataset (only its length is used).
        batch_size: per-rank micro-batch size.
        rank, world_size: this process and the number of processes.
        seed: shuffling seed.
        buckets: (height, width) choices; ``[(0, 0)]`` means the transform's default size.
        start: (epoch, batch) to start from, for resuming.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        buckets: Sequence[tuple[int, int]] = ((0, 0),),
        start: tuple[int, int] = (0, 0),
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.batch_size, self.seed = batch_size, seed
        self.buckets = list(buckets) or [(0, 0)]
        self.start = start

    def batches_per_epoch(self) -> int:
        return max(1, len(self.sampler) // self.batch_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The rank's index batches for ``epoch`` (short shards are repeated to fill a batch)."""
        self.sampler.set_epoch(epoch)
        idx = list(self.sampler)
        while len(idx) < self.batch_size:
            idx = idx + idx
        n = self.batches_per_epoch()
        return [idx[b * self.batch_size : (b + 1) * self.batch_size] for b in range(n)]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int, int]]]:
        epoch, first = self.start
        while True:
            for b, idx in enumerate(self.epoch_batches(epoch)):
                if b < first:
                    continue
                g = torch.Generator().manual_seed(sample_seed(self.seed + 1, epoch, b))
                h, w = self.buckets[int(torch.randint(len(self.buckets), (1,), generator=g))]
                yield [(i, epoch, b, h, w) for i in idx]
            epoch, first = epoch + 1, 0


def is_webdataset(paths: Sequence[str]) -> bool:
    """True if the data paths are WebDataset shards (``.tar`` files or brace patterns)."""
    return bool(paths) and all(str(p).endswith(".tar") or "{" in str(p) for p in paths)


def make_webdataset(
    urls: Sequence[str],
    transform: TrainTransform,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    strict: bool = False,
):
    """An infinite WebDataset pipeline of ``{"image", "label", ...}`` samples from tar shards.

    Shards are split across ranks and workers (``split_by_node`` / ``split_by_worker``); each
    sample is decoded with ``load_image``'s safety rules. Resuming a WebDataset run restarts the
    shard stream with a new shuffle seed (the exact position is not restored).

    Args:
        urls: shard paths or brace patterns (``data/shard-{000000..000099}.tar``).
        transform: the training transform.
        seed: shuffle seed; shuffle_buffer: samples kept in the shuffle buffer.
        strict: stop at the first undecodable sample.
    """
    try:
        import webdataset as wds
    except ImportError as e:
        raise ImportError(
            "WebDataset shards need the 'webdataset' package: pip install 'transvae[webdataset]'"
        ) from e
    from .io import decode_image

    def decode(sample: dict[str, Any]) -> dict[str, Any] | None:
        key = sample.get("__key__", "?")
        data = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
        try:
            if data is None:
                raise ValueError("no jpg/png/webp entry")
            # same rules as files on disk: format allow-list, EXIF, pixel limit, mode conversion
            rgb = decode_image(data, f"{sample.get('__url__', 'shard')}:{key}")
            g = torch.Generator().manual_seed(sample_seed(seed, 0, zlib.crc32(str(key).encode())))
            image = transform(rgb, g)
        except Exception as e:  # any decoding failure of an untrusted shard member
            if strict:
                raise StrictDataError(f"bad sample {key}: {e}") from e
            return {"image": None, "skipped": [f"{key}: {e}"]}
        label = int(sample["cls"]) if "cls" in sample else -1
        return {
            "image": image,
            "label": label,
            "index": -1,
            "epoch": 0,
            "batch": -1,
            "skipped": [],
        }

    # resampled=True: every rank/worker draws shards at random forever (no epoch boundary,
    # no uneven ends between ranks), the usual setting for large-scale training.
    return wds.WebDataset(list(urls), resampled=True, shardshuffle=False).shuffle(shuffle_buffer).map(decode)

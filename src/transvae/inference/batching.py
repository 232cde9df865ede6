"""Images of any size, loaded in the background and batched by padded size.

Images whose sizes pad to the same multiple of the compression ratio can share a forward pass;
``iter_image_batches`` groups them as they arrive (a bounded buffer, so memory stays flat over
a million files) and reports unreadable files as they are met.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..data.io import ImageLoadError, load_image, pil_to_tensor
from .padding import Pad, pad_to_multiple, padded_size

__all__ = ["iter_image_batches", "pad_batch"]


class _ImageDataset(Dataset):
    def __init__(self, files: list[Path], max_pixels: int | None = None, too_big: str = ""):
        self.files, self.max_pixels, self.too_big = files, max_pixels, too_big

    def __len__(self) -> int:
        return len(self.files)

    def _declared_size(self, path: Path) -> tuple[int, int] | None:
        """(W, H) from the file's header (nothing decoded), or None if it cannot be read."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    return im.size
        except Exception:  # noqa: BLE001 - load_image below reports unreadable files properly
            return None

    def __getitem__(self, i: int):
        if self.max_pixels is not None:
            size = self._declared_size(self.files[i])
            if size is not None and size[0] * size[1] > self.max_pixels:
                return i, None, f"{size[0]}x{size[1]} pixels: {self.too_big}"
        try:
            return i, pil_to_tensor(load_image(self.files[i])), ""
        except ImageLoadError as e:
            return i, None, e.reason


def _identity(x):
    return x


def iter_image_batches(
    files: list[Path],
    multiple: int,
    batch_size: int,
    num_workers: int = 0,
    buffer: int | None = None,
    max_pixels: int | None = None,
    too_big: str = "more than fits in memory",
) -> Iterator[tuple[list[int], list[torch.Tensor] | None, str]]:
    """Load images in the background and yield batches of images with the same padded size.

    Args:
        files: image paths.
        multiple: the compression ratio f (sizes are grouped by their padded size).
        batch_size: images per batch at most.
        num_workers: DataLoader worker processes decoding images.
        buffer: images held back while waiting for a full batch (default ``4 * batch_size``).
        max_pixels: images whose header declares more pixels are refused before decoding, with
            the reason ``too_big``.
        too_big: why such images are refused (e.g. the memory they would need).
    Yields:
        (indices, tensors, "") for a batch of (3, H, W) tensors in [-1, 1] whose sizes pad to
        the same multiple of ``multiple``, or ([index], None, reason) for an unreadable file.
    """
    loader = DataLoader(
        _ImageDataset(files, max_pixels, too_big),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    buffer = buffer or 4 * batch_size
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = defaultdict(list)
    pending = 0
    for i, x, err in loader:
        if x is None:
            yield [i], None, err
            continue
        key = padded_size(x.shape[1], x.shape[2], multiple)
        groups[key].append((i, x))
        pending += 1
        if len(groups[key]) == batch_size:
            batch = groups.pop(key)
            pending -= len(batch)
            yield [k for k, _ in batch], [t for _, t in batch], ""
        elif pending >= buffer:  # bound memory: flush everything buffered so far
            for batch in groups.values():
                yield [k for k, _ in batch], [t for _, t in batch], ""
            groups.clear()
            pending = 0
    for batch in groups.values():
        yield [k for k, _ in batch], [t for _, t in batch], ""


def pad_batch(xs: list[torch.Tensor], multiple: int) -> tuple[torch.Tensor, list[Pad]]:
    """Stack (3, H, W) images of possibly different sizes (same padded size) after padding each.

    Returns:
        ((B, 3, H', W'), the pad of each image).
    """
    padded, pads = zip(*(pad_to_multiple(x, multiple) for x in xs), strict=True)
    return torch.stack(padded), list(pads)

"""The evaluation protocol's image pipeline: read, resize the shorter side, center crop, uint8.

- The shorter side is resized to R with PIL's bicubic filter (PIL scales the filter support
  with the scale factor when shrinking, i.e. it antialiases), the longer side to
  ``round(R * long / short)``; then the central RxR square is cropped (offsets rounded as
  torchvision's ``CenterCrop``). An image whose shorter side is already R is only cropped and
  an RxR image is used as is: no resampling.
- Images smaller than R are upsampled the same way; the count is reported (``num_upsampled``).
- Unreadable files are skipped with their reason (``skipped``) instead of stopping a long run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from transvae.data.io import ImageLoadError, load_image
from transvae.data.transforms import ResizeTooLarge, resize_center_crop  # the one protocol

# the preprocessing; each metric describes itself (``Metric.protocol``)
PROTOCOL = {
    "resize": "shorter side to R, PIL bicubic (antialiased when downscaling); RxR images not resampled",
    "crop": "center crop RxR",
    "reconstruction": "decode(encode(x).mode()): the posterior mean, no sampling",
    "quantisation": "input and reconstruction rounded to uint8 (clamp to [-1, 1], (x + 1) * 127.5, round)",
}


@dataclass
class EvalItem:
    """One preprocessed image: ``image`` is (3, R, R) uint8, or None with ``error`` set."""

    index: int
    image: torch.Tensor | None
    upsampled: bool = False
    error: str | None = None


class EvalImageDataset(Dataset):
    """Files -> ``EvalItem`` (uint8 RxR) following the protocol above.

    Args:
        files: image paths.
        resolution: R.
    """

    def __init__(self, files: list[Path], resolution: int):
        self.files = list(files)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> EvalItem:
        try:
            im, up = resize_center_crop(load_image(self.files[i]), self.resolution)
        except ImageLoadError as e:
            return EvalItem(i, None, error=e.reason)
        except ResizeTooLarge as e:  # a valid file of an extreme aspect ratio: skipped and counted too
            return EvalItem(i, None, error=str(e))
        arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, R, R)
        return EvalItem(i, arr.contiguous(), upsampled=up)


def collate_items(items: list[EvalItem]) -> tuple[torch.Tensor, list[int], list[bool], list[EvalItem]]:
    """Batch the readable items: (B, 3, R, R) uint8, their indices, upsampled flags, and the failures."""
    good = [it for it in items if it.image is not None]
    bad = [it for it in items if it.image is None]
    if good:
        x = torch.stack([it.image for it in good])
    else:
        x = torch.empty(0, dtype=torch.uint8)
    return x, [it.index for it in good], [it.upsampled for it in good], bad


def class_labels(files: list[Path], root: Path) -> tuple[list[int], list[str]] | None:
    """Labels from a class-folder layout (``root/<class>/.../img``), or None if there is none.

    Returns:
        (label index per file, class names sorted) when every file lies in a sub-folder of
        ``root`` and there are at least two classes; else None.
    """
    names = []
    for f in files:
        rel = Path(f).resolve().relative_to(Path(root).resolve())
        if len(rel.parts) < 2:
            return None
        names.append(rel.parts[0])
    classes = sorted(set(names))
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return [index[n] for n in names], classes

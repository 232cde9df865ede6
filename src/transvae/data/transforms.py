"""Every resize/crop of the package, in one place.

- ``resize_center_crop``: THE evaluation protocol, shared by training validation
  (``ValTransform``) and ``transvae evaluate``: the shorter side resized to R with PIL's
  bicubic filter (antialiased when shrinking; the long side ``round(R * long / short)``), the
  central RxR cut with torchvision ``CenterCrop``'s rounding; an image whose shorter side is
  already R is only cropped. So the validation PSNR of a run and ``evaluate`` on the same
  images agree to float precision.
- ``center_crop``: the central window at the native scale (no resize), e.g. the same photo at
  several sizes without upsampling.
- ``adm_center_crop``: the ADM / DiT preprocessing (box-filter halving while the image is at
  least twice the size, then bicubic, then an integer-offset centre crop). Used on purpose by
  ``transvae extract-latents``, whose latents feed DiT / LightningDiT training that was
  defined with this crop. It differs from the protocol above by a few grey levels on large
  downscales.
- ``TrainTransform``: training augmentation, random by design (random zoom on top of "cover
  the crop", random crop, flip; optionally torchvision ``ColorJitter``'s random contrast,
  saturation and hue and a random permutation of the colour channels, all off by default: they
  widen the range of colours and contrasts a small training set shows the model, see "Colour
  fidelity of the quick start" in docs/training.md).

Every random choice (scale, crop offset, flip, colour factors, channel order) is drawn from a generator
seeded per sample from ``(seed, epoch, index)``, so the same sample gets the same crop whatever
worker loads it and a resumed run sees exactly the data it would have seen without the
interruption.

Small images: the shorter side is always resized to at least the crop size first, so images
smaller than the crop are upscaled (bicubic) rather than padded or refused.

Sizes are checked before any resize: an image whose resized copy would exceed
``MAX_IMAGE_PIXELS`` (a valid 300 KB PNG of 1 x 100000 px resized to a shorter side of 256 asks for
~20 GB) raises ``ResizeTooLarge``, which every data set treats as a bad file (skipped and counted).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .io import MAX_IMAGE_PIXELS, load_image, pil_to_tensor


class ResizeTooLarge(ValueError):
    """Resizing an image as asked would allocate more than ``MAX_IMAGE_PIXELS``; the message says
    the sizes. Data sets skip and count such a file like an unreadable one."""


def check_resized(old: tuple[int, int], new: tuple[int, int]) -> None:
    """Refuse a resize of ``old`` = (w, h) to ``new`` = (w, h) above ``MAX_IMAGE_PIXELS``, before it runs."""
    if new[0] * new[1] > MAX_IMAGE_PIXELS:
        raise ResizeTooLarge(
            f"resizing {old[0]}x{old[1]} as asked would make {new[0]}x{new[1]} = {new[0] * new[1] / 1e6:.0f} "
            f"Mpixel (limit {MAX_IMAGE_PIXELS / 1e6:.0f}): an extreme aspect ratio"
        )


def resize_to_cover(im: Image.Image, height: int, width: int, scale: float = 1.0) -> Image.Image:
    """Smallest aspect-preserving resize (times ``scale`` >= 1) that covers a ``height`` x ``width`` crop."""
    w, h = im.size
    s = max(height / h, width / w) * scale
    nw, nh = max(width, math.ceil(w * s - 1e-6)), max(height, math.ceil(h * s - 1e-6))
    if (nw, nh) == (w, h):
        return im
    check_resized((w, h), (nw, nh))
    return im.resize((nw, nh), Image.BICUBIC)


def resize_center_crop(im: Image.Image, size: int | tuple[int, int]) -> tuple[Image.Image, bool]:
    """The evaluation protocol: resize to cover ``size`` (bicubic), then crop the centre.

    Args:
        im: RGB PIL image of any size.
        size: R (square RxR) or (height, width).
    Returns:
        (the cropped image, whether it was upsampled).
    """
    height, width = (size, size) if isinstance(size, int) else size
    w, h = im.size
    s = max(height / h, width / w)
    upsampled = s > 1
    if s != 1:
        # round() rather than int(): the long side of a 481x321 photo at 256 is 384, not 383
        new_w, new_h = max(width, round(w * s)), max(height, round(h * s))
        check_resized((w, h), (new_w, new_h))
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
        w, h = new_w, new_h
    if (w, h) != (width, height):
        left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
        im = im.crop((left, top, left + width, top + height))
    return im, upsampled


def center_crop(im: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """The central ``size`` window of ``im`` at its native scale: no resize, the offsets rounded
    as ``resize_center_crop`` rounds them (so a crop of an image already that size is itself).

    Args:
        im: PIL image.
        size: R (square) or (height, width); at most the image's own size.
    Raises:
        ValueError: the image is smaller than ``size`` in either dimension.
    """
    height, width = (size, size) if isinstance(size, int) else size
    w, h = im.size
    if width > w or height > h:
        raise ValueError(f"a {width}x{height} crop does not fit into a {w}x{h} image (no upsampling)")
    left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
    return im.crop((left, top, left + width, top + height))


def load_crops(files, size: int | tuple[int, int], native: bool = False) -> torch.Tensor:
    """Images as the evaluation sees them, stacked: (N, 3, H, W) uint8.

    Args:
        files: image paths.
        size: R or (H, W).
        native: ``center_crop`` (no resize) instead of ``resize_center_crop`` (the protocol).
    Raises:
        ImageLoadError: an unreadable file; ValueError: a native crop larger than an image.
    """
    crops = [
        center_crop(load_image(f), size) if native else resize_center_crop(load_image(f), size)[0]
        for f in files
    ]
    return torch.stack(
        [torch.from_numpy(np.asarray(c, dtype=np.uint8).copy()).permute(2, 0, 1) for c in crops]
    )


def adm_center_crop(im: Image.Image, size: int) -> Image.Image:
    """ADM / DiT preprocessing: halve with a box filter while large, bicubic-resize the short
    side to ``size``, then crop the centre ``size`` x ``size`` (see the module docstring)."""
    check_resized(im.size, tuple(max(size, round(s * size / min(im.size))) for s in im.size))
    while min(im.size) >= 2 * size:
        im = im.resize(tuple(s // 2 for s in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    new = tuple(max(size, round(s * scale)) for s in im.size)
    check_resized(im.size, new)
    im = im.resize(new, resample=Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


class TrainTransform:
    """Random resize + random crop + horizontal flip (+ optional colour changes), to a
    (3, height, width) tensor in [-1, 1].

    The shorter side (relative to the crop's aspect ratio) is resized to cover the crop times a
    scale drawn uniformly from ``scale`` (``(1, 1)`` = LDM's "resize shorter side, random crop";
    larger values train on zoomed-in crops), then a random window is cut and flipped with p=0.5.
    The colour options follow torchvision's ``ColorJitter`` and are applied to the crop in this
    order: ``contrast > 0`` blends it with its mean grey by a factor drawn uniformly from
    ``[max(0, 1 - contrast), 1 + contrast]`` (``adjust_contrast``), ``saturation > 0`` blends it
    with its own greyscale likewise (``adjust_saturation``), ``hue > 0`` rotates its hue by a
    uniform random fraction of the colour circle in ``[-hue, hue]`` (``adjust_hue``: HSV saturation
    and value kept); then ``channel_shuffle`` puts its R, G, B channels in a uniformly random order
    (one of 6). With ``colour_p < 1`` a crop gets these colour changes (all of them) with
    probability ``colour_p`` and keeps its own colours otherwise. An autoencoder trained on a few
    photos otherwise learns their palette and their contrast, and pulls every image towards them
    (docs/training.md, "Colour fidelity").

    Args:
        resolution: default crop size (square) when ``__call__`` gets no size.
        scale: (min, max) zoom factor >= 1 applied on top of the covering resize.
        hflip: flip horizontally with probability 0.5.
        contrast: contrast jitter strength >= 0 (0 = off).
        saturation: saturation jitter strength >= 0 (0 = off).
        hue: maximum hue rotation as a fraction of the colour circle, in [0, 0.5] (0 = off; 0.5 =
            any hue).
        channel_shuffle: permute the colour channels at random.
        colour_p: probability in [0, 1] that a crop gets the colour changes above (1 = every crop).
    """

    def __init__(
        self,
        resolution: int,
        scale: tuple[float, float] = (1.0, 1.0),
        hflip: bool = True,
        hue: float = 0.0,
        channel_shuffle: bool = False,
        contrast: float = 0.0,
        saturation: float = 0.0,
        colour_p: float = 1.0,
    ):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        lo, hi = scale
        if not 1.0 <= lo <= hi:
            raise ValueError(f"scale must satisfy 1 <= min <= max, got {scale}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        if contrast < 0 or saturation < 0:
            raise ValueError(f"contrast and saturation must be >= 0, got {contrast} and {saturation}")
        if not 0.0 <= colour_p <= 1.0:
            raise ValueError(f"colour_p must be in [0, 1], got {colour_p}")
        self.resolution, self.scale, self.hflip = resolution, (float(lo), float(hi)), hflip
        self.hue, self.channel_shuffle = float(hue), bool(channel_shuffle)
        self.contrast, self.saturation = float(contrast), float(saturation)
        self.colour_p = float(colour_p)

    def __call__(
        self, im: Image.Image, generator: torch.Generator, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Args: im: RGB image; generator: per-sample RNG; size: (height, width) crop, default square.
        Returns: (3, height, width) float tensor in [-1, 1]."""
        height, width = size or (self.resolution, self.resolution)
        u = torch.rand(4, generator=generator).tolist()
        lo, hi = self.scale
        im = resize_to_cover(im, height, width, lo + (hi - lo) * u[0])
        w, h = im.size
        left = min(int(u[1] * (w - width + 1)), w - width)
        top = min(int(u[2] * (h - height + 1)), h - height)
        im = im.crop((left, top, left + width, top + height))
        if self.hflip and u[3] < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        # the colour draws come after the geometric ones and only when enabled, so a run without
        # them (or with colour_p = 1) sees exactly the crops it saw before these options existed
        jitter = self.contrast > 0 or self.saturation > 0 or self.hue > 0
        recolour = jitter or self.channel_shuffle
        if recolour and self.colour_p < 1.0:
            recolour = torch.rand(1, generator=generator).item() < self.colour_p
        if recolour and jitter:
            im = self._jitter(im, generator)
        x = pil_to_tensor(im)  # (3, height, width)
        if recolour and self.channel_shuffle:
            x = x[torch.randperm(3, generator=generator)]
        return x

    def _jitter(self, im: Image.Image, generator: torch.Generator) -> Image.Image:
        """ColorJitter's contrast, saturation and hue, in that order, one draw per enabled option."""
        import torchvision.transforms.functional as TF

        def factor(strength: float) -> float:
            lo = max(0.0, 1.0 - strength)
            return lo + (1.0 + strength - lo) * torch.rand(1, generator=generator).item()

        if self.contrast > 0:
            im = TF.adjust_contrast(im, factor(self.contrast))
        if self.saturation > 0:
            im = TF.adjust_saturation(im, factor(self.saturation))
        if self.hue > 0:
            im = TF.adjust_hue(im, (2.0 * torch.rand(1, generator=generator).item() - 1.0) * self.hue)
        return im


class ValTransform:
    """Deterministic: the evaluation protocol (``resize_center_crop``), as ``transvae evaluate``.

    Args:
        resolution: side of the square crop.
    """

    def __init__(self, resolution: int):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution

    def __call__(
        self, im: Image.Image, generator: torch.Generator | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Returns a (3, height, width) tensor in [-1, 1]; ``generator`` is unused (same signature as train)."""
        height, width = size or (self.resolution, self.resolution)
        return pil_to_tensor(resize_center_crop(im, (height, width))[0])


def parse_buckets(specs: tuple[str, ...] | list[str], multiple: int) -> list[tuple[int, int]]:
    """Parse ``["256x256", "192x320"]`` into (height, width) pairs, each a multiple of ``multiple``.

    Raises:
        ValueError: a malformed entry or a size that the model cannot encode.
    """
    out = []
    for s in specs:
        try:
            h, w = (int(v) for v in str(s).lower().split("x"))
        except ValueError as e:
            raise ValueError(f"bucket '{s}' must look like HEIGHTxWIDTH, e.g. 256x192") from e
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ValueError(f"bucket '{s}': both sides must be positive multiples of {multiple}")
        out.append((h, w))
    return out

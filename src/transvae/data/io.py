"""Reading user images safely: every failure becomes an ``ImageLoadError`` naming the file.

Handles EXIF orientation, palette / CMYK / greyscale / RGBA / 16-bit images, truncated files
and decompression bombs, so training and evaluation over millions of files never crash on one.
The defined behaviour for each kind of bad input is listed in ``docs/reliability.md``.

Only an allow-list of formats is ever decoded (``ALLOWED_FORMATS``): the file's content, not its
extension, decides the decoder, and formats that run external programs or rarely-audited
decoders (EPS via Ghostscript, PSD, ...) are refused.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)

# Decoders Pillow may use ("JPEG" also opens the MPO files many phone cameras write as ".jpg").
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
Image.init()  # register every plugin now: Image.open(formats=...) looks them up by name

# Images with more pixels than this (read from the header, before decoding) are refused as
# potential decompression bombs: 128 Mpixel is ~400 MB as 8-bit RGB. It stays below Pillow's own
# hard limit (2 * Image.MAX_IMAGE_PIXELS = 179 Mpixel), which would refuse larger ones anyway.
MAX_IMAGE_PIXELS = 128 * 1024 * 1024


class ImageLoadError(Exception):
    """An image could not be read; the message names the file and the reason.

    Attributes:
        path: the file, as a string.
        reason: why it was refused, one line.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        # keeps the two-argument constructor picklable, so errors cross DataLoader workers intact
        return (type(self), (self.path, self.reason))


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted), or ``[root]`` if it is a file.

    Files are selected by extension (case-insensitive, ``IMAGE_EXTENSIONS``); hidden files and
    anything inside hidden folders (``.git``, ``.ipynb_checkpoints``...) are skipped, as are broken
    symlinks and folders that cannot be read. Whether a listed file really is an image is decided
    later by ``load_image``.

    Args:
        root: a folder, or a single file (returned as is, whatever its extension).
        recursive: also look into sub-folders.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` exists but is neither a file nor a folder.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a file or folder: {root}")
    files = []
    for p in _walk(root, recursive):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            files.append(p)
    return sorted(files)


def _walk(root: Path, recursive: bool) -> Iterable[Path]:
    # os.walk ignores unreadable folders (onerror=None) instead of raising halfway through a listing
    if not recursive:
        try:
            yield from root.iterdir()
        except OSError:
            return
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            yield Path(dirpath) / name


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image as 8-bit RGB, applying EXIF orientation.

    - RGBA / LA / PA / palette with transparency: composited on white.
    - 16-bit greyscale (``I;16``): scaled ``round(v * 255 / 65535)``, then replicated to RGB.
      32-bit ``I`` / float ``F`` images are scaled by their bit depth or value range.
    - 16-bit RGB(A) PNG: Pillow itself keeps the high byte (``v >> 8``).
    - CMYK, greyscale, bilevel, palette, YCbCr: converted to RGB.
    - Multi-frame files (GIF, MPO, TIFF): the first frame.
    - Any size from 1x1 up to ``max_pixels`` is returned unchanged (cropping / padding is the
      caller's job).
    - Truncated files are errors, unless the program sets Pillow's global
      ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` (then Pillow fills the missing part).

    Args:
        path: the file to read.
        max_pixels: refuse images whose header declares more pixels than this.

    Returns:
        A loaded ``PIL.Image`` in mode ``"RGB"``.

    Raises:
        ImageLoadError: unreadable, empty, truncated, corrupt or non-image files, formats outside
            ``ALLOWED_FORMATS``, unsupported colour modes and decompression bombs. Nothing else.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageLoadError(path, "is a folder, not an image file")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; opened here so read errors are told apart
    except OSError as e:
        raise ImageLoadError(path, f"cannot read file ({e.strerror or e})") from e
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise ImageLoadError(path, f"cannot read file ({e.strerror or e})") from e
        if size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        return _decode(f, path, max_pixels)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """``load_image`` for bytes already in memory (e.g. a WebDataset shard member), same rules.

    Args:
        data: the encoded image file.
        name: how the error message names it (e.g. ``"shard-000.tar:key.jpg"``).
        max_pixels: refuse images whose header declares more pixels than this.

    Raises:
        ImageLoadError: as ``load_image``.
    """
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(f: BinaryIO, name: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Decode an open binary file to RGB (see ``load_image``); every failure is an ``ImageLoadError``."""
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below replaces Pillow's warning; its hard limit still applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # "Corrupt EXIF data" & co. on files that still decode: not actionable, and a
            # dataset of millions of files would repeat them; failures raise ImageLoadError
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with Image.open(f, formats=ALLOWED_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        name,
                        f"refused as a possible decompression bomb: {w}x{h} pixels exceeds the "
                        f"limit of {max_pixels} pixels",
                    )
                if w < 1 or h < 1:
                    raise ImageLoadError(name, f"image has no pixels ({w}x{h})")
                im.load()
                im = ImageOps.exif_transpose(im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"refused as a possible decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(
            name, f"not a recognised image (readable formats: {', '.join(ALLOWED_FORMATS)})"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad file
        raise ImageLoadError(name, f"corrupt or truncated image ({type(e).__name__}: {e})") from e
    try:
        return to_rgb(im)
    except Exception as e:  # noqa: BLE001
        raise ImageLoadError(name, f"unsupported colour mode {im.mode!r} ({type(e).__name__}: {e})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see ``load_image`` for the rules)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float64)
        return _grey_to_rgb(a * (255.0 / 65535.0))
    if im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("non-finite pixel values")
        lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scale = 1.0  # float images in [0, 1]
        elif lo >= 0.0 and hi <= 255.0:
            scale = 255.0  # 8-bit values stored in a wide type
        elif lo >= 0.0 and hi <= 65535.0:
            scale = 65535.0  # 16-bit values (Pillow opens some 16-bit PNG/TIFF as "I")
        else:
            a, scale = a - lo, max(hi - lo, 1e-12)  # anything else: stretch its range
        return _grey_to_rgb(a * (255.0 / scale))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def _grey_to_rgb(a: np.ndarray) -> Image.Image:
    """(H, W) float array in [0, 255] -> RGB image, rounding to nearest."""
    a8 = np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)
    return Image.fromarray(a8, mode="L").convert("RGB")


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) float tensor in [-1, 1]."""
    a = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())  # (H, W, 3)
    return a.permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] tensor (..., 3, H, W) -> uint8 with round-to-nearest, as used for metrics and PNGs."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) tensor in [-1, 1] -> RGB PIL image."""
    return Image.fromarray(tensor_to_uint8(x).permute(1, 2, 0).cpu().numpy(), mode="RGB")


def png_bytes(img: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> the bytes of a PNG file (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> Path:
    """Write uint8 images (N, 3, H, W) as one PNG grid (torchvision's ``make_grid``, 2 px
    padding), atomically: a crash leaves the old file or the new one, and a symbolic link at
    ``path`` is replaced, never written through."""
    import torchvision

    from ..utils.files import atomic_write_bytes

    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=2)  # (3, H', W') uint8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(grid.permute(1, 2, 0).numpy()))
    return path

"""Reading user images safely: every failure becomes an ``ImageLoadError`` naming the file.

Handles EXIF orientation, palette / CMYK / greyscale / RGBA / 16-bit images, truncated files
and decompression bombs, so training and evaluation over millions of files never crash on one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# Images with more pixels than this are refused as potential decompression bombs.
MAX_IMAGE_PIXELS = 16384 * 16384


class ImageLoadError(Exception):
    """An image could not be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted, by extension), or ``[root]`` if it is a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    files = [p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image as 8-bit RGB, applying EXIF orientation.

    - RGBA / LA / palette with transparency: composited on white.
    - 16-bit greyscale (I;16, I): scaled to 8 bits, then replicated to RGB.
    - CMYK, greyscale, palette: converted to RGB.

    Raises:
        ImageLoadError: empty, truncated, corrupt or non-image files, and decompression bombs.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageLoadError(path, f"cannot read file ({e.strerror})") from e
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(path, f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels")
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(path, f"refused as a decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(path, "not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(path, f"corrupt or truncated image ({e})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see ``load_image``)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


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

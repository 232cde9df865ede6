"""ADM-style ``.npz`` sample batches: the file the standard ImageNet FID evaluator reads.

OpenAI's guided-diffusion ``evaluator.py`` (used by DiT, SiT, LightningDiT) reads ``arr_0``:
uint8 images of shape (N, H, W, 3); sample files may add ``arr_1``: (N,) int64 class labels.
Both directions stream, one block of rows at a time, so 50 000 samples at 256 x 256 (9.8 GB)
never sit in memory at once: the writer appends rows to the ``.npy`` member of an (uncompressed)
zip and the reader checks the header (dtype, shape) before it reads any data. Nothing is
unpickled (object arrays are refused).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..utils.files import atomic_path

MAX_NPZ_PIXELS = 1 << 36  # 64 G pixel values: refuse headers that claim more


class NpzFormatError(ValueError):
    """The file is not an ADM-style sample/reference batch; the message says why."""


def write_npz(
    path: str | os.PathLike, images: Iterator[np.ndarray], count: int, labels: np.ndarray | None = None
) -> Path:
    """Write ``arr_0`` (and ``arr_1`` if ``labels``) to ``path`` atomically, streaming ``images``.

    Args:
        path: the ``.npz`` to write.
        images: blocks of uint8 (b, H, W, 3) images, ``count`` rows in total, all of one size.
        count: the number of images.
        labels: optional (count,) integer labels.
    """
    path = Path(path)
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        written, shape = 0, None
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            for block in images:
                block = np.ascontiguousarray(block)
                if block.dtype != np.uint8 or block.ndim != 4 or block.shape[-1] != 3:
                    raise NpzFormatError(
                        f"image blocks must be uint8 (b, H, W, 3), got {block.dtype} {block.shape}"
                    )
                if shape is None:
                    shape = block.shape[1:]
                    header = {"descr": np.lib.format.dtype_to_descr(block.dtype), "fortran_order": False}
                    header["shape"] = (count, *shape)
                    np.lib.format.write_array_header_2_0(f, header)
                elif block.shape[1:] != shape:
                    raise NpzFormatError(f"image size changed from {shape} to {block.shape[1:]}")
                f.write(block.tobytes())
                written += block.shape[0]
        if written != count:
            raise NpzFormatError(f"expected {count} images, got {written}")
        if labels is not None:
            with zf.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64), allow_pickle=False)
    return path


def _open_member(zf: zipfile.ZipFile, name: str):
    f = zf.open(name)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise NpzFormatError(f"unsupported .npy version {version}")
    return f, shape, fortran, dtype


def npz_info(path: str | os.PathLike) -> tuple[int, tuple[int, int, int]]:
    """(N, (H, W, 3)) of ``arr_0`` from its header alone.

    Raises:
        NpzFormatError: not a zip, no ``arr_0``, not uint8 (N, H, W, 3), or absurdly large.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            if "arr_0.npy" not in zf.namelist():
                raise NpzFormatError(f"{path} has no 'arr_0' (ADM batches hold images in arr_0)")
            f, shape, fortran, dtype = _open_member(zf, "arr_0.npy")
            f.close()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        if isinstance(e, NpzFormatError):
            raise
        raise NpzFormatError(f"{path} is not a readable .npz file ({e})") from e
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
        raise NpzFormatError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {dtype} {shape}")
    if int(np.prod(shape, dtype=np.float64)) > MAX_NPZ_PIXELS:
        raise NpzFormatError(f"{path}: arr_0 claims {shape}, more than {MAX_NPZ_PIXELS} values")
    return int(shape[0]), (int(shape[1]), int(shape[2]), 3)


def iter_npz_images(path: str | os.PathLike, block: int = 256, limit: int = 0) -> Iterator[np.ndarray]:
    """Yield uint8 (b, H, W, 3) blocks of ``arr_0`` in order (at most ``limit`` rows if > 0)."""
    n, hw3 = npz_info(path)
    n = min(n, limit) if limit > 0 else n
    row = int(np.prod(hw3))
    with zipfile.ZipFile(path) as zf:
        f, *_ = _open_member(zf, "arr_0.npy")
        with f:
            for start in range(0, n, block):
                b = min(block, n - start)
                data = f.read(b * row)
                if len(data) != b * row:
                    raise NpzFormatError(f"{path}: arr_0 ends after {start} images (truncated file)")
                yield np.frombuffer(data, dtype=np.uint8).reshape(b, *hw3)


def read_npz_labels(path: str | os.PathLike) -> np.ndarray | None:
    """``arr_1`` as (N,) int64 if present and integer, else None."""
    with zipfile.ZipFile(path) as zf:
        if "arr_1.npy" not in zf.namelist():
            return None
        with zf.open("arr_1.npy") as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
    return arr.astype(np.int64) if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer) else None

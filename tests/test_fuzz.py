"""Property-based tests (hypothesis) for the image loader and the pad / crop path.

- ``load_image`` on fuzzed bytes (valid files of random size, mode and format, then truncated,
  bit-flipped or spliced with random bytes): it returns a loaded 8-bit RGB image or raises
  ``ImageLoadError`` -- never any other exception. Unmodified files always load, at their size.
- ``pad_to_multiple`` / ``crop`` over sizes, aspect ratios and multiples: the padded size is the
  smallest multiple of f that fits, and crop(pad(x)) == x exactly.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transvae.data.io import ImageLoadError, decode_image, load_image

# TRANSVAE_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py for a long local fuzzing run
N_EXAMPLES = int(os.environ.get("TRANSVAE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MAX_PIXELS = 1 << 20  # keeps mutated headers that declare big images cheap to refuse

FORMATS = {  # format -> (extension, modes it can save)
    "PNG": ("png", ("RGB", "RGBA", "L", "LA", "P", "I;16")),
    "JPEG": ("jpg", ("RGB", "L", "CMYK")),
    "WEBP": ("webp", ("RGB", "RGBA")),
    "GIF": ("gif", ("P", "L")),
    "BMP": ("bmp", ("RGB", "L", "P")),
    "TIFF": ("tif", ("RGB", "RGBA", "L", "CMYK", "I;16")),
    "PPM": ("ppm", ("RGB", "L")),
}


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png16(arr: np.ndarray) -> bytes:
    """16-bit greyscale PNG written by hand (colour type 0, bit depth 16)."""
    h, w = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


@st.composite
def image_files(draw):
    """(bytes, (w, h)) of a valid image file of random format, mode and size."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    ext, modes = FORMATS[fmt]
    mode = draw(st.sampled_from(modes))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if mode == "I;16" and fmt == "PNG":
        return _png16(rng.integers(0, 65536, (h, w), dtype=np.uint16)), (w, h), ext
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        a = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
        im = Image.fromarray(a[..., 0] if bands == 1 else a, "L" if bands == 1 else None)
        if mode not in ("L", "RGB", "RGBA", "CMYK"):
            im = im.convert(mode)
        elif im.mode != mode:
            im = Image.frombytes(mode, (w, h), a.tobytes())
    b = io.BytesIO()
    im.save(b, fmt)
    return b.getvalue(), (w, h), ext


@st.composite
def mutations(draw, data: bytes):
    """Truncate, overwrite bytes or splice random bytes into ``data``."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "prefix_only"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    if kind == "prefix_only":  # a valid magic number followed by junk
        return data[: min(n, 16)] + draw(st.binary(min_size=0, max_size=256))
    out = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            out[i] = draw(st.integers(0, 255))
        return bytes(out)
    i = draw(st.integers(0, n))
    return bytes(out[:i]) + draw(st.binary(min_size=1, max_size=64)) + bytes(out[i:])


def _check_loaded(im: Image.Image) -> None:
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    a = np.asarray(im)
    assert a.dtype == np.uint8 and a.shape == (im.height, im.width, 3)
    assert 1 <= im.width * im.height <= MAX_PIXELS


@FUZZ
@given(sample=image_files())
def test_valid_files_always_load(tmp_path_factory, sample):
    data, (w, h), ext = sample
    p = tmp_path_factory.mktemp("valid") / f"x.{ext}"
    p.write_bytes(data)
    im = load_image(p, max_pixels=MAX_PIXELS)
    _check_loaded(im)
    assert im.size == (w, h)


@FUZZ
@given(data=st.data(), sample=image_files())
def test_fuzzed_files_load_or_raise_image_load_error(tmp_path_factory, data, sample):
    raw, _, ext = sample
    fuzzed = data.draw(mutations(raw))
    p = tmp_path_factory.mktemp("fuzz") / f"x.{ext}"
    p.write_bytes(fuzzed)
    try:
        im = load_image(p, max_pixels=MAX_PIXELS)
    except ImageLoadError as e:
        assert e.path == str(p) and str(p) in str(e) and e.reason
        with pytest.raises(ImageLoadError, match="^shard.tar:x: "):  # in-memory bytes: same verdict
            decode_image(fuzzed, "shard.tar:x", max_pixels=MAX_PIXELS)
        return
    _check_loaded(im)
    same = decode_image(fuzzed, "shard.tar:x", max_pixels=MAX_PIXELS)
    assert np.array_equal(np.asarray(same), np.asarray(im))


@settings(
    max_examples=max(N_EXAMPLES // 2, 1),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(blob=st.binary(min_size=0, max_size=2048))
def test_random_bytes_never_crash(tmp_path_factory, blob):
    p = tmp_path_factory.mktemp("rand") / "x.png"
    p.write_bytes(blob)
    try:
        _check_loaded(load_image(p, max_pixels=MAX_PIXELS))
    except ImageLoadError as e:
        assert str(p) in str(e)


# -- pad / crop -------------------------------------------------------------------------------
def _padding_api():
    inference = pytest.importorskip("transvae.inference")
    if not hasattr(inference, "pad_to_multiple") or not hasattr(inference, "crop"):
        pytest.skip("transvae.inference.pad_to_multiple / crop not available yet")
    return inference.pad_to_multiple, inference.crop


@settings(max_examples=N_EXAMPLES, deadline=None)
@given(
    h=st.integers(1, 80),
    w=st.integers(1, 80),
    f=st.sampled_from([1, 2, 4, 8, 16, 32]),
    batch=st.booleans(),
    mode=st.sampled_from(["reflect", "replicate", "constant"]),
)
def test_pad_then_crop_is_identity(h, w, f, batch, mode):
    pad_to_multiple, crop = _padding_api()
    x = torch.rand((2, 3, h, w) if batch else (3, h, w)) * 2 - 1
    y, pad = pad_to_multiple(x, f, mode=mode)
    hp, wp = y.shape[-2:]
    assert hp % f == 0 and wp % f == 0
    assert h <= hp < h + f and w <= wp < w + f  # the smallest multiple that fits
    assert y.shape[:-2] == x.shape[:-2]
    assert torch.isfinite(y).all()
    torch.testing.assert_close(crop(y, pad), x, rtol=0, atol=0)
    # the padded border only holds values taken from the image (or zeros for "constant")
    lo, hi = (
        (min(x.min().item(), 0.0), max(x.max().item(), 0.0)) if mode == "constant" else (x.min(), x.max())
    )
    assert y.min() >= lo and y.max() <= hi

"""Bad and unusual image files: each gets a defined behaviour (see docs/reliability.md).

Either ``load_image`` returns a correct 8-bit RGB image (pixels are checked) or it raises
``ImageLoadError`` whose message names the file and the reason.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transvae.data.io import ALLOWED_FORMATS, ImageLoadError, decode_image, list_images, load_image


# -- helpers ----------------------------------------------------------------------------------
def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def make_png(arr: np.ndarray, bit_depth: int, color_type: int, size: tuple[int, int] | None = None) -> bytes:
    """Hand-made PNG (Pillow cannot write 16-bit RGB); ``size`` overrides the declared (w, h)."""
    h, w = arr.shape[:2]
    w, h = size or (w, h)
    dt = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + row.astype(dt).tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def photo(h: int = 48, w: int = 64) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100 : 100 + h, 150 : 150 + w])


def assert_error(path: Path, *words: str, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as ei:
        load_image(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg and ei.value.path == str(path)
    assert "\n" not in msg
    for w in words:
        assert w in msg.lower(), msg
    return ei.value


# -- valid images of every mode -----------------------------------------------------------------
def test_rgb_png_is_exact(tmp_path):
    a = photo()
    out = load_image(save(Image.fromarray(a), tmp_path / "a.png"))
    assert out.size == (64, 48)
    np.testing.assert_array_equal(rgb(out), a)


def test_rgb_jpeg_is_close(tmp_path):
    a = photo()
    out = load_image(save(Image.fromarray(a), tmp_path / "a.jpg", quality=95))
    assert np.abs(rgb(out) - a).mean() < 3.0


def test_content_decides_not_extension(tmp_path):
    a = photo(8, 8)
    out = load_image(save(Image.fromarray(a), tmp_path / "really_a_png.jpg", "PNG"))
    np.testing.assert_array_equal(rgb(out), a)


def test_greyscale_replicated(tmp_path):
    g = photo()[..., 0]
    out = rgb(load_image(save(Image.fromarray(g, "L"), tmp_path / "g.png")))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_bilevel(tmp_path):
    b = np.zeros((8, 8), bool)
    b[:, 4:] = True
    out = rgb(load_image(save(Image.fromarray(b), tmp_path / "b.png")))
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # pure cyan
    im.paste((0, 0, 0, 255), (16, 0, 32, 32))  # right half black
    out = rgb(load_image(save(im, tmp_path / "cmyk.jpg", quality=95)))
    assert np.abs(out[4:28, 2:12] - [0, 255, 255]).max() <= 6
    assert np.abs(out[4:28, 20:30] - [0, 0, 0]).max() <= 6


def _palette_image(width: int, height: int) -> Image.Image:
    """A "P" image of the palette [(10, 20, 30), (200, 100, 50), black...] with pixels 0, 1, 0, 1, 1, 1, 0, 0
    (as many as fit)."""
    p = Image.new("P", (width, height))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1, 0, 1, 1, 1, 0, 0][: width * height])
    return p


def test_palette_png_without_transparency(tmp_path):
    p = _palette_image(4, 2)
    out = rgb(load_image(save(p, tmp_path / "p.png")))
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])


def test_palette_png_with_transparency_composited_on_white(tmp_path):
    p = _palette_image(4, 1)
    path = save(p, tmp_path / "pt.png", transparency=0)  # index 0 fully transparent
    assert "transparency" in Image.open(path).info
    out = rgb(load_image(path))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])


def test_palette_gif_with_transparency(tmp_path):
    p = _palette_image(4, 1)
    out = rgb(load_image(save(p, tmp_path / "pt.gif", transparency=0)))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [200, 100, 50]] * 2)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((2, 3, 4), np.uint8)
    a[..., 0] = 255  # red
    a[:, 0, 3] = 0  # transparent -> white
    a[:, 1, 3] = 255  # opaque -> red
    a[:, 2, 3] = 128  # half -> pink: G = B = 255 * (1 - 128/255) = 127
    out = rgb(load_image(save(Image.fromarray(a, "RGBA"), tmp_path / "rgba.png")))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [255, 0, 0])
    assert out[0, 2, 0] == 255 and abs(out[0, 2, 1] - 127) <= 1 and abs(out[0, 2, 2] - 127) <= 1


def test_rgba_webp_lossless(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 2] = 255
    a[:, :2, 3] = 255  # left opaque blue, right transparent
    out = rgb(load_image(save(Image.fromarray(a, "RGBA"), tmp_path / "a.webp", lossless=True)))
    np.testing.assert_array_equal(out[:, :2], np.broadcast_to([0, 0, 255], (4, 2, 3)))
    np.testing.assert_array_equal(out[:, 2:], np.full((4, 2, 3), 255))


def test_la_composited_on_white(tmp_path):
    a = np.zeros((1, 2, 2), np.uint8)  # black
    a[0, 0, 1] = 255
    a[0, 1, 1] = 128
    out = rgb(load_image(save(Image.fromarray(a, "LA"), tmp_path / "la.png")))
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    assert np.abs(out[0, 1] - 127).max() <= 1


def test_16bit_grey_png_scaled_to_8bit(tmp_path):
    v = np.array([[0, 257, 1000, 32896, 65535, 65279]], np.uint16)
    path = tmp_path / "g16.png"
    path.write_bytes(make_png(v, 16, 0))
    assert Image.open(path).mode == "I;16"
    out = rgb(load_image(path))
    expect = np.floor(v.astype(float) * 255 / 65535 + 0.5)  # 0, 1, 4, 128, 255, 254
    np.testing.assert_array_equal(out[..., 0], expect)
    np.testing.assert_array_equal(out[..., 1], out[..., 2])


def test_16bit_rgb_png_keeps_high_byte(tmp_path):
    a = (np.arange(4 * 5 * 3, dtype=np.uint32).reshape(4, 5, 3) * 1097 % 65536).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(make_png(a, 16, 2))
    out = rgb(load_image(path))
    # Pillow reads 16-bit RGB as 8-bit by keeping the most significant byte (documented)
    np.testing.assert_array_equal(out, a >> 8)
    assert np.abs(out - a / 257.0).max() < 1.0


def test_16bit_rgba_png(tmp_path):
    a = np.zeros((1, 2, 4), np.uint16)
    a[..., 1] = 65535  # green
    a[0, 0, 3] = 65535
    a[0, 1, 3] = 0
    path = tmp_path / "rgba16.png"
    path.write_bytes(make_png(a, 16, 6))
    out = rgb(load_image(path))
    np.testing.assert_array_equal(out[0], [[0, 255, 0], [255, 255, 255]])


def test_32bit_int_and_float_tiff(tmp_path):
    i16 = np.array([[0, 300, 65535]], np.int32)  # 16-bit range stored as 32-bit "I"
    out = rgb(load_image(save(Image.fromarray(i16, "I"), tmp_path / "i.tif")))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255])
    f = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = rgb(load_image(save(Image.fromarray(f, "F"), tmp_path / "f.tif")))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    bad = np.array([[0.0, np.nan]], np.float32)
    assert_error(save(Image.fromarray(bad, "F"), tmp_path / "nan.tif"), "unsupported colour mode")


@pytest.mark.parametrize(
    "orientation, top_colour",
    [(1, None), (3, None), (6, (255, 0, 0)), (8, (0, 0, 255))],
)
def test_exif_orientation_applied(tmp_path, orientation, top_colour):
    a = np.zeros((32, 64, 3), np.uint8)  # 64 wide, 32 tall: left half red, right half blue
    a[:, :32, 0] = 255
    a[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = rgb(load_image(save(Image.fromarray(a), tmp_path / f"o{orientation}.jpg", quality=95, exif=exif)))
    if orientation == 1:
        assert out.shape == (32, 64, 3) and out[16, 8, 0] > 200 and out[16, 56, 2] > 200
    elif orientation == 3:  # 180 degrees: blue now on the left
        assert out.shape == (32, 64, 3) and out[16, 8, 2] > 200 and out[16, 56, 0] > 200
    else:
        # 6 = rotate 90 clockwise to display (left edge goes to the top); 8 = counter-clockwise
        assert out.shape == (64, 32, 3)
        assert np.abs(out[8, 16] - top_colour).max() < 40
        assert np.abs(out[56, 16] - (255 - np.array(top_colour))).max() > 200


def test_multiframe_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = rgb(load_image(path))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (15, 15)])
def test_tiny_images_returned_unchanged(tmp_path, size):
    # smaller than the compression ratio (16) and any crop: the loader returns them as they are;
    # datasets / inference pad or resize (docs/reliability.md)
    a = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = load_image(save(Image.fromarray(a), tmp_path / "tiny.png"))
    assert out.size == size
    np.testing.assert_array_equal(rgb(out), a)
    assert load_image(save(Image.fromarray(a), tmp_path / "tiny.jpg")).size == size


def test_huge_image_loads(tmp_path):
    im = Image.new("RGB", (6000, 4000), (12, 200, 99))
    out = load_image(save(im, tmp_path / "huge.jpg", quality=90))
    assert out.size == (6000, 4000)
    assert np.abs(np.asarray(out)[::997, ::991].astype(int) - [12, 200, 99]).max() <= 3


# -- bad files ----------------------------------------------------------------------------------
def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert_error(p, "empty")


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_files(tmp_path, fmt, ext, keep):
    b = io.BytesIO()
    Image.fromarray(photo(96, 96)).save(b, fmt)
    data = b.getvalue()
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(data[: max(int(len(data) * keep), 1)])
    assert_error(p)


def test_truncated_error_reason(tmp_path):
    b = io.BytesIO()
    Image.fromarray(photo(96, 96)).save(b, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(b.getvalue()[: len(b.getvalue()) // 2])
    assert_error(p, "truncated")


def test_png_with_corrupt_data_crc(tmp_path):
    b = io.BytesIO()
    Image.fromarray(photo()).save(b, "PNG")
    d = bytearray(b.getvalue())
    i = d.find(b"IDAT")
    d[i + 40] ^= 0xFF
    p = tmp_path / "crc.png"
    p.write_bytes(bytes(d))
    assert_error(p, "corrupt")


def test_jpeg_with_garbage_inside(tmp_path):
    b = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(b, "JPEG")
    d = bytearray(b.getvalue())
    d[len(d) // 2 : len(d) // 2 + 50] = b"\xff" * 50
    p = tmp_path / "garbage.jpg"
    p.write_bytes(bytes(d))
    assert_error(p, "corrupt")


@pytest.mark.parametrize(
    "content",
    [
        b"hello, I am a text file\n",
        b"<html><body>404 not found</body></html>",
        b"\x00" * 1000,
        os.urandom(4096),
    ],
)
def test_non_image_with_image_extension(tmp_path, content):
    p = tmp_path / "fake.jpg"
    p.write_bytes(content)
    assert_error(p, "not a recognised image")


def test_format_outside_allow_list_is_refused(tmp_path):
    # EPS would be rendered by running Ghostscript; Pillow identifies it, our loader must not
    p = tmp_path / "evil.jpg"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with Image.open(p) as im:
        assert im.format == "EPS" and "EPS" not in ALLOWED_FORMATS
    assert_error(p, "not a recognised image")


def test_decompression_bomb_header_refused_before_decoding(tmp_path):
    # a 100000 x 100000 PNG whose data is only one pixel: refused from the header alone
    p = tmp_path / "bomb.png"
    p.write_bytes(make_png(np.zeros((1, 1), np.uint8), 8, 0, size=(100_000, 100_000)))
    assert p.stat().st_size < 100
    assert_error(p, "decompression bomb")


def test_max_pixels_limit(tmp_path):
    p = save(Image.new("RGB", (8, 8)), tmp_path / "a.png")
    assert load_image(p, max_pixels=64).size == (8, 8)
    assert_error(p, "decompression bomb", "8x8", max_pixels=63)


def test_missing_file_and_folder(tmp_path):
    assert_error(tmp_path / "nope.jpg", "cannot read")
    (tmp_path / "dir.jpg").mkdir()
    assert_error(tmp_path / "dir.jpg", "folder")


def test_unreadable_file(tmp_path, monkeypatch):
    p = save(Image.new("RGB", (2, 2)), tmp_path / "locked.png")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("transvae.data.io.open", denied, raising=False)
    assert_error(p, "cannot read", "permission denied")


def test_error_is_picklable_for_dataloader_workers(tmp_path):
    p = tmp_path / "e.png"
    p.write_bytes(b"")
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    e2 = pickle.loads(pickle.dumps(ei.value))
    assert isinstance(e2, ImageLoadError) and e2.path == str(p) and str(e2) == str(ei.value)


def test_decode_image_bytes_same_rules(tmp_path):
    # WebDataset shard members are bytes in memory: same allow-list, bomb check, EXIF, modes
    a = photo(8, 8)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    np.testing.assert_array_equal(rgb(decode_image(b.getvalue(), "s.tar:k.png")), a)
    cases = [
        (b"", "empty"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", "not a recognised image"),
        (make_png(np.zeros((1, 1), np.uint8), 8, 0, size=(100_000, 100_000)), "decompression bomb"),
        (b.getvalue()[:60], "truncated"),
    ]
    for data, words in cases:
        with pytest.raises(ImageLoadError, match=f"^s.tar:k.png: .*{words}"):
            decode_image(data, "s.tar:k.png")


# -- list_images ------------------------------------------------------------------------------
def test_list_images_filters_and_sorts(tmp_path):
    for rel in [
        "b.JPG",
        "a.png",
        "sub/c.webp",
        "sub/deep/d.jpeg",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "broken.png").symlink_to(tmp_path / "does-not-exist.png")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a.png", "b.JPG", "sub/c.webp", "sub/deep/d.jpeg"]
    flat = [p.name for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.png", "b.JPG"]


def test_list_images_root_is_file_or_missing(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("x")
    assert list_images(f) == [f]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_images(tmp_path / "missing")

"""Datasets, transforms, bucketed batch sampling and WebDataset shards (generated images only)."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from transvae.data.datasets import (
    BucketBatchSampler,
    ImageFolderDataset,
    StrictDataError,
    collate,
    is_webdataset,
    make_webdataset,
)
from transvae.data.transforms import TrainTransform, ValTransform, parse_buckets


def _img(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    for c, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _img(48 + 8 * i, 40, 10 * c + i).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def test_class_folder_labels_and_recursive_listing(folder):
    ds = ImageFolderDataset([folder], ValTransform(32))
    assert ds.classes == ["cat", "dog"]
    assert ds.labels == [0, 0, 0, 1, 1, 1]
    s = ds[4]
    assert s["image"].shape == (3, 32, 32) and s["label"] == 1
    # flat folder: no labels
    flat = ImageFolderDataset([folder / "cat"], ValTransform(32))
    assert flat.classes == [] and set(flat.labels) == {-1}


def test_val_transform_is_resize_shorter_side_and_center_crop():
    # left half black, right half white, 80x40 -> shorter side 32 -> 64x32 -> center 32x32 crop
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 40:] = 255
    x = ValTransform(32)(Image.fromarray(a))
    assert x.shape == (3, 32, 32)
    assert x[:, :, :14].max() < -0.9 and x[:, :, 18:].min() > 0.9  # the edge stays in the middle


def test_small_images_are_upscaled_and_crops_are_seeded():
    tf = TrainTransform(32, scale=(1.0, 1.5))
    im = _img(10, 7, 0)  # smaller than the crop in both sides
    a = tf(im, torch.Generator().manual_seed(3))
    b = tf(im, torch.Generator().manual_seed(3))
    c = tf(im, torch.Generator().manual_seed(4))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert tf(_img(100, 50, 1), torch.Generator(), size=(32, 64)).shape == (3, 32, 64)


def test_bad_files_are_replaced_and_reported_or_stop_in_strict_mode(folder):
    (folder / "cat" / "0.png").write_bytes(b"")  # zero-byte
    (folder / "cat" / "1.png").write_bytes(b"not an image at all")
    ds = ImageFolderDataset([folder], TrainTransform(32))
    s = ds[0]
    assert s["index"] == 2 and s["image"].shape == (3, 32, 32)
    assert len(s["skipped"]) == 2 and "0.png" in s["skipped"][0] and "empty" in s["skipped"][0]
    batch = collate([ds[0], ds[3]])
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["skipped"]) == 2
    val = ImageFolderDataset([folder], ValTransform(32), replace_bad=False)
    assert collate([val[i] for i in range(len(val))])["image"].shape[0] == 4  # 2 dropped, counted once
    with pytest.raises(StrictDataError, match="0.png"):
        ImageFolderDataset([folder], TrainTransform(32), strict=True)[0]


def test_cache_decodes_each_file_once_within_its_budget_and_never_caches_bad_files(folder, monkeypatch):
    import transvae.data.datasets as datasets

    decoded = []
    real = datasets.load_image
    monkeypatch.setattr(
        datasets, "load_image", lambda path: decoded.append(path.relative_to(folder).as_posix()) or real(path)
    )
    (folder / "cat" / "1.png").write_bytes(b"not an image at all")
    keys = [(i, epoch, 0, 0, 0) for epoch in range(3) for i in range(6)]
    plain = [ImageFolderDataset([folder], TrainTransform(32, scale=(1.0, 1.5)))[k] for k in keys]
    decoded.clear()
    # 0.01 MiB = 10485 bytes: cat/0.png (48x40, 5760 bytes) fits, the next image (64x40) no longer
    ds = ImageFolderDataset([folder], TrainTransform(32, scale=(1.0, 1.5)), cache_mb=0.01)
    cached = [ds[k] for k in keys]
    assert all(torch.equal(c["image"], p["image"]) for c, p in zip(cached, plain, strict=True))
    # the bad file is reported each time, as without the cache
    assert [c["skipped"] for c in cached] == [p["skipped"] for p in plain]
    assert decoded.count("cat/0.png") == 1 and decoded.count("cat/1.png") == 3  # bad: read every epoch
    assert decoded.count("cat/2.png") == 6  # as index 2 and as index 1's replacement, each epoch
    assert list(ds._cache) == [0] and ds._cached_bytes == 5760
    # in a DataLoader worker (its own copy of the cache): the same crops and reports
    loader = torch.utils.data.DataLoader(ds, sampler=keys, batch_size=None, num_workers=1)
    for got, want in zip(loader, plain, strict=True):
        assert torch.equal(got["image"], want["image"]) and got["skipped"] == want["skipped"]
    with pytest.raises(ValueError, match="cache_mb"):
        ImageFolderDataset([folder], TrainTransform(32), cache_mb=-1)


def test_bucket_sampler_disjoint_ranks_resume_and_sizes(folder):
    ds = ImageFolderDataset([folder], TrainTransform(32))
    buckets = parse_buckets(["32x32", "16x48"], 16)
    r0 = BucketBatchSampler(ds, 1, rank=0, world_size=2, seed=5, buckets=buckets)
    r1 = BucketBatchSampler(ds, 1, rank=1, world_size=2, seed=5, buckets=buckets)
    e0 = [i for b in r0.epoch_batches(0) for i in b]
    e1 = [i for b in r1.epoch_batches(0) for i in b]
    assert not set(e0) & set(e1) and sorted(e0 + e1) == list(range(6))
    it0, it1 = iter(r0), iter(r1)
    stream0 = [next(it0) for _ in range(7)]
    stream1 = [next(it1) for _ in range(7)]
    # the same bucket on every rank at every step; both buckets get used
    assert [b[0][3:] for b in stream0] == [b[0][3:] for b in stream1]
    assert {b[0][3:] for b in stream0} == {(32, 32), (16, 48)}
    # starting at (epoch 1, batch 1) reproduces the tail of the stream exactly
    resumed = BucketBatchSampler(ds, 1, rank=0, world_size=2, seed=5, buckets=buckets, start=(1, 1))
    assert [next(iter(resumed))] == stream0[4:5]
    s = ds[stream0[0][0]]
    assert s["image"].shape[1:] == stream0[0][0][3:]
    with pytest.raises(ValueError, match="multiples of 16"):
        parse_buckets(["30x32"], 16)


def test_webdataset_shards(tmp_path):
    pytest.importorskip("webdataset")
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(4):
            buf = io.BytesIO()
            _img(40, 36, i).save(buf, format="PNG")
            data = {2: b"corrupt", 3: _bomb_png()}.get(i, buf.getvalue())
            for name, payload in ((f"{i:04d}.png", data), (f"{i:04d}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    assert is_webdataset([str(shard)]) and not is_webdataset([str(tmp_path)])
    ds = make_webdataset([str(shard)], TrainTransform(32), shuffle_buffer=1)
    samples = [s for _, s in zip(range(12), ds, strict=False)]
    good = [s for s in samples if s["image"] is not None]
    bad = [s for s in samples if s["image"] is None]
    assert good and bad and all(s["image"].shape == (3, 32, 32) for s in good)
    reasons = {r for s in bad for r in s["skipped"]}
    assert any("0002" in r for r in reasons)
    # the loader's rules apply to shard members too: a header declaring 144 Mpixel (over our
    # 128 Mpixel limit, under Pillow's own error threshold) is refused before any allocation
    assert any("0003" in r and "decompression bomb" in r for r in reasons)
    assert {s["label"] for s in good} <= {0, 1}


def _bomb_png(side: int = 12000) -> bytes:
    """A PNG whose header declares side x side pixels (with a one-row body)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" + b"\x00" * 3 * side)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_colour_augmentations_are_off_by_default_and_change_only_colours():
    im = _img(50, 40, 5)
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    plain = TrainTransform(32, scale=(1.0, 1.5))(im, g())
    off = dict(hue=0.0, channel_shuffle=False, contrast=0.0, saturation=0.0)
    assert torch.equal(TrainTransform(32, scale=(1.0, 1.5), **off)(im, g()), plain)
    # the geometric draws come first: the same crop, with its channels permuted
    shuffled = TrainTransform(32, scale=(1.0, 1.5), channel_shuffle=True)(im, g())
    perms = [
        p
        for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
        if torch.equal(plain[list(p)], shuffled)
    ]
    assert len(perms) == 1
    seen = {
        tuple(
            torch.argsort(
                TrainTransform(8, channel_shuffle=True)(
                    _solid((10, 100, 200)), torch.Generator().manual_seed(s)
                )[:, 0, 0]
            ).tolist()
        )
        for s in range(60)
    }
    assert len(seen) == 6  # every order of the channels occurs


def _solid(rgb: tuple[int, int, int], size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def test_hue_rotation_reaches_every_hue_and_keeps_greys():
    import colorsys

    tf = TrainTransform(8, hue=0.5, hflip=False)
    hues = []
    for s in range(200):
        x = tf(_solid((220, 40, 40)), torch.Generator().manual_seed(s))  # a saturated red
        rgb = ((x[:, 0, 0] + 1) / 2).tolist()
        h, sat, v = colorsys.rgb_to_hsv(*rgb)
        assert sat > 0.7 and v > 0.8  # HSV saturation and value are kept, only the hue turns
        hues.append(h * 360)
    assert (
        np.histogram(hues, bins=6, range=(0, 360))[0].min() >= 15
    )  # red, yellow, green, cyan, blue, magenta
    grey = tf(_solid((90, 90, 90)), torch.Generator().manual_seed(0))
    assert torch.allclose(grey, torch.full_like(grey, 90 / 127.5 - 1))
    narrow = TrainTransform(8, hue=0.05, hflip=False)
    for s in range(50):
        x = narrow(_solid((220, 40, 40)), torch.Generator().manual_seed(s))
        h = colorsys.rgb_to_hsv(*((x[:, 0, 0] + 1) / 2).tolist())[0] * 360
        assert min(h, 360 - h) <= 18 + 1.5  # within +-0.05 of the circle (18 degrees) + uint8 hue steps
    with pytest.raises(ValueError, match="hue"):
        TrainTransform(8, hue=0.6)


def _std(x: torch.Tensor) -> float:
    return float(x.std())


def test_contrast_and_saturation_jitter_span_their_ranges():
    im = _img(40, 40, 7)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    plain = TrainTransform(32, hflip=False)(im, g(0))
    # contrast: the crop blended with its mean grey, factor in [0.5, 1.5]: std scales with it (up to clipping)
    ratios = [_std(TrainTransform(32, hflip=False, contrast=0.5)(im, g(s))) / _std(plain) for s in range(40)]
    assert 0.48 < min(ratios) < 0.6 and 1.2 < max(ratios) < 1.45
    # the same crop: the first draws are the geometric ones
    low = TrainTransform(32, hflip=False, contrast=0.5)(im, g(0))
    assert torch.corrcoef(torch.stack([low.flatten(), plain.flatten()]))[0, 1] > 0.99
    # saturation 1: factor in [0, 2]; at 0 the crop is grey (equal channels)
    sat = [TrainTransform(8, saturation=1.0)(_solid((200, 60, 40)), g(s))[:, 0, 0] for s in range(60)]
    spread = [float(x.max() - x.min()) for x in sat]
    assert min(spread) < 0.1 and max(spread) > 1.2 * (200 - 40) / 127.5
    with pytest.raises(ValueError, match="contrast"):
        TrainTransform(8, contrast=-0.1)


def test_colour_p_recolours_that_share_of_the_crops_and_keeps_the_rest():
    im = _img(50, 40, 5)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    colour = dict(hue=0.5, channel_shuffle=True, contrast=0.5, saturation=0.5)
    # colour_p = 1 (the default) draws nothing more: the crops of runs from before the option
    for s in range(5):
        assert torch.equal(
            TrainTransform(32, scale=(1.0, 1.5), colour_p=1.0, **colour)(im, g(s)),
            TrainTransform(32, scale=(1.0, 1.5), **colour)(im, g(s)),
        )
    kept = []
    for s in range(200):
        plain = TrainTransform(32, scale=(1.0, 1.5))(im, g(s))
        assert torch.equal(TrainTransform(32, scale=(1.0, 1.5), colour_p=0.0, **colour)(im, g(s)), plain)
        x = TrainTransform(32, scale=(1.0, 1.5), colour_p=0.3, **colour)(im, g(s))
        if torch.equal(x, plain):
            kept.append(s)
        else:
            assert not torch.allclose(x, plain, atol=2 / 255)
    assert 0.6 < len(kept) / 200 < 0.8  # 70 % of the crops keep their colours (binomial sd 3.2 %)
    with pytest.raises(ValueError, match="colour_p"):
        TrainTransform(8, colour_p=1.5)


def test_colour_augmentation_config_keys_default_off():
    from transvae.training import build_config
    from transvae.training.config import TrainConfigError

    d = build_config().data  # the paper's recipes: no colour augmentation
    assert d.hue == 0.0 and d.contrast == 0.0 and d.saturation == 0.0 and d.channel_shuffle is False
    d = build_config(extra=["--data.hue=0.25", "--data.channel_shuffle=true", "--data.contrast=0.4"]).data
    assert d.hue == 0.25 and d.channel_shuffle is True and d.contrast == 0.4
    with pytest.raises(TrainConfigError, match=r"data.hue must be in \[0, 0.5\]"):
        build_config(overrides={"data.hue": 0.7})
    with pytest.raises(TrainConfigError, match="data.saturation must be >= 0"):
        build_config(overrides={"data.saturation": -1.0})
    assert build_config().data.colour_p == 1.0  # every crop, when any colour option is on
    with pytest.raises(TrainConfigError, match=r"data.colour_p must be in \[0, 1\]"):
        build_config(overrides={"data.colour_p": -0.1})

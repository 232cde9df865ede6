"""The quick start's data and thread choice (the end-to-end run is in tests/test_training.py)."""

import os

import pytest

from transvae.cli import quickstart


def test_cpu_threads_respects_request_and_load(monkeypatch):
    assert quickstart.cpu_threads(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for load, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert quickstart.cpu_threads(0) == expected, load


def test_prepare_data_holds_out_the_cat_at_a_fixed_size(tmp_path):
    from PIL import Image

    train, val = quickstart.prepare_data(tmp_path, 64)
    names = sorted(p.stem for p in train.glob("*.png"))
    assert names == sorted(quickstart.TRAIN_PHOTOS) and "chelsea" not in names and "cat" not in names
    for p in train.glob("*.png"):
        assert min(Image.open(p).size) == quickstart.PHOTO_SIDE
    tiles = sorted(val.glob("*.png"))
    assert len(tiles) == 3 * 4 and all(
        Image.open(t).size == (64, 64) for t in tiles
    )  # 192 x 288 in tiles of 64
    # the same held-out pixels at another crop size: 6 x 9 tiles of 32
    _, val32 = quickstart.prepare_data(tmp_path / "b", 32)
    assert len(list(val32.glob("*.png"))) == 54


@pytest.mark.parametrize("bad", [["--threads", "-1"], ["--val-every", "-2"], ["--resolution", "40"]])
def test_quickstart_refuses_bad_options(tmp_path, bad):
    from transvae.cli import main

    assert main(["quickstart", "--out", str(tmp_path / "q"), *bad]) == 2

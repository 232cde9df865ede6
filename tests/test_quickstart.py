"""The quick start's data, thread choice, colour figures and grid (the end-to-end run is in
tests/test_training.py)."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from transvae.cli import quickstart
from transvae.evaluation import colour


def test_cpu_threads_respects_request_and_load(monkeypatch):
    assert quickstart.cpu_threads(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for busy, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(quickstart, "busy_cores", lambda busy=busy: busy)
        assert quickstart.cpu_threads(0) == expected, busy
    # without /proc/stat: the 1-minute load average
    monkeypatch.setattr(quickstart, "busy_cores", lambda: None)
    for load, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert quickstart.cpu_threads(0) == expected, load


def test_busy_cores_reads_proc_stat(monkeypatch, tmp_path):
    import builtins

    # two snapshots: 100 jiffies pass, 25 of them idle (idle 20 + iowait 5) -> 75 % busy
    snaps = iter(["cpu  100 0 50 400 10 0 0 0 0 0\n", "cpu  150 0 75 420 15 0 0 0 0 0\n"])
    real_open = builtins.open

    def fake_open(path, *a, **k):
        if path != "/proc/stat":
            return real_open(path, *a, **k)
        f = tmp_path / "stat"
        f.write_text(next(snaps))
        return real_open(f, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert quickstart.busy_cores(0.0) == pytest.approx(0.75 * 4)
    monkeypatch.setattr(builtins, "open", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(a[0])))
    assert quickstart.busy_cores(0.0) is None  # no /proc/stat: the caller falls back to the load average


def test_prepare_data_holds_out_the_cat_at_a_fixed_size(tmp_path):
    from PIL import Image

    train, val = quickstart.prepare_data(tmp_path, 64)
    names = sorted(p.stem for p in train.glob("*.png"))
    assert names == sorted(quickstart.TRAIN_PHOTOS) and "chelsea" not in names and "cat" not in names
    digests = set()
    for p in train.glob("*.png"):
        im = Image.open(p)
        assert im.mode == "RGB" and min(im.size) == quickstart.PHOTO_SIDE
        digests.add(hash(im.tobytes()))
    # scikit-image's, scikit-learn's and matplotlib's photos: none of them twice
    assert len(digests) == len(quickstart.TRAIN_PHOTOS)
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


def test_quickstart_never_replaces_a_folder_it_did_not_make(tmp_path):
    from transvae.cli import main

    mine = tmp_path / "mine"
    (mine / "run").mkdir(parents=True)
    (mine / "run" / "model.safetensors").write_bytes(b"a week of training")
    assert main(["quickstart", "--out", str(mine), "--steps", "1"]) == 2
    assert (mine / "run" / "model.safetensors").read_bytes() == b"a week of training"
    assert not (mine / quickstart.MARKER).exists()


class _Identity(torch.nn.Module):
    """Stands in for an autoencoder that reconstructs perfectly (``model(x, ...).sample``)."""

    def forward(self, x, sample_posterior=False):
        return SimpleNamespace(sample=x.clone())


class _Tint(_Identity):
    """Adds 0.1 (12.75 levels: 13 after rounding) to the red channel and doubles the contrast of the blue one."""

    def forward(self, x, sample_posterior=False):
        y = x.clone()
        y[:, 0] += 0.1
        y[:, 2] = 2 * (y[:, 2] - y[:, 2].mean()) + y[:, 2].mean()
        return SimpleNamespace(sample=y)


def test_chart_tiles_cover_the_colour_chart():
    from transvae.data.synthetic import colour_chart

    t = colour.chart_tiles(64)
    assert t.shape == (16, 3, 64, 64) and t.dtype == torch.uint8
    whole = t.view(4, 4, 3, 64, 64).permute(2, 0, 3, 1, 4).reshape(3, 256, 256)
    assert torch.equal(whole.permute(1, 2, 0), torch.from_numpy(colour_chart(256)))
    assert colour.chart_tiles(48).shape == (25, 3, 48, 48)  # 240 px: the multiple of 48 nearest 256


def test_colour_fidelity_reports_what_the_model_does(tmp_path):
    _, val = quickstart.prepare_data(tmp_path, 64)
    ok = colour.colour_fidelity(_Identity(), val, 64)
    for name in ("held_out", "chart"):
        r = ok[name]
        assert r["ciede2000_mean"] == 0 and r["ciede2000_p95"] == 0 and r["psnr"] == float("inf")
        assert r["contrast_ratio"] == [1.0, 1.0, 1.0] and r["mean_shift"] == [0.0, 0.0, 0.0]
    assert ok["held_out"]["images"] == 12 and ok["chart"]["images"] == 16
    bad = colour.colour_fidelity(_Tint(), val, 64)["held_out"]
    assert 12 < bad["mean_shift"][0] <= 13 and bad["mean_shift"][1] == 0  # clipped at 255 here and there
    assert bad["contrast_ratio"][1] == 1.0 and bad["contrast_ratio"][2] > 1.5
    assert bad["lab_shift"][0] > 1 and bad["ciede2000_mean"] > 3
    assert bad["ciede2000_lowpass"] > 2 and ok["held_out"]["ciede2000_lowpass"] == 0  # a tint survives low-pass


class _HalfContrast(_Identity):
    """Halves every image's contrast about its per-channel mean (a model that flattens)."""

    def forward(self, x, sample_posterior=False):
        m = x.mean((2, 3), keepdim=True)
        return SimpleNamespace(sample=m + 0.5 * (x - m))


def test_contrast_response_follows_the_input_or_not():
    x = colour.chart_tiles(64)
    same = colour.contrast_response(_Identity(), x)
    assert [r["factor"] for r in same] == [0.5, 1.0, 1.5] and all(r["ratio"] == 1.0 for r in same)
    assert same[0]["std_in"] == pytest.approx(same[1]["std_in"] / 2, rel=0.02)  # the inputs' contrast scaled
    flat = colour.contrast_response(_HalfContrast(), x, factors=(1.0,))
    assert flat[0]["ratio"] == pytest.approx(0.5, abs=0.01) and flat[0]["std_out"] < flat[0]["std_in"]


def test_chart_cells_name_the_colour_that_moved():
    chart = colour.join_tiles(colour.chart_tiles(64), 4, 4)
    same = colour.chart_cells(chart, chart)
    assert len(same) == 40 and all(c["ciede2000"] == 0 for c in same)
    assert all(c["hue_error_deg"] in (0.0, None) for c in same)
    assert sum(c["hue_error_deg"] is None for c in same) == 8  # the greys (C* <= 10): no hue
    rolled = {c["cell"]: c for c in colour.chart_cells(chart, chart[:, [2, 0, 1]])}  # R <- B, G <- R, B <- G
    red = rolled["primary/secondary red"]
    assert red["in"] == [255, 0, 0] and red["out"] == [0, 255, 0] and 80 < red["hue_error_deg"] < 110
    assert red["ciede2000"] > 50 and rolled["grey 3"]["ciede2000"] == 0  # greys have no channel order


def test_tiles_round_trip_and_summary_rounds():
    img = torch.randint(0, 256, (3, 96, 130), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    t = colour.cut_tiles(img, 32)
    assert t.shape == (12, 3, 32, 32) and torch.equal(t[5], img[:, 32:64, 32:64])
    assert torch.equal(colour.join_tiles(t, 3, 4)[0], img[:, :96, :128])
    r = colour.colour_summary(t, (t.int() + 1).clamp(max=255).to(torch.uint8), digits=1)
    assert r["images"] == 12 and r["mean_shift"][0] == pytest.approx(1.0, abs=0.05) and r["psnr"] == round(r["psnr"], 1)


def test_colour_exact_blur_keeps_colours_and_removes_detail():
    flat = torch.tensor([200, 30, 90], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 64, 64).contiguous()
    assert torch.equal(colour.colour_exact_blur(flat, 4), flat)
    noise = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    b = colour.colour_exact_blur(noise, 8)
    assert b.shape == noise.shape and b.dtype == torch.uint8
    assert (b.double().mean((2, 3)) - noise.double().mean((2, 3))).abs().max() < 3
    assert b.double().std() < 0.5 * noise.double().std()


def test_before_after_keeps_every_colour(tmp_path):
    # noise does not compress: before issue 24 such a file was reduced to a 256-colour palette
    from PIL import Image

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (200, 530, 3), dtype=np.uint8) for _ in range(2))
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    quickstart.before_after(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "ba.png")
    im = Image.open(tmp_path / "ba.png")
    assert im.mode == "RGB" and im.size == (530, 428)
    got = np.asarray(im)
    assert np.array_equal(got[14:214], a) and np.array_equal(got[228:], b)

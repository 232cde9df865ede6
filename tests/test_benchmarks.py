"""Smoke tests of the small helpers behind benchmarks/ (no data set, no timing asserts)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks' modules, imported the way the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCH))
    return lambda name: importlib.import_module(name)


def test_slug_and_table(bench):
    bu = bench("bench_utils")
    assert bu.slug("+ DC shortcut (= TransVAE)") == "dc-shortcut-transvae"
    assert bu.slug("ViT-VAE (learned abs. PE)") == "vit-vae-learned-abs-pe"
    table = bu.markdown_table([{"a": 1.23456, "b": None}], ["a", "b"])
    assert table.splitlines()[2] == "| 1.23 | - |"


def test_center_crop_native_and_upscaled(bench):
    bu = bench("bench_utils")
    im = torch.arange(3 * 6 * 10, dtype=torch.int64).view(3, 6, 10).to(torch.uint8)
    crop, up = bu.center_crop(im, 4)
    assert not up and torch.equal(crop, im[:, 1:5, 3:7])
    crop, up = bu.center_crop(torch.full((3, 6, 10), 7, dtype=torch.uint8), 8)
    assert up and crop.shape == (3, 8, 8) and bool((crop == 7).all())  # a flat image stays flat


def test_random_crops_are_reproducible(bench):
    bu = bench("bench_utils")
    photos = [torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8) for _ in range(3)]
    a = bu.random_crops(photos, 5, 8, torch.Generator().manual_seed(1))
    b = bu.random_crops(photos, 5, 8, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)
    # every crop is a (possibly flipped) window of one of the photos
    windows = {
        p[:, i : i + 8, j : j + 8].flatten().tolist().__repr__()
        for p in photos
        for i in range(13)
        for j in range(23)
    }
    windows |= {
        p[:, i : i + 8, j : j + 8].flip(-1).flatten().tolist().__repr__()
        for p in photos
        for i in range(13)
        for j in range(23)
    }
    assert all(c.flatten().tolist().__repr__() in windows for c in a)


class _Offset(nn.Module):
    """Stand-in autoencoder whose 'reconstruction' is the input plus a constant."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, sample_posterior=True, generator=None):
        return type("Out", (), {"sample": x + self.offset + self.w})()


def test_evaluate_psnr_and_l1(bench):
    bu = bench("bench_utils")
    images = torch.full((3, 3, 8, 8), 100, dtype=torch.uint8)
    r = bu.evaluate(_Offset(10 / 127.5), images)  # exactly +10 grey levels everywhere
    assert r["psnr"] == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-6)
    assert r["l1"] == pytest.approx(10 / 127.5, abs=1e-5)


def test_train_model_is_deterministic(bench):
    bu = bench("bench_utils")
    from transvae.models import create_model

    photos = [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8) for _ in range(4)]
    val = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    s = bu.TrainSettings(steps=2, batch_size=2, crop=32, warmup=1, eval_every=1)
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("transvae-nano-f16d32")
        curves.append(bu.train_model(model, photos, val, s))
    assert [p["step"] for p in curves[0]] == [0, 1, 2]
    assert [p["psnr"] for p in curves[0]] == [p["psnr"] for p in curves[1]]
    assert curves[0][2]["l1"] != curves[0][0]["l1"]  # the weights did change


def test_flops_counted_on_meta(bench):
    speed = bench("speed")
    enc, dec = speed.flops_per_image("transvae-nano-f16d32", 64)
    enc2, dec2 = speed.flops_per_image("transvae-nano-f16d32", 128)
    assert enc > 0 and dec > 0
    # convolutions scale with pixels, attention faster than that
    assert 4.0 <= enc2 / enc <= 16.0 and 4.0 <= dec2 / dec <= 16.0


def test_peak_memory_sees_a_large_allocation(bench):
    speed = bench("speed")
    with speed.PeakMemory(torch.device("cpu")) as pm:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    if pm.mb is None:
        pytest.skip("peak RSS not measurable on this platform")
    assert pm.mb >= 50


def test_stage_breakdown_covers_the_whole_model(bench):
    speed = bench("speed")
    b = speed.build("transvae-nano-f16d32", "cpu")
    rows = speed.stage_breakdown(b, 64, torch.device("cpu"), iters=1)
    parts = [r["part"] for r in rows]
    assert "encoder.stages.0" in parts and "decoder.conv_out" in parts
    assert all(r["seconds"] > 0 for r in rows)
    # the per-stage FLOPs add up to the whole pass counted in one go
    enc, dec = speed.flops_per_image("transvae-nano-f16d32", 64)
    assert math.isclose(sum(r["gflop"] for r in rows), enc + dec, rel_tol=1e-6)


def test_learning_efficiency_cost_estimate_orders_models(bench):
    le = bench("learning_efficiency")
    vit = le.training_gflop("vit-vae-mini-f16d32", {}, 64)
    trans = le.training_gflop("transvae-mini-f16d32", {}, 64)
    assert 0 < vit < trans  # the full-resolution CNN front-end costs more than 16x16 patches


def test_extrapolation_discovers_saved_models_in_ladder_order(bench, tmp_path):
    extrapolation = bench("extrapolation")
    for name in ("dc-shortcut-transvae", "cnn-vae", "my-extra-model"):
        (tmp_path / name / "model").mkdir(parents=True)
        (tmp_path / name / "model" / "config.json").write_text("{}")
    (tmp_path / "incomplete" / "model").mkdir(parents=True)  # no config.json: not a saved model
    assert extrapolation.discover(tmp_path) == ["cnn-vae", "dc-shortcut-transvae", "my-extra-model"]


def test_generation_reads_run_summaries_and_replots(bench, tmp_path):
    import json

    gb = bench("generation")
    run = tmp_path / "gen-x"
    run.mkdir()
    history = [
        {"step": 0, "val/flow_loss": 3.0, "val/latent_fd": 40.0},
        {"step": 5, "val/flow_loss": 2.0, "val/latent_fd": 10.0},
    ]
    (run / "summary.json").write_text(json.dumps({"status": "finished", "step": 5, "history": history}))
    assert gb.finished(run, 5) and not gb.finished(run, 6) and not gb.finished(tmp_path / "none", 1)
    curve = gb.curve(run)
    assert curve == [
        {"step": 0, "latent_fd": 40.0, "flow_loss": 3.0},
        {"step": 5, "latent_fd": 10.0, "flow_loss": 2.0},
    ]
    out = tmp_path / "g.json"
    out.write_text(json.dumps({"title": "t", "results": [{"label": "TransVAE", "curve": curve}]}))
    gb.main(["--replot", str(out)])
    assert out.with_suffix(".png").stat().st_size > 1000

"""Seams of tiled inference (issue 24): the seam metric, the measured reach and the default overlap."""

from __future__ import annotations

import math

import pytest
import torch

import transvae
from transvae.evaluation.seams import compare_seams, measure_seams, seam_layout
from transvae.inference import InferenceRunner
from transvae.inference.reach import _radius, decoder_reach, overlap_for


def test_seam_layout_names_interior_edges_and_blend_midlines():
    # 256 px, tiles of 128 overlapping by 32: starts 0, 96 (stride 96), 128 (last, moved back)
    edges, mids = seam_layout(256, 128, 32)
    assert edges == [96, 128, 224]
    assert mids == [112, 176]


def test_identical_results_have_no_seam():
    x = torch.rand(3, 64, 64) * 2 - 1
    r = compare_seams(x, x.clone(), tile=32, overlap=8)
    assert r["psnr_band"] == math.inf and r["psnr_rest"] == math.inf and r["gradient_jump"] == pytest.approx(1.0)


def test_a_step_at_a_seam_is_seen_in_the_band_and_as_a_gradient_jump():
    ramp = torch.arange(64)
    base = (100 + ramp[None, :, None] + ramp[None, None, :]).expand(3, 64, 64).to(torch.uint8)  # +1 a pixel
    tiled = base.clone()
    tiled[:, :, 28:] += 10  # a 10-level step at the blend midline x = 28 (tiles of 32, overlap 8)
    r = compare_seams(tiled, base, tile=32, overlap=8, band=4)
    # rows: no seam inside 64 px? tiles start at 0, 24, 32: midlines 28 and 44; edges 24, 32, 56
    assert seam_layout(64, 32, 8) == ([24, 32, 56], [28, 44])
    band = torch.zeros(64, 64, dtype=torch.bool)
    for e in (24, 32, 56):
        band[e - 4 : e + 4, :] = True
        band[:, e - 4 : e + 4] = True
    diff = (tiled.double() - base.double()) ** 2
    expect_band = 10 * math.log10(255**2 / float(diff[:, band].mean()))
    expect_rest = 10 * math.log10(255**2 / float(diff[:, ~band].mean()))
    assert r["psnr_band"] == pytest.approx(expect_band) and r["psnr_rest"] == pytest.approx(expect_rest)
    # across the midlines x = 28 (11 levels), x = 44, y = 28, y = 44 (1 level each) vs 1 untiled
    assert r["gradient_jump"] == pytest.approx((11 + 1 + 1 + 1) / 4)


def test_radius_of_a_known_change_map():
    change = torch.zeros(21, 21)
    change[10, 10] = 1.0
    change[10, 13] = 0.5  # distance 3, above 1% of the peak
    change[0, 0] = 0.005  # distance 10, below 1%
    assert _radius(change, (10, 10), threshold=0.01) == 3
    assert _radius(change, (10, 10), threshold=0.001) == 10
    assert _radius(torch.zeros(5, 5), (2, 2), 0.01) == 0


def test_overlap_for_rounds_up_to_the_ratio_and_caps_at_half_a_tile():
    assert overlap_for(reach=10, tile=512, f=16) == 32  # 2 x 10 = 20 -> 32
    assert overlap_for(reach=200, tile=512, f=16) == 256  # capped at half a tile
    assert overlap_for(reach=0, tile=512, f=8) == 8


def test_default_overlap_is_measured_on_the_model_and_hides_seams_better_than_none():
    torch.manual_seed(0)
    model = transvae.create_model("cnn-vae-nano-f16d32").eval()
    reach = decoder_reach(model, side=64)
    assert 16 <= reach <= 64
    auto = InferenceRunner(model, tile_size=64)
    assert auto.tile_overlap == overlap_for(max(reach, 16), 64, 16) or auto.tile_overlap % 16 == 0
    x = torch.rand(1, 3, 128, 160) * 2 - 1
    hard = measure_seams(InferenceRunner(model, tile_size=64, tile_overlap=0), x)
    soft = measure_seams(auto, x)
    assert soft["tile_overlap"] > 0 and hard["tile_overlap"] == 0
    assert soft["decode"]["psnr_band"] > hard["decode"]["psnr_band"]
    # against the input: the untiled pass is the same in both, the tiled ones differ from it
    from transvae.data.io import tensor_to_uint8

    untiled = auto.decode(auto.encode(x, tiled=False).latent, tiled=False)[0]
    mse = (tensor_to_uint8(untiled).double() - tensor_to_uint8(x[0]).double()).pow(2).mean()
    assert soft["psnr_vs_input"]["untiled"] == hard["psnr_vs_input"]["untiled"]
    assert soft["psnr_vs_input"]["untiled"] == pytest.approx(10 * math.log10(255**2 / float(mse)))
    assert hard["psnr_vs_input"]["tiled"] != hard["psnr_vs_input"]["untiled"]

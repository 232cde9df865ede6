"""Colour-fidelity metrics (transvae.metrics.colour) and the synthetic colour chart."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch

from transvae.data.synthetic import colour_chart, hsv_to_rgb
from transvae.metrics.colour import (
    channel_mean_shift,
    ciede2000_map,
    ciede2000_per_image,
    colour_report,
    contrast_ratio,
    lab_shift,
    rgb_to_lab,
)

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Table 1: (Lab 1, Lab 2, dE00).
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.694), (23.0331, 14.973, -42.5619), 2.0373),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


def ciede2000_reference(lab1, lab2) -> float:
    """CIEDE2000 written out from Sharma et al.'s equations (1)-(22), kL = kC = kH = 1, with
    their conventions for hue means and differences; independent of scikit-image."""
    (L1, a1, b1), (L2, a2, b2) = lab1, lab2
    C1, C2 = math.hypot(a1, b1), math.hypot(a2, b2)
    Cm = (C1 + C2) / 2
    G = 0.5 * (1 - math.sqrt(Cm**7 / (Cm**7 + 25**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if (a1p or b1) else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if (a2p or b2) else 0.0
    dLp, dCp = L2 - L1, C2p - C1p
    if C1p * C2p == 0:
        dhp = 0.0
    else:
        dhp = h2p - h1p
        dhp = dhp - 360 if dhp > 180 else dhp + 360 if dhp < -180 else dhp
    dHp = 2 * math.sqrt(C1p * C2p) * math.sin(math.radians(dhp / 2))
    Lpm, Cpm = (L1 + L2) / 2, (C1p + C2p) / 2
    if C1p * C2p == 0:
        hpm = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hpm = (h1p + h2p) / 2
    else:
        hpm = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    T = (
        1
        - 0.17 * math.cos(math.radians(hpm - 30))
        + 0.24 * math.cos(math.radians(2 * hpm))
        + 0.32 * math.cos(math.radians(3 * hpm + 6))
        - 0.20 * math.cos(math.radians(4 * hpm - 63))
    )
    dtheta = 30 * math.exp(-(((hpm - 275) / 25) ** 2))
    RC = 2 * math.sqrt(Cpm**7 / (Cpm**7 + 25**7))
    SL = 1 + 0.015 * (Lpm - 50) ** 2 / math.sqrt(20 + (Lpm - 50) ** 2)
    SC, SH = 1 + 0.045 * Cpm, 1 + 0.015 * Cpm * T
    RT = -math.sin(math.radians(2 * dtheta)) * RC
    return math.sqrt((dLp / SL) ** 2 + (dCp / SC) ** 2 + (dHp / SH) ** 2 + RT * (dCp / SC) * (dHp / SH))


def _img(pixels) -> torch.Tensor:
    """[[r, g, b], ...] -> a (1, 3, 1, N) uint8 image."""
    return torch.tensor(pixels, dtype=torch.uint8).T[None, :, None, :].contiguous()


def _photo(seed: int, b: int = 2, h: int = 24, w: int = 20, lo: int = 0, hi: int = 256) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(lo, hi, (b, 3, h, w), dtype=np.uint8))


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA)
def test_reference_formula_reproduces_sharma_table(lab1, lab2, expected):
    assert ciede2000_reference(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert ciede2000_reference(lab2, lab1) == pytest.approx(expected, abs=1e-4)  # symmetric


def test_rgb_to_lab_known_values():
    lab = rgb_to_lab(_img([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]))[0, 0]  # (4, 3)
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)  # D65 white
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.01)  # sRGB red
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.01)  # sRGB blue


def test_ciede2000_of_uint8_pairs_matches_the_formula_on_their_lab_values():
    # colour pairs from near-identical greys to opposite hues; Lab from skimage, dE from the
    # formula above: catches a wrong scaling (0-255 vs 0-1), swapped axes or a different formula
    ref = [[128, 128, 128], [200, 30, 40], [20, 180, 60], [250, 240, 10], [10, 10, 12], [90, 60, 200]]
    out = [[130, 127, 126], [180, 50, 45], [60, 150, 70], [240, 200, 20], [12, 9, 10], [200, 60, 90]]
    a, b = _img(ref), _img(out)
    got = ciede2000_map(a, b)[0, 0]  # (6,)
    la, lb = rgb_to_lab(a)[0, 0], rgb_to_lab(b)[0, 0]
    expected = [ciede2000_reference(tuple(x), tuple(y)) for x, y in zip(la, lb, strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert 0.5 < expected[0] < 3 and expected[5] > 30  # the pairs span small to large differences
    per = ciede2000_per_image(a, b)
    assert per["mean"].item() == pytest.approx(float(np.mean(expected)))
    assert per["p95"].item() == pytest.approx(float(np.percentile(expected, 95)))


def test_identical_images_score_zero_and_one():
    x = _photo(0)
    per = ciede2000_per_image(x, x)
    assert torch.all(per["mean"] == 0) and torch.all(per["p95"] == 0)
    assert torch.all(channel_mean_shift(x, x) == 0)
    assert torch.all(contrast_ratio(x, x) == 1)
    assert torch.all(lab_shift(x, x) == 0)
    rep = colour_report(x, x)
    assert rep["ciede2000_mean"] == 0 and rep["ciede2000_p95"] == 0 and rep["images"] == 2
    assert (
        rep["mean_shift"] == [0, 0, 0] and rep["contrast_ratio"] == [1, 1, 1] and rep["lab_shift"] == [0, 0]
    )


def test_uniform_shift_of_one_channel():
    x = _photo(1, hi=246)  # no clipping at +10
    y = x.clone()
    y[:, 1] += 10
    assert torch.equal(channel_mean_shift(x, y), torch.tensor([[0.0, 10.0, 0.0]] * 2, dtype=torch.float64))
    np.testing.assert_allclose(contrast_ratio(x, y).numpy(), 1.0, rtol=1e-12)
    rep = colour_report(x, y)
    assert rep["mean_shift"] == [0.0, 10.0, 0.0]
    assert rep["lab_shift"][0] < -1  # more green: a* goes down
    assert rep["ciede2000_mean"] > 1


def test_doubled_contrast():
    x = _photo(2, lo=78, hi=179)  # 128 +- 50
    y = (128 + 2 * (x.int() - 128)).to(torch.uint8)  # 28..228: no clipping
    np.testing.assert_allclose(contrast_ratio(x, y).numpy(), 2.0, rtol=1e-12)
    np.testing.assert_allclose(colour_report(x, y)["contrast_ratio"], [2.0, 2.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(contrast_ratio(y, x).numpy(), 0.5, rtol=1e-12)


def test_report_pools_the_pixels_of_the_set():
    # image 0 unchanged, image 1 shifted by +20 in red: the set's mean shift is +10 and the
    # pooled std (not the mean of per-image stds) gives the contrast
    x = _photo(3, lo=30, hi=200)
    y = x.clone()
    y[1, 0] += 20
    rep = colour_report(x, y)
    assert rep["mean_shift"][0] == pytest.approx(10.0) and rep["mean_shift"][1:] == [0.0, 0.0]
    pooled = y[:, 0].double().std(correction=0) / x[:, 0].double().std(correction=0)
    assert rep["contrast_ratio"][0] == pytest.approx(float(pooled))
    d = ciede2000_map(x, y).flatten()
    assert rep["ciede2000_mean"] == pytest.approx(float(d.mean()))
    assert rep["ciede2000_p95"] == pytest.approx(float(np.percentile(d.numpy(), 95)))
    assert rep["ciede2000_p95"] > rep["ciede2000_mean"] > 0  # half the pixels did not change


def test_redder_output_has_positive_a_shift_and_flat_channel_is_nan():
    x = _img([[120, 120, 120], [60, 90, 30]])
    y = _img([[140, 120, 120], [80, 90, 30]])
    assert lab_shift(x, y)[0, 0] > 0
    flat = _img([[100, 100, 100]] * 4)
    assert torch.isnan(contrast_ratio(flat, flat)).all()


def test_inputs_are_checked():
    x = _photo(4)
    with pytest.raises(ValueError, match="uint8"):
        ciede2000_map(x.float(), x.float())
    with pytest.raises(ValueError, match="equal shape"):
        colour_report(x, x[:1])


def test_hsv_to_rgb_matches_colorsys():
    rng = np.random.default_rng(0)
    h, s, v = rng.uniform(0, 360, 200), rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    expected = np.array([colorsys.hsv_to_rgb(a / 360, b, c) for a, b, c in zip(h, s, v, strict=True)])
    np.testing.assert_allclose(hsv_to_rgb(h, s, v), expected, atol=1e-12)


def test_colour_chart_is_deterministic_and_holds_every_hue():
    c = colour_chart(256)
    assert c.shape == (256, 256, 3) and c.dtype == np.uint8
    assert np.array_equal(c, colour_chart(256))
    cell = 32
    centre = c[cell // 2 :: cell, cell // 2 :: cell]  # (8, 8, 3): the centre of each cell
    # row 0: red, green, blue, cyan, magenta, yellow, orange, violet (as hex colour codes)
    primaries = [bytes(rgb).hex() for rgb in centre[0].tolist()]
    assert primaries == ["ff0000", "00ff00", "0000ff", "00ffff", "ff00ff", "ffff00", "ff8000", "8000ff"]
    greys = centre[1]
    assert (greys[:, 0] == greys[:, 1]).all() and (greys[:, 1] == greys[:, 2]).all()
    assert greys[0, 0] == 0 and greys[-1, 0] == 255 and (np.diff(greys[:, 0].astype(int)) > 0).all()
    # skin tones: red > green > blue
    skin = centre[2].astype(int)
    assert ((skin[:, 0] > skin[:, 1]) & (skin[:, 1] > skin[:, 2])).all()
    # the sweep's top row: hue increases left to right over the whole circle
    sweep = c[5 * cell].astype(np.float64) / 255
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in sweep])
    assert hues[0] < 2 and hues[-1] > 358
    assert np.histogram(hues, bins=12, range=(0, 360))[0].min() >= 15  # every 30 degrees
    # smaller charts keep the layout (cells of size // 8)
    assert colour_chart(64)[4, 4].tolist() == [255, 0, 0]
    with pytest.raises(ValueError):
        colour_chart(4)


def test_the_ciede2000_plugin_streams_what_colour_report_pools():
    """The registered metric (evaluate, validation, reports) gives colour_report's set figures from
    running sums: the same mean, shifts and contrast ratios, the p95 within half a 0.05 bin, in
    batches of any size; and a test image it can tell apart (contrast raised 10 %)."""
    from transvae.metrics import build_metrics

    g = torch.Generator().manual_seed(1)
    ref = torch.randint(0, 256, (5, 3, 24, 20), generator=g, dtype=torch.uint8)
    out = (ref.double().sub(128).mul(1.1).add(128 + 6)).round().clamp(0, 255).to(torch.uint8)
    m = build_metrics(["ciede2000"])[0]
    m.update(ref[:2], out[:2])
    m.update(ref[2:], out[2:])
    got, want = m.compute(), colour_report(ref, out)
    assert got["ciede2000"] == pytest.approx(want["ciede2000_mean"], rel=1e-9)
    assert abs(got["ciede2000_p95"] - want["ciede2000_p95"]) <= 0.025 + 1e-9
    assert got["colour_mean_shift"] == pytest.approx(want["mean_shift"], rel=1e-9)
    assert got["colour_contrast_ratio"] == pytest.approx(want["contrast_ratio"], rel=1e-9)
    assert all(1.05 < r < 1.15 for r in got["colour_contrast_ratio"])


def test_low_pass_keeps_colour_and_removes_detail():
    from transvae.metrics.colour import low_pass

    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (2, 3, 4, 4), generator=g, dtype=torch.uint8)
    flat = base.repeat_interleave(4, 2).repeat_interleave(4, 3)  # 16 x 16 of flat 4 x 4 blocks
    assert torch.equal(low_pass(flat), base)  # block averages of flat blocks: exact
    # detail only (+-20 levels in a checkerboard inside each block): the pixels differ by a lot,
    # the low-passed colours not at all; a tint of the same pixel error survives the low-pass
    mid = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    board = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 40 - 20).to(torch.int16)
    detail = (mid.to(torch.int16) + board).to(torch.uint8)
    tint = mid.clone()
    tint[:, 0] += 20
    assert colour_report(mid, detail)["ciede2000_mean"] > 5
    assert colour_report(low_pass(mid), low_pass(detail))["ciede2000_mean"] == 0
    assert colour_report(low_pass(mid), low_pass(tint))["ciede2000_mean"] > 5
    with pytest.raises(ValueError, match="multiples of 4"):
        low_pass(mid[..., :15])


def test_split_luma_chroma_separates_a_grey_shift_from_a_hue_change():
    from transvae.metrics.colour import split_luma_chroma

    ref = torch.randint(40, 200, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    grey = ref + 10  # a brightness error only: all of it is luma
    luma, chroma = split_luma_chroma(ref, grey)
    assert torch.equal(luma, grey) and torch.equal(chroma, ref)
    # red up 30 and green down 15.28 (Y = 0.299 * 30 - 0.587 * 15.28 = 0): all of it is chroma
    shift = torch.tensor([30.0, -30 * 0.299 / 0.587, 0.0]).view(1, 3, 1, 1)
    hue = (ref.double() + shift).round().to(torch.uint8)
    luma, chroma = split_luma_chroma(ref, hue)
    assert (luma.int() - ref.int()).abs().max() <= 1 and torch.equal(chroma, hue)
    assert ciede2000_map(ref, chroma).mean() > 5 > ciede2000_map(ref, luma).mean()
    # the two parts add up to the error (before rounding): d = dY (1, 1, 1) + (d - dY (1, 1, 1))
    noisy = torch.randint(0, 256, ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    luma, chroma = split_luma_chroma(ref, noisy)
    inside = ((luma > 0) & (luma < 255) & (chroma > 0) & (chroma < 255)).all(1, keepdim=True)
    total = luma.int() + chroma.int() - ref.int()
    assert ((total - noisy.int()).abs() <= 1)[inside.expand_as(total)].all()

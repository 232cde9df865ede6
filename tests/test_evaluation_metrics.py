"""Evaluation metrics against independent references (scikit-image, SciPy), offline."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import torch
import torch.nn as nn
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from transvae.evaluation import (
    FIDMetric,
    WeightsUnavailableError,
    build_lpips,
    psnr_per_image,
    resize_center_crop,
    ssim_per_image,
)


def _pairs(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 originals and distorted copies: noise of several strengths, blur, shift."""
    rng = np.random.default_rng(0)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    a, b = [], []
    for k, p in enumerate(photos):
        img = np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BICUBIC))
        for noise in (2, 25):
            a.append(img)
            b.append(
                np.clip(img.astype(int) + rng.integers(-noise, noise + 1, img.shape), 0, 255).astype(np.uint8)
            )
        a.append(img)
        b.append(np.roll(img, k + 1, axis=1))  # a structural distortion
    return np.stack(a), np.stack(b)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8


@pytest.mark.parametrize("size", [(48, 64), (37, 29)])
def test_psnr_ssim_match_scikit_image(size):
    a, b = _pairs(*size)
    psnr = psnr_per_image(_t(a), _t(b)).numpy()
    ssim = ssim_per_image(_t(a), _t(b)).numpy()
    for i in range(len(a)):
        ref_psnr = peak_signal_noise_ratio(a[i], b[i], data_range=255)
        ref_ssim = structural_similarity(
            a[i],
            b[i],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert abs(psnr[i] - ref_psnr) < 1e-3, (i, psnr[i], ref_psnr)
        assert abs(ssim[i] - ref_ssim) < 1e-4, (i, ssim[i], ref_ssim)
    assert ssim.min() < 0.9 and psnr.min() < 30  # the distortions are not trivial


def test_identical_images_psnr_inf_ssim_one_lpips_zero():
    a, _ = _pairs(40, 40)
    x = _t(a)
    assert torch.isposinf(psnr_per_image(x, x.clone())).all()
    assert torch.allclose(ssim_per_image(x, x.clone()), torch.ones(len(x), dtype=torch.float64), atol=1e-12)
    lp = build_lpips("alex", random_init=True)
    d_same = lp(x[:3], x[:3].clone())
    d_diff = lp(x[:3], x.flip(0)[:3])
    assert torch.allclose(d_same, torch.zeros(3, dtype=torch.float64), atol=1e-7)
    assert (d_diff > 1e-4).all()


def test_metrics_refuse_float_and_mismatched_inputs():
    x = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        psnr_per_image(x.float(), x.float())
    with pytest.raises(ValueError, match="equal shape"):
        ssim_per_image(x, torch.zeros(1, 3, 16, 17, dtype=torch.uint8))


class _Features(nn.Module):
    """Small fixed random feature network (uint8 -> (B, 8)) standing in for InceptionV3."""

    num_features = 8

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(8, 3 * 4 * 4, generator=g) * 0.1, requires_grad=False)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)  # (B, 48)
        return torch.tanh(x @ self.w.T)  # (B, 8)


def _scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_scipy_accumulated_over_uneven_batches():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (60, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 30 + torch.randn(real.shape, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    net = _Features()
    fid = FIDMetric(feature_net=net)
    for lo, hi in [(0, 7), (7, 32), (32, 33), (33, 60)]:
        fid.update(real[lo:hi], fake[lo:hi])
    with torch.no_grad():
        ref = _scipy_fid(net(real).double().numpy(), net(fake).double().numpy())
    got = fid.compute()
    assert ref > 1e-3
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-6)
    # identical sets: ~0; and reset() forgets both sides
    fid.reset()
    fid.update(real, real.clone())
    assert abs(fid.compute()) < 1e-4 * ref + 1e-6


def test_lpips_backbone_loaded_from_torchvision_checkpoint(tmp_path):
    import torchvision

    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(tv.state_dict(), path)
    lp = build_lpips("alex", weights_path=path)
    net = lp.net.net
    assert torch.equal(net.slice1[0].weight, tv.features[0].weight)
    assert torch.equal(getattr(net.slice5, "10").weight, tv.features[10].weight)
    assert lp.weights_source == str(path)
    a, b = _pairs(32, 32)
    d = lp(_t(a[:2]), _t(b[:2]))
    assert torch.isfinite(d).all() and (d > 0).all()


def test_missing_weights_offline_give_a_clear_error_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="--fid-weights"):
        FIDMetric()
    with pytest.raises(WeightsUnavailableError, match="--lpips-weights"):
        build_lpips("vgg")
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        FIDMetric(weights_path=tmp_path / "nope.pth")
    with pytest.raises(WeightsUnavailableError, match="--lpips-weights"):
        build_lpips("alex", weights_path=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsUnavailableError, match="not a torchvision checkpoint"):
        build_lpips("alex", weights_path=bad)
    assert not list((tmp_path / "hub").rglob("*.partial"))


def test_resize_center_crop_protocol():
    photo = Image.fromarray(skimage.data.astronaut())  # 512x512
    same, up = resize_center_crop(photo, 512)
    assert np.array_equal(np.asarray(same), np.asarray(photo)) and not up  # RxR: not resampled
    wide = Image.fromarray(skimage.data.coffee())  # 600x400 (W x H)
    cropped, up = resize_center_crop(wide, 400)  # shorter side already R: crop only
    assert np.array_equal(np.asarray(cropped), np.asarray(wide)[:, 100:500]) and not up
    small, _ = resize_center_crop(wide, 100)
    ref = wide.resize((150, 100), Image.Resampling.BICUBIC).crop((25, 0, 125, 100))
    assert np.array_equal(np.asarray(small), np.asarray(ref))
    big, up = resize_center_crop(wide, 800)
    assert big.size == (800, 800) and up


@pytest.mark.slow
def test_inception_fid_path_with_random_weights(tmp_path):
    """The real InceptionV3 loading path (torch-fidelity architecture) with a random-weights file."""
    import torchvision

    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True)
    path = tmp_path / "random-inception.pth"
    torch.save(tv.state_dict(), path)
    fid = FIDMetric(weights_path=path)
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    fid.update(x, x.clone())
    inc = fid.metric.inception
    with torch.no_grad():
        f = inc(x).double().numpy()
    assert f.shape == (4, 2048)
    assert fid.compute() == pytest.approx(0.0, abs=1e-3 * float(np.abs(f).mean()) ** 2 + 1e-6)

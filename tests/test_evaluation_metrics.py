"""Reconstruction metrics (``transvae.metrics``) against independent references (scikit-image,
SciPy, torch-fidelity), offline."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn as nn
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from transvae.evaluation import resize_center_crop
from transvae.metrics import LPIPS, MetricCollection, ReconstructionFID, psnr_per_image, ssim_per_image
from transvae.metrics.features import build_feature_extractor
from transvae.models.pretrained import WeightsUnavailableError


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
    lp = LPIPS(lpips_net="alex", random_feature_networks=True)
    d_same = lp.score(x[:3], x[:3].clone())
    d_diff = lp.score(x[:3], x.flip(0)[:3])
    assert torch.allclose(d_same, torch.zeros(3, dtype=torch.float64), atol=1e-7)
    assert (d_diff > 1e-4).all()


def test_metrics_refuse_float_and_mismatched_inputs():
    x = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        psnr_per_image(x.float(), x.float())
    with pytest.raises(ValueError, match="equal shape"):
        ssim_per_image(x, torch.zeros(1, 3, 16, 17, dtype=torch.uint8))


class _Features(nn.Module):
    """Small fixed random feature network (uint8 -> {"2048": (B, 8)}) standing in for InceptionV3."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(8, 3 * 4 * 4, generator=g) * 0.1, requires_grad=False)
        self.calls = 0

    def pool(self, x):
        x = nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)  # (B, 48)
        return torch.tanh(x @ self.w.T)  # (B, 8)

    def forward(self, x, features=("2048",)):
        self.calls += 1
        return {"2048": self.pool(x)}


def test_frechet_distance_matches_scipy_accumulated_over_uneven_batches(scipy_fd):
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (60, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 30 + torch.randn(real.shape, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    net = _Features()
    fid = MetricCollection([ReconstructionFID()], {"inception": net})
    for lo, hi in [(0, 7), (7, 32), (32, 33), (33, 60)]:
        fid.update_pairs(real[lo:hi], fake[lo:hi])
    with torch.no_grad():
        ref = scipy_fd(net.pool(real).double().numpy(), net.pool(fake).double().numpy())
    got = fid.compute()["rfid"]
    assert ref > 1e-3
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-8)
    # identical sets: ~0; and reset() forgets both sides
    fid.reset()
    fid.update_pairs(real, real.clone())
    assert abs(fid.compute()["rfid"]) < 1e-4 * ref + 1e-6


def test_lpips_backbone_loaded_from_torchvision_checkpoint(tmp_path):
    import torchvision

    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(tv.state_dict(), path)
    lp = LPIPS(lpips_net="alex", lpips_weights=path)
    net = lp.net.net
    assert torch.equal(net.slice1[0].weight, tv.features[0].weight)
    assert torch.equal(getattr(net.slice5, "10").weight, tv.features[10].weight)
    assert lp.weights_source == str(path)
    a, b = _pairs(32, 32)
    d = lp.score(_t(a[:2]), _t(b[:2]))
    assert torch.isfinite(d).all() and (d > 0).all()


def test_missing_weights_offline_give_a_clear_error_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="--fid-weights"):
        build_feature_extractor("inception")
    with pytest.raises(WeightsUnavailableError, match="--lpips-weights"):
        LPIPS(lpips_net="vgg")
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        build_feature_extractor("inception", weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsUnavailableError, match="--lpips-weights"):
        LPIPS(lpips_net="alex", lpips_weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsUnavailableError, match="not a torchvision checkpoint"):
        LPIPS(lpips_net="alex", lpips_weights=bad)
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


# -- FID = torch-fidelity's, at every size ---------------------------------------------------------
class _Images(torch.utils.data.TensorDataset):
    """uint8 (3, H, W) items (not 1-tuples), the input torch-fidelity's calculate_metrics takes."""

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensors[0][i]


def test_fid_at_512_px_is_torch_fidelity_s(random_inception):
    """Above 299 px the images are shrunk to 299 inside the network: torch-fidelity does it with
    TF1's bilinear resize (no antialiasing), torchmetrics' default antialiases and gave 19.97
    instead of 22.85 on 30 real 512 px images. Ours must be torch-fidelity's number."""
    import torch_fidelity

    g = torch.Generator().manual_seed(512)
    base = nn.functional.interpolate(torch.rand(8, 3, 64, 64, generator=g), size=512, mode="bicubic")
    real = (base * 255).clamp(0, 255).to(torch.uint8)
    fake = (base * 230 + 10 + torch.randn(base.shape, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    fid = MetricCollection(
        [ReconstructionFID()], {"inception": build_feature_extractor("inception", random_inception)}
    )
    fid.update_pairs(real[:5], fake[:5])  # uneven batches: the sums are over the whole set
    fid.update_pairs(real[5:], fake[5:])
    ours = fid.compute()["rfid"]
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(fake), input2=_Images(real), fid=True, feature_extractor_weights_path=str(random_inception),
        cuda=False, verbose=False, cache=False, save_cpu_ram=True,
    )["frechet_inception_distance"]  # fmt: skip
    assert ours == pytest.approx(theirs, rel=1e-3)
    # the antialiased resize (torchmetrics' default) gives another number: the test can tell them apart
    from torchmetrics.image.fid import FrechetInceptionDistance

    tm = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(random_inception))
    tm.update(real, real=True)
    tm.update(fake, real=False)
    assert abs(float(tm.compute()) - theirs) > 0.05 * theirs

"""``transvae evaluate --protocol``: each preset's preprocessing against a hand-computed example,
the posterior sample of the VA-VAE protocol, pytorch-fid's FID pipeline against pytorch-fid
itself, and the torch-fidelity folder comparison end to end (offline, random Inception weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import transvae
from transvae.cli import main
from transvae.evaluation.pipeline import run_evaluation
from transvae.evaluation.protocol import PROTOCOLS, get_protocol, vavae_quantise
from transvae.evaluation.report import metric_value
from transvae.models.distributions import DiagonalGaussianDistribution


def _stripes(w: int, h: int) -> Image.Image:
    """Column c has the value 10 * c in every channel: a crop's offset is read off its first pixel."""
    row = np.arange(w, dtype=np.uint8) * 10
    return Image.fromarray(np.repeat(np.tile(row, (h, 1))[..., None], 3, axis=2))


def test_crop_offsets_are_each_pipelines_own():
    """A 7 x 4 image at R = 4 is cropped without resampling; (7 - 4) / 2 = 1.5 is rounded (to 2,
    torchvision's CenterCrop: round half to even) by transvae and VA-VAE and floored (to 1) by ADM."""
    im = _stripes(7, 4)
    first = {name: int(p.prepare(im, 4)[0][0, 0, 0]) for name, p in PROTOCOLS.items()}
    assert first == {"transvae": 20, "adm": 10, "va-vae": 20, "torch-fidelity": 20}
    for p in PROTOCOLS.values():
        x = p.prepare(im, 4)[0]
        assert x.shape == (3, 4, 4) and x.dtype == torch.uint8
        assert torch.equal(x[0, 0], x[0, 0, :1] + torch.arange(4, dtype=torch.uint8) * 10)


def test_adm_halves_with_a_box_filter_then_crops():
    """16 x 8 at R = 2: two box halvings (short side 8 >= 4, then 4 >= 4) give 4 x 2, no bicubic
    step is left (scale 1), and the crop starts at (4 - 2) // 2 = 1. With every 4 x 4 block of one
    value the halvings are exact: the result is the 4 x 2 pattern's columns 1 and 2."""
    pattern = np.array([[10, 50, 90, 130], [30, 70, 110, 150]], dtype=np.uint8)  # (h=2, w=4)
    big = np.kron(pattern, np.ones((4, 4), dtype=np.uint8))  # (8, 16)
    im = Image.fromarray(np.repeat(big[..., None], 3, axis=2))
    x, model_input, up = get_protocol("adm").prepare(im, 2)
    assert model_input is None and not up
    assert x[0].tolist() == pattern[:, 1:3].tolist()
    # transvae's bicubic shrink of the same image blurs across the blocks: not the same pixels
    assert get_protocol("transvae").prepare(im, 2)[0][0].tolist() != pattern[:, 1:3].tolist()


def test_va_vae_resizes_floats_truncates_the_long_side_and_does_not_round_the_encoder_input():
    """481 x 321 at R = 256: torchvision's Resize(256) makes the long side int(256 * 481 / 321) =
    383 (transvae rounds to 384), bilinear with antialiasing on float pixels; CenterCrop offset
    int(round((383 - 256) / 2)) = 64. The encoder sees those floats in [-1, 1]; the metrics see them
    rounded as LightningDiT writes its PNGs."""
    g = np.random.default_rng(0)
    arr = g.integers(0, 256, (321, 481, 3), dtype=np.uint8)
    x, model_input, up = get_protocol("lightningdit").prepare(Image.fromarray(arr), 256)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0  # ToTensor
    resized = nn.functional.interpolate(t[None], size=(256, 383), mode="bilinear", antialias=True)[0]
    expected = resized[:, :, 64 : 64 + 256] * 2 - 1
    assert not up and model_input.dtype == torch.float32
    assert torch.allclose(model_input, expected, atol=1e-6)
    assert not torch.allclose(model_input, (model_input * 127.5).round() / 127.5)  # not rounded
    assert torch.equal(x, vavae_quantise(model_input))


def test_va_vae_rounding_is_lightningdit_s():
    """clamp(127.5 x + 128, 0, 255) truncated: x = -0.996 -> 1.01 -> 1; 0 -> 128; 1 -> 255;
    out of range clamps; -1 + 1/255 gives 127.5 * (1/255) + 0.5 = 1.0 -> 1 (round half up), where
    round half to even would give 0."""
    x = torch.tensor([-0.996, 0.0, 1.0, 2.0, -3.0, -1.0 + 1.0 / 255 + 1e-6])
    assert vavae_quantise(x).tolist() == [1, 128, 255, 255, 0, 1]


def test_unknown_protocol_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="transvae, adm, va-vae, torch-fidelity"):
        get_protocol("imagenet")


class _Noisy(nn.Module):
    """A stand-in autoencoder: posterior mean = image, std = 0.2; decode = identity."""

    spatial_compression_ratio = 1
    latent_channels = 3

    def encode(self, x):
        return DiagonalGaussianDistribution(torch.cat([x, torch.full_like(x, 2 * np.log(0.2))], 1))

    def decode(self, z):
        return z


class _Dim(_Noisy):
    """Decodes a dimmer, shifted image: a clear rFID for both implementations to agree on."""

    def decode(self, z):
        return 0.7 * z + 0.1


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((48, 40)).save(
            root / f"{name}.png"
        )
    return root


def _psnr(protocol: str, seed: int, data) -> float:
    out = run_evaluation(
        _Noisy(), data, resolutions=(32,), metrics=("psnr",), protocol=protocol, seed=seed, progress=False
    )
    return metric_value(out["results"][0], "psnr")


def test_va_vae_decodes_a_seeded_posterior_sample(photos):
    """The mean (transvae) reconstructs this stand-in exactly; VA-VAE's sample does not, differs
    with the seed and repeats with it."""
    assert _psnr("transvae", 0, photos) == float("inf")
    a, b, a2 = _psnr("va-vae", 0, photos), _psnr("va-vae", 1, photos), _psnr("va-vae", 0, photos)
    assert np.isfinite(a) and a != b and a == a2
    assert (
        19 < a < 21.5
    )  # noise of std 0.2 on [-1, 1] = 25.5 levels: 20 log10(255 / 25.5) = 20 dB (less where clipped)


def test_pytorch_fid_pipeline_is_pytorch_fid_s(random_inception, monkeypatch):
    """``inception-pytorch-fid`` = pytorch-fid's InceptionV3 (dims 2048, its resize and
    normalisation) with the same weights file, at a size below and above 299 px; and its features
    differ from torch-fidelity's resize (the test can tell the pipelines apart)."""
    pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
    from transvae.metrics.features import build_feature_extractor

    state = torch.load(random_inception, weights_only=True)
    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *a, **k: state)
    theirs_net = pytorch_fid_inception.InceptionV3([3]).eval()
    ours = build_feature_extractor("inception-pytorch-fid", random_inception)
    fidelity = build_feature_extractor("inception", random_inception)
    g = torch.Generator().manual_seed(0)
    for size in (64, 320):
        x = torch.randint(0, 256, (2, 3, size, size), generator=g, dtype=torch.uint8)
        with torch.no_grad():
            theirs = theirs_net(x.float() / 255.0)[0].flatten(1)
        mine = ours(x, ("2048",))["2048"]
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(fidelity(x, ("2048",))["2048"], theirs, rtol=1e-3, atol=1e-4)


def test_torch_fidelity_protocol_computes_rfid_twice_and_they_agree(photos, random_inception, tmp_path):
    """The folder comparison: PNGs under OUT/images/R/, torch-fidelity's own rFID beside ours."""
    out = run_evaluation(
        _Dim(), photos, out_dir=tmp_path / "eval", resolutions=(32,), metrics=("psnr", "rfid"),
        protocol="torch-fidelity", fid_weights=random_inception, progress=False, report_images=0,
    )  # fmt: skip
    r = out["results"][0]
    assert r["rfid"] == pytest.approx(r["rfid_torch_fidelity"], rel=1e-3) and r["rfid"] > 0
    assert len(list((tmp_path / "eval/images/32/reconstructions").glob("*.png"))) == 6
    assert out["protocol"]["name"] == "torch-fidelity" and "folder_fid" in out["protocol"]
    assert "rFID by torch-fidelity" in (tmp_path / "eval/results.md").read_text()


def test_cli_records_the_protocol(photos, tmp_path):
    path = tmp_path / "nano"
    torch.manual_seed(0)
    transvae.create_model("transvae-nano-f16d32").save_pretrained(path)
    out = tmp_path / "o"
    rc = main(["evaluate", "--model", str(path), "--data", str(photos), "--out", str(out), "--resolution", "32",
               "--metrics", "psnr", "--protocol", "lightningdit", "--quiet", "--report-images", "0"])  # fmt: skip
    assert rc == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["protocol"]["name"] == "va-vae"
    assert "posterior sample" in payload["protocol"]["reconstruction"]
    assert "LightningDiT" in (out / "results.md").read_text()

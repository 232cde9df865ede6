"""``transvae evaluate`` end to end and the evaluation pass, on generated images (offline)."""

from __future__ import annotations

import json
import math
import shutil
import urllib.error

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn as nn
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import transvae
from transvae.cli import main
from transvae.evaluation.pipeline import run_evaluation
from transvae.evaluation.protocol import resize_center_crop
from transvae.evaluation.runner import evaluate_resolution
from transvae.models.distributions import DiagonalGaussianDistribution

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two class folders of small photos of different sizes and aspect ratios, and a broken file."""
    root = tmp_path_factory.mktemp("imgs")
    for i, name in enumerate(PHOTOS):
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        w = 40 + 12 * i
        img = img.resize((w, 64 if i % 2 else 48), Image.Resampling.BICUBIC)
        d = root / ("cats" if i % 2 else "dogs")
        d.mkdir(exist_ok=True)
        img.save(d / f"{name}.png")
    (root / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


class _Dimmer(nn.Module):
    """A stand-in autoencoder: latent = image, reconstruction = 0.8 * latent + 0.05 (deterministic)."""

    spatial_compression_ratio = 1
    latent_channels = 3

    def encode(self, x):
        return DiagonalGaussianDistribution(torch.cat([x, torch.zeros_like(x)], 1))

    def decode(self, z):
        return 0.8 * z + 0.05


def test_pass_matches_scikit_image_and_is_batch_size_independent(image_dir):
    files = sorted(p for p in image_dir.rglob("*.png"))
    runs = [
        evaluate_resolution(
            _Dimmer(), files, 32, metrics=("psnr", "ssim"), batch_size=bs, keep_worst=2, progress=False
        )
        for bs in (1, 4)
    ]
    ref_psnr, ref_ssim = [], []
    for f in files:
        x, _ = resize_center_crop(Image.open(f).convert("RGB"), 32)
        a = np.asarray(x)
        t = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 127.5 - 1
        b = ((0.8 * t + 0.05).clamp(-1, 1) + 1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        ref_psnr.append(peak_signal_noise_ratio(a, b, data_range=255))
        ref_ssim.append(
            structural_similarity(
                a,
                b,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )
        )
    for r in runs:
        np.testing.assert_allclose([p["psnr"] for p in r.per_image], ref_psnr, atol=1e-3)
        np.testing.assert_allclose([p["ssim"] for p in r.per_image], ref_ssim, atol=1e-4)
        assert r.summary["psnr"] == pytest.approx(np.mean(ref_psnr), abs=1e-3)  # mean of per-image values
        assert r.summary["ssim"] == pytest.approx(np.mean(ref_ssim), abs=1e-4)
        assert r.summary["num_images"] == len(files)
        assert [e.scores["psnr"] for e in r.worst] == sorted(ref_psnr)[:2]  # worst first
    assert runs[0].summary["psnr"] == pytest.approx(runs[1].summary["psnr"], abs=1e-9)


@pytest.fixture(scope="module")
def nano_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nano"
    torch.manual_seed(0)
    transvae.create_model("transvae-nano-f16d32").save_pretrained(path)
    return path


def test_cli_writes_all_outputs(image_dir, nano_model, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate", "--model", str(nano_model), "--data", str(image_dir), "--out", str(out),
            "--resolution", "32", "64", "--metrics", "psnr", "ssim", "--batch-size", "4", "--num-workers", "0",
            "--latent-stats", "--uniformity", "60", "--linear-probe", "--quiet", "--report-images", "3",
        ]
    )  # fmt: skip
    assert rc == 1  # broken.jpg failed: reported, counted, the rest evaluated
    res = json.loads((out / "results.json").read_text())
    assert [r["resolution"] for r in res["results"]] == [32, 64]
    for r in res["results"]:
        assert r["num_images"] == 6 and r["num_skipped"] == 1
        assert {"psnr", "ssim"} <= set(r) and "lpips" not in r and "rfid" not in r
        per = res["per_image"][str(r["resolution"])]
        assert r["psnr"] == pytest.approx(np.mean([p["psnr"] for p in per]), rel=1e-12)
        assert 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1
    assert res["skipped"]["32"][0]["path"].endswith("broken.jpg")
    assert res["model"]["name"] == "transvae-nano-f16d32" and res["data"]["num_files"] == 7
    assert "ssim" in res["protocol"] and "lpips" not in res["protocol"]
    lat = json.loads((out / "latent_stats.json").read_text())["results"][0]
    assert len(lat["statistics"]["mean"]) == 32 and lat["statistics"]["scaling_factor"] > 0
    assert 0 < lat["uniformity"]["normalized_entropy"] <= 1
    assert lat["linear_probe"]["num_classes"] == 2 and lat["linear_probe"]["classes"] == ["cats", "dogs"]
    md = (out / "results.md").read_text()
    assert "| 32 | 6 |" in md and "| 64 | 6 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * 3 * 3 + 2  # examples x 3 panels + plots
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "broken.jpg" in page
    assert "| 32 |" in capsys.readouterr().out


def test_cli_user_errors(image_dir, nano_model, tmp_path, capsys, monkeypatch):
    base = [
        "evaluate",
        "--model",
        str(nano_model),
        "--data",
        str(image_dir),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert main([*base, "--resolution", "40", "--metrics", "psnr"]) == 2
    assert "multiple of the model's spatial compression ratio 16" in capsys.readouterr().err
    assert main([*base[:4], str(tmp_path / "missing"), *base[5:], "--metrics", "psnr"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # rFID without weights, offline: one line naming --fid-weights, before any image is read
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main([*base, "--metrics", "psnr", "rfid", "--resolution", "32"]) == 2
    err = capsys.readouterr().err
    assert "--fid-weights" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_file_names_reach_the_terminal_with_control_characters_escaped(
    image_dir, nano_model, tmp_path, capsys
):
    """Issue 21 #5: an escape sequence in a file name set the terminal's title / cleared the
    screen, and a newline forged a separate "failed ..." line."""
    data = tmp_path / "d"
    shutil.copytree(image_dir / "cats", data)
    (data / "\x1b]0;pwned\x07\x1b[2J\nfailed fake.png: all good.jpg").write_bytes(b"not a jpeg")
    shutil.copy(next(data.glob("*.png")), data / "<b onmouseover=alert(1)>x.png")
    rc = main(["evaluate", "--model", str(nano_model), "--data", str(data), "--out", str(tmp_path / "o"),
               "--resolution", "32", "--metrics", "psnr", "--quiet", "--num-workers", "0"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1 and "\x1b" not in captured.err + captured.out and "\x07" not in captured.err
    page = (tmp_path / "o" / "report.html").read_text()  # and in the report: escaped, the markup intact
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</body></html>")
    assert (
        "<b onmouseover" not in page
        and "<code>&lt;b onmouseover=alert(1)&gt;x.png</code><br>PSNR:" in page
    )
    failed = [ln for ln in captured.err.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1 and "\\x1b]0;pwned\\x07\\x1b[2J\\x0afailed fake.png: all good.jpg" in failed[0]


def test_identical_reconstruction_reports_infinite_psnr_sanely(image_dir, tmp_path):
    class _Identity(_Dimmer):
        def decode(self, z):
            return z

    data = tmp_path / "d"
    shutil.copytree(image_dir / "cats", data)
    out = tmp_path / "o"
    run_evaluation(
        _Identity(), data, out, resolutions=(32,), metrics=("psnr", "ssim", "lpips", "rfid"),
        batch_size=2, progress=False, random_feature_networks=True, lpips_net="alex",
    )  # fmt: skip
    r = json.loads((out / "results.json").read_text())["results"][0]
    assert r["psnr"] is None and r["psnr_infinite"] is True and r["psnr_num_identical"] == 3
    assert r["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert r["lpips"] == pytest.approx(0.0, abs=1e-7)
    assert abs(r["rfid"]) < 1e-4
    assert "| 32 | 3 | ∞ |" in (out / "results.md").read_text()
    assert not math.isnan(r["ssim_std"])


@pytest.mark.slow
def test_report_renders_in_headless_chromium(image_dir, nano_model, tmp_path):
    from transvae.utils import screenshot as rr

    if rr.find_chromium() is None:
        pytest.skip("chromium not installed")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(nano_model), "--data", str(image_dir), "--out", str(out),
                 "--resolution", "32", "--metrics", "psnr", "ssim", "--quiet", "--num-workers", "0"]) == 0  # fmt: skip
    png = rr.screenshot(out / "report.html", tmp_path / "shot.png", 1000, 1400)
    assert not rr.is_blank(png)
    with Image.open(png) as im:
        assert im.size == (1000, 1400)

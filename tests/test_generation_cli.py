"""``transvae gen-sample`` / ``gen-eval`` as shipped (nano tokenizer and generator, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import transvae
from transvae.cli import main
from transvae.data.latents import LatentFolder
from transvae.generation.evaluate import EvalOptions, evaluate_generation
from transvae.models import create_model
from transvae.training.tasks.generator import latents_metadata


@pytest.fixture(scope="module")
def setup(tmp_path_factory, class_photos):
    """A nano tokenizer, latents of 16 photos (and of 16 held-out ones), a random nano generator run."""
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("gencli")
    vae = base / "vae"
    transvae.create_model("transvae-nano-f16d32").save_pretrained(vae)
    photos = class_photos(base / "photos")
    held = class_photos(base / "held", size=80)
    for name, src in (("latents", photos), ("held_latents", held)):
        rc = main(
            ["extract-latents", str(src), "--model", str(vae), "--out", str(base / name)]
            + ["--resolution", "64", "--batch-size", "8", "--num-workers", "0"]
        )
        assert rc == 0
    folder = LatentFolder(base / "latents")
    gen = create_model("lightningdit-nano-1", in_channels=32, num_classes=2)
    for p in gen.parameters():
        nn.init.normal_(p, std=0.05)
    gen.save_pretrained(base / "run" / "model", **latents_metadata(folder, folder.stats(), 1.0), step=0)
    return base


def _sample(setup, out, *extra):
    return main(
        ["gen-sample", "--run", str(setup / "run"), "--vae", str(setup / "vae"), "--out", str(out)]
        + ["--num", "6", "--steps", "2", "--batch-size", "4", "--device", "cpu", *extra]
    )


def test_gen_sample_writes_pngs_latents_npz_and_resumes(setup, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(setup, out, "--npz", "--cfg-scale", "2.0", "--seed", "3") == 0
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    assert Image.open(pngs[0]).size == (64, 64)
    lat = LatentFolder(out / "latents")
    assert len(lat) == 6 and lat.shape == (32, 4, 4) and lat.labels().tolist() == [0, 1, 0, 1, 0, 1]
    npz = np.load(out / "samples_6x64x64x3.npz", allow_pickle=False)
    assert (npz["arr_0"][2] == np.asarray(Image.open(pngs[2]))).all() and npz["arr_1"].tolist() == [0, 1] * 3
    settings = json.loads((out / "sampling.json").read_text())
    assert settings["sampler"]["cfg_scale"] == 2.0 and settings["seed"] == 3
    # the decoded images are the tokenizer's decoding of the stored latents
    vae = transvae.from_pretrained(setup / "vae")
    z = next(lat.iter_batches(4))
    img = ((vae.decode(z[:1]).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(img.astype(int) - np.asarray(Image.open(pngs[0])).astype(int)).max() <= 1
    # a crash after the first batch: the rerun redoes only the missing batch, with the same samples
    first = np.asarray(Image.open(pngs[4])).copy()
    (out / "latents" / "samples_000004.safetensors").unlink()
    (pngs[4]).unlink()
    capsys.readouterr()
    assert _sample(setup, out, "--cfg-scale", "2.0", "--seed", "3") == 0
    assert "2 new, 4 already there" in capsys.readouterr().out
    assert (np.asarray(Image.open(out / "images" / "000004.png")) == first).all()
    # other settings in the same folder are refused
    assert _sample(setup, out, "--seed", "4") == 2
    assert "other settings" in capsys.readouterr().err


def test_gen_sample_cfg_channels_from_the_flag_or_the_run_recipe(setup, tmp_path, capsys):
    from transvae.inference.generate import sampler_config

    assert sampler_config({}).cfg_channels == "all"  # a run exported before the option
    assert sampler_config({"sample": {"cfg_channels": 3}}).cfg_channels == 3  # the recipe's
    assert sampler_config({"sample": {"cfg_channels": 3}}, cfg_channels="all").cfg_channels == "all"
    out = tmp_path / "c3"
    assert _sample(setup, out, "--cfg-scale", "4.0", "--cfg-channels", "3") == 0
    settings = json.loads((out / "sampling.json").read_text())["sampler"]
    assert settings["cfg_channels"] == 3 and settings["cfg_scale"] == 4.0
    full = tmp_path / "call"
    assert _sample(setup, full, "--cfg-scale", "4.0") == 0
    assert json.loads((full / "sampling.json").read_text())["sampler"]["cfg_channels"] == "all"
    a = LatentFolder(out / "latents").iter_batches(6)
    b = LatentFolder(full / "latents").iter_batches(6)
    assert not torch.allclose(next(a), next(b))  # the setting reaches the sampler
    capsys.readouterr()
    assert _sample(setup, out, "--cfg-scale", "4.0") == 2  # other settings than the folder's samples
    assert "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: usage and one error line
        _sample(setup, tmp_path / "bad0", "--cfg-channels", "0")
    assert e.value.code == 2 and "'all' or a channel count >= 1" in capsys.readouterr().err
    assert _sample(setup, tmp_path / "bad33", "--cfg-channels", "33") == 2
    err = capsys.readouterr().err
    assert "more than the latents' 32 channels" in err and len(err.strip().splitlines()) == 1


def test_gen_sample_errors_are_one_line(setup, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user data")
    assert _sample(setup, tmp_path / "busy") == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "busy" / "mine.txt").read_text() == "user data"
    assert _sample(setup, tmp_path / "o", "--class-labels", "5") == 2
    assert "outside [0, 2)" in capsys.readouterr().err
    other = tmp_path / "other_vae"
    transvae.create_model("cnn-vae-nano-f16d32").save_pretrained(other)
    rc = main(
        [
            "gen-sample",
            "--run",
            str(setup / "run"),
            "--vae",
            str(other),
            "--out",
            str(tmp_path / "x"),
            "--num",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    rc = main(
        [
            "gen-sample",
            "--run",
            str(tmp_path),
            "--vae",
            str(other),
            "--out",
            str(tmp_path / "y"),
            "--num",
            "1",
        ]
    )
    assert rc == 2 and "holds no generator" in capsys.readouterr().err


def test_gen_eval_latent_fd_without_downloads(setup, tmp_path, capsys):
    samples = tmp_path / "s"
    assert _sample(setup, samples) == 0
    out = tmp_path / "eval"
    rc = main(
        ["gen-eval", "--samples", str(samples), "--reference", str(setup / "held_latents"), "--out", str(out)]
        + ["--metrics", "latent-fd", "--latent-fd-patch", "1", "--device", "cpu"]
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())["results"]
    assert res["latent_fd_latents"] == {"samples": 6, "reference": 16} and res["latent_fd"] > 0
    html = (out / "report.html").read_text()
    assert "lFD" in html and "data:image/png;base64" in html  # the sample grid
    grid = np.asarray(Image.open(out / "samples_grid.png"))
    assert grid.shape == (2 + 66, 2 + 6 * 66, 3)  # one row of the 6 samples, 64 px + 2 px padding
    # the same number from the library, and the real latents are far closer to themselves
    from transvae.data.latents import LatentStats
    from transvae.generation.evaluate import latent_fd

    stats = LatentStats.from_dict(json.loads((samples / "sampling.json").read_text())["latent_stats"])
    ref = LatentFolder(setup / "held_latents")
    direct = latent_fd(LatentFolder(samples / "latents"), ref, stats, patch=1)["latent_fd"]
    assert direct == pytest.approx(res["latent_fd"], rel=1e-9)
    floor = latent_fd(LatentFolder(setup / "latents"), ref, stats, patch=1)["latent_fd"]
    assert floor < 0.5 * direct
    # real latents as "samples" (the floor a perfect generator would reach), with explicit statistics
    rc = main(
        ["gen-eval", "--samples", str(setup / "latents"), "--reference-latents", str(setup / "held_latents")]
        + ["--out", str(tmp_path / "floor"), "--metrics", "latent-fd", "--latent-fd-patch", "1"]
        + ["--latent-stats", str(setup / "latents")]
    )
    assert rc == 0
    res = json.loads((tmp_path / "floor" / "results.json").read_text())["results"]
    assert res["latent_fd"] == pytest.approx(floor, rel=1e-9) and res["latent_fd_stats"].endswith(
        "latents_stats.pt"
    )


def test_gen_eval_fid_offline_error_names_the_option(setup, tmp_path, capsys):
    rc = main(
        [
            "gen-eval",
            "--samples",
            str(setup / "held"),
            "--reference",
            str(setup / "photos"),
            "--out",
            str(tmp_path),
        ]
        + ["--metrics", "fid", "--fid-weights", str(tmp_path / "missing.pth")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--fid-weights" in err and len(err.strip().splitlines()) == 1
    rc = main(
        ["gen-eval", "--samples", str(setup / "held"), "--out", str(tmp_path), "--metrics", "latent-fd"]
    )
    assert rc == 2 and "latent-fd needs generated latents" in capsys.readouterr().err


class _Pool(nn.Module):
    """A random stand-in for the Inception pool features: uint8 images -> 16 numbers."""

    def __init__(self, out: int = 16):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, out, 5, stride=4)

    def forward(self, x):
        return self.conv(x.float() / 127.5 - 1).amax((2, 3)) * 10


def test_fid_and_is_from_npz_and_folder_with_stand_in_networks(setup, tmp_path):
    from transvae.data.npz import write_npz
    from transvae.evaluation.fid import FIDMetric
    from transvae.evaluation.inception_score import ISMetric

    def load(d):
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(d.rglob("*.png"))])

    from transvae.inference.extract import center_crop_resize

    fake, real = load(setup / "held"), load(setup / "photos")  # 80 px samples, 64 px reference
    # the reference is brought to the samples' size with ADM's centre crop + resize
    real = np.stack([np.asarray(center_crop_resize(Image.fromarray(a), 80)) for a in real])
    npz = write_npz(tmp_path / "fake.npz", iter([fake]), len(fake))
    opts = EvalOptions(
        metrics=("fid", "is"), feature_net=_Pool(), logits_net=_Pool(10), is_splits=2, batch_size=5
    )
    res = evaluate_generation(npz, setup / "photos", tmp_path / "e", opts)["results"]
    fid = FIDMetric(_Pool())
    fid.update_fake(torch.from_numpy(fake).permute(0, 3, 1, 2))
    fid.update_real(torch.from_numpy(real).permute(0, 3, 1, 2))
    assert res["fid"] == pytest.approx(fid.compute(), rel=1e-6) and res["fid_images"] == {
        "samples": 16,
        "reference": 16,
    }
    is_ = ISMetric(_Pool(10), splits=2)
    is_.update(torch.from_numpy(fake).permute(0, 3, 1, 2))
    assert res["is"] == pytest.approx(is_.compute()[0], rel=1e-6) and res["is"] >= 1.0
    same = evaluate_generation(setup / "photos", setup / "photos", tmp_path / "e2", opts)["results"]["fid"]
    assert abs(same) < 1e-3 < res["fid"]

"""``transvae gen-sample`` / ``gen-eval`` as shipped (nano tokenizer and generator, CPU), and the
gen-eval / gen-sample probes of issue 21 (preflight, escaping, atomic outputs, stray images)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import transvae
from transvae.cli import main
from transvae.data.latents import LatentFolder
from transvae.evaluation.generation import EvalOptions, evaluate_generation
from transvae.models import create_model
from transvae.training.tasks.generator import latents_metadata


@pytest.fixture(scope="module")
def setup(tmp_path_factory, class_photos, save_nano_tokenizer):
    """A nano tokenizer, latents of 16 photos (and of 16 held-out ones), a random nano generator run."""
    base = tmp_path_factory.mktemp("gencli")
    vae = save_nano_tokenizer(base / "vae")
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


def _lfd(gen: LatentFolder, ref: LatentFolder, stats, patch: int) -> float:
    from transvae.metrics import LatentFrechetDistance

    m = LatentFrechetDistance(latent_fd_patch=patch)
    for z in gen.iter_batches(256):
        m.update_fake(stats.normalize(z))
    for z in ref.iter_batches(256):
        m.update_real(stats.normalize(z))
    return m.compute()["latent_fd"]


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

    stats = LatentStats.from_dict(json.loads((samples / "sampling.json").read_text())["latent_stats"])
    ref = LatentFolder(setup / "held_latents")
    direct = _lfd(LatentFolder(samples / "latents"), ref, stats, patch=1)
    assert direct == pytest.approx(res["latent_fd"], rel=1e-9)
    floor = _lfd(LatentFolder(setup / "latents"), ref, stats, patch=1)
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


class _StandIn(nn.Module):
    """A random stand-in for the Inception network's outputs ("2048" pool, "logits_unbiased",
    "spatial"): uint8 images -> 16 / 10 / 28 numbers; counts its forward passes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 16, 5, stride=4)
        self.head = nn.Linear(16, 10)
        self.calls = 0

    def forward(self, x, features=("2048",)):
        self.calls += 1
        h = self.conv(x.float() / 127.5 - 1)  # (B, 16, h, w)
        pool = h.amax((2, 3)) * 10
        out = {
            "2048": pool,
            "logits_unbiased": self.head(pool),
            "spatial": nn.functional.adaptive_avg_pool2d(h[:, :7], 2).flatten(1),
        }
        return {k: out[k] for k in features}


def _load(d):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(d.rglob("*.png"))])


def test_fid_and_is_from_npz_and_folder_with_stand_in_networks(setup, tmp_path):
    from transvae.data.npz import write_npz
    from transvae.inference.extract import center_crop_resize
    from transvae.metrics import MetricCollection, build_metrics

    fake, real = _load(setup / "held"), _load(setup / "photos")  # 80 px samples, 64 px reference
    # the reference is brought to the samples' size with ADM's centre crop + resize
    real = np.stack([np.asarray(center_crop_resize(Image.fromarray(a), 80)) for a in real])
    npz = write_npz(tmp_path / "fake.npz", iter([fake]), len(fake))
    net = _StandIn()
    opts = EvalOptions(metrics=("fid", "is"), feature_networks={"inception": net}, is_splits=2, batch_size=5)
    res = evaluate_generation(npz, setup / "photos", tmp_path / "e", opts)["results"]
    assert net.calls == 4 + 4  # one pass per batch of 5 for FID and IS together: 16 samples, 16 reference
    direct = MetricCollection(build_metrics(["fid", "is"], is_splits=2), {"inception": net})
    direct.update_images(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    direct.update_images(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
    ref = direct.compute()
    assert res["fid"] == pytest.approx(ref["fid"], rel=1e-6) and res["fid_images"] == {
        "samples": 16,
        "reference": 16,
    }
    assert res["is"] == pytest.approx(ref["is"], rel=1e-6) and res["is"] >= 1.0 and res["is_images"] == 16
    same = evaluate_generation(setup / "photos", setup / "photos", tmp_path / "e2", opts)["results"]["fid"]
    assert abs(same) < 1e-3 < res["fid"]


def test_gen_eval_adm_suite_one_network_pass_per_batch(setup, tmp_path):
    """fid, sfid, is, precision, recall from one stand-in pass per batch; a set against itself
    is perfect (precision = recall = 1, FID = sFID = 0) and differs from another set."""
    net = _StandIn()
    names = ("fid", "sfid", "is", "precision", "recall")
    opts = EvalOptions(metrics=names, feature_networks={"inception": net}, is_splits=2, batch_size=8)
    res = evaluate_generation(setup / "held", setup / "photos", tmp_path / "e", opts)["results"]
    assert net.calls == 2 + 2  # 16 samples and 16 reference images, batches of 8, all five metrics
    assert 0.0 <= res["precision"] <= 1.0 and 0.0 <= res["recall"] <= 1.0 and res["sfid"] > 0
    assert res["sfid_images"] == res["precision_images"] == {"samples": 16, "reference": 16}
    same = evaluate_generation(setup / "photos", setup / "photos", tmp_path / "e2", opts)["results"]
    assert same["precision"] == same["recall"] == 1.0
    assert abs(same["fid"]) < 1e-6 and abs(same["sfid"]) < 1e-6
    html = (tmp_path / "e" / "report.html").read_text()
    assert all(label in html for label in ("sFID", "precision", "recall", "Inception Score"))
    # without --metrics: every metric the inputs allow (images on both sides: the ADM suite)
    default = EvalOptions(feature_networks={"inception": net}, is_splits=2)
    assert evaluate_generation(setup / "held", setup / "photos", tmp_path / "e3", default)["metrics"] == [
        "fid", "is", "precision", "recall", "sfid"
    ]  # fmt: skip


# -- issue 21: gen-eval checks everything before computing anything ---------------------------------
def _gen_eval(*argv):
    return main(["gen-eval", *[str(a) for a in argv]])


def test_gen_eval_checks_every_metric_input_before_computing_any(setup, tmp_path, capsys, monkeypatch):
    """#19: `--metrics fid is latent-fd` without real latents stopped after computing FID and IS
    (111 s) and wrote nothing; now it stops at once, naming what is missing."""
    import transvae.evaluation.generation as gen

    def no_network(*a, **k):
        raise AssertionError("a feature network was loaded before the inputs were checked")

    monkeypatch.setattr(gen, "feature_networks", no_network)
    out = tmp_path / "out"
    rc = _gen_eval(
        "--samples",
        setup / "held",
        "--reference",
        setup / "photos",
        "--out",
        out,
        "--metrics",
        "fid",
        "is",
        "latent-fd",
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "latent-fd needs generated latents" in err and "real latents (--reference-latents DIR" in err
    assert not (out / "results.json").exists()
    rc = _gen_eval("--samples", setup / "held", "--out", out, "--metrics", "fid", "latent-fd")
    err = capsys.readouterr().err
    assert rc == 2 and "fid needs reference images (--reference IMAGE_DIR_OR_NPZ)" in err
    assert "latent-fd needs generated latents (--samples must be a `transvae gen-sample` output" in err
    assert "and real latents (--reference-latents DIR" in err
    # the metrics' own limits: IS needs one sample per split
    rc = _gen_eval("--samples", setup / "held", "--out", out, "--metrics", "is", "--num", "5")
    assert rc == 2 and "is needs at least 10 samples (one per split), got 5" in capsys.readouterr().err


def test_gen_eval_out_is_checked_before_work(setup, tmp_path, capsys, monkeypatch):
    """#7 and #16: --out equal to / inside / containing an input, a file, under a file, or not
    writable: one line, exit 2, nothing written into any input."""
    import shutil

    import transvae.evaluation.generation as gen

    monkeypatch.setattr(
        gen, "evaluate_generation", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran"))
    )
    ref = tmp_path / "ref"
    shutil.copytree(setup / "photos", ref)
    lat = tmp_path / "lat"
    shutil.copytree(setup / "held_latents", lat)
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep me")
    before = {p: p.read_bytes() for p in sorted(ref.rglob("*")) + sorted(lat.rglob("*")) if p.is_file()}
    cases = [
        (ref, "is the input"), (ref / "cats" / "eval", "lies inside the input"), (tmp_path, "contains the input"),
        (lat, "is the input"), (blocker, "exists and is not a folder"), (blocker / "sub", "not writable"),
    ]  # fmt: skip
    ro = tmp_path / "ro" if os.geteuid() != 0 else Path("/sys")  # root ignores permission bits
    if os.geteuid() != 0:
        ro.mkdir(mode=0o555)
    if ro.is_dir():
        cases.append((ro / "transvae-gen-eval-out", "is not writable"))
    for out, words in cases:
        rc = _gen_eval(
            "--samples", setup / "held", "--reference", ref, "--reference-latents", lat, "--out", out
        )
        err = capsys.readouterr().err
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, (out, err)
    after = {p: p.read_bytes() for p in sorted(ref.rglob("*")) + sorted(lat.rglob("*")) if p.is_file()}
    assert after == before and blocker.read_text() == "keep me"


def test_gen_eval_latent_fd_patch_and_memory_are_checked_before_allocation(
    setup, tmp_path, capsys, monkeypatch
):
    """#8: --latent-fd-patch 100 on a 4x4 grid asked for 409 GB of covariance; now one line."""
    samples = tmp_path / "s"
    assert _sample(setup, samples) == 0
    rc = _gen_eval("--samples", samples, "--reference-latents", setup / "held_latents", "--out", tmp_path / "o",
                   "--metrics", "latent-fd", "--latent-fd-patch", "100")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--latent-fd-patch 100 is larger than the 4x4 latent grid: use at most 4" in err
    import transvae.metrics.latent_fd as lfd
    from transvae.metrics import MetricInputError

    monkeypatch.setattr(lfd, "available_bytes", lambda device: 6 * 2**20)  # a machine with 6 MiB free
    with pytest.raises(MetricInputError, match=r"needs two 512x512 float64 covariances \(4.0 MiB\)"):
        lfd.LatentFrechetDistance(latent_fd_patch=4).check({"latent_shape": (32, 4, 4)})
    lfd.LatentFrechetDistance(latent_fd_patch=2).check({"latent_shape": (32, 4, 4)})  # 256 KiB: fits


def test_gen_eval_refuses_latents_of_another_tokenizer_or_grid_unless_forced(setup, tmp_path, capsys):
    """#15 (gen-eval): lFD against latents of another tokenizer (143.8) or grid size (1556.3) was
    computed without a word."""
    samples = tmp_path / "s"
    assert _sample(setup, samples) == 0
    other = tmp_path / "other_vae"
    transvae.create_model("cnn-vae-nano-f16d32").save_pretrained(other)
    for name, model, res in (("other_tok", other, 64), ("other_grid", setup / "vae", 128)):
        rc = main(["extract-latents", str(setup / "held"), "--model", str(model), "--out", str(tmp_path / name),
                   "--resolution", str(res), "--batch-size", "8", "--num-workers", "0"])  # fmt: skip
        assert rc in (0, 1)
    capsys.readouterr()
    base = ["--samples", samples, "--out", tmp_path / "o", "--metrics", "latent-fd", "--latent-fd-patch", "1"]
    rc = _gen_eval(*base, "--reference-latents", tmp_path / "other_tok")
    err = capsys.readouterr().err
    assert rc == 2 and "'transvae-nano-f16d32'" in err and "'cnn-vae-nano-f16d32'" in err and "--force" in err
    rc = _gen_eval(*base, "--reference-latents", tmp_path / "other_grid")
    err = capsys.readouterr().err
    assert rc == 2 and "32x4x4" in err and "32x8x8" in err and "--force" in err
    assert not (tmp_path / "o" / "results.json").exists()
    assert _gen_eval(*base, "--reference-latents", tmp_path / "other_grid", "--force") == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["results"]["latent_fd"] > 0


XSS = "<script>alert(1)</script>"


def test_gen_eval_report_escapes_every_value_and_replaces_a_planted_symlink(setup, tmp_path, capsys):
    """#4: every value of a samples folder's sampling.json, file names and folder names reach the
    report escaped; #3: a symlink planted at OUT/report.html is replaced, its target untouched;
    #5: names reach the terminal with control characters escaped."""
    import shutil

    samples = tmp_path / "s<img src=x onerror=alert(2)>"
    assert _sample(setup, samples) == 0
    settings = json.loads((samples / "sampling.json").read_text())

    def poison(v):
        return {XSS + k: poison(x) for k, x in v.items()} if isinstance(v, dict) else XSS

    (samples / "sampling.json").write_text(
        json.dumps({**poison(settings), "sampler": poison(settings["sampler"]), "seed": XSS, "num": XSS})
    )
    (samples / "images" / "<img src=x onerror=alert(3)>.png").write_bytes(b"not a png")
    (samples / "images" / "\x1b]0;pwned\x07\nfailed forged.png").write_bytes(b"not a png either")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "report.html").symlink_to(victim)
    rc = _gen_eval("--samples", samples, "--reference-latents", setup / "held_latents", "--out", out,
                   "--metrics", "latent-fd", "--latent-fd-patch", "1", "--force")  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert victim.read_text() == "precious" and not (out / "report.html").is_symlink()
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</body></html>")
    assert "<script>" not in page and "<img src=x" not in page and "onerror=alert(3)>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # keys and values of sampling.json
    assert "&lt;img src=x onerror=alert(3)&gt;.png" in page and "s&lt;img src=x onerror=alert(2)&gt;" in page
    assert (
        "\x1b" not in captured.err + captured.out
        and "\\x1b]0;pwned\\x07\\x0afailed forged.png" in captured.err
    )
    assert not any(line.startswith("failed forged") for line in captured.err.splitlines())
    shutil.rmtree(samples)


def test_gen_sample_npz_leaves_out_a_stray_image_of_another_size(setup, tmp_path, capsys):
    """#11: a stray image of another size in images/ gave an np.stack traceback; now it is left
    out of the .npz with a warning naming it, and the samples keep their labels."""
    out = tmp_path / "s"
    assert _sample(setup, out) == 0
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(out / "images" / "000099.png")
    capsys.readouterr()
    assert _sample(setup, out, "--npz") == 0
    captured = capsys.readouterr()
    warnings = [ln for ln in captured.err.splitlines() if "left out of the .npz" in ln]
    assert (
        len(warnings) == 1 and "000099.png" in warnings[0] and "32x32, the samples are 64x64" in warnings[0]
    )
    npz = np.load(out / "samples_6x64x64x3.npz", allow_pickle=False)
    assert npz["arr_0"].shape == (6, 64, 64, 3) and npz["arr_1"].tolist() == [0, 1] * 3
    assert (npz["arr_0"][5] == np.asarray(Image.open(out / "images" / "000005.png"))).all()

"""``transvae reconstruct / encode / decode / extract-latents`` end to end (nano model, CPU)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from skimage import data as skdata

import transvae
from transvae.cli import main
from transvae.data.io import load_image, pil_to_tensor
from transvae.inference import InferenceRunner, load_latent


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _exif_rotated_jpeg(path, w, h):
    im = Image.fromarray(skdata.chelsea()).resize((w, h))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    im.save(path, exif=exif.tobytes())


def test_reconstruct_any_size_and_mode(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(skdata.astronaut()).resize((70, 50)).save(src / "a.jpg")
    Image.fromarray(skdata.coffee()).resize((33, 41)).convert("RGBA").save(src / "sub" / "rgba.png")
    Image.fromarray(skdata.camera()).resize((40, 20)).save(src / "sub" / "grey.png")
    g16 = (np.asarray(Image.fromarray(skdata.camera()).resize((24, 18)), dtype=np.uint16) * 257).astype(
        np.uint16
    )
    Image.fromarray(g16).save(src / "sub" / "deep.png")  # 16-bit greyscale
    Image.fromarray(skdata.rocket()).resize((30, 20)).convert("CMYK").save(src / "cmyk.jpg")
    _exif_rotated_jpeg(src / "rot.jpg", 48, 32)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    rc = main(
        ["reconstruct", str(src), "--model", str(model_dir), "--out", str(out), "--compare"]
        + ["--batch-size", "2", "--num-workers", "0"]
    )
    err = capsys.readouterr()
    assert rc == 1  # one unreadable file was skipped
    assert "broken.jpg" in err.err and "skipped 1" in err.out
    expected = [  # (output, (W, H)): the input sizes; EXIF orientation swaps W and H of rot
        ("a.png", (70, 50)),
        ("sub/rgba.png", (33, 41)),
        ("sub/grey.png", (40, 20)),
        ("sub/deep.png", (24, 18)),
        ("cmyk.png", (30, 20)),
        ("rot.png", (32, 48)),
    ]
    for rel, size in expected:
        assert Image.open(out / rel).size == size, rel
        w, h = size
        assert Image.open(out / "compare" / rel).size == (2 * w, h)
    assert not (out / "broken.png").exists()
    # the PNG is the runner's reconstruction of the loaded image, quantised to uint8
    x = pil_to_tensor(load_image(src / "a.jpg"))[None]
    with torch.no_grad():
        rec = InferenceRunner(transvae.from_pretrained(model_dir)).reconstruct(x)[0]
    ref = ((rec.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.abs(_png(out / "a.png").astype(int) - ref.astype(int)).max() <= 1


def test_reconstruct_single_bad_file_and_strict(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    rc = main(["reconstruct", str(bad), "--model", str(model_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.png" in err[0] and "empty" in err[0]
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"garbage")
    Image.new("RGB", (16, 16)).save(folder / "y.png")
    rc = main(
        [
            "reconstruct",
            str(folder),
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "o2"),
            "--strict",
            "--num-workers",
            "0",
        ]
    )
    assert rc == 2 and "x.jpg" in capsys.readouterr().err
    rc = main(["reconstruct", str(folder), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o3")])
    assert rc == 2 and "cannot load model" in capsys.readouterr().err


@pytest.mark.slow  # ~80 s on 2 busy CPU cores: 24k-token attention at 1/4 resolution in nano
def test_acceptance_landscape_and_portrait_photos(model_dir, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(skdata.astronaut()).resize((768, 512), Image.BICUBIC).save(src / "landscape.png")
    Image.fromarray(skdata.chelsea()).resize((512, 768), Image.BICUBIC).save(src / "portrait.jpg")
    out = tmp_path / "rec"
    assert (
        main(["reconstruct", str(src), "--model", str(model_dir), "--out", str(out), "--num-workers", "0"])
        == 0
    )
    assert Image.open(out / "landscape.png").size == (768, 512)
    assert Image.open(out / "portrait.png").size == (512, 768)


def test_encode_decode_round_trip(model_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(skdata.astronaut()).resize((50, 37)).save(src / "a.png")
    Image.fromarray(skdata.coffee()).resize((32, 48)).save(src / "b.png")
    lat, dec, rec = tmp_path / "lat", tmp_path / "dec", tmp_path / "rec"
    args = ["--model", str(model_dir), "--num-workers", "0"]
    assert (
        main(
            ["encode", str(src), "--out", str(lat), "--scaling-factor", "0.5", "--shift-factor", "0.25"]
            + args
        )
        == 0
    )
    r = load_latent(lat / "a.safetensors")
    assert r.size == (37, 50) and r.pad == (0, 14, 0, 11) and r.latent.shape == (32, 3, 4)
    assert r.model == str(model_dir) and r.model_name == "transvae-nano-f16d32"
    assert (r.scaling_factor, r.shift_factor) == (0.5, 0.25)
    runner = InferenceRunner(transvae.from_pretrained(model_dir))
    z = runner.encode(pil_to_tensor(Image.open(src / "a.png").convert("RGB"))[None]).latent[0]
    assert torch.allclose(r.latent, (z - 0.25) * 0.5, atol=1e-5) and torch.allclose(
        r.unscaled(), z, atol=1e-5
    )
    # decode needs --model; the model recorded in the files only with --model-from-files
    assert main(["decode", str(lat), "--out", str(dec)]) == 2
    assert main(["decode", str(lat), "--out", str(dec), "--model-from-files"]) == 0
    assert main(["reconstruct", str(src), "--out", str(rec)] + args) == 0
    for name, size in (("a.png", (50, 37)), ("b.png", (32, 48))):
        assert Image.open(dec / name).size == size
        assert np.abs(_png(dec / name).astype(int) - _png(rec / name).astype(int)).max() <= 1
    (lat / "junk.safetensors").write_bytes(b"\x00" * 20)
    assert main(["decode", str(lat / "junk.safetensors"), "--out", str(dec), "--model", str(model_dir)]) == 2


def _make_dataset(root, n_per_class=(3, 2)):
    photos = [
        skdata.astronaut(),
        skdata.coffee(),
        skdata.chelsea(),
        skdata.rocket(),
        skdata.immunohistochemistry(),
    ]
    k = 0
    for c, n in zip(("cat", "dog"), n_per_class, strict=True):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(photos[k % len(photos)]).resize((40 + 8 * k, 36)).save(root / c / f"{i}.png")
            k += 1


def _extract_args(data, model_dir, out, *more) -> list[str]:
    """``transvae extract-latents DATA --model MODEL_DIR --out OUT MORE...`` as strings."""
    return ["extract-latents", str(data), "--model", str(model_dir), "--out", str(out), *map(str, more)]


def test_extract_latents_shards_labels_stats_resume(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    _make_dataset(data)
    out = tmp_path / "lat"
    base = _extract_args(
        data, model_dir, out, "--resolution", 32, "--shard-size", 2, "--batch-size", 2, "--num-workers", 0
    )
    # rank 1 of 2 (as one torchrun rank would) writes only its shard and no statistics yet
    from transvae.inference import extract_latents

    runner = InferenceRunner(transvae.from_pretrained(model_dir))
    kw = dict(model_ref=str(model_dir), resolution=32, shard_size=2, batch_size=2, progress=False)
    assert extract_latents(data, runner, out, rank=1, world_size=2, **kw) is None
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["latents_shard00001.safetensors"]
    assert not (out / "latents_stats.pt").exists()
    assert main(base) == 0  # single process: resumes, does shards 0 and 2, writes stats
    assert '"num_latents": 5' in capsys.readouterr().out
    shards = sorted(out.glob("latents_shard*.safetensors"))
    assert len(shards) == 3
    lat, flip, labels, names = [], [], [], []
    for p in shards:
        with safe_open(str(p), framework="pt") as f:
            lat.append(f.get_tensor("latents"))
            flip.append(f.get_tensor("latents_flip"))
            labels.append(f.get_tensor("labels"))
            names += json.loads(f.metadata()["file_names"])
    lat, flip, labels = torch.cat(lat), torch.cat(flip), torch.cat(labels)
    assert lat.shape == (5, 32, 2, 2) and flip.shape == lat.shape
    assert names == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png"]
    assert labels.tolist() == [0, 0, 0, 1, 1] and labels.dtype == torch.int64
    # the latents are the encoder means of the centre crops; flip encodes the mirrored crop
    from transvae.inference import center_crop_resize

    x = pil_to_tensor(center_crop_resize(load_image(data / "dog" / "1.png"), 32))[None]
    assert torch.allclose(lat[4], runner.encode(x).latent[0], atol=1e-5)
    assert torch.allclose(flip[4], runner.encode(x.flip(-1)).latent[0], atol=1e-5)
    # statistics: LightningDiT's latents_stats.pt layout, (1, C, 1, 1), and a JSON copy
    stats = torch.load(out / "latents_stats.pt", weights_only=True)
    assert stats["mean"].shape == (1, 32, 1, 1)
    assert torch.allclose(stats["mean"].flatten(), lat.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(stats["std"].flatten(), lat.std(dim=(0, 2, 3), correction=0), atol=1e-4)
    js = json.loads((out / "latents_stats.json").read_text())
    assert js["num_latents"] == 5 and abs(js["scaling_factor"] - 1 / lat.std(correction=0).item()) < 1e-3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"] and manifest["num_latents"] == 5 and manifest["complete"]
    # resume: nothing is re-encoded
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    assert main(base) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    # other settings in the same folder are refused
    assert (
        main(_extract_args(data, model_dir, out, "--resolution", 32, "--shard-size", 3, "--num-workers", 0))
        == 2
    )
    assert "other settings" in capsys.readouterr().err


def test_extract_unlabelled_folder_without_flip(model_dir, tmp_path):
    data = tmp_path / "flat"
    data.mkdir()
    for i in range(2):
        Image.fromarray(skdata.astronaut()).resize((32 + i, 32)).save(data / f"{i}.png")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    (data / "trunc.png").write_bytes(buf.getvalue()[:30])
    out = tmp_path / "lat"
    rc = main(_extract_args(data, model_dir, out, "--resolution", 16, "--no-flip", "--num-workers", 0))
    assert rc == 1  # one image failed (and was skipped)
    with safe_open(str(out / "latents_shard00000.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"latents", "labels"}
        assert f.get_tensor("labels").tolist() == [0, 0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == [] and [s[0] for s in manifest["skipped"]] == ["trunc.png"]


@pytest.mark.slow  # launches two processes with torchrun (gloo on CPU)
def test_extract_latents_torchrun_two_ranks(model_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    data = tmp_path / "data"
    _make_dataset(data)
    out = tmp_path / "lat"
    exe = shutil.which("transvae") or str(Path(sys.executable).parent / "transvae")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
        exe,
        *_extract_args(
            data, model_dir, out, "--resolution", 32, "--shard-size", 2, "--device", "cpu", "--num-workers", 0
        ),
    ]
    subprocess.run(cmd, check=True, timeout=600)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_latents"] == 5 and len(manifest["shards"]) == 3
    # the same as a single-process extraction
    single = tmp_path / "single"
    assert (
        main(
            _extract_args(data, model_dir, single, "--resolution", 32, "--shard-size", 2, "--num-workers", 0)
        )
        == 0
    )
    for name in (
        "latents_shard00000.safetensors",
        "latents_shard00001.safetensors",
        "latents_shard00002.safetensors",
    ):
        with (
            safe_open(str(out / name), framework="pt") as a,
            safe_open(str(single / name), framework="pt") as b,
        ):
            assert torch.allclose(a.get_tensor("latents"), b.get_tensor("latents"), atol=1e-5)
    sa = json.loads((out / "latents_stats.json").read_text())
    sb = json.loads((single / "latents_stats.json").read_text())
    assert np.allclose(sa["mean"], sb["mean"], atol=1e-5)

"""Issue 15 probes of the inference and evaluation commands: outputs never overwrite inputs,
one bad file never stops a folder job, files are data, limits before work, one-line failures."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_errors import NANO, cli, one_error_line  # the CLI helpers of the error-message tests

import transvae


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / "sub" / "b.png")
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(d / "c.jpg")
    return d


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: use /sys)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no read-only folder to test with")
    try:
        (Path("/sys") / "transvae-probe").mkdir()
    except OSError:
        yield Path("/sys")
        return
    pytest.skip("/sys is writable here")


# -- 1. outputs never overwrite inputs -------------------------------------------------------------
def test_reconstruct_into_its_own_input_leaves_every_byte_unchanged(capsys, model_dir, photos):
    before = snapshot(photos)
    rc, _, err = cli(capsys, "reconstruct", photos, "--model", model_dir, "--out", photos)
    line = one_error_line(err)
    assert rc == 2 and f"--out {photos} is the input {photos}" in line
    assert snapshot(photos) == before  # nothing overwritten, nothing added


@pytest.mark.parametrize("where", ["inside", "contains", "symlink"])
def test_out_inside_containing_or_linked_to_an_input_is_refused(capsys, model_dir, photos, tmp_path, where):
    before = snapshot(photos)
    if where == "inside":
        inp, out, word = photos, photos / "rec", "lies inside"
    elif where == "contains":
        inp, out, word = photos / "sub", photos, "contains"
    else:
        out = tmp_path / "link"
        out.symlink_to(photos, target_is_directory=True)
        inp, word = photos, "is the input"
    # refused before the model is loaded: the bad --model is never reached
    rc, _, err = cli(capsys, "reconstruct", inp, "--model", "no/such-model", "--out", out)
    assert rc == 2 and word in one_error_line(err)
    assert snapshot(photos) == before and not (photos / "rec").exists()


def test_every_folder_command_refuses_out_equal_to_input(capsys, model_dir, photos, tmp_path):
    lat = tmp_path / "lat"
    assert cli(capsys, "encode", photos, "--model", model_dir, "--out", lat, "--num-workers", 0)[0] == 0
    lat_before, photos_before = snapshot(lat), snapshot(photos)
    runs = [
        ("encode", photos, "--model", model_dir, "--out", photos / "z"),
        ("decode", lat, "--model", model_dir, "--out", lat),
        ("extract-latents", photos, "--model", model_dir, "--out", photos, "--resolution", 16),
        ("evaluate", "--data", photos, "--model", model_dir, "--out", photos / "eval", "--metrics", "psnr"),
    ]
    for argv in runs:
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and "choose an output folder outside every input" in one_error_line(err), argv
    assert snapshot(lat) == lat_before and snapshot(photos) == photos_before


@pytest.mark.parametrize("cmd", ["reconstruct", "evaluate"])
def test_out_that_is_a_file_or_read_only_is_one_line_before_work(
    capsys, model_dir, photos, tmp_path, readonly_dir, cmd
):
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep me")
    for out, words in ((blocker, "exists and is not a folder"), (readonly_dir / "out", "is not writable")):
        argv = [cmd, photos, "--out", out] if cmd == "reconstruct" else [cmd, "--data", photos, "--out", out]
        rc, _, err = cli(capsys, *argv, "--model", "no/such-model")
        line = one_error_line(err)
        assert rc == 2 and words in line and str(out) in line
    assert blocker.read_text() == "keep me"


# -- 2. one bad file never stops a folder job ------------------------------------------------------
def _write_png_of_size(path: Path, w: int, h: int, rgb=(120, 130, 140)) -> None:
    """A valid flat-colour RGB PNG written row by row (11000x11000: ~350 KB)."""
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    # first row: the colour; every later row: PNG filter "Up" with zero differences
    first, up, c = b"\x00" + bytes(rgb) * w, b"\x02" + bytes(3 * w), zlib.compressobj(6)
    data = b"".join([c.compress(first)] + [c.compress(up) for _ in range(h - 1)] + [c.flush()])
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture
def encoder_cls(model_dir):
    return type(transvae.from_pretrained(model_dir).encoder)


def test_cpu_out_of_memory_of_one_file_is_reported_and_the_job_goes_on(
    capsys, model_dir, tmp_path, monkeypatch, encoder_cls
):
    """A real CPU allocator failure (RuntimeError "can't allocate memory") for one image: its batch
    is retried image by image, the image is named in one line, the others are written."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"{name}.png")
    poisoned = np.full((32, 32, 3), 255, np.uint8)  # pure white: this one "does not fit"
    Image.fromarray(poisoned).save(src / "b.png")
    forward = encoder_cls.forward

    def fake_forward(self, x):
        if not x.is_meta and bool((x == 1).all(dim=(1, 2, 3)).any()):
            torch.empty(1 << 44)  # 16 TiB: the CPU allocator refuses
        return forward(self, x)

    monkeypatch.setattr(encoder_cls, "forward", fake_forward)
    out = tmp_path / "out"
    rc, stdout, err = cli(
        capsys, "reconstruct", src, "--model", model_dir, "--out", out, "--batch-size", 3, "--num-workers", 0
    )
    assert "Traceback" not in err
    failed = [ln for ln in err.splitlines() if "b.png" in ln]
    assert len(failed) == 1 and "out of memory" in failed[0] and "can't allocate memory" in failed[0]
    assert rc == 1 and "wrote 2 file(s)" in stdout and "skipped 1 input(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


def test_cpu_out_of_memory_untiled_is_retried_in_tiles(capsys, model_dir, tmp_path, monkeypatch, encoder_cls):
    """Only inputs above 32x32 fail: the 64x64 image is encoded again in 32 px tiles and written,
    equal to an explicitly tiled reconstruction."""
    from transvae.data.io import load_image, pil_to_tensor
    from transvae.inference import InferenceRunner

    img = tmp_path / "in" / "x.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(img)
    forward = encoder_cls.forward

    def fake_forward(self, x):
        if not x.is_meta and x.shape[-1] * x.shape[-2] > 32 * 32:
            torch.empty(1 << 44)
        return forward(self, x)

    monkeypatch.setattr(encoder_cls, "forward", fake_forward)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "reconstruct", img, "--model", model_dir, "--out", out, "--tile-size", 32)
    assert rc == 0 and "warning: out of memory in the encoder; retrying with tiles of 32px" in err
    runner = InferenceRunner(transvae.from_pretrained(model_dir), tile_size=32)
    monkeypatch.setattr(encoder_cls, "forward", forward)
    x = pil_to_tensor(load_image(img))[None]
    enc = runner.encode(x, tiled=True)
    ref = ((runner.decode(enc.latent, enc.pad)[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0)
    got = np.asarray(Image.open(out / "x.png"), dtype=np.int64)
    assert np.abs(got - ref.numpy().astype(np.int64)).max() <= 1


def test_huge_declared_png_is_refused_from_its_header_and_the_job_goes_on(
    capsys, model_dir, tmp_path, monkeypatch
):
    """A ~385 KB PNG declaring 11000x11000 (under the loader's 128 Mpx guard): with 2 GiB free its
    full-size tensors (~5.4 GiB) cannot fit, so it is refused before decoding, in one line."""
    import transvae.inference.limits as limits

    src = tmp_path / "in"
    src.mkdir()
    _write_png_of_size(src / "huge.png", 11000, 11000)
    assert (src / "huge.png").stat().st_size < 1_000_000
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(src / "small.png")
    monkeypatch.setattr(limits, "available_bytes", lambda device: 2 << 30)
    rc, stdout, err = cli(
        capsys, "reconstruct", src, "--model", model_dir, "--out", tmp_path / "o", "--num-workers", 0
    )
    line = [ln for ln in err.splitlines() if "huge.png" in ln]
    assert len(line) == 1 and "11000x11000 pixels" in line[0] and "2.0 GiB free" in line[0]
    assert rc == 1 and "wrote 1 file(s)" in stdout and (tmp_path / "o" / "small.png").is_file()


def test_auto_max_pixels_follows_free_memory(model_dir, monkeypatch):
    import transvae.inference.limits as limits

    model = transvae.from_pretrained(model_dir)
    cpu = torch.device("cpu")
    monkeypatch.setattr(limits, "available_bytes", lambda device: 1 << 50)
    assert limits.auto_max_pixels(model, cpu) == limits.DEFAULT_PIXEL_CAP
    sizes = []
    for free in (64 << 20, 256 << 20, 1 << 30):
        monkeypatch.setattr(limits, "available_bytes", lambda device, free=free: free)
        sizes.append(limits.auto_max_pixels(model, cpu))
    assert sizes[0] < sizes[1] < sizes[2] <= limits.DEFAULT_PIXEL_CAP
    # the estimate it rests on: an untiled pass at the chosen size fits in half the free memory
    from transvae.utils.memory import estimate_memory

    side = int(sizes[1] ** 0.5) // 16 * 16
    assert estimate_memory(model, 1, side, side, train=False).total <= (256 << 20) / 2


@pytest.fixture(scope="module")
def latents(model_dir, tmp_path_factory) -> Path:
    """Two good latent files of the nano model (a 40x30 and a 20x20 image)."""
    from transvae.inference import InferenceRunner, LatentRecord, save_latent

    d = tmp_path_factory.mktemp("latents")
    runner = InferenceRunner(transvae.from_pretrained(model_dir))
    rng = np.random.default_rng(3)
    for name, (h, w) in (("good1", (30, 40)), ("good2", (20, 20))):
        x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32))
        enc = runner.encode(x)
        rec = LatentRecord(enc.latent[0], str(model_dir), NANO, (h, w), enc.pad)
        save_latent(d / f"{name}.safetensors", rec)
    return d


def _bad_latent(folder: Path, name: str, **change) -> None:
    """A copy of good1 with some fields replaced."""
    import dataclasses

    from transvae.inference import load_latent, save_latent

    rec = load_latent(folder / "good1.safetensors")
    save_latent(folder / f"{name}.safetensors", dataclasses.replace(rec, **change))


def test_decode_reports_each_bad_latent_in_one_line_and_decodes_the_rest(
    capsys, model_dir, latents, tmp_path
):
    d = tmp_path / "lat"
    d.mkdir()
    for p in latents.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    _bad_latent(d, "bad_pad", pad=(0, 99, 0, 0))
    _bad_latent(d, "neg_pad", pad=(0, -2, 0, 0))
    _bad_latent(d, "empty_grid", latent=torch.zeros(32, 0, 0), size=(1, 1), pad=(0, 0, 0, 0))
    nan = torch.zeros(32, 2, 3)
    nan[0, 0, 0] = float("nan")
    _bad_latent(d, "nan", latent=nan)
    _bad_latent(d, "int", latent=torch.zeros(32, 2, 3, dtype=torch.int32))
    _bad_latent(d, "bool", latent=torch.zeros(32, 2, 3, dtype=torch.bool))
    _bad_latent(d, "channels", latent=torch.zeros(4, 2, 3))
    _bad_latent(d, "other_model", model_name="transvae-t-f16d32")
    _bad_latent(d, "inf_scale", scaling_factor=float("inf"))
    (d / "junk.safetensors").write_bytes(b"\x00" * 20)
    out = tmp_path / "dec"
    rc, stdout, err = cli(capsys, "decode", d, "--model", model_dir, "--out", out, "--batch-size", 4)
    assert "Traceback" not in err
    expected = {
        "bad_pad": "does not fit the 3x2 latent grid",
        "neg_pad": "non-negative",
        "empty_grid": "empty latent grid",
        "nan": "NaN/Inf",
        "int": "not a floating-point dtype",
        "bool": "not a floating-point dtype",
        "channels": "latent has 4 channels",
        "other_model": "encoded with 'transvae-t-f16d32' but the decoding model is 'transvae-nano-f16d32'",
        "inf_scale": "must be finite",
        "junk": "cannot read safetensors file",
    }
    for name, words in expected.items():
        lines = [ln for ln in err.splitlines() if f"{name}.safetensors" in ln]
        assert len(lines) == 1 and words in lines[0], (name, lines)
    assert rc == 1 and f"skipped {len(expected)} input(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good1.png", "good2.png"]
    assert Image.open(out / "good1.png").size == (40, 30) and Image.open(out / "good2.png").size == (20, 20)
    # --force decodes a latent of another model_name (same architecture family and channels)
    rc, _, _ = cli(
        capsys, "decode", d / "other_model.safetensors", "--model", model_dir, "--out", out, "--force"
    )
    assert rc == 0 and Image.open(out / "other_model.png").size == (40, 30)


def test_decode_never_follows_the_model_named_in_a_file(capsys, model_dir, latents, tmp_path, monkeypatch):
    """Without --model, decode refuses; with --model-from-files only a local folder is used, and a
    Hub repo id written in a file is never contacted."""
    import huggingface_hub

    contacted = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: contacted.append(a) or 1 / 0)
    d = tmp_path / "lat"
    d.mkdir()
    (d / "good1.safetensors").write_bytes((latents / "good1.safetensors").read_bytes())
    _bad_latent(latents, "evil", model="someuser/evil-vae")
    (d / "evil.safetensors").write_bytes((latents / "evil.safetensors").read_bytes())
    (latents / "evil.safetensors").unlink()
    out = tmp_path / "dec"
    rc, _, err = cli(capsys, "decode", d, "--out", out)
    line = one_error_line(err)
    assert rc == 2 and "pass --model" in line and "--model-from-files" in line
    rc, stdout, err = cli(capsys, "decode", d, "--out", out, "--model-from-files")
    evil = [ln for ln in err.splitlines() if "evil.safetensors" in ln]
    assert (
        len(evil) == 1
        and "'someuser/evil-vae' is not a local folder" in evil[0]
        and "never fetched" in evil[0]
    )
    assert rc == 1 and (out / "good1.png").is_file() and not (out / "evil.png").exists()
    assert contacted == []
    # with --model the recorded name is ignored (the file's model_name matches)
    rc, _, _ = cli(capsys, "decode", d / "evil.safetensors", "--model", model_dir, "--out", out)
    assert rc == 0 and (out / "evil.png").is_file() and contacted == []


def test_decode_tiles_a_large_latent_with_a_progress_bar(capsys, model_dir, tmp_path, monkeypatch):
    """With little free memory, --max-pixels auto is small and an 8x8 latent (128x128 px) decodes
    in 9 tiles with a progress bar, equal to an explicitly tiled decode."""
    import transvae.inference.limits as limits
    from transvae.inference import InferenceRunner, LatentRecord, load_latent, save_latent

    model = transvae.from_pretrained(model_dir)
    z = torch.randn(32, 8, 8, generator=torch.Generator().manual_seed(0))
    save_latent(tmp_path / "big.safetensors", LatentRecord(z, "", NANO, (128, 128), (0, 0, 0, 0)))
    monkeypatch.setattr(limits, "available_bytes", lambda device: 8 << 20)
    runner = InferenceRunner(model, max_pixels="auto", tile_size=64)
    assert runner.max_pixels < 128 * 128
    rc, _, err = cli(
        capsys,
        "decode",
        tmp_path / "big.safetensors",
        "--model",
        model_dir,
        "--out",
        tmp_path / "o",
        "--tile-size",
        64,
    )
    assert rc == 0 and "decoder tiles" in err  # the tile progress bar
    z = load_latent(tmp_path / "big.safetensors").unscaled()[None]
    tiled, untiled = runner.decode(z, tiled=True)[0], runner.decode(z, tiled=False)[0]
    assert (tiled - untiled).abs().max() > 1e-3  # tiling changes the result: it did happen
    ref = ((tiled.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int64)
    assert np.abs(np.asarray(Image.open(tmp_path / "o" / "big.png"), dtype=np.int64) - ref).max() <= 1


# -- 3. files are data; NaN/Inf; one line for every failure; limits before work ---------------------
def test_encode_uses_the_scaling_saved_with_the_model_and_refuses_nan_factors(capsys, tmp_path):
    from transvae.inference import InferenceRunner, load_latent

    model = transvae.create_model(NANO)
    model.save_pretrained(tmp_path / "m", scaling_factor=0.5, shift_factor=0.1)
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(img)
    rc, stdout, _ = cli(capsys, "encode", img, "--model", tmp_path / "m", "--out", tmp_path / "lat")
    assert rc == 0 and "(z - 0.1) * 0.5" in stdout
    rec = load_latent(tmp_path / "lat" / "x.safetensors")
    assert (rec.scaling_factor, rec.shift_factor) == (0.5, 0.1)
    from transvae.data.io import load_image, pil_to_tensor

    z = (
        InferenceRunner(transvae.from_pretrained(tmp_path / "m"))
        .encode(pil_to_tensor(load_image(img))[None])
        .latent[0]
    )
    assert torch.allclose(rec.latent, (z - 0.1) * 0.5, atol=1e-5)
    for flag, value in (("--scaling-factor", "nan"), ("--shift-factor", "inf"), ("--scaling-factor", "0")):
        rc, _, err = cli(
            capsys, "encode", img, "--model", tmp_path / "m", "--out", tmp_path / "l2", flag, value
        )
        line = one_error_line(err)
        assert rc == 2 and (flag in line or "must not be 0" in line), line


def test_nonfinite_weights_are_one_warning_line(capsys, model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    state = load_file(str(model_dir / "model.safetensors"))
    state["decoder.conv_out.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    rc, _, err = cli(capsys, "reconstruct", img, "--model", bad, "--out", tmp_path / "o")
    warn = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warn) == 1 and "decoder.conv_out.weight" in warn[0] and "NaN or Inf" in warn[0]
    assert warn[0].startswith("transvae reconstruct: warning:") and "Traceback" not in err


def test_model_config_that_cannot_be_built_is_one_line(capsys, model_dir, tmp_path):
    import json

    d = tmp_path / "m"
    d.mkdir()
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["dims"] = [3, 16, 32, 32, 64]  # passes the config checks, fails inside the DC shortcut
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    for cmd in ("reconstruct", "evaluate"):
        argv = (
            [cmd, img, "--out", tmp_path / cmd]
            if cmd == "reconstruct"
            else [cmd, "--data", img, "--out", tmp_path / cmd]
        )
        rc, _, err = cli(capsys, *argv, "--model", d)
        line = one_error_line(err)
        assert rc == 2 and "describes a model that cannot be built" in line and "DC shortcut" in line


def test_disk_full_while_writing_is_one_line_that_says_so(capsys, model_dir, photos, tmp_path, monkeypatch):
    """ENOSPC from the file system after the --out probe: the job stops with one line saying
    "disk full" and how many files were written; no temp file is left behind."""
    import errno

    import transvae.utils.files as files

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 4:  # the probe and the first output go through; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    out = tmp_path / "rec"
    rc, stdout, err = cli(
        capsys, "reconstruct", photos, "--model", model_dir, "--out", out, "--num-workers", 0
    )
    line = one_error_line(err)
    assert rc == 2 and "disk full" in line and "stopped after writing 1 file(s)" in line
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["a.png"]  # no half-written or temp files


def test_evaluate_impossible_resolution_is_refused_before_work(capsys, model_dir, photos, tmp_path):
    rc, _, err = cli(
        capsys, "evaluate", "--model", model_dir, "--data", photos, "--out", tmp_path / "ev",
        "--resolution", 100000, "--metrics", "psnr",
    )  # fmt: skip
    line = one_error_line(err)
    assert rc == 2 and "--resolution 100000" in line and "--batch-size 16" in line and "free on cpu" in line
    assert not (tmp_path / "ev" / "results.json").exists()


def test_evaluate_never_loses_computed_results(capsys, model_dir, photos, tmp_path, monkeypatch):
    """Writing the outputs fails after the work (disk full): they go to a fallback folder, and the
    message says where; a crash in the second resolution keeps the first one's results.json."""
    import json

    import transvae.evaluation.pipeline as pipeline
    from transvae.utils.files import DiskFullError

    out = tmp_path / "ev"
    real = pipeline.write_outputs

    def full_disk(out_dir, *a, **k):
        if out_dir == out:
            raise DiskFullError(
                28, f"disk full (No space left on device) while writing {out_dir}/report.html"
            )
        return real(out_dir, *a, **k)

    monkeypatch.setattr(pipeline, "write_outputs", full_disk)
    rc, stdout, err = cli(
        capsys, "evaluate", "--model", model_dir, "--data", photos, "--out", out,
        "--resolution", 32, "--metrics", "psnr", "--quiet", "--num-workers", 0,
    )  # fmt: skip
    line = one_error_line(err)
    assert rc == 1 and "disk full" in line and "the results were written to" in line
    fallback = Path(line.rsplit("written to ", 1)[1].split(" instead")[0])
    res = json.loads((fallback / "results.json").read_text())
    assert res["complete"] and res["results"][0]["num_images"] == 3
    monkeypatch.setattr(pipeline, "write_outputs", real)

    calls = []
    real_eval = pipeline.evaluate_resolution

    def crash_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(pipeline, "evaluate_resolution", crash_on_second)
    out2 = tmp_path / "ev2"
    rc, _, _ = cli(
        capsys, "evaluate", "--model", model_dir, "--data", photos, "--out", out2,
        "--resolution", 32, 48, "--metrics", "psnr", "--quiet", "--num-workers", 0,
    )  # fmt: skip
    assert rc == 130
    partial = json.loads((out2 / "results.json").read_text())
    assert partial["complete"] is False and [r["resolution"] for r in partial["results"]] == [32]


def test_evaluate_isolates_an_image_that_runs_out_of_memory(
    capsys, model_dir, tmp_path, monkeypatch, encoder_cls
):
    import json

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    for name in ("a", "c"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"{name}.png")
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(src / "b.png")
    forward = encoder_cls.forward

    def fake_forward(self, x):
        if not x.is_meta and bool((x == 1).all(dim=(1, 2, 3)).any()):
            torch.empty(1 << 44)
        return forward(self, x)

    monkeypatch.setattr(encoder_cls, "forward", fake_forward)
    out = tmp_path / "ev"
    rc, _, err = cli(
        capsys, "evaluate", "--model", model_dir, "--data", src, "--out", out, "--resolution", 32,
        "--metrics", "psnr", "--quiet", "--num-workers", 0, "--batch-size", 3,
    )  # fmt: skip
    failed = [ln for ln in err.splitlines() if "b.png" in ln]
    assert len(failed) == 1 and "out of memory" in failed[0] and rc == 1
    res = json.loads((out / "results.json").read_text())
    assert res["results"][0]["num_images"] == 2 and res["results"][0]["num_skipped"] == 1
    assert [p["path"] for p in res["per_image"]["32"]] == ["a.png", "c.png"]


# -- 4. bf16 / fp16 on a CPU without native support ---------------------------------------------
@pytest.mark.parametrize("cmd", ["reconstruct", "encode", "decode", "extract-latents", "evaluate"])
def test_reduced_precision_on_a_cpu_without_it_falls_back_to_fp32(
    capsys, model_dir, tmp_path, monkeypatch, latents, cmd
):
    import transvae.utils.device as device

    monkeypatch.setattr(device, "cpu_dtype_is_fast", lambda dtype: dtype == torch.float32)
    img_dir = tmp_path / "imgs" / "cls"
    img_dir.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        img_dir / "x.png"
    )
    src = latents / "good2.safetensors" if cmd == "decode" else img_dir.parent
    argv = {
        "evaluate": ["evaluate", "--data", src, "--resolution", 16, "--metrics", "psnr", "--quiet"],
        "extract-latents": ["extract-latents", src, "--resolution", 16],
    }.get(cmd, [cmd, src])
    common = [*argv, "--model", model_dir, "--num-workers", 0]
    for dtype in ("bf16", "fp16"):
        rc, _, err = cli(capsys, *common, "--out", tmp_path / f"o-{dtype}", "--dtype", dtype)
        warn = [ln for ln in err.splitlines() if "warning:" in ln]
        assert rc == 0 and len(warn) == 1, err
        assert (
            f"no native {dtype} arithmetic" in warn[0]
            and f"--force-{dtype}" in warn[0]
            and "using fp32" in warn[0]
        )
        if cmd == "evaluate":  # what really ran is recorded
            import json

            assert (
                json.loads((tmp_path / f"o-{dtype}" / "results.json").read_text())["run"]["dtype"]
                == "float32"
            )
    if cmd in ("reconstruct", "evaluate"):  # insisting keeps the requested dtype (same code in every command)
        rc, _, err = cli(capsys, *common, "--out", tmp_path / "forced", "--dtype", "bf16", "--force-bf16")
        assert rc == 0 and "no native" not in err


def test_runner_falls_back_to_fp32_unless_forced(model_dir, monkeypatch):
    import transvae.utils.device as device
    from transvae.inference import InferenceRunner

    monkeypatch.setattr(device, "cpu_dtype_is_fast", lambda dtype: dtype == torch.float32)
    model = transvae.from_pretrained(model_dir)
    with pytest.warns(RuntimeWarning, match="no native bf16 arithmetic"):
        assert InferenceRunner(model, dtype="bf16").dtype == torch.float32
    assert InferenceRunner(model, dtype="bf16", force_dtype=True).dtype == torch.bfloat16


def test_runner_refuses_nonfinite_or_integer_latents(model_dir):
    from transvae.inference import InferenceRunner

    runner = InferenceRunner(transvae.from_pretrained(model_dir))
    z = torch.zeros(1, 32, 2, 2)
    assert runner.decode(z).shape == (1, 3, 32, 32)
    z[0, 3, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        runner.decode(z)
    with pytest.raises(ValueError, match="floating point"):
        runner.decode(torch.zeros(1, 32, 2, 2, dtype=torch.int64))


def test_extract_latents_tells_which_scaling_to_pass_and_warns_about_no_flip(
    capsys, model_dir, tmp_path, random_photos
):
    import json

    data = random_photos(tmp_path / "data", n=3, size=(20, 24), seed=7)
    out = tmp_path / "lat"
    rc, stdout, err = cli(
        capsys, "extract-latents", data, "--model", model_dir, "--out", out, "--resolution", 16,
        "--no-flip", "--num-workers", 0,
    )  # fmt: skip
    assert rc == 0
    warn = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warn) == 1 and "latents_flip" in warn[0] and "LightningDiT" in warn[0]
    stats = json.loads((out / "latents_stats.json").read_text())
    assert json.loads((out / "manifest.json").read_text())["scaling"][
        "scaling_factor_no_shift"
    ] == pytest.approx(stats["scaling_factor_no_shift"])
    line = [ln for ln in stdout.splitlines() if "ignore shift_factor" in ln]
    assert len(line) == 1 and "DiT" in line[0] and "PixArt" in line[0]
    assert f"scaling_factor={stats['scaling_factor_no_shift']:.6g} (scaling_factor_no_shift)" in line[0]
    assert f"shift_factor={stats['shift_factor']:.6g}" in line[0]


def test_extract_latents_checks_memory_and_disk_before_work(capsys, model_dir, photos, tmp_path, monkeypatch):
    rc, _, err = cli(
        capsys,
        "extract-latents",
        photos,
        "--model",
        model_dir,
        "--out",
        tmp_path / "a",
        "--resolution",
        100000,
    )
    line = one_error_line(err)
    assert rc == 2 and "--resolution 100000 with --batch-size 32 needs about" in line
    import collections

    import transvae.utils.files as files

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 1000, 1000))
    # 3 images x 32 channels x 4 x 4 x 4 bytes x 2 (flip) = 12 KiB of shards; 1000 bytes free
    rc, _, err = cli(
        capsys, "extract-latents", photos, "--model", model_dir, "--out", tmp_path / "c", "--resolution", 64
    )
    line = one_error_line(err)
    assert rc == 2 and "disk full: not enough free space in --out" in line
    assert not list((tmp_path / "c").glob("*.safetensors"))

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

import transvae
from transvae.cli import main

NANO = "transvae-nano-f16d32"


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``transvae ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "nano"
    transvae.create_model(NANO).save_pretrained(d)
    return d


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

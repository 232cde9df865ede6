"""Command-line user errors: exit status 2, one ``error:`` line, no traceback, before any work.

Commands that are not installed yet are skipped (``importorskip`` on their module).
Dataset-wide commands skip and count bad images; single-image commands fail naming the file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transvae.cli import main

NANO = "transvae-nano-f16d32"


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``transvae ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The single ``error:`` line of stderr (progress bars and argparse usage may precede it)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / "good.png")
    return d


@pytest.fixture(scope="module")
def bad_image(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("bad") / "broken.jpg"
    p.write_bytes(b"<html>not an image</html>")
    return p


# -- top level ----------------------------------------------------------------------------------
def test_unknown_command_lists_commands(capsys):
    rc, _, err = cli(capsys, "trian")
    line = one_error_line(err)
    assert rc == 2 and "invalid choice: 'trian'" in line
    for cmd in ("list", "train", "evaluate", "reconstruct", "encode"):
        assert f"'{cmd}'" in line


def test_list_unknown_flag(capsys):
    rc, _, err = cli(capsys, "list", "--colour")
    assert rc == 2 and "unrecognized arguments: --colour" in one_error_line(err)


# -- train --------------------------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    """Any user error must be reported before the trainer is even constructed."""
    needs("transvae.cli.train")
    import transvae.training

    class Boom:
        def __init__(self, *a, **k):
            raise AssertionError("training work started despite a bad argument")

    monkeypatch.setattr(transvae.training, "Trainer", Boom)


def train_args(images: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--model", NANO, "--data", str(images), "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--resolution", "0"], ["resolution must be positive"]),
        (["--resolution", "-16"], ["resolution must be positive"]),
        (["--resolution", "abc"], ["--resolution: invalid int value: 'abc'"]),
        (["--optim.lr=abc"], ["'optim.lr' must be a number", "'abc'"]),
        (["--train.batch_size=1.5"], ["train.batch_size"]),
        (["--stage", "3"], ["invalid choice: 3"]),
        (["--stage", "2"], ["--stage 2 needs --init"]),
        (["--resume"], ["--resume: no checkpoint at"]),
        (["--config", "/nonexistent/recipe.yaml"], ["config file not found: /nonexistent/recipe.yaml"]),
    ],
)
def test_train_bad_arguments(capsys, images, tmp_path, no_training, extra, words):
    rc, _, err = cli(capsys, *train_args(images, tmp_path, *extra))
    line = one_error_line(err)
    assert rc == 2
    for w in words:
        assert w in line, line


def test_train_resolution_not_a_multiple_of_the_compression_ratio(capsys, images, tmp_path, no_training):
    rc, _, err = cli(capsys, *train_args(images, tmp_path, "--resolution", "250"))
    line = one_error_line(err)
    assert rc == 2 and "250" in line and "16" in line, line


def test_train_missing_loss_weights_offline_is_one_line(capsys, images, tmp_path, monkeypatch):
    needs("transvae.cli.train")
    import urllib.error

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    args = [*train_args(images, tmp_path, "--resolution", "32", "--max-steps", "1", "--workers", "0")]
    rc, _, err = cli(capsys, *args, "--loss.vf_weight=0", "--loss.gan_weight=0", "--log.tensorboard=false")
    line = one_error_line(err)
    assert rc == 2 and "loss.lpips_weights" in line


def test_train_unknown_model_lists_choices(capsys, images, tmp_path, no_training):
    rc, _, err = cli(capsys, "train", "--model", "nope", "--data", images, "--out", tmp_path / "run")
    line = one_error_line(err)
    assert rc == 2 and "unknown model 'nope'" in line
    assert NANO in line and "transvae-t-f16d32" in line


def test_train_missing_data_folder(capsys, tmp_path, no_training):
    missing = tmp_path / "no-such-folder"
    rc, _, err = cli(capsys, "train", "--model", NANO, "--data", missing, "--out", tmp_path / "run")
    assert rc == 2 and f"data path not found: {missing}" in one_error_line(err)


def test_train_unknown_key_lists_valid_keys(capsys, images, tmp_path, no_training):
    rc, _, err = cli(capsys, *train_args(images, tmp_path, "--optim.lrr=1e-4"))
    assert rc == 2 and "Traceback" not in err
    first = next(ln for ln in err.splitlines() if "error:" in ln)
    assert "unknown config key 'optim.lrr'" in first
    assert "optim.lr" in err and "train.max_steps" in err  # the valid keys are listed


def test_train_yaml_with_python_tag(capsys, images, tmp_path, no_training):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "PWNED"
    evil.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, _, err = cli(capsys, *train_args(images, tmp_path, "--config", str(evil)))
    line = one_error_line(err)
    assert rc == 2 and "is not valid YAML" in line and not marker.exists()


def test_train_skips_and_counts_bad_files_or_stops_with_strict(capsys, tmp_path):
    needs("transvae.cli.train")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    (data / "1_empty.png").write_bytes(b"")
    # 4 files, 2 steps of 2: one epoch, so the bad file is met whatever the order
    args = ["train", "--model", NANO, "--data", data, "--resolution", "32", "--batch-size", "2"]
    args += ["--max-steps", "2", "--workers", "0", "--loss.lpips_weight=0", "--loss.vf_weight=0"]
    args += ["--loss.gan_weight=0", "--log.tensorboard=false", "--log.progress=false"]
    rc, _, err = cli(capsys, *args, "--out", tmp_path / "strict", "--strict")
    line = one_error_line(err)
    assert rc == 2 and "1_empty.png" in line and "empty file" in line
    rc, out, err = cli(capsys, *args, "--out", tmp_path / "run")
    assert rc == 0 and "Traceback" not in err
    assert "1 bad files skipped" in out
    listed = (tmp_path / "run" / "bad_files.txt").read_text().splitlines()
    assert len(listed) == 1 and "1_empty.png" in listed[0] and "empty file" in listed[0]


# -- reconstruct / encode (single-image and folder commands) ------------------------------------
@pytest.mark.parametrize("cmd", ["reconstruct", "encode"])
def test_infer_unknown_model(capsys, images, tmp_path, cmd):
    needs("transvae.cli.infer")
    rc, _, err = cli(capsys, cmd, images / "good.png", "--model", "nope", "--out", tmp_path / "o")
    assert rc == 2 and "cannot load model 'nope'" in one_error_line(err)


@pytest.mark.parametrize("cmd", ["reconstruct", "encode"])
def test_infer_missing_input(capsys, model_dir, tmp_path, cmd):
    needs("transvae.cli.infer")
    missing = tmp_path / "missing.png"
    rc, _, err = cli(capsys, cmd, missing, "--model", model_dir, "--out", tmp_path / "o")
    assert rc == 2 and f"no such file or folder: {missing}" in one_error_line(err)


@pytest.mark.parametrize("cmd", ["reconstruct", "encode"])
def test_infer_single_bad_image_names_file_and_reason(capsys, model_dir, bad_image, tmp_path, cmd):
    needs("transvae.cli.infer")
    rc, out, err = cli(capsys, cmd, bad_image, "--model", model_dir, "--out", tmp_path / "o")
    line = one_error_line(err)
    assert rc == 2 and str(bad_image) in line and "not a recognised image" in line
    written = [p for p in (tmp_path / "o").rglob("*") if p.is_file()] if (tmp_path / "o").exists() else []
    assert written == []


def test_reconstruct_folder_skips_and_counts_bad_files(capsys, model_dir, images, bad_image, tmp_path):
    needs("transvae.cli.infer")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.png").write_bytes((images / "good.png").read_bytes())
    (mixed / "broken.jpg").write_bytes(bad_image.read_bytes())
    rc, out, err = cli(capsys, "reconstruct", mixed, "--model", model_dir, "--out", tmp_path / "o")
    assert "Traceback" not in err
    assert rc != 0  # some inputs failed: non-zero, but the good ones were written
    assert "wrote 1 file(s)" in out and "skipped 1" in out
    assert "broken.jpg" in err
    assert (tmp_path / "o" / "good.png").is_file()
    rc, out, err = cli(
        capsys, "reconstruct", mixed, "--model", model_dir, "--out", tmp_path / "s", "--strict"
    )
    line = one_error_line(err)
    assert rc == 2 and "broken.jpg" in line and "not a recognised image" in line


def test_infer_bad_runtime_options(capsys, model_dir, images, tmp_path):
    needs("transvae.cli.infer")
    img = images / "good.png"
    rc, _, err = cli(
        capsys, "reconstruct", img, "--model", model_dir, "--out", tmp_path / "o", "--dtype", "fp8"
    )
    assert rc == 2 and "invalid choice: 'fp8'" in one_error_line(err)
    rc, _, err = cli(
        capsys, "reconstruct", img, "--model", model_dir, "--out", tmp_path / "o", "--batch-size", "0"
    )
    assert rc == 2 and "--batch-size must be >= 1" in one_error_line(err)
    for bad in ("-1", "lots"):
        rc, _, err = cli(
            capsys, "reconstruct", img, "--model", model_dir, "--out", tmp_path / "o", "--max-pixels", bad
        )
        assert rc == 2 and f"expected 'auto' or a pixel count >= 0, got '{bad}'" in one_error_line(err)
    if not torch.cuda.is_available():
        rc, _, err = cli(
            capsys, "reconstruct", img, "--model", model_dir, "--out", tmp_path / "o", "--device", "cuda"
        )
        assert rc == 2 and "CUDA is not available" in one_error_line(err)


def test_infer_model_folder_with_only_a_pickle(capsys, model_dir, images, tmp_path):
    needs("transvae.cli.infer")
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")
    rc, _, err = cli(capsys, "encode", images / "good.png", "--model", d, "--out", tmp_path / "o")
    line = one_error_line(err)
    assert rc == 2 and "has no model.safetensors" in line and "pytorch_model.bin is never loaded" in line


# -- evaluate -----------------------------------------------------------------------------------
def test_evaluate_bad_arguments(capsys, model_dir, images, tmp_path):
    needs("transvae.cli.evaluate")
    out = tmp_path / "ev"
    rc, _, err = cli(capsys, "evaluate", "--model", "nope", "--data", images, "--out", out)
    assert rc == 2 and "cannot load model 'nope'" in one_error_line(err)
    rc, _, err = cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "missing", "--out", out)
    assert rc == 2 and "missing" in one_error_line(err)
    rc, _, err = cli(
        capsys, "evaluate", "--model", model_dir, "--data", images, "--out", out, "--resolution", "0"
    )
    assert rc == 2 and "--resolution" in one_error_line(err)
    rc, _, err = cli(
        capsys, "evaluate", "--model", model_dir, "--data", images, "--out", out, "--resolution", "100"
    )
    assert rc == 2 and "not a multiple" in one_error_line(err)


def test_evaluate_with_no_readable_image_fails(capsys, model_dir, bad_image, tmp_path):
    needs("transvae.cli.evaluate")
    rc, _, err = cli(
        capsys,
        "evaluate",
        "--model",
        model_dir,
        "--data",
        bad_image,
        "--out",
        tmp_path / "ev",
        "--resolution",
        "32",
        "--metrics",
        "psnr",
        "--num-workers",
        "0",
        "--quiet",
    )
    assert rc == 1 and "no image could be evaluated" in err and "Traceback" not in err

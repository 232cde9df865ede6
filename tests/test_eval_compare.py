"""``transvae evaluate --model A --model B``: one comparison, a row per tokenizer (offline)."""

from __future__ import annotations

import json

import pytest
import skimage.data
import torch
from PIL import Image

import transvae
from transvae.cli import main
from transvae.evaluation.compare import model_labels


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    data = root / "data"
    data.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((40, 36)).save(
            data / f"{name}.png"
        )
    models = []
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        path = root / "runs" / name / "model"
        transvae.create_model("transvae-nano-f16d32").save_pretrained(path)
        models.append(path)
    return data, models


def test_labels_are_short_distinct_and_safe():
    assert model_labels(["runs/a/model", "runs/b/model/", "org/sd-vae-ft-mse", "x/sd-vae-ft-mse", "../we ird"]) == [
        "a-model", "b-model", "sd-vae-ft-mse", "sd-vae-ft-mse-2", "we_ird",
    ]  # fmt: skip


def test_compare_two_models_one_report(setup, tmp_path, capsys):
    data, (a, b) = setup
    common = [
        "--data",
        str(data),
        "--resolution",
        "32",
        "--metrics",
        "psnr",
        "ssim",
        "--quiet",
        "--batch-size",
        "2",
    ]
    assert (
        main(["evaluate", "--model", str(a), "--model", str(b), "--out", str(tmp_path / "cmp"), *common]) == 0
    )
    assert main(["evaluate", "--model", str(a), "--out", str(tmp_path / "one"), *common]) == 0
    out = tmp_path / "cmp"
    cmp = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in cmp["rows"]] == ["a-model", "b-model"]
    alone = json.loads((tmp_path / "one" / "results.json").read_text())["results"][0]
    row_a, row_b = cmp["rows"]
    assert row_a["psnr"] == pytest.approx(alone["psnr"], abs=1e-9)  # the same evaluation as alone
    assert row_a["psnr"] != row_b["psnr"]  # two different models
    assert row_a["latent_shape"] == [32, 2, 2] and row_a["images_per_second"] > 0
    for name, path in (("a-model", a), ("b-model", b)):  # each model's own report, with its own path
        assert json.loads((out / name / "results.json").read_text())["model"]["path"] == str(path)
    html = (out / "comparison.html").read_text()
    assert html.count("<img") == 4 * 3  # 4 images: the input and both reconstructions
    assert "a-model" in html and "b-model" in html
    md = (out / "comparison.md").read_text()
    assert "| a-model | 32 |" in md and "| b-model | 32 |" in md
    assert "| a-model | 32 |" in capsys.readouterr().out


def test_a_bad_second_model_fails_before_any_evaluation(setup, tmp_path, capsys):
    data, (a, _) = setup
    out = tmp_path / "cmp"
    rc = main(["evaluate", "--model", str(a), "--model", str(tmp_path / "missing"), "--data", str(data),
               "--out", str(out), "--metrics", "psnr", "--resolution", "32", "--quiet"])  # fmt: skip
    assert rc == 2
    assert "cannot load model" in capsys.readouterr().err
    assert not (out / "a-model").exists()

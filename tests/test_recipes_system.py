"""The shipped recipes, run as users run them (issue 16): every ``configs/*.yaml`` pair, changed
only in model (a nano/mini member), data (a few scikit-image photos), size and step count, under
``torchrun --nproc_per_node 2`` (gloo, CPU):

    stage 1 -> stage 2 with --init -> transvae evaluate -> transvae extract-latents -> transvae reconstruct

LPIPS and DINOv2 are replaced by small randomly initialised networks of the same interfaces
through config options (``loss.pretrained=false``, ``loss.lpips_net=alex``,
``loss.dino_model=vit_tiny_patch16_224``), so the LPIPS, VF and GAN terms really run on the
DDP path. The Tiny chain is in the default suite; the other variants and the FSDP chain are slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transvae
from transvae.cli import main
from transvae.training import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAND_INS = ["--loss.pretrained=false", "--loss.lpips_net=alex", "--loss.dino_model=vit_tiny_patch16_224"]
SLOW = pytest.mark.slow
VARIANTS = [
    pytest.param("transvae-t-f16d32", "transvae-nano-f16d32", "ddp", id="t"),
    pytest.param("transvae-t-f16d32", "transvae-nano-f16d32", "fsdp", id="t-fsdp", marks=SLOW),
    pytest.param("transvae-b-f16d32", "transvae-nano-f16d32", "ddp", id="b", marks=SLOW),
    pytest.param("transvae-l-f16d32", "transvae-nano-f16d32", "ddp", id="l", marks=SLOW),
    pytest.param("transvae-h-f16d32", "transvae-nano-f16d32", "ddp", id="h", marks=SLOW),
    pytest.param("transvae-g-f16d32", "transvae-nano-f16d32", "ddp", id="g", marks=SLOW),
    pytest.param("transvae-l-f8d16", "transvae-mini-f8d16", "ddp", id="l-f8d16", marks=SLOW),
]


# gen-train recipes (paper Section 4.3): run with a nano generator on nano-tokenizer latents
GEN_RECIPES = [
    pytest.param("lightningdit-cpu-quick", id="gen-cpu-quick"),
    pytest.param("lightningdit-b-2-f8d16", id="gen-b2", marks=SLOW),
    pytest.param("lightningdit-b-1-f16d32", id="gen-b1", marks=SLOW),
    pytest.param("lightningdit-xl-1-f16d32", id="gen-xl1", marks=SLOW),
]


def test_every_recipe_is_covered():
    recipes = {p.name for p in CONFIGS.glob("*.yaml")}
    covered = {f"{v.values[0]}-stage{s}.yaml" for v in VARIANTS for s in (1, 2)}
    covered |= {f"{v.values[0]}.yaml" for v in GEN_RECIPES}
    covered |= {"finetune-decoder.yaml", "finetune-full.yaml"}  # run as shipped in test_finetune.py
    assert recipes == covered


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six scikit-image photos, resized to non-square sizes (the crop protocol matters)."""
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(
        ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
    ):
        im = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3])
        im.resize((48 + 8 * (i % 3), 40 + 4 * i), Image.BICUBIC).save(d / f"{name}.png")
    return d


def torchrun(*args: str) -> None:
    """``torchrun --standalone --nproc_per_node 2 -m transvae.cli ARGS`` (gloo on CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "-m", "transvae.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def metrics(run: Path) -> list[dict]:
    """The training rows of ``metrics.jsonl`` (validation rows left out)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss/total" in r]


@pytest.mark.parametrize("recipe, model, distributed", VARIANTS)
def test_recipe_chain(recipe, model, distributed, photos, tmp_path, capsys):
    common = ["--model", model, "--data", str(photos), "--val-data", str(photos)]
    common += ["--resolution", "32", "--batch-size", "4", "--max-steps", "2", *STAND_INS]
    if distributed == "fsdp":
        common += ["--train.distributed=fsdp", "--train.ema=false"]  # FSDP has no EMA yet
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"

    torchrun("train", "--config", str(CONFIGS / f"{recipe}-stage1.yaml"), *common, "--out", str(s1))
    logged = metrics(s1)[-1]
    assert logged["step"] == 2 and logged["loss/lpips"] != 0 and logged["loss/w_vf_adaptive"] > 0
    assert not any(k.startswith("disc/") or "gan" in k for k in logged)  # stage 1: no GAN
    ck = load_checkpoint(s1 / "checkpoints" / "last.pt")
    assert "disc" not in ck["optimizers"] and not any(k.startswith("discriminator.") for k in ck["loss"])
    assert any(k.startswith("vf.proj.") for k in ck["loss"])  # the VF projection was trained and saved
    assert ck["config"]["loss"]["gan_weight"] == 0.1  # the recipe itself was not changed

    torchrun(
        "train",
        "--config",
        str(CONFIGS / f"{recipe}-stage2.yaml"),
        *common,
        "--init",
        str(s1 / "model"),
        "--out",
        str(s2),
    )
    logged = metrics(s2)[-1]
    assert (
        logged["disc/d_loss"] > 0 and logged["loss/w_gan_adaptive"] > 0 and logged["train/disc_grad_norm"] > 0
    )
    before, after = transvae.from_pretrained(s1 / "model"), transvae.from_pretrained(s2)
    enc = [k for k in before.state_dict() if k.startswith("encoder.")]
    dec = [k for k in before.state_dict() if k.startswith("decoder.")]
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in enc)  # stage 2 freezes the encoder
    assert not all(torch.equal(b[k], a[k]) for k in dec)
    final_val = json.loads((s2 / "summary.json").read_text())["history"][-1]

    assert main(["evaluate", "--model", str(s2), "--data", str(photos), "--out", str(tmp_path / "eval"),
                 "--resolution", "32", "--metrics", "psnr", "ssim", "--quiet"]) == 0  # fmt: skip
    (res,) = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert res["num_images"] == 6 and res["num_skipped"] == 0
    # one resize/crop protocol and one metric: `evaluate` reproduces training's last validation
    assert res["psnr"] == pytest.approx(final_val["val/psnr"], abs=1e-4)
    assert res["ssim"] == pytest.approx(final_val["val/ssim"], abs=1e-4)

    assert main(["extract-latents", str(photos), "--model", str(s2), "--out", str(tmp_path / "lat"),
                 "--resolution", "32"]) == 0  # fmt: skip
    manifest = json.loads((tmp_path / "lat" / "manifest.json").read_text())
    assert manifest["num_latents"] == 6 and manifest["complete"]
    from safetensors.torch import load_file

    lat = load_file(tmp_path / "lat" / manifest["shards"][0]["file"])
    assert lat["latents"].shape == (6, after.latent_channels, *(32 // after.spatial_compression_ratio,) * 2)
    assert torch.isfinite(lat["latents"]).all() and lat["latents"].std() > 0

    assert main(["reconstruct", str(photos), "--model", str(s2), "--out", str(tmp_path / "rec")]) == 0
    outs = sorted(p.name for p in (tmp_path / "rec").glob("*.png"))
    assert outs == sorted(p.name for p in photos.glob("*.png"))
    capsys.readouterr()


@pytest.mark.parametrize("recipe", GEN_RECIPES)
def test_generation_recipe_chain(recipe, photos, tmp_path, capsys):
    """extract-latents -> gen-train (the recipe, torchrun x 2) -> gen-sample -> gen-eval latent-fd."""
    vae = tmp_path / "vae"
    transvae.create_model("transvae-nano-f16d32").save_pretrained(vae)
    for split in ("train", "held"):
        assert main(["extract-latents", str(photos), "--model", str(vae), "--out", str(tmp_path / split),
                     "--resolution", "64"]) == 0  # fmt: skip
    run = tmp_path / "gen"
    torchrun("gen-train", "--config", str(CONFIGS / f"{recipe}.yaml"), "--model", "lightningdit-nano-1",
             "--latents", str(tmp_path / "train"), "--val-latents", str(tmp_path / "held"), "--out", str(run),
             "--batch-size", "4", "--max-steps", "2", "--workers", "0", "--device", "cpu",
             "--log.val_every=2", "--sample.val_num=32", "--sample.val_steps=2")  # fmt: skip
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["step"] == 2 and ck["world_size"] == 2
    import yaml

    saved, shipped = ck["config"], yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text())
    for section in ("optim", "flow"):  # the recipe's own numbers reached the run untouched
        assert all(saved[section][k] == pytest.approx(v) for k, v in shipped[section].items()), section
    hist = json.loads((run / "summary.json").read_text())["history"]
    assert [h["step"] for h in hist] == [0, 2] and all(h["val/flow_loss"] > 0 for h in hist)
    assert main(["gen-sample", "--run", str(run), "--vae", str(vae), "--num", "36", "--steps", "2",
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert main(["gen-eval", "--samples", str(tmp_path / "s"), "--reference-latents", str(tmp_path / "held"),
                 "--out", str(tmp_path / "e"), "--metrics", "latent-fd", "--latent-fd-patch", "1"]) == 0  # fmt: skip
    res = json.loads((tmp_path / "e" / "results.json").read_text())["results"]
    assert res["latent_fd"] > 0 and res["latent_fd_latents"] == {"samples": 36, "reference": 6}
    capsys.readouterr()

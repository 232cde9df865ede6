"""Fine-tuning a tokenizer without breaking its latent space (issue 23), with the shipped recipes
``configs/finetune-decoder.yaml`` and ``configs/finetune-full.yaml`` changed only in data, size,
steps, LR and the LPIPS stand-in (``transvae.training.tasks.finetune``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import transvae
from transvae.cli import main
from transvae.training import load_checkpoint
from transvae.training.tasks.finetune import TRAINING_STATE_NAME, anchor_loss, load_training_state

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHRINK = ["--resolution", "32", "--batch-size", "2", "--workers", "0", "--log.progress=false"]
SHRINK += [
    "--log.tensorboard=false",
    "--loss.lpips_weight=0",
    "--optim.warmup_steps=0",
    "--data.val_images=0",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, class_photos):
    """Photos (train and held-out) and a tokenizer trained briefly on other data: 'the one users run'."""
    root = tmp_path_factory.mktemp("ft")
    train = class_photos(root / "train", n_per_class=4, size=48)
    val = class_photos(root / "val", n_per_class=2, size=40)
    torch.manual_seed(0)
    transvae.create_model("cnn-vae-nano-f16d32").save_pretrained(root / "tokenizer")
    return root, train, val


def history(run: Path) -> list[dict]:
    return json.loads((run / "summary.json").read_text())["history"]


def finetune(setup, recipe: str, out: Path, *extra: str, init: Path | None = None) -> int:
    root, train, val = setup
    argv = ["train", "--config", str(CONFIGS / recipe), "--init", str(init or root / "tokenizer")]
    argv += ["--data", str(train), "--val-data", str(val), "--out", str(out), *SHRINK, *extra]
    return main(argv)


def test_a_decoder_fine_tune_leaves_the_latents_exactly_unchanged(setup, tmp_path):
    root = setup[0]
    run = tmp_path / "dec"
    extra = ["--max-steps", "6", "--optim.lr=2e-3", "--loss.disc_ndf=8", "--log.val_every=3"]
    assert finetune(setup, "finetune-decoder.yaml", run, *extra) == 0
    h = history(run)
    assert [x["step"] for x in h] == [0, 3, 6]
    assert all(x["val/drift_rel_l2"] == 0.0 and x["val/drift_cos"] == pytest.approx(1.0) for x in h)
    assert h[-1]["val/psnr"] != h[0]["val/psnr"]  # the decoder did learn
    before, after = transvae.from_pretrained(root / "tokenizer"), transvae.from_pretrained(run)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(before.encode(x).mean, after.encode(x).mean)  # every latent identical
    state = load_training_state(run / "model")
    assert state["discriminator"] and state["online"]  # saved for a later fine-tune


def test_a_decoder_fine_tune_continues_the_adversarial_game_of_its_folder(setup, tmp_path):
    first = tmp_path / "first"
    extra = ["--max-steps", "2", "--optim.lr=2e-3", "--loss.disc_ndf=8"]
    assert finetune(setup, "finetune-decoder.yaml", first, *extra) == 0
    saved = load_training_state(first / "model")
    second = tmp_path / "second"
    assert (
        finetune(setup, "finetune-decoder.yaml", second, *extra, "--max-steps", "0", init=first / "model")
        == 0
    )
    ck = load_checkpoint(second / "checkpoints" / "last.pt")
    disc = {
        k.removeprefix("discriminator."): v for k, v in ck["loss"].items() if k.startswith("discriminator.")
    }
    assert all(torch.equal(disc[k], v) for k, v in saved["discriminator"].items())  # not a fresh one
    published = transvae.from_pretrained(first).state_dict()
    assert all(torch.equal(ck["ema"]["weights"][k], v) for k, v in published.items())  # the EMA goes on
    online_dec = {k: v for k, v in saved["online"].items() if k.startswith("decoder.")}
    assert all(torch.equal(ck["model"][k], v) for k, v in online_dec.items())
    enc = [k for k in published if k.startswith("encoder.")]
    assert all(torch.equal(ck["model"][k], published[k]) for k in enc)  # the published latent space


def test_a_full_fine_tune_logs_drift_anchors_it_and_stops_past_the_limit(setup, tmp_path, capsys):
    run = tmp_path / "full"
    extra = ["--max-steps", "4", "--optim.lr=2e-3", "--log.val_every=2", "--train.max_latent_drift=10"]
    assert finetune(setup, "finetune-full.yaml", run, *extra) == 0
    h = history(run)
    assert h[0]["val/drift_rel_l2"] == 0.0 and h[-1]["val/drift_rel_l2"] > 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/anchor" in x for x in logged)
    assert "reference_encoder" in load_checkpoint(run / "checkpoints" / "last.pt")  # resumable
    # a limit the drift passes: one line, exit 2, the last checkpoint within the limit kept
    capsys.readouterr()
    tight = tmp_path / "tight"
    rc = finetune(setup, "finetune-full.yaml", tight, "--max-steps", "4", "--optim.lr=2e-2", "--log.val_every=2",
                  "--train.max_latent_drift=1e-6", "--train.checkpoint_every=2")  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "latent drift" in err[-1] and "train.max_latent_drift" in err[-1]


def test_the_anchor_holds_latents_closer_than_no_anchor(setup, tmp_path):
    common = ["--max-steps", "6", "--optim.lr=5e-3", "--log.val_every=6", "--train.max_latent_drift=0"]
    assert finetune(setup, "finetune-full.yaml", tmp_path / "a", *common, "--loss.anchor_weight=10") == 0
    assert finetune(setup, "finetune-full.yaml", tmp_path / "b", *common, "--loss.anchor_weight=0") == 0
    anchored, free = history(tmp_path / "a")[-1], history(tmp_path / "b")[-1]
    assert anchored["val/drift_rel_l2"] < free["val/drift_rel_l2"]


def test_anchor_loss_is_the_relative_squared_distance():
    mean0 = torch.tensor([[3.0, 4.0]]).view(1, 2, 1, 1)
    assert anchor_loss(mean0, mean0) == 0
    assert anchor_loss(mean0 * 0, mean0) == pytest.approx(1.0)
    assert anchor_loss(mean0 + torch.tensor([0.0, 5.0]).view(1, 2, 1, 1), mean0) == pytest.approx(25 / 25)


def test_an_anchor_without_a_starting_tokenizer_is_one_line(setup, tmp_path, capsys):
    root, train, _ = setup
    rc = main(["train", "--config", str(CONFIGS / "finetune-full.yaml"), "--model", "cnn-vae-nano-f16d32",
               "--data", str(train), "--out", str(tmp_path / "x"), *SHRINK])  # fmt: skip
    assert rc == 2 and "loss.anchor_weight" in capsys.readouterr().err


def test_the_training_state_is_ignored_by_from_pretrained(setup, tmp_path):
    run = tmp_path / "dec"
    assert finetune(setup, "finetune-decoder.yaml", run, "--max-steps", "1", "--loss.disc_ndf=8") == 0
    assert (run / "model" / TRAINING_STATE_NAME).is_file()
    assert transvae.from_pretrained(run).kind == "tokenizer"

"""``transvae gen-train`` as shipped: a task of the training engine (nano tokenizer and generator, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import transvae
from transvae.cli import main
from transvae.inference import InferenceRunner, extract_latents
from transvae.inference.generate import load_generator
from transvae.training import load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def latents(tmp_path_factory, class_photos, save_nano_tokenizer):
    base = tmp_path_factory.mktemp("gentrain")
    vae = save_nano_tokenizer(base / "vae")
    runner = InferenceRunner(transvae.from_pretrained(vae))
    extract_latents(class_photos(base / "photos"), runner, base / "train", resolution=64, progress=False)
    extract_latents(
        class_photos(base / "held", size=80), runner, base / "held", resolution=64, progress=False
    )
    return base


def _train(latents, out, *extra):
    return main(
        ["gen-train", "--latents", str(latents / "train"), "--val-latents", str(latents / "held")]
        + ["--model", "lightningdit-nano-1", "--out", str(out), "--batch-size", "4", "--workers", "0"]
        + ["--device", "cpu", "--log.progress=false", "--log.tensorboard=false", "--log.every=1"]
        + ["--log.val_every=2", "--train.checkpoint_every=2", "--sample.val_num=16", "--sample.val_steps=2"]
        + ["--optim.lr=1e-3", *extra]
    )


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gen_train_runs_exports_and_resumes_bit_identically(latents, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(latents, straight, "--max-steps", "4") == 0
    out = capsys.readouterr().out
    assert "finished at step 4" in out and "latent FD" in out
    assert _train(latents, split, "--max-steps", "2") == 0
    assert _train(latents, split, "--max-steps", "4", "--resume") == 0
    a, b = load_checkpoint(straight / "checkpoints/last.pt"), load_checkpoint(split / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 4 and a["data_pos"] == b["data_pos"]
    assert _same(a["model"], b["model"]) and _same(a["ema"]["weights"], b["ema"]["weights"])
    adam_a, adam_b = a["optimizers"]["main"]["optimizer"], b["optimizers"]["main"]["optimizer"]
    assert torch.equal(adam_a["state"][0]["exp_avg"], adam_b["state"][0]["exp_avg"])
    # the paper's optimiser: AdamW betas (0.9, 0.95), constant 2e-4 unless overridden (1e-3 here)
    assert adam_a["param_groups"][0]["betas"] == (0.9, 0.95) and adam_a["param_groups"][0]["lr"] == 1e-3
    # training moved the weights; model/ holds the EMA weights and the latent statistics
    model = load_generator(straight)
    meta = model.metadata
    assert _same(model.state_dict(), a["ema"]["weights"])
    assert meta["step"] == 4 and meta["latent_shape"] == [32, 4, 4] and meta["classes"] == ["a", "b"]
    stats = torch.load(latents / "train" / "latents_stats.pt", weights_only=True)
    assert meta["latent_stats"]["mean"] == pytest.approx(stats["mean"].flatten().tolist())
    assert meta["tokenizer"]["model_name"] == "transvae-nano-f16d32"
    # gen-sample --step: the EMA weights of a kept snapshot
    early = load_generator(straight, step=2)
    meta2 = early.metadata
    snap = load_checkpoint(straight / "checkpoints" / "step_00000002.pt")
    assert _same(early.state_dict(), snap["ema"]["weights"]) and meta2["step"] == 2
    assert not _same(early.state_dict(), model.state_dict())
    with pytest.raises(FileNotFoundError, match=r"steps kept: \[2, 4\]"):
        load_generator(straight, step=3)
    summary = json.loads((straight / "summary.json").read_text())
    steps = [h["step"] for h in summary["history"]]
    assert steps == [0, 2, 4] and all(
        "val/latent_fd" in h and "val/flow_loss" in h for h in summary["history"]
    )
    assert summary["history"] == json.loads((split / "summary.json").read_text())["history"]


def test_gen_train_cli_errors_are_one_line(latents, tmp_path, capsys):
    def err(*args, one_line=True) -> str:
        assert main(["gen-train", *args]) == 2
        e = capsys.readouterr().err
        assert len(e.strip().splitlines()) == 1 or not one_line, e
        return e

    out = str(tmp_path / "r")
    assert "unknown generator" in err(
        "--latents", str(latents / "train"), "--model", "lightningdit-q-9", "--out", out
    )
    assert "no such folder" in err(
        "--latents", str(tmp_path / "none"), "--model", "lightningdit-nano-1", "--out", out
    )
    assert "--resume" in err("--out", out, "--resume")
    e = err(
        "--latents",
        str(latents / "train"),
        "--model",
        "lightningdit-nano-1",
        "--out",
        out,
        "--optim.lrr=1",
        one_line=False,
    )
    assert e.startswith(
        "transvae gen-train: error: unknown config key 'optim.lrr'; valid keys:"
    )  # then the list
    assert "class_dropout" in err(
        "--latents", str(latents / "train"), "--model", "lightningdit-nano-1", "--out", out,
        "--model.class_dropout=0", "--sample.cfg_scale=2",
    )  # fmt: skip
    assert not Path(out).exists()  # nothing was started


def test_gen_train_refuses_a_batch_that_cannot_fit_before_work(latents, tmp_path, capsys, monkeypatch):
    from transvae.training.tasks import generator as gen_task

    monkeypatch.setattr(gen_task, "available_bytes", lambda device: 64 << 20)  # 64 MiB "free"
    out = tmp_path / "big"
    assert _train(latents, out, "--max-steps", "1", "--batch-size", "4096") == 2
    e = capsys.readouterr().err.strip()
    assert len(e.splitlines()) == 1 and "batch 4096 per process needs about" in e and "activations" in e
    assert "64.0 MiB is free" in e and "--batch-size" in e
    assert not (out / "checkpoints").exists()


def test_recipes_parse_and_hold_the_paper_numbers():
    from transvae.training.config import GenConfig

    for name, model, steps in [
        ("lightningdit-b-2-f8d16", "lightningdit-b-2", 200_000),
        ("lightningdit-b-1-f16d32", "lightningdit-b-1", 200_000),
        ("lightningdit-xl-1-f16d32", "lightningdit-xl-1", 100_000),
    ]:
        cfg = GenConfig.build(CONFIGS / f"{name}.yaml")
        assert cfg.model.name == model and cfg.train.max_steps == steps
        assert cfg.train.batch_size == 1024 and cfg.optim.lr == 2e-4 and cfg.optim.betas == (0.9, 0.95)
        assert cfg.optim.warmup_steps == 0 and cfg.flow.logit_normal and cfg.flow.cosine_loss
        assert cfg.sample.shift == 0.3 and cfg.sample.cfg_interval_start == 0.11
        assert cfg.sample.cfg_channels == 3  # guided sampling as LightningDiT's forward_with_cfg
    quick = GenConfig.build(CONFIGS / "lightningdit-cpu-quick.yaml")
    assert quick.model.name == "lightningdit-mini-1" and quick.train.device == "cpu"
    assert quick.train.max_steps == 2000 and quick.train.batch_size == 16  # as docs/generation.md says
    assert quick.sample.cfg_channels == "all"
    assert GenConfig.build(extra=["--sample.cfg_channels=all"]).sample.cfg_channels == "all"
    for bad in ("0", "first", "true", "2.5"):
        with pytest.raises(ValueError, match="cfg_channels"):
            GenConfig.build(extra=[f"--sample.cfg_channels={bad}"])


@pytest.mark.slow
def test_torchrun_two_processes_gloo(latents, tmp_path):
    """The DDP path as users run it: ``torchrun --nproc_per_node 2 --no-python transvae gen-train``."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", "transvae", "gen-train"]
    cmd += ["--latents", str(latents / "train"), "--val-latents", str(latents / "held"), "--out", str(out)]
    cmd += ["--model", "lightningdit-nano-1", "--batch-size", "4", "--max-steps", "3", "--workers", "0"]
    cmd += ["--device", "cpu", "--log.progress=false", "--log.tensorboard=false", "--log.val_every=3"]
    cmd += ["--sample.val_num=16", "--sample.val_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(transvae.__file__).parents[1])}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert ck["step"] == 3 and ck["world_size"] == 2 and len(ck["rng"]) == 2
    hist = json.loads((out / "summary.json").read_text())["history"]
    assert [h["step"] for h in hist] == [0, 3] and all(h["val/latent_fd"] > 0 for h in hist)
    # each rank drew its own half of the global batch of 4: the data position moved 3 batches of 2
    assert ck["data_pos"][1] == 3

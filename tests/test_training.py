"""The training engine: config, exact resume, stage 2, faults (NaN, SIGTERM, disk), CLI errors.

All runs use transvae-nano-f16d32 on generated 32x32 crops, L1 + KL only (no downloads).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transvae
from transvae.cli import main
from transvae.training import CheckpointError, Trainer, TrainingError, build_config, load_checkpoint
from transvae.training.config import TrainConfig, TrainConfigError, parse_override
from transvae.utils.files import check_writable

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        # smooth gradients + noise, 40x48: the crops differ and are learnable
        yy, xx = np.mgrid[0:40, 0:48]
        base = np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1) + rng.integers(0, 60, (40, 48, 3))
        Image.fromarray(np.clip(base + 20 * i, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return d


def cfg_for(images: Path, **kw):
    values = {
        "model.name": "transvae-nano-f16d32",
        "data.train": [str(images)],
        "data.resolution": 32,
        "data.num_workers": 0,
        "train.batch_size": 2,
        "train.max_steps": 2,
        "train.checkpoint_every": 1,
        "optim.warmup_steps": 2,
        "optim.lr": 1e-3,
        "log.every": 1,
        "log.image_every": 1000,
        "log.val_every": 1000,
        "log.grid_images": 2,
        "log.progress": False,
        "log.tensorboard": False,
        "loss.lpips_weight": 0.0,
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
    }
    values.update(kw)
    return build_config(overrides=values)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_run(images, tmp_path_factory):
    """2 steps without interruption: the reference for the resume and SIGTERM tests."""
    run = tmp_path_factory.mktemp("straight")
    tr = Trainer(cfg_for(images), run)
    summary = tr.fit()
    return run, tr, summary


# -- config ------------------------------------------------------------------------------------
def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(TrainConfigError, match=r"(?s)unknown config key 'optim\.lrr'.*optim\.lr \(float"):
        build_config(extra=["--optim.lrr=1"])
    with pytest.raises(TrainConfigError, match="must be a number"):
        build_config(extra=["--optim.lr=fast"])
    with pytest.raises(TrainConfigError, match="must be an integer"):
        build_config(extra=["--train.max_steps=1.5"])
    with pytest.raises(TrainConfigError, match="unknown config section"):
        TrainConfig.from_dict({"optimizer": {"lr": 1}})
    with pytest.raises(TrainConfigError, match="loss.kl_weight must be a finite number >= 0"):
        build_config(extra=["--loss.kl_weight=-1"])
    with pytest.raises(TrainConfigError, match="data.cache_mb must be >= 0"):
        build_config(extra=["--data.cache_mb=-1"])
    with pytest.raises(TrainConfigError, match="data.cache_mb caches image folders"):
        build_config(extra=["--data.cache_mb=64", "--data.train=[shards-{000..009}.tar]"])
    assert parse_override("--optim.lr=1e-4") == ("optim.lr", 1e-4)
    cfg = build_config(
        extra=["--data.buckets=256x256,192x320", "--train.ema=false", "--optim.betas=[0.9,0.99]"]
    )
    assert (
        cfg.data.buckets == ("256x256", "192x320")
        and cfg.train.ema is False
        and cfg.optim.betas == (0.9, 0.99)
    )


def test_logvar_init_starts_a_fresh_model_s_posterior_there(images, tmp_path):
    """model.logvar_init sets the log-variance bias of a model trained from scratch (one step of
    AdamW at LR 1e-3 moves it by ~1e-3); without it the bias keeps the usual init, |b| < 1."""
    c = transvae.create_model("transvae-nano-f16d32").latent_channels
    for value, name in ((-10.0, "set"), (None, "usual")):
        kw = {"train.max_steps": 1, "model.logvar_init": value, "train.ema": False}
        Trainer(cfg_for(images, **kw), tmp_path / name).fit()
        bias = transvae.from_pretrained(tmp_path / name / "model").encoder.conv_out.bias[c:]
        if value is None:
            assert bias.abs().max() < 1
        else:
            assert torch.allclose(bias, torch.full_like(bias, value), atol=5e-3)
    with pytest.raises(TrainConfigError, match="model.logvar_init initialises a model trained from scratch"):
        build_config(extra=["--model.logvar_init=-10", f"--model.init={tmp_path / 'set' / 'model'}"])
    with pytest.raises(TrainConfigError, match=r"model.logvar_init must be within \[-30, 20\]"):
        build_config(extra=["--model.logvar_init=-40"])


def test_lr_schedule_warms_up_then_stays_constant_or_decays_to_its_floor(images, tmp_path):
    from transvae.training.optim import WarmupDecay

    const = WarmupDecay(4)
    assert [const(s) for s in (0, 3, 4, 10_000)] == [0.25, 1.0, 1.0, 1.0]
    cos = WarmupDecay(4, "cosine", total=104, floor=0.1)
    assert cos(3) == 1.0 and cos(4) == 1.0 and cos(104) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    assert cos(54) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos(pi / 2) = 0
    lin = WarmupDecay(0, "linear", total=10)
    assert [lin(s) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    with pytest.raises(TrainConfigError, match="optim.decay must be one of constant|cosine|linear"):
        build_config(extra=["--optim.decay=step"])
    with pytest.raises(TrainConfigError, match=r"optim.decay_floor must be in \[0, 1\]"):
        build_config(extra=["--optim.decay_floor=2"])
    # through the Trainer: 4 steps, no warmup, linear to 0 at max_steps -> logged LR 1, 0.75, 0.5, 0.25 x lr
    kw = {"train.max_steps": 4, "optim.warmup_steps": 0, "optim.decay": "linear", "train.checkpoint_every": 100}
    Trainer(cfg_for(images, **kw), tmp_path / "run").fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["train/lr"] for r in rows if "train/lr" in r]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4]), lrs


class StepClock:
    """The engine's ``time`` module with a clock that moves only inside training steps: each step
    calls ``process_time`` twice, each call is ``half_step`` seconds (no wall clock involved)."""

    def __init__(self, half_step: float):
        self.now, self.half_step = 1000.0, half_step

    def time(self) -> float:
        return self.now

    perf_counter = time

    def process_time(self) -> float:
        self.now += self.half_step
        return self.now


def test_fit_to_budget_ends_the_lr_schedule_within_the_time_budget(images, tmp_path, monkeypatch):
    import transvae.training.engine as engine_module

    # 6 s a step, a 1-minute budget, 40 steps asked for, linear decay to 0 at the last step
    kw = {"train.max_steps": 40, "train.max_minutes": 1.0, "optim.warmup_steps": 0, "optim.decay": "linear"}
    kw["train.checkpoint_every"] = 100

    def run(name: str, **extra):
        monkeypatch.setattr(engine_module, "time", StepClock(3.0))
        summary = Trainer(cfg_for(images, **{**kw, **extra}), tmp_path / name).fit()
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return summary, [r["train/lr"] / 1e-3 for r in rows if "train/lr" in r]

    # without: the time limit cuts the run at step 11 while the LR is still at 75 % of its peak
    summary, lrs = run("cut")
    assert summary["status"] == "stopped by time limit" and summary["step"] == 11 and summary["planned_steps"] == 40
    assert lrs[-1] == pytest.approx(1 - 10 / 40)
    # a budget that ends during the last step ends nothing: the run is finished
    summary, _ = run("last", **{"train.max_steps": 11})
    assert summary["status"] == "finished" and summary["step"] == 11 and summary["exit_status"] == 0
    # with: after 2 steps (5 % of 40) 12 s are spent and 48 s left: 2 + int(0.97 * 48 / 6) = 9 steps
    summary, lrs = run("fit", **{"train.fit_to_budget": True})
    assert summary["status"] == "finished" and summary["step"] == 9 and summary["planned_steps"] == 9
    assert lrs == pytest.approx([1.0, 1 - 1 / 40] + [1 - s / 9 for s in range(2, 9)])  # the schedule ends at 9
    saved = load_checkpoint(tmp_path / "fit" / "checkpoints" / "last.pt")
    assert saved["counters"]["planned_steps"] == 9 and saved["optimizers"]["main"]["scheduler"]["lr_lambdas"] == [None]
    # resumed with the same max_steps the plan holds (nothing left to train); a new max_steps replaces it
    monkeypatch.setattr(engine_module, "time", StepClock(3.0))
    assert Trainer(cfg_for(images, **kw), tmp_path / "fit", resume=True).fit()["step"] == 9
    monkeypatch.setattr(engine_module, "time", StepClock(0.0))  # no time passes: nothing is cut
    resumed = Trainer(cfg_for(images, **{**kw, "train.max_steps": 12}), tmp_path / "fit", resume=True)
    assert resumed.planned_steps == 12 and resumed.fit()["step"] == 12
    with pytest.raises(TrainConfigError, match="train.fit_to_budget needs a budget"):
        build_config(extra=["--train.fit_to_budget=true"])


def test_recipes_parse_and_hold_the_paper_defaults():
    recipes = sorted(CONFIGS.glob("transvae-*.yaml"))  # autoencoder recipes (lightningdit-*: gen-train)
    names = {p.stem for p in recipes}
    for v in ("t", "b", "l", "h", "g"):
        assert {f"transvae-{v}-f16d32-stage1", f"transvae-{v}-f16d32-stage2"} <= names
    for p in recipes:
        cfg = build_config(p)
        assert cfg.model.name in transvae.list_models(), p
        assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps == 1000 and cfg.optim.weight_decay == 0.0
        assert cfg.train.batch_size == 256 and cfg.data.resolution == 256
        assert (cfg.loss.l1_weight, cfg.loss.lpips_weight, cfg.loss.kl_weight) == (1.0, 1.0, 1e-8)
        assert cfg.loss.vf_weight == 0.1 and cfg.loss.gan_weight == 0.1
        assert cfg.train.stage == (2 if p.stem.endswith("stage2") else 1)


def test_cli_reports_bad_arguments_before_any_work(images, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--data", str(images), "--out", out]
    assert main([*base, "--model", "transvae-nope"]) == 2
    assert "choices: " in capsys.readouterr().err
    assert main([*base, "--model", "transvae-nano-f16d32", "--loss.lpips_wieght=0"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'loss.lpips_wieght'" in err and "loss.lpips_weight" in err
    assert main([*base, "--model", "transvae-nano-f16d32", "--stage", "2"]) == 2
    assert "--init" in capsys.readouterr().err
    assert (
        main(["train", "--model", "transvae-nano-f16d32", "--data", str(tmp_path / "nothing"), "--out", out])
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert not Path(out).exists()  # nothing was started


# -- exact resume --------------------------------------------------------------------------------
def test_resume_is_bit_identical(images, tmp_path, straight_run):
    ref_dir, ref, _ = straight_run
    run = tmp_path / "split"
    first = Trainer(cfg_for(images, **{"train.max_steps": 1}), run)
    assert first.fit()["step"] == 1
    second = Trainer(cfg_for(images), run, resume=True)
    assert second.step == 1 and second.data_pos == (0, 1)
    second.fit()
    assert states_equal(ref.model.state_dict(), second.model.state_dict())
    assert states_equal(ref.ema.module.state_dict(), second.ema.module.state_dict())
    a, b = load_checkpoint(ref_dir / "checkpoints/last.pt"), load_checkpoint(run / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 2 and a["data_pos"] == b["data_pos"]
    adam_a, adam_b = a["optimizers"]["main"]["optimizer"], b["optimizers"]["main"]["optimizer"]
    assert torch.equal(adam_a["state"][0]["exp_avg_sq"], adam_b["state"][0]["exp_avg_sq"])
    # training moved the weights, and RUN_DIR/model holds the EMA weights
    assert not states_equal(
        ref.model.state_dict(), transvae.create_model("transvae-nano-f16d32").state_dict()
    )
    exported = transvae.from_pretrained(ref_dir / "model")
    assert states_equal(exported.state_dict(), ref.ema.module.state_dict())


# -- Muon (optim.optimizer: muon) ------------------------------------------------------------------
def test_muon_split_takes_weight_matrices_and_leaves_biases_norms_and_the_rgb_output_to_adamw():
    from transvae.training.optim import muon_split

    params = dict(transvae.create_model("transvae-nano-f16d32").named_parameters())
    muon, adamw = muon_split(list(params.values()))
    name = {id(p): n for n, p in params.items()}
    to_muon, to_adamw = {name[id(p)] for p in muon}, {name[id(p)] for p in adamw}
    assert len(to_muon) + len(to_adamw) == len(params) and not to_muon & to_adamw
    assert "encoder.conv_in.weight" in to_muon and "encoder.conv_out.weight" in to_muon  # 16 x 27, 64 x ...
    assert any(".qkv." in n or "attn" in n for n in to_muon)  # the attention projections
    assert "decoder.conv_out.weight" in to_adamw  # 3 output channels: a 3 x 144 matrix
    assert all(params[n].ndim == 1 for n in to_adamw - {"decoder.conv_out.weight", "encoder.downs.1.conv.weight"})


@pytest.mark.parametrize("optimizer, orthogonal", [("muon", True), ("adamw", False)])
def test_muon_steps_a_weight_matrix_by_an_orthogonalised_update(optimizer, orthogonal):
    from transvae.training.optim import make_optimizer

    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 32)
    slot = make_optimizer("main", list(lin.parameters()), 1e-3, 0, (0.9, 0.99), 0.0, 1e-8, 0.0,
                          optimizer=optimizer, muon_lr=0.02)  # fmt: skip
    w0 = lin.weight.detach().clone()
    lin(torch.randn(64, 48)).pow(2).mean().backward()
    slot.clip()
    slot.step()
    s = torch.linalg.svdvals(lin.weight.detach() - w0)
    # Newton-Schulz pushes every singular value of the step towards one value (here 0.02 x ~0.7-1.2);
    # AdamW's first step, lr x sign(g), spreads them by an order of magnitude
    assert (s.max() / s.min() < 3) == orthogonal, s
    if orthogonal:
        assert 0.02 * 0.5 < s.median() < 0.02 * 1.5


def test_muon_run_resumes_bit_identically_and_keeps_adamw_for_the_rest(images, tmp_path):
    muon = {"optim.optimizer": "muon", "optim.muon_lr": 0.02}
    ref = Trainer(cfg_for(images, **muon), tmp_path / "straight")
    ref.fit()
    run = tmp_path / "split"
    assert Trainer(cfg_for(images, **muon, **{"train.max_steps": 1}), run).fit()["step"] == 1
    second = Trainer(cfg_for(images, **muon), run, resume=True)
    second.fit()
    assert states_equal(ref.model.state_dict(), second.model.state_dict())
    assert states_equal(ref.ema.module.state_dict(), second.ema.module.state_dict())
    opt = load_checkpoint(run / "checkpoints/last.pt")["optimizers"]["main"]["optimizer"]
    groups = opt["param_groups"]
    assert [g["use_muon"] for g in groups] == [True, False] and groups[0]["lr"] != groups[1]["lr"]
    first_muon, first_adamw = groups[0]["params"][0], groups[1]["params"][0]
    assert "momentum_buffer" in opt["state"][first_muon] and "exp_avg_sq" in opt["state"][first_adamw]
    assert not states_equal(ref.model.state_dict(), transvae.create_model("transvae-nano-f16d32").state_dict())


def test_muon_scales_its_step_for_the_discriminator_as_adamw_s(images, tmp_path, straight_run):
    gan = {"optim.optimizer": "muon", "optim.muon_lr": 0.02, "loss.gan_weight": 0.1, "loss.disc_lr_mult": 0.5}
    stage2 = {"train.stage": 2, "model.init": str(straight_run[0] / "model"), "loss.disc_ndf": 8}
    tr = Trainer(cfg_for(images, **gan, **stage2), tmp_path / "gan")
    main_groups, disc_groups = tr.slots["main"].optimizer.param_groups, tr.slots["disc"].optimizer.param_groups
    assert [g["initial_lr"] for g in main_groups] == [0.02, 1e-3]
    assert [g["initial_lr"] for g in disc_groups] == pytest.approx([0.01, 5e-4])
    tr.close()


def test_run_folder_contents(straight_run):
    run, _, summary = straight_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "train.log",
        "summary.json",
        "model/config.json",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step_00000000.png",
        "step_00000002.png",
    ]
    grid = np.asarray(Image.open(run / "samples" / "step_00000002.png"))
    assert grid.shape[0] > 32 and grid.shape[1] > 2 * 32  # input | reconstruction pairs
    assert summary["status"] == "finished" and summary["step"] == 2
    assert build_config(run / "config.yaml").to_dict() == straight_run[1].cfg.to_dict()
    assert not (run / "config.json").exists()  # that name marks a model folder
    assert transvae.from_pretrained(run) is not None  # the run folder resolves to run/model


# -- faults ----------------------------------------------------------------------------------------
def _poison_decoder(trainer: Trainer, bad) -> None:
    """Make the decoder output NaN on the training forward calls ``n`` (0-based) where ``bad(n)``."""
    count = {"n": 0}

    def hook(module, inputs, output):
        if not module.training:
            return None
        count["n"] += 1
        return output * float("nan") if bad(count["n"] - 1) else None

    trainer.model.decoder.register_forward_hook(hook)


def test_nonfinite_step_is_skipped_and_counted(images, tmp_path):
    tr = Trainer(cfg_for(images, **{"train.max_steps": 3, "train.ema": False}), tmp_path / "run")
    before = {}

    def snapshot(module, inputs, output):
        if module.training:
            before[len(before)] = {k: v.clone() for k, v in tr.model.state_dict().items()}

    tr.model.encoder.register_forward_hook(snapshot)
    _poison_decoder(tr, lambda n: n == 1)
    summary = tr.fit()
    assert summary["status"] == "finished" and summary["nonfinite_steps"] == 1
    # the poisoned step changed nothing: weights before step 1 == weights before step 2
    assert states_equal(before[1], before[2]) and not states_equal(before[0], before[1])
    assert all(torch.isfinite(v).all() for v in tr.model.state_dict().values())


def test_divergence_stops_with_last_good_checkpoint_intact(images, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(cfg_for(images, **{"train.max_steps": 8, "train.max_nonfinite": 1}), run)
    _poison_decoder(tr, lambda n: n >= 1)  # every training forward from the 2nd on
    with pytest.raises(TrainingError, match=r"1 non-finite steps in a row.*last good checkpoint"):
        tr.fit()
    ck = load_checkpoint(run / "checkpoints/last.pt")
    assert ck["step"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
    assert transvae.from_pretrained(run / "model") is not None


def test_sigterm_saves_and_resume_continues_exactly(images, tmp_path, straight_run):
    _, ref, _ = straight_run
    run = tmp_path / "run"
    tr = Trainer(cfg_for(images), run)
    calls = {"n": 0}

    def preempt(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 1:  # during the first step, as a cluster scheduler would
                os.kill(os.getpid(), signal.SIGTERM)

    tr.model.encoder.register_forward_hook(preempt)
    summary = tr.fit()
    assert summary["status"] == "stopped by SIGTERM" and summary["step"] == 1
    assert summary["exit_status"] == 143  # non-zero, so that schedulers requeue the job
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    tr2 = Trainer(cfg_for(images), run, resume=True)
    assert tr2.fit()["step"] == 2
    assert states_equal(ref.model.state_dict(), tr2.model.state_dict())


def test_unwritable_or_full_run_folder_is_reported_before_training(images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not writable"):
        check_writable(blocker / "run", 1)
    with pytest.raises(OSError, match="not enough free space"):
        check_writable(tmp_path / "run", 1 << 62)
    assert (
        main(
            [
                "train",
                "--model",
                "transvae-nano-f16d32",
                "--data",
                str(images),
                "--out",
                str(blocker / "run"),
                "--max-steps",
                "1",
                "--loss.lpips_weight=0",
                "--loss.vf_weight=0",
                "--loss.gan_weight=0",
            ]
        )
        == 2
    )


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    bad = tmp_path / "last.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format_version": 1, "x": _Payload()}, f)
    with pytest.raises(CheckpointError, match="not a loadable training checkpoint"):
        load_checkpoint(bad)
    assert not _Payload.marker.exists()
    bad.write_bytes(b"truncated")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    torch.save({"format_version": 1, "model": {}}, bad)  # written before the engine
    with pytest.raises(CheckpointError, match="has checkpoint format 1.*model/ folder"):
        load_checkpoint(bad)


# -- stage 2 -----------------------------------------------------------------------------------
def test_stage2_freezes_encoder_and_trains_decoder_with_gan_multires(images, tmp_path, straight_run):
    stage1, _, _ = straight_run
    cfg = cfg_for(
        images,
        **{
            "train.stage": 2,
            "model.init": str(stage1 / "model"),
            "loss.gan_weight": 0.1,
            "loss.disc_ndf": 8,
            "train.max_steps": 2,
            "train.ema": False,
            "data.buckets": ["32x32", "32x48"],  # multi-resolution batches, non-square included
        },
    )
    tr = Trainer(cfg, tmp_path / "s2")
    shapes = []
    tr.model.encoder.register_forward_hook(
        lambda m, i, o: shapes.append(tuple(i[0].shape[-2:])) if m.training else None
    )
    init = transvae.from_pretrained(stage1 / "model")
    d0 = {k: v.clone() for k, v in tr.loss_fn.discriminator.state_dict().items()}
    tr.fit()
    enc = {k: v for k, v in tr.model.state_dict().items() if k.startswith("encoder.")}
    dec = {k: v for k, v in tr.model.state_dict().items() if k.startswith("decoder.")}
    ref = init.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in enc.items())
    assert not all(torch.equal(v, ref[k]) for k, v in dec.items())
    d1 = tr.loss_fn.discriminator.state_dict()
    assert not all(torch.equal(d0[k], d1[k]) for k in d0 if d0[k].is_floating_point())
    ck = load_checkpoint(tmp_path / "s2/checkpoints/last.pt")
    assert "disc" in ck["optimizers"] and any(k.startswith("discriminator.") for k in ck["loss"])
    logged = (tmp_path / "s2" / "metrics.jsonl").read_text()
    assert "loss/g_loss" in logged and "disc/d_loss" in logged and "loss/w_gan_adaptive" in logged
    assert len(shapes) == 2 and set(shapes) <= {(32, 32), (32, 48)}


def test_quickstart_writes_grids_and_metrics(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--steps", "2", "--model", "transvae-nano-f16d32"]
    assert main([*args, "--resolution", "32", "--batch-size", "2", "--val-every", "1", "--threads", "1"]) == 0
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2 and m["held_out_tiles"] == 54  # chelsea at 192 x 288 px: 6 x 9 tiles of 32
    assert m["psnr_start"] > 0 and m["psnr_end"] > 0 and m["psnr_end"] != m["psnr_start"]
    assert m["held_out_psnr"] == m["psnr_end"] and m["threads"] == 1 and m["colour_augment"] is True
    import yaml

    data = yaml.safe_load((out / "run" / "config.yaml").read_text())["data"]
    assert (data["hue"], data["channel_shuffle"], data["contrast"], data["saturation"]) == (0.5, True, 0.5, 0.5)
    assert yaml.safe_load((out / "run" / "config.yaml").read_text())["model"]["logvar_init"] == -10.0
    optim = yaml.safe_load((out / "run" / "config.yaml").read_text())["optim"]
    assert optim["decay"] == "cosine" and optim["betas"] == [0.9, 0.99]
    assert (optim["optimizer"], optim["muon_lr"], optim["lr"], m["optimizer"]) == ("muon", 0.02, 1e-3, "muon")
    train = yaml.safe_load((out / "run" / "config.yaml").read_text())["train"]
    assert train["fit_to_budget"] is True and train["max_minutes"] == 5.0  # the decay ends within the 5 minutes
    assert [c[0] for c in m["curve"]] == [0, 1, 2] and m["curve"][-1][1] == m["psnr_end"]
    # colour figures of the exported model (transvae.metrics.colour): held-out tiles and the chart
    assert m["held_out_ciede2000_p95"] >= m["held_out_ciede2000_mean"] > 0 and m["chart_ciede2000_mean"] > 0
    assert len(m["held_out_contrast_ratio"]) == 3 and all(r > 0 for r in m["held_out_contrast_ratio"])
    assert len(m["held_out_mean_shift"]) == 3 and len(m["held_out_lab_shift"]) == 2
    assert m["held_out_ciede2000_luma_only"] > 0 and m["held_out_ciede2000_chroma_only"] > 0
    assert {p.name for p in out.glob("recon_*.png")} == {"recon_start.png", "recon_end.png"}
    assert (out / "before_after.png").is_file()
    trained = {p.stem for p in (out / "data" / "train").glob("*.png")}
    assert len(trained) == 11 and {"motorcycle_right", "retina", "china", "grace_hopper"} <= trained
    assert not trained & {"chelsea", "cat"}  # held out (skimage's "cat" is the same photo)
    printed = capsys.readouterr().out
    assert "held-out PSNR" in printed and "held-out CIEDE2000" in printed
    transvae.from_pretrained(out / "run" / "model")


# -- the step ----------------------------------------------------------------------------------------
def test_one_host_read_per_step_with_every_loss_term(images, tmp_path, straight_run, monkeypatch):
    """Stage 2 with LPIPS, VF and GAN (random stand-in networks): the forward/backward of a step,
    the clipping, the finite check and the logged values read device values on the host once."""
    stage1, _, _ = straight_run
    cfg = cfg_for(
        images,
        **{
            "train.stage": 2,
            "model.init": str(stage1 / "model"),
            "loss.pretrained": False,
            "loss.lpips_weight": 1.0,
            "loss.lpips_net": "alex",
            "loss.vf_weight": 0.1,
            "loss.dino_model": "vit_tiny_patch16_224",
            "loss.gan_weight": 0.1,
            "loss.disc_ndf": 8,
            "train.grad_accum": 2,
        },
    )
    tr = Trainer(cfg, tmp_path / "s2")
    stream = tr.task.batches()
    batches = iter([next(stream) for _ in range(2)])  # data loading (CPU tensors) is not counted
    stream.close()
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            import traceback

            # AdamW reads its step counter, a CPU tensor even on GPUs: not a device sync
            if not any("torch/optim/" in f.filename for f in traceback.extract_stack()):
                reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    logs = tr.task.train_step(batches, 0)
    values, stop = tr._update(logs)
    monkeypatch.undo()
    assert reads == ["tolist"] and not stop
    assert {"loss/lpips", "loss/g_loss", "disc/d_loss", "train/disc_grad_norm"} <= set(values)
    # stage 2 builds no VF term: the frozen encoder cannot learn from it (DINOv2 is not loaded)
    assert tr.loss_fn.vf is None and "loss/vf" not in values
    assert all(np.isfinite(v) for v in values.values())
    tr.close()


def test_training_samples_the_posterior_and_validation_takes_its_mode(images, tmp_path):
    """Neither path relies on ``forward``'s default for ``sample_posterior``."""
    tr = Trainer(cfg_for(images, **{"log.grid_images": 2}), tmp_path / "run")
    seen = []
    original = type(tr.model).forward

    def spy(self, x, *args, **kwargs):
        seen.append(kwargs.get("sample_posterior", "default"))
        return original(self, x, *args, **kwargs)

    tr.model.forward = spy.__get__(tr.model)
    tr.ema.module.forward = spy.__get__(tr.ema.module)
    tr.task.train_step(tr.task.batches(), 0)
    assert seen == [True]
    tr.task.save_samples(tmp_path / "grid.png")
    assert seen == [True, False]
    tr.close()

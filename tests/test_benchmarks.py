"""Smoke tests of the small helpers behind benchmarks/ (no data set, no timing asserts)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks' modules, imported the way the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCH))
    return lambda name: importlib.import_module(name)


def test_slug_and_table(bench):
    bu = bench("bench_utils")
    assert bu.slug("+ DC shortcut (= TransVAE)") == "dc-shortcut-transvae"
    assert bu.slug("ViT-VAE (learned abs. PE)") == "vit-vae-learned-abs-pe"
    table = bu.markdown_table([{"a": 1.23456, "b": None}], ["a", "b"])
    assert table.splitlines()[2] == "| 1.23 | - |"


def test_no_training_loop_in_benchmarks():
    # benchmarks train through transvae.training.Trainer only (issue 13): no second loop
    for path in sorted(BENCH.glob("*.py")):
        text = path.read_text()
        assert ".backward(" not in text and "AdamW(" not in text, path.name


def _photos(folder: Path, n: int, size: tuple[int, int], seed: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        # smooth random images (a few colour blobs), so that a model can learn something in 4 steps
        low = torch.rand(3, 4, 4, generator=g)
        im = torch.nn.functional.interpolate(low[None], size=size, mode="bicubic", align_corners=False)[0]
        arr = (im.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return folder


def test_register_variant_is_idempotent_and_refuses_conflicts(bench):
    bu = bench("bench_utils")
    from transvae.models import create_model

    name = bu.register_variant(
        "bench-test-nano-mlp", "transvae-nano-f16d32", {"ffn_type": "mlp", "mlp_ratio": 4.0}
    )
    assert bu.register_variant(
        "bench-test-nano-mlp", "transvae-nano-f16d32", {"ffn_type": "mlp", "mlp_ratio": 4.0}
    )
    m = create_model(name, device="meta")
    assert m.config.ffn_type == "mlp" and m.config.dims == (16, 16, 32, 32, 64)
    with pytest.raises(ValueError, match="other settings"):
        bu.register_variant("bench-test-nano-mlp", "transvae-nano-f16d32", {"ffn_type": "dwconv"})


def test_train_run_uses_the_trainer_and_resumes(bench, tmp_path):
    bu = bench("bench_utils")
    data = _photos(tmp_path / "train", 6, (40, 48), 0)
    val = _photos(tmp_path / "val", 2, (32, 32), 1)
    name = bu.register_variant("bench-test-nano", "transvae-nano-f16d32", {})
    over = {
        "model.name": name, "data.train": [str(data)], "data.val": [str(val)], "data.resolution": 32,
        "data.num_workers": 0, "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0, "loss.gan_weight": 0.0,
        "optim.lr": 1e-3, "optim.warmup_steps": 1, "train.batch_size": 2, "train.max_steps": 2,
        "train.ema": False, "train.device": "cpu", "train.checkpoint_every": 2, "log.every": 1,
        "log.val_every": 2, "log.tensorboard": False, "log.progress": False,
    }  # fmt: skip
    runs = []
    for k in range(2):  # the same seed twice: the same curve
        run = tmp_path / f"run{k}"
        bu.train_run(run, over, resume=False)
        runs.append(bu.read_run(run))
    assert [c["step"] for c in runs[0]["curve"]] == [0, 2] and runs[0]["step"] == 2
    assert [c["psnr"] for c in runs[0]["curve"]] == [c["psnr"] for c in runs[1]["curve"]]
    assert runs[0]["curve"][1]["psnr"] != runs[0]["curve"][0]["psnr"]  # the weights did change
    assert runs[0]["s_per_step"] > 0
    # cumulative: a larger max_steps with resume continues the same run
    assert bu.has_checkpoint(tmp_path / "run0")
    bu.train_run(tmp_path / "run0", {**over, "train.max_steps": 4}, resume=True)
    r = bu.read_run(tmp_path / "run0")
    assert r["step"] == 4 and [c["step"] for c in r["curve"]] == [0, 2, 4]


def test_reference_lines(bench):
    le = bench("learning_efficiency")
    g = torch.Generator().manual_seed(0)
    # images made of constant 4x4 patches: the mean colour reconstructs them exactly
    blocks = torch.randint(0, 256, (3, 3, 2, 2), generator=g, dtype=torch.uint8)
    val = blocks.repeat_interleave(4, -1).repeat_interleave(4, -2)  # (3, 3, 8, 8)
    r = le.reference_lines(val, val, patch=4, components=48)
    assert math.isinf(r["patch_mean_colour"]) and math.isinf(r["patch_pca"])  # 48 = 3 x 4 x 4: all of it
    noisy = torch.randint(0, 256, (6, 3, 8, 8), generator=g, dtype=torch.uint8)
    few, more = (le.reference_lines(noisy, noisy[:2], 4, c) for c in (2, 24))
    assert few["patch_mean_colour"] == more["patch_mean_colour"] < few["patch_pca"] < more["patch_pca"]
    patches = le.to_patches(noisy, 4)
    assert patches.shape == (6 * 4, 48)
    assert torch.equal(le.from_patches(patches, noisy.shape, 4), noisy)


def test_learning_efficiency_regimes(bench):
    le = bench("learning_efficiency")
    from transvae.models import create_model

    regs = le.regimes()
    assert regs["f16-128"].crop == 128 and regs["f8-64"].crop == 64
    for name, reg in regs.items():
        slugs = [le.slug(label) for label, _, _ in reg.specs]
        assert set(reg.default) <= set(slugs)
        for s_ in slugs:
            m = create_model(le.register(name, reg, s_), device="meta")
            assert reg.crop // m.spatial_compression_ratio == 8  # an 8 x 8 latent grid in both regimes
            if s_.startswith("cnn-vae"):
                assert not m.config.stage_attn and not m.config.mid_attn  # attention-free (Figure 7)
            if s_ == "vit-vae-learned-abs-pe":
                assert m.config.pos_embed == "learned" and m.config.sample_size == reg.crop


def test_flops_counted_on_meta(bench):
    speed = bench("speed")
    enc, dec = speed.flops_per_image("transvae-nano-f16d32", 64)
    enc2, dec2 = speed.flops_per_image("transvae-nano-f16d32", 128)
    assert enc > 0 and dec > 0
    # convolutions scale with pixels, attention faster than that
    assert 4.0 <= enc2 / enc <= 16.0 and 4.0 <= dec2 / dec <= 16.0


def test_peak_memory_sees_a_large_allocation(bench):
    speed = bench("speed")
    with speed.PeakMemory(torch.device("cpu")) as pm:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    if pm.mb is None:
        pytest.skip("peak RSS not measurable on this platform")
    assert pm.mb >= 50


def test_stage_breakdown_covers_the_whole_model(bench):
    speed = bench("speed")
    b = speed.build("transvae-nano-f16d32", "cpu")
    rows = speed.stage_breakdown(b, 64, torch.device("cpu"), iters=1)
    parts = [r["part"] for r in rows]
    assert "encoder.stages.0" in parts and "decoder.conv_out" in parts
    assert all(r["seconds"] > 0 for r in rows)
    # the per-stage FLOPs add up to the whole pass counted in one go
    enc, dec = speed.flops_per_image("transvae-nano-f16d32", 64)
    assert math.isclose(sum(r["gflop"] for r in rows), enc + dec, rel_tol=1e-6)


def test_learning_efficiency_cost_estimate_orders_models(bench):
    le = bench("learning_efficiency")
    vit = le.training_gflop("vit-vae-mini-f16d32", {}, 64)
    trans = le.training_gflop("transvae-mini-f16d32", {}, 64)
    assert 0 < vit < trans  # the full-resolution CNN front-end costs more than 16x16 patches


def test_extrapolation_discovers_trained_runs_in_ladder_order(bench, tmp_path):
    extrapolation = bench("extrapolation")
    for name in ("dc-shortcut-transvae", "cnn-vae-no-attention", "my-extra-model"):
        (tmp_path / "f16-128" / name / "seed0" / "model").mkdir(parents=True)
        (tmp_path / "f16-128" / name / "seed0" / "model" / "config.json").write_text("{}")
    (tmp_path / "f16-128" / "incomplete" / "seed0").mkdir(parents=True)  # no model/: not trained
    found = extrapolation.discover(tmp_path, "f16-128")
    assert found == ["cnn-vae-no-attention", "dc-shortcut-transvae", "my-extra-model"]


def test_generation_reads_run_summaries_and_replots(bench, tmp_path):
    import json

    gb = bench("generation")
    run = tmp_path / "gen-x"
    run.mkdir()
    history = [
        {"step": 0, "val/flow_loss": 3.0, "val/latent_fd": 40.0},
        {"step": 5, "val/flow_loss": 2.0, "val/latent_fd": 10.0},
    ]
    (run / "summary.json").write_text(json.dumps({"status": "finished", "step": 5, "history": history}))
    assert gb.finished(run, 5) and not gb.finished(run, 6) and not gb.finished(tmp_path / "none", 1)
    curve = gb.curve(run)
    assert curve == [
        {"step": 0, "latent_fd": 40.0, "flow_loss": 3.0},
        {"step": 5, "latent_fd": 10.0, "flow_loss": 2.0},
    ]
    out = tmp_path / "g.json"
    out.write_text(json.dumps({"title": "t", "results": [{"label": "TransVAE", "curve": curve}]}))
    gb.main(["--replot", str(out)])
    assert out.with_suffix(".png").stat().st_size > 1000

"""The measuring API the benchmarks are built on (models.flops, inference.benchmarking / peers,
training.benchmark / history / sweep, utils.provenance / peak_memory / budget / markdown,
metrics.image_fd / reference, data.transforms' native crops), and the benchmark scripts' own
contract (no second training loop, a one-line error without data). No timing asserts."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark scripts, imported the way they import each other."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


# --- provenance ---------------------------------------------------------------------------------


def test_write_result_records_provenance_atomically(tmp_path):
    from transvae.utils.provenance import Provenance, write_result

    prov = Provenance.start(seeds=[0, 1], command=["python", "benchmarks/x.py", "--data", "a b"])
    path = write_result(
        tmp_path / "sub" / "r.json", {"value": float("nan"), "ok": 1.5}, prov, steps=7, extra="x"
    )
    d = json.loads(path.read_text())  # strict JSON: NaN became null
    assert d["value"] is None and d["ok"] == 1.5
    p = d["provenance"]
    assert p["recorded_after"] is False and p["command"] == "python benchmarks/x.py --data 'a b'"
    assert p["seeds"] == [0, 1] and p["steps"] == 7 and p["extra"] == "x" and p["wall_seconds"] >= 0
    assert set(p["versions"]) >= {"torch", "torchvision", "transvae", "diffusers", "timm", "python"}
    assert p["versions"]["torch"] and p["machine"]["cpu"] and p["machine"]["torch_threads"] >= 1
    assert len(p["machine"]["load_average_at_start"]) == 3 and p["started_at"].endswith("+00:00")
    assert len(p["git"]["commit"]) == 40 and isinstance(p["git"]["dirty"], bool)
    assert [f.name for f in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_git_state_says_why_the_commit_is_unknown(tmp_path, monkeypatch):
    from transvae.utils.provenance import git_state

    s = git_state(tmp_path)  # not a checkout
    assert s["commit"] is None and s["dirty"] is None and "not a git checkout" in s["note"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    s = git_state()
    assert s["commit"] is None and "git is not installed" in s["note"]


def test_git_state_sees_a_dirty_tree(tmp_path):
    from transvae.utils.provenance import git_state

    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "f.txt").write_text("b")
    s = git_state(tmp_path)
    assert s["dirty"] is True and s["changed"] == [" M f.txt"]


# --- FLOPs, speed, memory ------------------------------------------------------------------------


def test_flops_counted_on_meta():
    from transvae.inference.peers import autoencoder_handle_flops
    from transvae.models import create_model
    from transvae.models.flops import autoencoder_flops, training_step_flops

    m = create_model("transvae-nano-f16d32", device="meta")
    enc, dec = autoencoder_flops(m, 64)
    enc2, dec2 = autoencoder_flops(m, 128)
    assert enc > 0 and dec > 0 and (enc, dec) == autoencoder_handle_flops("transvae-nano-f16d32", 64)
    assert (
        4.0 <= enc2 / enc <= 16.0 and 4.0 <= dec2 / dec <= 16.0
    )  # convs scale with pixels, attention faster
    step = training_step_flops(m, 64, batch_size=2)
    assert 2 * 2.5 * (enc + dec) < step < 2 * 3.5 * (enc + dec)  # forward + backward ~ 3x forward, per image
    assert all(p.grad is None for p in m.parameters())


def test_measure_inference_interleaves_models_and_refuses_the_thread_clock_with_threads():
    from transvae.inference.benchmarking import clock, measure_inference
    from transvae.inference.peers import build_autoencoder

    hs = [build_autoencoder("transvae-nano-f16d32"), build_autoencoder("flux-vae-config", tiny=True)]
    out = measure_inference(hs, 32, torch.float32, torch.device("cpu"), batch=1, iters=2, warmup=1)
    for r in out.values():
        assert 0 < r["reconstruct_img_s"] < min(r["encode_img_s"], r["decode_img_s"])
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="one thread"):
            clock("thread")
    finally:
        torch.set_num_threads(old)


def test_peak_memory_sees_a_large_allocation():
    from transvae.utils.peak_memory import PeakMemory

    with PeakMemory("cpu") as pm:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    if pm.mb is None:
        pytest.skip("peak RSS not measurable on this platform")
    assert pm.mb >= 50


def test_stage_breakdown_covers_the_whole_model():
    from transvae.inference.benchmarking import stage_breakdown
    from transvae.inference.peers import autoencoder_handle_flops, build_autoencoder

    rows = stage_breakdown(build_autoencoder("transvae-nano-f16d32"), 64, torch.device("cpu"), iters=1)
    parts = [r["part"] for r in rows]
    assert "encoder.stages.0" in parts and "decoder.conv_out" in parts
    assert all(r["seconds"] > 0 for r in rows) and math.isclose(sum(r["share"] for r in rows), 1.0)
    assert math.isclose(
        sum(r["gflop"] for r in rows), sum(autoencoder_handle_flops("transvae-nano-f16d32", 64)), rel_tol=1e-6
    )


# --- training: variants, sweeps, history ------------------------------------------------------------


def test_register_variant_is_idempotent_and_refuses_conflicts():
    from transvae.models import create_model
    from transvae.models.registry import register_variant

    name = register_variant("test-bench-nano-mlp", "transvae-nano-f16d32", ffn_type="mlp", mlp_ratio=4.0)
    assert (
        register_variant("test-bench-nano-mlp", "transvae-nano-f16d32", ffn_type="mlp", mlp_ratio=4.0) == name
    )
    m = create_model(name, device="meta")
    assert m.config.ffn_type == "mlp" and m.config.dims == (16, 16, 32, 32, 64)
    with pytest.raises(ValueError, match="other settings"):
        register_variant("test-bench-nano-mlp", "transvae-nano-f16d32", ffn_type="dwconv")


def _job(tmp_path: Path, run: Path, steps: int):
    from transvae.training.benchmark import synthetic_images
    from transvae.training.sweep import SweepJob

    data, val = (
        synthetic_images(tmp_path / "train", 6, (40, 48)),
        synthetic_images(tmp_path / "val", 2, 32, seed=1),
    )
    over = {
        "model.name": "test-bench-nano-variant", "data.train": [str(data)], "data.val": [str(val)], "data.resolution": 32,
        "data.num_workers": 0, "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0, "loss.gan_weight": 0.0, "optim.lr": 1e-3,
        "optim.warmup_steps": 1, "train.batch_size": 2, "train.max_steps": steps, "train.ema": False, "train.device": "cpu",
        "train.checkpoint_every": 2, "log.every": 1, "log.val_every": 2, "log.tensorboard": False, "log.progress": False,
    }  # fmt: skip
    return SweepJob(
        run, over, variant=("test-bench-nano-variant", "transvae-nano-f16d32", {"mlp_ratio": 2.0})
    )


def test_sweep_jobs_resume_extend_and_record_their_history(tmp_path):
    from transvae.training.history import run_history
    from transvae.training.sweep import run_job

    curves = []
    for k in range(2):  # the same seed twice: the same curve
        run_job(_job(tmp_path, tmp_path / f"run{k}", 2))
        curves.append(run_history(tmp_path / f"run{k}"))
    h = curves[0]
    assert [c["step"] for c in h["curve"]] == [0, 2] and h["step"] == 2
    assert [c["psnr"] for c in h["curve"]] == [c["psnr"] for c in curves[1]["curve"]]
    assert h["curve"][1]["psnr"] != h["curve"][0]["psnr"]  # the weights did change
    assert h["curve"][0]["cpu_seconds"] == 0.0 < h["curve"][1]["cpu_seconds"] and h["cpu_s_per_step"] > 0
    run_job(_job(tmp_path, tmp_path / "run0", 4))  # a larger max_steps continues the same run
    h2 = run_history(tmp_path / "run0")
    assert [c["step"] for c in h2["curve"]] == [0, 2, 4] and h2["step"] == 4
    assert h2["curve"][1]["cpu_seconds"] == h["curve"][1]["cpu_seconds"] < h2["curve"][2]["cpu_seconds"]
    assert [s["steps"] for s in h2["sessions"]] == [{"from": 0, "to": 2}, {"from": 2, "to": 4}]
    assert h2["sessions"][0]["git"]["commit"] and len(h2["sessions"][1]["load_average"]) == 2


def test_run_sweep_runs_each_job_in_its_own_single_threaded_process(tmp_path):
    from transvae.training.history import run_history
    from transvae.training.sweep import run_sweep

    assert run_sweep([_job(tmp_path, tmp_path / "run", 2)], workers=1, quiet=True) == [0]
    assert "finished at step 2" in (tmp_path / "run" / "sweep.log").read_text()
    assert run_history(tmp_path / "run")["sessions"][0]["status"] == "finished"


def test_measure_training_reports_the_trainers_own_numbers(tmp_path):
    from transvae.training.benchmark import measure_training, synthetic_images

    data = synthetic_images(tmp_path / "img", 4, 32)
    over = {"model.name": "transvae-nano-f16d32", "data.train": [str(data)], "data.resolution": 32, "data.num_workers": 0,
            "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0, "loss.gan_weight": 0.0, "train.batch_size": 2,
            "train.max_steps": 4, "train.ema": False, "log.every": 1}  # fmt: skip
    r = measure_training(over, tmp_path / "run")
    assert r["status_of_fit"] == "finished" and r["steps"] == 4 and len(r["curve"]) == 4
    assert len(r["img_per_s_windows"]) == 3 and r["s_per_img"] == pytest.approx(1 / r["img_per_s"])
    assert not (tmp_path / "run").exists()


# --- data, metrics -------------------------------------------------------------------------------------


def test_native_centre_crops_are_never_resized(tmp_path):
    import numpy as np
    from PIL import Image

    from transvae.data.transforms import center_crop, load_crops

    a = np.random.default_rng(0).integers(0, 256, (321, 481, 3), dtype=np.uint8)  # a BSDS500 photo's shape
    Image.fromarray(a).save(tmp_path / "p.png")
    x = load_crops([tmp_path / "p.png"], 320, native=True)
    assert torch.equal(
        x[0].permute(1, 2, 0), torch.from_numpy(a[0:320, 80:400])
    )  # round((481 - 320) / 2) = 80
    assert np.array_equal(np.asarray(center_crop(Image.fromarray(a), 64)), a[128:192, 208:272])
    with pytest.raises(ValueError, match="no upsampling"):
        center_crop(Image.fromarray(a), 322)


def test_image_fd_is_zero_for_a_set_itself_and_grows_with_a_colour_shift():
    from transvae.metrics.image_fd import fit_thumbnail_basis, image_frechet_distance

    g = torch.Generator().manual_seed(0)

    def low(n: int) -> torch.Tensor:
        return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear")

    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    train, real, other = u8(low(200)), u8(low(120)), u8(low(120))
    basis = fit_thumbnail_basis(train, size=8, components=16)
    assert basis.axes.shape == (3 * 64, 16) and basis.describe() == {
        "size": 8,
        "components": 16,
        "fitted_on": 200,
    }
    assert image_frechet_distance(real, real, basis) == pytest.approx(0.0, abs=1e-9)
    same_kind = image_frechet_distance(real, other, basis)
    shifted = image_frechet_distance(real, u8(low(120) * 0.7 + 0.2), basis)
    assert 0 < same_kind < shifted
    with pytest.raises(ValueError, match="more than 16 images"):
        image_frechet_distance(real[:16], other, basis)


def test_reference_codes():
    from transvae.metrics.reference import (
        from_patches,
        patch_mean_reconstruction,
        patch_pca_reconstruction,
        to_patches,
    )

    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 3, 2, 2), generator=g, dtype=torch.uint8)
    flat = blocks.repeat_interleave(4, -1).repeat_interleave(4, -2)  # constant 4 x 4 patches
    assert torch.equal(patch_mean_reconstruction(flat, 4), flat)
    assert torch.equal(
        patch_pca_reconstruction(flat, flat, 4, 48), flat
    )  # 48 = 3 x 4 x 4 components: all of it
    noisy = torch.randint(0, 256, (6, 3, 8, 8), generator=g, dtype=torch.uint8)
    err = lambda r: (r.float() - noisy[:2].float()).square().mean().item()  # noqa: E731
    few, more = (patch_pca_reconstruction(noisy, noisy[:2], 4, c) for c in (2, 24))
    assert err(patch_mean_reconstruction(noisy[:2], 4)) > err(few) > err(more)
    assert torch.equal(from_patches(to_patches(noisy, 4), noisy.shape, 4), noisy)


# --- the runner under a budget, markdown blocks ---------------------------------------------------------


def test_budgeted_run_records_failures_overruns_and_skips(tmp_path):
    from transvae.utils.budget import BudgetedRun

    written = []
    s = BudgetedRun(100, {"memory": 1.0}, write=lambda r: written.append(json.dumps(r)))
    s.begin_part("memory")

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    assert (
        s.run("memory", {"model": "a"}, 0.1, oom)["error"]
        == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    s.part_end = time.monotonic() + 0.2  # the part's share ends in 0.2 s
    row = s.run("memory", {"model": "b"}, 0.1, lambda: time.sleep(5) or {})
    assert row["status"] == "error" and row["error"].startswith("BudgetExceeded") and row["elapsed_s"] < 2
    assert s.run("memory", {"model": "c"}, 0.1, lambda: {"x": 1.0})["status"] == "skipped"
    s.part_end = time.monotonic() + 10
    assert s.run("memory", {"model": "d"}, 0.1, lambda: {"x": 1.0})["status"] == "ok"
    s.end_part("memory")
    res = json.loads(written[-1])
    assert [r["status"] for r in res["parts"]["memory"]["rows"]] == ["error", "error", "skipped", "ok"]
    assert res["parts"]["memory"]["status"] == "partial" and len(written) == 5


def test_markdown_blocks_round_trip():
    from transvae.utils.markdown import find_blocks, markdown_table, replace_blocks

    text = "intro\n<!-- results:a -->\nold\n<!-- /results -->\nmiddle\n<!-- results:b -->\nx\n<!-- /results -->\n"
    new, missing = replace_blocks(text, {"a": markdown_table([{"k": 1.23456, "v": None}], ["k", "v"])})
    assert missing == ["b"] and find_blocks(new) == {"a": "| k | v |\n|---|---|\n| 1.23 | - |\n", "b": "x\n"}
    assert new.startswith("intro\n<!-- results:a -->\n| k |") and "middle\n" in new


# --- the scripts -------------------------------------------------------------------------------------------


def test_no_training_loop_in_benchmarks():
    # benchmarks train through transvae.training.Trainer only (issue 13): no second loop
    for path in sorted(BENCH.glob("*.py")):
        text = path.read_text()
        assert ".backward(" not in text and "AdamW(" not in text, path.name


@pytest.mark.parametrize(
    "script", ["learning_efficiency.py", "extrapolation.py", "scaling.py", "generation.py"]
)
def test_scripts_need_data_and_say_so_in_one_line(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRANSVAE_BENCH_DATA"}
    env["PYTHONPATH"] = str(REPO / "src")
    p = subprocess.run(
        [sys.executable, str(BENCH / script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: no data: pass --data BSDS500_ROOT or set TRANSVAE_BENCH_DATA"
    )
    helptext = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, env=env, timeout=120
    ).stdout
    assert "TRANSVAE_BENCH_DATA" in helptext


def test_extrapolation_quick_reads_learning_efficiency_quick_runs(bench, tmp_path):
    le, ex = bench("learning_efficiency"), bench("extrapolation")
    assert le.runs_dir(True) != le.runs_dir(False) and le.runs_dir(True).name.endswith("_quick")
    for name in ("dc-shortcut-transvae", "cnn-vae-no-attention", "my-extra-model"):
        (tmp_path / "f16-128" / name / "seed0" / "model").mkdir(parents=True)
        (tmp_path / "f16-128" / name / "seed0" / "model" / "config.json").write_text("{}")
    (tmp_path / "f16-128" / "incomplete" / "seed0").mkdir(parents=True)  # no model/: not trained
    assert ex.discover(tmp_path, "f16-128") == [
        "cnn-vae-no-attention",
        "dc-shortcut-transvae",
        "my-extra-model",
    ]


def test_learning_efficiency_regimes_have_an_8x8_latent(bench):
    le = bench("learning_efficiency")
    from transvae.models import create_model

    for name, reg in le.regimes().items():
        slugs = [le.bu.slug(label) for label, _, _ in reg.specs]
        assert set(reg.default) <= set(slugs)
        for s_ in slugs:
            m = create_model(le.register(name, s_), device="meta")
            assert reg.crop // m.spatial_compression_ratio == 8
            if s_.startswith("cnn-vae"):
                assert not m.config.stage_attn and not m.config.mid_attn  # attention-free (Figure 7)
            if s_ == "vit-vae-learned-abs-pe":
                assert m.config.pos_embed == "learned" and m.config.sample_size == reg.crop


def test_quickstart_sizes_trains_each_variant_through_the_quickstart(bench, tmp_path):
    qs = bench("quickstart_sizes")
    out = tmp_path / "sizes.json"
    args = ["--variants", "depths-1111", "default", "--minutes", "0.02", "--threads", "1"]
    assert qs.main([*args, "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    small, default = res["results"]
    assert small["model"] == "bench-quickstart-depths-1111" and default["model"] == qs.BASE
    assert 0 < small["params"] < default["params"]  # one block a stage fewer: fewer weights
    for r in res["results"]:  # each trained in the quick start's run folder, with its metrics
        assert r["metrics"]["steps"] >= 1 and (tmp_path / "runs" / r["variant"] / "run" / "model").is_dir()
        assert (
            r["metrics"]["model"] == r["model"]
            and res["provenance"]["steps"][r["variant"]] == r["metrics"]["steps"]
        )
    # without --out only the full run (every variant, 5 minutes) writes the published JSON
    runs = tmp_path / "r"
    assert qs.default_out(list(qs.VARIANTS), 5.0, runs) == qs.bu.DOCS_DIR / "quickstart_sizes.json"
    assert qs.default_out(["default"], 5.0, runs) == runs / "quickstart_sizes.json"
    assert qs.default_out(list(qs.VARIANTS), 0.5, runs) == runs / "quickstart_sizes.json"

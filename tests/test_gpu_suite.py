"""The GPU suite (benchmarks/gpu_suite.py: the order of the parts and the budget over the library's
measurements) proves itself on a CPU: its dry run executes every part
at tiny sizes and writes a complete JSON; budget cuts and failures are recorded, not fatal."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture
def suite_mod(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("gpu_suite")


def _no_nan(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"non-finite value {name} in the JSON")

    return json.loads(text, parse_constant=refuse)


def _numbers(x, path=""):
    """Every number in a JSON tree, with its path."""
    if isinstance(x, bool):
        return
    if isinstance(x, int | float):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")


def test_dry_run_executes_every_part(tmp_path):
    out = tmp_path / "g"
    p = subprocess.run(
        [sys.executable, str(BENCH / "gpu_suite.py"), "--dry-run", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = _no_nan((out / "gpu_suite.json").read_text())
    log = (out / "gpu_suite.log").read_text()
    assert res["dry_run"] is True and res["device"] == "cpu" and res["provenance"]["git"]["commit"]
    parts = res["parts"]
    assert list(parts) == ["memory", "speed", "sdpa", "train", "extract", "compile"]
    for name, part in parts.items():
        assert part["status"] == "ok", (name, [r.get("error") for r in part["rows"]])
        assert part["rows"] and all(r["status"] == "ok" for r in part["rows"])
        assert f"== {name}" in log
    for path, v in _numbers(res):
        assert math.isfinite(v), path

    mem = {r["model"]: r for r in parts["memory"]["rows"]}
    assert set(mem) == {f"{f}-nano-f16d32" for f in ("transvae", "cnn-vae", "vit-vae", "swin-vae")}
    for r in mem.values():
        w = r["fp32_weights"]["weights_gib"]
        assert w >= 4 * r["params_M"] * 1e6 / 2**30  # fp32 parameters (plus buffers)
        if "bf16_weights" in r:  # a CPU with native bf16: the cast halves the parameters' bytes
            assert r["bf16_weights"]["weights_gib"] < w
        assert r["gflop_per_img"] > 0 and r["paper_infer_mem_gib"] is None

    speed_rows = parts["speed"]["rows"]
    for row in speed_rows:
        models = row["models"]
        assert set(models) == {
            "transvae-nano-f16d32",
            "transvae-nano-f16d32+channels-last",
            "flux-vae-config",
            "sd-vae-config",
            "dc-ae-f32c32-config",
        }
        assert models["flux-vae-config"]["reconstruct_vs_flux"] == 1.0
        for m in models.values():
            # the whole pass is slower than either of its halves
            assert 0 < m["reconstruct_img_s"] < min(m["encode_img_s"], m["decode_img_s"])
            assert m["achieved_tflops"] == pytest.approx(m["gflop_per_img"] * m["reconstruct_img_s"] / 1e3)
    sdpa = {r["model"]: r for r in parts["sdpa"]["rows"]}
    assert sdpa["transvae-nano-f16d32"]["backends"].get("flash (cpu)", 0) > 0
    assert sdpa["transvae-nano-f16d32"]["runs_without_math"] is True
    assert sdpa["dc-ae-f32c32-config"]["backends"] == {}  # ReLU linear attention: no SDPA at all

    train = parts["train"]["rows"]
    steps = [r for r in train if r["kind"] == "steps"]
    assert {(r["model"], r["gradient_checkpointing"]) for r in steps} == {
        (m, c) for m in ("transvae-nano-f16d32", "cnn-vae-nano-f16d32") for c in (False, True)
    }
    for r in train:
        assert r["status_of_fit"] == "finished" and r["nonfinite_steps"] == 0 and r["img_per_s"] > 0
    run = next(r for r in train if r["kind"] == "run")
    assert run["steps"] == 16 and len(run["curve"]) == 8 and isinstance(run["loss_falls"], bool)
    assert run["loss_falls"] == (run["loss_last"] < run["loss_first"])

    ext = parts["extract"]["rows"][0]
    assert [r["images"] for r in ext["runs"]] == [4, 12] == [r["num_latents"] for r in ext["runs"]]
    assert ext["model_weights"].startswith("the 300-step") and ext["end_to_end_img_s"] > 0
    comp = parts["compile"]["rows"][0]
    assert comp["backend"] == "eager" and comp["encode_speedup"] > 0 and comp["compile_s"] > 0
    assert set(res["checks"]) == {
        "transvae_t_reconstruct_vs_flux",
        "transvae_memory_within_paper",
        "transvae_attention_fused",
        "train_run_loss_falls_no_nonfinite",
    }
    assert res["checks"]["transvae_attention_fused"]["met"] is True


def test_budget_cut_is_recorded_per_item(suite_mod, tmp_path):
    out = tmp_path / "g"
    suite_mod.main(
        [
            "--dry-run",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--budget-s",
            "0.01",
            "--parts",
            "memory",
            "train",
        ]
    )
    res = _no_nan((out / "gpu_suite.json").read_text())
    assert set(res["parts"]) == {"memory", "train"}
    for part in res["parts"].values():
        assert part["status"] == "skipped" and part["rows"]
        assert all(
            r["status"] == "skipped" and r["reason"].startswith("budget: needs ~") for r in part["rows"]
        )


def test_missing_diffusers_is_recorded_and_the_rest_runs(suite_mod, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    out = tmp_path / "g"
    suite_mod.main(["--dry-run", "--device", "cpu", "--out", str(out), "--parts", "speed", "sdpa"])
    res = _no_nan((out / "gpu_suite.json").read_text())
    speed = res["parts"]["speed"]
    assert set(speed["build_errors"]) == {"flux-vae-config", "sd-vae-config", "dc-ae-f32c32-config"}
    assert all(e.startswith(("ImportError", "ModuleNotFoundError")) for e in speed["build_errors"].values())
    ours = ["transvae-nano-f16d32", "transvae-nano-f16d32+channels-last"]
    assert speed["status"] == "ok" and list(speed["rows"][0]["models"]) == ours
    assert speed["rows"][0]["models"]["transvae-nano-f16d32"]["reconstruct_vs_flux"] is None
    assert [r["model"] for r in res["parts"]["sdpa"]["rows"]] == ours


def test_failing_and_overrunning_items_are_recorded(suite_mod, tmp_path):
    s = suite_mod.Suite(tmp_path, budget_s=100, device=torch.device("cpu"))
    s.begin_part("memory")

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    assert s.run("memory", {"model": "a"}, 0.1, oom)["error"] == (
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    s.part_end = time.monotonic() + 0.2  # the part's share ends in 0.2 s
    row = s.run("memory", {"model": "b"}, 0.1, lambda: time.sleep(5) or {})
    assert row["status"] == "error" and row["error"].startswith("BudgetExceeded") and row["elapsed_s"] < 2
    assert s.run("memory", {"model": "c"}, 0.1, lambda: {"x": 1.0})["status"] == "skipped"
    s.part_end = time.monotonic() + 10
    assert s.run("memory", {"model": "d"}, 0.1, lambda: {"x": float("nan")})["status"] == "ok"
    s.end_part("memory")
    res = _no_nan((tmp_path / "gpu_suite.json").read_text())
    assert [r["status"] for r in res["parts"]["memory"]["rows"]] == ["error", "error", "skipped", "ok"]
    assert res["parts"]["memory"]["status"] == "partial" and res["parts"]["memory"]["rows"][3]["x"] is None


def test_paper_memory_table_covers_the_registered_paper_variants(suite_mod):
    names = suite_mod.paper_variants()
    assert set(names) == set(suite_mod.PAPER_MEM_GIB) and len(names) == 21
    assert (
        suite_mod.PAPER_MEM_GIB["transvae-t-f16d32"] == 7.4
        and suite_mod.PAPER_MEM_GIB["cnn-vae-g-f16d32"] == 31.1
    )


def test_checks_against_the_targets(suite_mod):
    def mem_row(model, total, paper):
        return {
            "model": model,
            "status": "ok",
            "paper_infer_mem_gib": paper,
            "fp32_weights": {"process_total_gib": total},
        }

    results = {
        "parts": {
            "speed": {
                "rows": [
                    {
                        "status": "ok",
                        "resolution": 256,
                        "dtype": "bf16",
                        "batch_size": 16,
                        "models": {"transvae-t-f16d32": {"reconstruct_vs_flux": 2.4}, "flux-vae-config": {}},
                    }
                ]
            },
            "memory": {
                "rows": [
                    mem_row("transvae-t-f16d32", 3.0, 7.4),
                    mem_row("transvae-g-f16d32", 25.0, 21.5),
                    mem_row("cnn-vae-g-f16d32", 99.0, 31.1),  # not a TransVAE row: not judged
                ]
            },
            "sdpa": {
                "rows": [
                    {"model": "transvae-t-f16d32", "status": "ok", "backends": {"flash": 30}},
                    {"model": "transvae-l-f16d32", "status": "ok", "backends": {"flash": 30, "math": 2}},
                ]
            },
            "train": {"rows": [{"kind": "run", "status": "ok", "loss_falls": True, "nonfinite_steps": 0}]},
        }
    }
    c = suite_mod.checks(results)
    assert (
        c["transvae_t_reconstruct_vs_flux"]["met"] is True
        and c["transvae_t_reconstruct_vs_flux"]["value"] == 2.4
    )
    mem = c["transvae_memory_within_paper"]
    assert mem["met"] is False and set(mem["fp32_weights"]["rows"]) == {
        "transvae-t-f16d32",
        "transvae-g-f16d32",
    }
    assert mem["fp32_weights"]["rows"]["transvae-t-f16d32"]["met"] is True
    assert c["transvae_attention_fused"]["met"] is False  # TransVAE-L fell back to math
    assert c["train_run_loss_falls_no_nonfinite"]["met"] is True
    results["parts"]["train"]["rows"][0]["nonfinite_steps"] = 1
    assert suite_mod.checks(results)["train_run_loss_falls_no_nonfinite"]["met"] is False
    assert suite_mod.checks({"parts": {}})["transvae_t_reconstruct_vs_flux"]["met"] is None


def test_memory_row_refuses_the_runners_tiled_fallback(monkeypatch):
    """InferenceRunner retries in tiles after an out-of-memory error; the memory part must not
    report that as a batch-16 measurement."""
    from transvae.inference.benchmarking import model_memory
    from transvae.models.transvae import Encoder

    calls = {"n": 0}
    forward = Encoder.forward

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 2:  # the measured encode (the first call is the warm-up)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)

    monkeypatch.setattr(Encoder, "forward", flaky)
    with pytest.raises(torch.OutOfMemoryError, match="fell back to tiles"):
        model_memory("transvae-nano-f16d32", 32, 1, torch.float32, torch.device("cpu"))
    assert calls["n"] >= 3  # the runner did retry (in tiles) before the suite refused the row

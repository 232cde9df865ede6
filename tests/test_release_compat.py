"""What 0.1.0 wrote still works: a saved tokenizer and a saved generator load and give the same
outputs (up to float rounding), and an unfinished ``transvae train`` / ``transvae gen-train`` run resumes and finishes.

The files in ``tests/fixtures/release-0.1.0`` were written by transvae 0.1.0 (commit 5e68e38, the
layout before the one-home-per-concept restructuring) with ``tests/fixtures/make_release_fixtures.py``;
these tests only read them (runs are copied to a temporary folder before they are resumed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

import transvae
from transvae.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "release-0.1.0"


def same(got: torch.Tensor, recorded: torch.Tensor) -> None:
    """Equal up to float rounding: the CPU that runs the test may pick other conv / matmul kernels
    than the one that wrote the fixture (on an Intel Xeon with AMX these AMD-written outputs differ
    by ~1e-7; a wrong or missing weight moves them by orders of magnitude more)."""
    scale = recorded.abs().max().item()
    assert scale > 1e-2  # the fixture's output is not degenerate
    torch.testing.assert_close(got, recorded, rtol=2e-4, atol=2e-4 * scale)


def test_a_tokenizer_saved_by_0_1_0_loads_and_gives_identical_outputs():
    model = transvae.from_pretrained(FIXTURES / "tokenizer")
    io = load_file(str(FIXTURES / "tokenizer_io.safetensors"))
    assert model.model_name == "transvae-nano-f16d32" and model.metadata == {"step": 7}
    with torch.no_grad():
        post = model.encode(io["x"])
        rec = model.decode(post.mode())
    same(post.mean, io["mean"])
    same(post.logvar, io["logvar"])
    same(rec, io["rec"])


def test_a_generator_saved_by_0_1_0_loads_through_the_one_loader_and_gives_identical_outputs():
    model = transvae.from_pretrained(FIXTURES / "generator")
    io = load_file(str(FIXTURES / "generator_io.safetensors"))
    assert type(model).__name__ == "LightningDiT" and model.kind == "generator"
    assert model.metadata["latent_shape"] == [8, 4, 4]
    assert model.config.pos_embed_order == "rows_first"  # its config.json predates the field
    with torch.no_grad():
        v = model(io["z"], io["t"], io["y"])
    same(v, io["v"])


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_train_run_started_by_0_1_0_resumes_and_finishes(tmp_path, random_photos):
    run = tmp_path / "ae"
    shutil.copytree(FIXTURES / "runs" / "ae", run)
    data = random_photos(tmp_path / "images")
    rc = main(["train", "--out", str(run), "--resume", "--data", str(data), "--max-steps", "4"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 4
    assert transvae.from_pretrained(run).metadata["step"] == 4
    assert _metric_steps(run) == sorted(_metric_steps(run))  # no step logged twice


def test_a_gen_train_run_started_by_0_1_0_resumes_and_finishes(tmp_path):
    run, latents = tmp_path / "gen", tmp_path / "latents"
    shutil.copytree(FIXTURES / "runs" / "gen", run)
    shutil.copytree(FIXTURES / "latents", latents)
    rc = main(["gen-train", "--out", str(run), "--resume", "--latents", str(latents), "--max-steps", "4"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 4
    resumed = transvae.from_pretrained(run)
    assert resumed.metadata["step"] == 4
    assert resumed.config.pos_embed_order == "rows_first"  # the order it started with, not the new default

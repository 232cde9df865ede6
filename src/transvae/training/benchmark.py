"""Measuring training: throughput, peak memory and the loss curve of a short ``Trainer`` run.

    r = measure_training({"model.name": "transvae-t-f16d32", "data.train": ["photos/"],
                          "data.resolution": 256, "train.batch_size": 16, "train.max_steps": 12},
                         "runs/measure", device="cuda")
    r["img_per_s"], r["peak_mem_gib"]

The numbers are the ``Trainer``'s own (``train/img_per_s`` of every ``log.every`` steps, the
first window, with warm-up, left out), so what is measured is the loop users run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch

from ..utils.config import read_json
from ..utils.peak_memory import measure_peak
from .config import build_config
from .trainer import Trainer

__all__ = ["QUIET", "exported_step", "measure_stage1", "measure_training", "synthetic_images"]

# settings that keep a measured run to its training steps: no validation, samples, checkpoints,
# TensorBoard or progress bar in the middle
QUIET = {
    "train.checkpoint_every": 10**9, "log.val_every": 10**9, "log.image_every": 10**9,
    "log.tensorboard": False, "log.progress": False,
}  # fmt: skip


def synthetic_images(folder: str | os.PathLike, n: int, size: int | tuple[int, int], seed: int = 0) -> Path:
    """Write ``n`` smooth random RGB PNGs (bicubically upsampled 4 x 4 noise) of ``size`` into
    ``folder``: data for timing, smoke tests and examples, with something learnable in them."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        low = torch.rand(1, 3, 4, 4, generator=g)
        im = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
        arr = (im.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(folder / f"{i:05d}.png")
    return folder


def measure_training(
    overrides: dict[str, Any],
    run_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    keep: bool = False,
) -> dict[str, Any]:
    """Train a fresh run with ``Trainer`` (``QUIET`` plus ``overrides``) and report what it did.

    Args:
        overrides: dotted config keys for ``build_config`` (``model.name``, ``data.train``,
            ``train.max_steps``, ``log.every``, ...).
        run_dir: the run folder (removed first; removed afterwards unless ``keep``).
        device: ``train.device``.
    Returns:
        ``status_of_fit``, ``steps``, ``nonfinite_steps``, ``params_M``, ``img_per_s`` (median of
        the logged windows after the first), ``img_per_s_windows``, ``s_per_img``,
        ``peak_mem_gib`` (allocator peak on CUDA over construction and fit: weights, optimizer
        state, EMA, loss networks, activations; the peak RSS growth on a CPU),
        ``activation_peak_gib``, ``loss_first`` / ``loss_last`` (mean total loss of the first and
        the last three logged windows), ``loss_falls``, ``all_logged_losses_finite``, ``curve``
        (per logged window: ``step``, ``total``, ``l1``, ``img_per_s``).
    """
    run_dir = Path(run_dir)
    cfg = build_config(overrides={**QUIET, "train.device": str(device), **overrides})
    shutil.rmtree(run_dir, ignore_errors=True)
    holder: dict[str, Any] = {}

    def fit() -> None:
        trainer = Trainer(cfg, run_dir)
        holder["summary"] = trainer.fit()
        holder["params"] = sum(p.numel() for p in trainer.model.parameters())

    try:
        mem = measure_peak(fit, device)
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    logged = [r for r in map(json.loads, lines) if "train/img_per_s" in r]
    totals = [r.get("loss/total") for r in logged]
    finite = all(v is not None and math.isfinite(v) for v in totals)
    k = max(1, min(3, len(totals) // 2))  # the first and the last (up to) three windows
    first, last = (statistics.fmean(v) if finite and v else None for v in (totals[:k], totals[-k:]))
    rates = [r["train/img_per_s"] for r in logged[1:]] or [r["train/img_per_s"] for r in logged]
    summary = holder["summary"]
    img_per_s = statistics.median(rates) if rates else None
    return {
        "status_of_fit": summary["status"],
        "steps": summary["step"],
        "nonfinite_steps": summary["nonfinite_steps"],
        "params_M": holder["params"] / 1e6,
        "img_per_s": img_per_s,
        "img_per_s_windows": [round(r, 3) for r in rates],
        "s_per_img": None if not img_per_s else 1.0 / img_per_s,
        "peak_mem_gib": mem.get("peak_allocated_gib", mem["activation_peak_gib"]),
        "activation_peak_gib": mem["activation_peak_gib"],
        "loss_first": first,
        "loss_last": last,
        "loss_falls": bool(finite and totals and last < first),
        "all_logged_losses_finite": finite,
        "curve": [
            {
                "step": r["step"],
                "total": r.get("loss/total"),
                "l1": r.get("loss/l1"),
                "img_per_s": r["train/img_per_s"],
            }
            for r in logged
        ],
    }


def measure_stage1(
    name: str, data: Path, run_dir: Path, device: torch.device | str, resolution: int, steps: int, batch: int,
    every: int, precision: str = "fp32", checkpointing: bool = False, lr: float = 1e-4, warmup: int = 1000,
    paper_loss: bool = True, workers: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """``measure_training`` (kept) of the registered model ``name`` on the photo folder ``data``
    with the paper's stage-1 loss terms, LPIPS-VGG16 and DINOv2 as randomly initialised stand-ins
    (the same FLOPs, nothing downloaded; no GAN); ``paper_loss=False``: L1 + KL only. Adds
    ``loss_terms`` (which terms ran)."""
    import importlib.util

    loss = {"loss.gan_weight": 0.0, "loss.pretrained": False}
    terms = "L1 + LPIPS + KL + VF (LPIPS-VGG16 and DINOv2 stand-ins with random weights)"
    if not paper_loss:
        loss, terms = {**loss, "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0}, "L1 + KL (dry run)"
    elif importlib.util.find_spec("lpips") is None:
        loss, terms = {**loss, "loss.lpips_weight": 0.0}, "L1 + KL + VF (lpips missing; DINOv2 stand-in)"
    over = {"model.name": name, "model.gradient_checkpointing": checkpointing, "data.train": [str(data)],
            "data.resolution": resolution, "data.num_workers": workers, "train.batch_size": batch,
            "train.max_steps": steps, "train.precision": precision, "optim.lr": lr, "optim.warmup_steps": warmup,
            "log.every": every, **loss}  # fmt: skip
    return {**measure_training(over, run_dir, device, keep=True), "loss_terms": terms}


def exported_step(run_dir: str | os.PathLike) -> int | None:
    """The step of a run's exported ``model/`` (None when nothing was exported yet)."""
    path = Path(run_dir) / "model" / "config.json"
    return read_json(path).get("metadata", {}).get("step") if path.is_file() else None

"""Helpers shared by the benchmark scripts: machine description, photo loading, crops, a small
training loop (identical for every model) and PSNR evaluation.

The scripts import this module as ``bench_utils`` (Python puts the script's folder on the path
when it runs ``python benchmarks/<script>.py``); the tests load it by file path.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "benchmarks"
RUNS_DIR = REPO / "runs" / "bench"  # gitignored: trained weights never go into git
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bsds500"
LOAD_CAVEAT = (
    "Measured on a shared machine while other jobs (tests, trainings) ran on the same cores: "
    "absolute times are slowed and noisy; the models are interleaved within one run, so the "
    "ratios between them are the figures to read."
)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Everything needed to interpret timings: CPU, cores, threads, library versions, GPU, load."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "caveat": LOAD_CAVEAT,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def slug(label: str) -> str:
    """Filesystem-safe name for a model label: ``"+ SeqConv encoder"`` -> ``"seqconv-encoder"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts -> a markdown table (floats with 3 significant decimals)."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def line_style(label: str, labels: list[str]) -> dict:
    """Matplotlib style shared by the plots: TransVAE black, CNN-VAE red, both thick; the design
    ladder rungs in between coloured from ViT-VAE (dark blue) to the last rung (yellow)."""
    import matplotlib.pyplot as plt

    if "TransVAE" in label:
        return dict(color="black", lw=2.2)
    if label == "CNN-VAE":
        return dict(color="tab:red", lw=2.2)
    rungs = [x for x in labels if x != "CNN-VAE" and "TransVAE" not in x]
    return dict(color=plt.cm.viridis(rungs.index(label) / max(len(rungs) - 1, 1)), lw=1.2)


# --- photos -----------------------------------------------------------------------------------


def load_photos(folders: list[Path], limit: int | None = None) -> list[torch.Tensor]:
    """Load every photo in ``folders`` into memory as uint8 tensors (3, H, W)."""
    from transvae.data.io import list_images, load_image

    paths = [p for folder in folders for p in list_images(folder)]
    if not paths:
        raise FileNotFoundError(f"no images found in {[str(f) for f in folders]}")
    paths = paths[:limit] if limit else paths
    out = []
    for p in paths:
        a = torch.from_numpy(np.asarray(load_image(p), dtype=np.uint8).copy())  # (H, W, 3)
        out.append(a.permute(2, 0, 1).contiguous())
    return out


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def random_crops(photos: list[torch.Tensor], n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (with random horizontal flips) -> (n, 3, size, size) uint8."""
    idx = torch.randint(len(photos), (n,), generator=generator).tolist()
    crops = []
    for i in idx:
        im = photos[i]
        top = int(torch.randint(im.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(im.shape[2] - size + 1, (1,), generator=generator))
        c = im[:, top : top + size, left : left + size]
        if torch.rand((), generator=generator) < 0.5:
            c = c.flip(-1)
        crops.append(c)
    return torch.stack(crops)


def center_crop(im: torch.Tensor, size: int) -> tuple[torch.Tensor, bool]:
    """Centre ``size`` x ``size`` crop of a uint8 photo (3, H, W) at its native scale.

    When the photo is smaller than ``size`` its shorter side is first resized (bicubic) to
    ``size``; the second return value says so (those crops are smoother than native ones).
    """
    h, w = im.shape[-2:]
    upscaled = min(h, w) < size
    if upscaled:
        s = size / min(h, w)
        h, w = max(size, round(h * s)), max(size, round(w * s))
        im = F.interpolate(im[None].float(), size=(h, w), mode="bicubic", align_corners=False)[0]
        im = im.round().clamp(0, 255).to(torch.uint8)
    top, left = (h - size) // 2, (w - size) // 2
    return im[:, top : top + size, left : left + size], upscaled


def center_crops(photos: list[torch.Tensor], size: int) -> tuple[torch.Tensor, bool]:
    """Centre crops of all photos -> ((N, 3, size, size) uint8, whether any was upscaled)."""
    crops = [center_crop(p, size) for p in photos]
    return torch.stack([c for c, _ in crops]), any(u for _, u in crops)


# --- training and evaluation ------------------------------------------------------------------


@dataclass
class TrainSettings:
    """One recipe for every model (the comparison is only fair if nothing else differs).

    Attributes:
        steps: optimizer steps.
        batch_size: crops per step.
        crop: crop size (pixels).
        lr: AdamW peak learning rate (no weight decay, as in the paper's Appendix D).
        warmup: linear warm-up steps.
        kl_weight: KL weight (the paper's 1e-8; at that weight the loss is effectively L1).
        eval_every: validate every this many steps (and at step 0 and the last step).
        seed: seeds the model initialisation and the crop sampler.
    """

    steps: int = 1500
    batch_size: int = 16
    crop: int = 64
    lr: float = 2e-4
    warmup: int = 100
    kl_weight: float = 1e-8
    eval_every: int = 150
    seed: int = 0


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 25,
    reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Validation L1 (in [-1, 1] units, on the posterior mode) and mean per-image PSNR (uint8).

    Args:
        model: an ``AutoencoderBase``.
        images: (N, 3, H, W) uint8.
        reconstruct: maps a [-1, 1] batch to its reconstruction (default: the model's forward
            on the posterior mode), e.g. a tiled ``InferenceRunner.reconstruct``.
    """
    from transvae.data.io import tensor_to_uint8
    from transvae.evaluation.metrics import psnr_per_image

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    l1_sum, psnrs = 0.0, []
    for i in range(0, len(images), batch_size):
        x8 = images[i : i + batch_size]
        x = to_unit(x8).to(device)
        y = reconstruct(x) if reconstruct else model(x, sample_posterior=False).sample
        y = y.float().cpu()  # (b, 3, H, W)
        l1_sum += (y.clamp(-1, 1) - to_unit(x8)).abs().mean(dim=(1, 2, 3)).sum().item()
        psnrs.append(psnr_per_image(x8, tensor_to_uint8(y)).clamp(max=100.0))
    model.train(was_training)
    return {"l1": l1_sum / len(images), "psnr": torch.cat(psnrs).mean().item()}


def train_model(
    model: torch.nn.Module,
    train_photos: list[torch.Tensor],
    val_images: torch.Tensor,
    s: TrainSettings,
    progress: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` with L1 + KL and AdamW; return the validation curve.

    The crop sequence and the posterior noise depend only on ``s.seed``, so every model sees
    exactly the same batches. Wall-clock time excludes validation.

    Returns:
        [{"step", "time_s", "l1", "psnr", "train_loss"}, ...] with step 0 first.
    """
    device = next(model.parameters()).device
    data_gen = torch.Generator().manual_seed(s.seed)
    noise_gen = torch.Generator(device=device).manual_seed(s.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(s.warmup, 1)))
    curve = [{"step": 0, "time_s": 0.0, "train_loss": None, **evaluate(model, val_images)}]
    if progress:
        progress(0, curve[-1])
    model.train()
    elapsed, running = 0.0, []
    for step in range(1, s.steps + 1):
        x = to_unit(random_crops(train_photos, s.batch_size, s.crop, data_gen)).to(device)
        t0 = time.perf_counter()
        out = model(x, sample_posterior=True, generator=noise_gen)
        loss = (out.sample - x).abs().mean() + s.kl_weight * out.posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sync(device)
        elapsed += time.perf_counter() - t0
        running.append(loss.item())
        if not math.isfinite(running[-1]):
            raise FloatingPointError(f"loss became {running[-1]} at step {step}")
        if step % s.eval_every == 0 or step == s.steps:
            curve.append(
                {
                    "step": step,
                    "time_s": elapsed,
                    "train_loss": sum(running) / len(running),
                    **evaluate(model, val_images),
                }
            )
            running = []
            if progress:
                progress(step, curve[-1])
    return curve

"""One evaluation pass: a folder of images at one resolution through one autoencoder.

``evaluate_resolution`` reads and preprocesses the images (``protocol``), reconstructs them in
batches (bf16/fp16 autocast on GPU), quantises both sides to uint8, and accumulates per-image
PSNR / SSIM / LPIPS and the set-level rFID, plus optional latent statistics, latent vectors for
the uniformity metrics and pooled latents for the linear probe. Unreadable files, and images whose
reconstruction fails on its own (a batch that fails, e.g. out of memory, is retried image by
image), are skipped with their reason in ``skipped``; the pass goes on.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transvae.data.io import tensor_to_uint8

from ..utils.failures import run_isolated
from .fid import FIDMetric
from .latent_analysis import LatentStatistics, LatentVectorSampler, pooled_latents
from .metrics import LPIPSMetric, psnr_per_image, ssim_per_image, uint8_to_unit
from .protocol import EvalImageDataset, collate_items

METRICS = ("psnr", "ssim", "lpips", "rfid")


@dataclass
class Example:
    """A reconstruction kept for the report: uint8 (H, W, 3) arrays and its scores."""

    path: str
    scores: dict[str, float]
    original: np.ndarray
    reconstruction: np.ndarray


@dataclass
class LatentOptions:
    """What to collect from the latents during the pass.

    Attributes:
        statistics: per-channel mean/std (``latent_statistics``).
        uniformity_samples: latent vectors to keep for ``uniformity_metrics`` (0 = none).
        pooled: keep global-pooled latents per image (linear probe).
        source: "mode" (posterior mean) or "sample" (a posterior sample, as diffusion training uses).
        seed: RNG seed for posterior samples and vector positions.
    """

    statistics: bool = False
    uniformity_samples: int = 0
    pooled: bool = False
    source: str = "sample"
    seed: int = 0

    @property
    def any(self) -> bool:
        return self.statistics or self.uniformity_samples > 0 or self.pooled


@dataclass
class ResolutionResult:
    """Everything one pass measured (``summary`` is what goes into results.json's ``results``)."""

    resolution: int
    summary: dict
    per_image: list[dict]
    worst: list[Example]
    skipped: list[dict]
    latent_stats: dict | None = None
    latent_vectors: np.ndarray | None = None
    pooled: np.ndarray | None = None  # (N, C), rows in the order of ``per_image``
    extras: dict = field(default_factory=dict)


def summarise(values: dict[str, list[float]], num_images: int) -> dict:
    """Set-level numbers from per-image values: the mean of each (VA-VAE convention).

    PSNR of an identical pair is +inf; the mean is then +inf too, so we also report how many
    images were identical and the mean over the others (``psnr_finite_mean``).
    """
    out: dict = {"num_images": num_images}
    for name, vals in values.items():
        a = np.asarray(vals, dtype=np.float64)
        out[name] = float(a.mean()) if len(a) else math.nan
        if name == "psnr":
            finite = a[np.isfinite(a)]
            out["psnr_num_identical"] = int(np.isposinf(a).sum())
            out["psnr_finite_mean"] = float(finite.mean()) if len(finite) else None
            out["psnr_std"] = float(finite.std()) if len(finite) else None
        elif len(a):
            out[f"{name}_std"] = float(a.std())
    return out


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_resolution(
    model: torch.nn.Module,
    files: list[Path],
    resolution: int,
    metrics: tuple[str, ...] = ("psnr", "ssim"),
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    lpips_metric: LPIPSMetric | None = None,
    fid_metric: FIDMetric | None = None,
    num_workers: int = 0,
    keep_worst: int = 8,
    latent: LatentOptions | None = None,
    root: Path | None = None,
    progress: bool = True,
    save_dir: Path | None = None,
) -> ResolutionResult:
    """Reconstruct ``files`` at ``resolution`` and measure them (see the module docstring).

    Args:
        model: an ``AutoencoderBase`` (eval mode is set here).
        files: image paths; unreadable ones are skipped and listed in ``skipped``.
        resolution: R; must be a multiple of the model's spatial compression ratio.
        metrics: subset of ("psnr", "ssim", "lpips", "rfid").
        batch_size: images per forward pass.
        device: where the model and metrics run.
        dtype: autocast dtype for the model (torch.float32 = no autocast); metrics stay float32/64.
        lpips_metric: required if "lpips" is requested.
        fid_metric: required if "rfid" is requested; it is reset here.
        num_workers: DataLoader workers for reading/resizing.
        keep_worst: how many lowest-PSNR reconstructions to keep for the report.
        latent: what to collect from the latents (None = nothing).
        root: data root, to print paths relative to it.
        progress: show a tqdm bar.
        save_dir: if set, write the uint8 images the metrics saw as PNGs:
            ``save_dir/inputs/<relative path>.png`` and ``save_dir/reconstructions/<relative path>.png``.
    Returns:
        ResolutionResult.
    """
    device = torch.device(device)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {METRICS}")
    if "lpips" in metrics and lpips_metric is None:
        raise ValueError("lpips requested but no lpips_metric given")
    if "rfid" in metrics and fid_metric is None:
        raise ValueError("rfid requested but no fid_metric given")
    f = getattr(model, "spatial_compression_ratio", 1)
    if resolution % f:
        raise ValueError(f"resolution {resolution} is not a multiple of the model's compression ratio {f}")
    latent = latent or LatentOptions()
    model.eval()
    if fid_metric is not None and "rfid" in metrics:
        fid_metric.reset()

    loader = DataLoader(
        EvalImageDataset(files, resolution),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
    )
    per_metric: dict[str, list[float]] = {m: [] for m in metrics if m != "rfid"}
    per_image: list[dict] = []
    skipped: list[dict] = []
    worst: list[Example] = []
    num_upsampled = 0
    stats = LatentStatistics() if latent.statistics else None
    sampler = (
        LatentVectorSampler(latent.uniformity_samples, len(files), latent.seed)
        if latent.uniformity_samples
        else None
    )
    pooled: list[torch.Tensor] = []
    gen = (
        torch.Generator(device=device).manual_seed(latent.seed)
        if latent.any and latent.source == "sample"
        else None
    )

    def rel(p: Path) -> str:
        try:
            return str(Path(p).relative_to(root)) if root is not None else str(p)
        except ValueError:
            return str(p)

    bar = tqdm(
        loader, desc=f"evaluate {resolution}px", unit="batch", disable=not progress, dynamic_ncols=True
    )

    def forward(batch: list[tuple[int, torch.Tensor]]) -> list:
        """Reconstruct a batch: per image (uint8 reconstruction, latent or None)."""
        x = torch.stack([t for _, t in batch])  # (B, 3, R, R) uint8
        with _autocast(device, dtype):
            posterior = model.encode(uint8_to_unit(x))
            rec = model.decode(posterior.mode())
        z = None
        if latent.any:
            z = (posterior.sample(gen) if latent.source == "sample" else posterior.mode()).float()
        rec_u8 = tensor_to_uint8(rec)  # (B, 3, R, R) uint8, rounding as a saved PNG
        return [(rec_u8[k], None if z is None else z[k]) for k in range(len(batch))]

    def skip(i: int, reason: str) -> None:
        skipped.append({"path": rel(files[i]), "reason": reason})

    for x_all, idx_all, up_all, bad in bar:
        skipped += [{"path": rel(files[it.index]), "reason": it.error} for it in bad]
        if len(idx_all) == 0:
            continue
        x_all = x_all.to(device, non_blocking=True)
        upsampled_of = dict(zip(idx_all, up_all, strict=True))
        # a batch that fails (out of memory, ...) is retried image by image; failures are skipped
        done = run_isolated(forward, list(idx_all), list(zip(idx_all, x_all, strict=True)), skip)
        if not done:
            continue
        idx = [i for i, _ in done]
        keep = [idx_all.index(i) for i in idx]
        x_u8 = x_all[keep]
        rec_u8 = torch.stack([r for _, (r, _) in done])
        num_upsampled += sum(upsampled_of[i] for i in idx)
        scores: dict[str, torch.Tensor] = {}
        if "psnr" in metrics or keep_worst:
            scores["psnr"] = psnr_per_image(x_u8, rec_u8).cpu()
        if "ssim" in metrics:
            scores["ssim"] = ssim_per_image(x_u8, rec_u8).cpu()
        if "lpips" in metrics:
            scores["lpips"] = lpips_metric(x_u8, rec_u8).cpu()
        if "rfid" in metrics:
            fid_metric.update(x_u8, rec_u8)
        for name in per_metric:
            per_metric[name] += scores[name].tolist()
        for j, i in enumerate(idx):
            per_image.append(
                {"path": rel(files[i]), **{k: float(v[j]) for k, v in scores.items() if k in per_metric}}
            )
        if save_dir is not None:
            _save_pngs(save_dir, [rel(files[i]) for i in idx], x_u8, rec_u8)
        if keep_worst:
            worst = _keep_worst(worst, files, idx, scores, x_u8, rec_u8, keep_worst, rel)
        if latent.any:
            z = torch.stack([zk for _, (_, zk) in done])  # (B, C, h, w)
            if stats is not None:
                stats.update(z)
            if sampler is not None:
                sampler.update(z)
            if latent.pooled:
                pooled.append(pooled_latents(z).cpu())
        if "psnr" in per_metric:
            bar.set_postfix(psnr=f"{np.mean(per_metric['psnr']):.2f}")

    n = len(per_image)
    summary = {"resolution": resolution, **summarise(per_metric, n)}
    if "rfid" in metrics:
        summary["rfid"] = fid_metric.compute() if n >= 2 else None
    summary["num_upsampled"] = num_upsampled
    summary["num_skipped"] = len(skipped)
    if "psnr" not in metrics:  # psnr was only computed to rank the report's examples
        for e in worst:
            e.scores.pop("psnr", None)
    return ResolutionResult(
        resolution=resolution,
        summary=summary,
        per_image=per_image,
        worst=worst,
        skipped=skipped,
        latent_stats=stats.compute() if stats is not None and stats.count else None,
        latent_vectors=sampler.result() if sampler is not None and sampler.vectors else None,
        pooled=torch.cat(pooled).numpy() if pooled else None,
    )


def _save_pngs(save_dir: Path, names: list[str], x_u8: torch.Tensor, rec_u8: torch.Tensor) -> None:
    """Write the exact uint8 inputs and reconstructions of a batch (lossless PNG)."""
    import io

    from PIL import Image

    from transvae.utils.files import atomic_write_bytes

    for kind, batch in (("inputs", x_u8), ("reconstructions", rec_u8)):
        arr = batch.permute(0, 2, 3, 1).cpu().numpy()  # (B, R, R, 3)
        for name, a in zip(names, arr, strict=True):
            path = Path(save_dir) / kind / Path(name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())


def _keep_worst(worst, files, idx, scores, x_u8, rec_u8, k, rel) -> list[Example]:
    """Merge this batch into the k lowest-PSNR examples (identical images, PSNR inf, rank last)."""
    psnr = scores["psnr"]
    order = torch.argsort(psnr)[:k].tolist()
    threshold = worst[-1].scores["psnr"] if len(worst) >= k else math.inf
    for j in order:
        if len(worst) >= k and float(psnr[j]) >= threshold:
            break
        worst.append(
            Example(
                path=rel(files[idx[j]]),
                scores={name: float(v[j]) for name, v in scores.items()},
                original=x_u8[j].permute(1, 2, 0).cpu().numpy(),
                reconstruction=rec_u8[j].permute(1, 2, 0).cpu().numpy(),
            )
        )
    worst.sort(key=lambda e: e.scores["psnr"])
    return worst[:k]

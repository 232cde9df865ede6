"""One evaluation pass: a folder of images at one resolution through one autoencoder.

``evaluate_resolution`` reads and preprocesses the images (``protocol``: one of the published
pipelines), reconstructs them in batches (bf16/fp16 autocast on GPU), quantises both sides to
uint8 as the protocol does, and feeds the pairs to the
metrics (``transvae.metrics``: per-image PSNR / SSIM / LPIPS, the set-level rFID), plus optional
latent statistics, latent vectors for the uniformity metrics and pooled latents for the linear
probe. Unreadable files, and images whose reconstruction fails on its own (a batch that fails,
e.g. out of memory, is retried image by image), are skipped with their reason in ``skipped``;
the pass goes on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..metrics.base import build_metrics, uint8_to_unit
from ..metrics.collection import MetricCollection
from ..metrics.psnr import psnr_per_image
from ..utils.failures import run_isolated
from .latent_analysis import LatentStatistics, LatentVectorSampler, pooled_latents
from .protocol import EvalBatch, EvalImageDataset, Protocol, collate_items, get_protocol


@dataclass
class Example:
    """A reconstruction kept for the report: uint8 (H, W, 3) arrays, its scores and its PSNR (rank)."""

    path: str
    scores: dict[str, float]
    original: np.ndarray
    reconstruction: np.ndarray
    rank: float = math.inf


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


class _Latents:
    """The latent analyses' accumulators for one pass (statistics, sampled vectors, pooled latents)."""

    def __init__(self, opts: LatentOptions, num_files: int):
        self.stats = LatentStatistics() if opts.statistics else None
        n = opts.uniformity_samples
        self.sampler = LatentVectorSampler(n, num_files, opts.seed) if n else None
        self.pooled: list[torch.Tensor] | None = [] if opts.pooled else None

    def update(self, z: torch.Tensor) -> None:
        """Add (B, C, h, w) latents."""
        if self.stats is not None:
            self.stats.update(z)
        if self.sampler is not None:
            self.sampler.update(z)
        if self.pooled is not None:
            self.pooled.append(pooled_latents(z).cpu())

    def results(self) -> dict:
        return dict(
            latent_stats=self.stats.compute() if self.stats is not None and self.stats.count else None,
            latent_vectors=self.sampler.result()
            if self.sampler is not None and self.sampler.vectors
            else None,
            pooled=torch.cat(self.pooled).numpy() if self.pooled else None,
        )


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _reconstructor(
    model, device: torch.device, dtype: torch.dtype, latent: LatentOptions, protocol: Protocol
):
    """``forward(batch) -> [(uint8 reconstruction, latent or None)]`` for [(index, (uint8 image,
    float model input or None))]: the protocol's encoder input, posterior mean or sample, rounding."""
    sampled = latent.any and latent.source == "sample"
    gen = (
        torch.Generator(device=device).manual_seed(latent.seed)
        if sampled or protocol.sample_posterior
        else None
    )

    def forward(batch: list[tuple[int, tuple[torch.Tensor, torch.Tensor | None]]]) -> list:
        x = torch.stack([t if xin is None else xin for _, (t, xin) in batch])  # (B, 3, R, R)
        x = uint8_to_unit(x) if x.dtype == torch.uint8 else x
        with _autocast(device, dtype):
            posterior = model.encode(x)
            sample = posterior.sample(gen) if sampled or protocol.sample_posterior else None
            rec = model.decode(sample if protocol.sample_posterior else posterior.mode())
        z = None
        if latent.any:  # the analysed latent is the decoded sample when the protocol decodes one
            z = (sample if latent.source == "sample" else posterior.mode()).float()
        rec_u8 = protocol.quantise(rec)  # (B, 3, R, R) uint8, rounding as the protocol's PNGs
        return [(rec_u8[k], None if z is None else z[k]) for k in range(len(batch))]

    return forward


class _Speed:
    """The reconstruction throughput of a pass (encode + decode + rounding; the first batch, a
    warm-up, is left out unless it is the only one) and, on CUDA, the peak memory of the model's
    forward: its weights plus what the forward allocated above what was there before it."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        self.weights = sum(p.numel() * p.element_size() for p in model.parameters())
        self.timed: list[tuple[float, int]] = []  # (seconds, images) per batch
        self.peak = 0

    @contextlib.contextmanager
    def measure(self, images: int):
        base = 0
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        t = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device) - base)
        self.timed.append((time.perf_counter() - t, images))

    def summary(self) -> dict:
        timed = self.timed[1:] or self.timed
        seconds, images = sum(t for t, _ in timed), sum(n for _, n in timed)
        out = {"images_per_second": images / seconds if seconds > 0 else None}
        if self.cuda:
            out["peak_memory_mb"] = (self.weights + self.peak) / 2**20
        return out


def _collection(metrics: MetricCollection | Sequence[str], device: torch.device) -> MetricCollection:
    """The pass's metrics: a ready collection, or names of network-free metrics (PSNR, SSIM)."""
    mc = (
        metrics
        if isinstance(metrics, MetricCollection)
        else MetricCollection(build_metrics(metrics), device=device)
    )
    wrong = [m.name for m in mc.metrics if m.needs != {"pairs"}]
    if wrong:
        raise ValueError(f"{wrong} do not measure reconstructions; choose metrics that need pairs")
    return mc


@torch.no_grad()
def evaluate_resolution(
    model: torch.nn.Module,
    files: list[Path],
    resolution: int,
    metrics: MetricCollection | Sequence[str] = ("psnr", "ssim"),
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    keep_worst: int = 8,
    latent: LatentOptions | None = None,
    root: Path | None = None,
    progress: bool = True,
    save_dir: Path | None = None,
    protocol: str | Protocol = "transvae",
) -> ResolutionResult:
    """Reconstruct ``files`` at ``resolution`` and measure them (see the module docstring).

    Args:
        model: an ``AutoencoderBase`` (eval mode is set here).
        files: image paths; unreadable ones are skipped and listed in ``skipped``.
        resolution: R; must be a multiple of the model's spatial compression ratio.
        metrics: a ``MetricCollection`` of reconstruction metrics (it is reset here), or names
            of metrics that need no pretrained network (``("psnr", "ssim")``).
        batch_size: images per forward pass.
        device: where the model and metrics run.
        dtype: autocast dtype for the model (torch.float32 = no autocast); metrics stay float32/64.
        num_workers: DataLoader workers for reading/resizing.
        keep_worst: how many lowest-PSNR reconstructions to keep for the report.
        latent: what to collect from the latents (None = nothing).
        root: data root, to print paths relative to it.
        progress: show a tqdm bar.
        save_dir: if set, write the uint8 images the metrics saw as PNGs:
            ``save_dir/inputs/<relative path>.png`` and ``save_dir/reconstructions/<relative path>.png``.
        protocol: the evaluation protocol (``transvae.evaluation.protocol.PROTOCOLS``) or its name.
    Returns:
        ResolutionResult.
    """
    device = torch.device(device)
    mc = _collection(metrics, device)
    f = getattr(model, "spatial_compression_ratio", 1)
    if resolution % f:
        raise ValueError(f"resolution {resolution} is not a multiple of the model's compression ratio {f}")
    latent, protocol = latent or LatentOptions(), get_protocol(protocol)
    model.eval()
    mc.reset()
    loader = DataLoader(
        EvalImageDataset(files, resolution, protocol),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
    )
    acc = _Pass(files, root, mc, keep_worst, _Latents(latent, len(files)) if latent.any else None, save_dir)
    speed = _Speed(model, device)
    forward = _reconstructor(model, device, dtype, latent, protocol)
    bar = tqdm(
        loader, desc=f"evaluate {resolution}px", unit="batch", disable=not progress, dynamic_ncols=True
    )
    b: EvalBatch
    for b in bar:
        acc.skipped += [{"path": acc.rel(files[it.index]), "reason": it.error} for it in b.failed]
        if not b.indices:
            continue
        x_all = b.images.to(device, non_blocking=True)
        xin = [None] * len(x_all) if b.model_inputs is None else b.model_inputs.to(device, non_blocking=True)
        items = list(zip(b.indices, zip(x_all, xin, strict=True), strict=True))
        # a batch that fails (out of memory, ...) is retried image by image; failures are skipped
        with speed.measure(len(items)):
            done = run_isolated(forward, list(b.indices), items, acc.skip)
        if done:
            acc.add(done, x_all, b.indices, b.upsampled)
            if "psnr" in acc.values:
                bar.set_postfix(psnr=f"{np.mean(acc.values['psnr']):.2f}")
    result = acc.result(resolution)
    result.summary.update(speed.summary())
    return result


class _Pass:
    """What one pass accumulates besides the metrics' own states: per-image rows, the worst
    examples, skipped files, latents."""

    def __init__(
        self, files, root, mc: MetricCollection, keep_worst: int, latents: _Latents | None, save_dir
    ):
        self.files, self.root, self.mc, self.keep_worst = files, root, mc, keep_worst
        self.latents, self.save_dir = latents, save_dir
        self.per_image: list[dict] = []
        self.skipped: list[dict] = []
        self.worst: list[Example] = []
        self.values: dict[str, list[float]] = {m.name: [] for m in mc.pairs()}
        self.num_upsampled = 0

    def rel(self, p: Path) -> str:
        try:
            return str(Path(p).relative_to(self.root)) if self.root is not None else str(p)
        except ValueError:
            return str(p)

    def skip(self, i: int, reason: str) -> None:
        self.skipped.append({"path": self.rel(self.files[i]), "reason": reason})

    def add(self, done: list, x_all: torch.Tensor, idx_all: list[int], up_all: list[bool]) -> None:
        """Measure the reconstructed images of a batch (``done``: [(index, (uint8 rec, latent))])."""
        idx = [i for i, _ in done]
        x_u8 = x_all[[idx_all.index(i) for i in idx]]
        rec_u8 = torch.stack([r for _, (r, _) in done])
        self.num_upsampled += sum(dict(zip(idx_all, up_all, strict=True))[i] for i in idx)
        scores = {k: v.cpu() for k, v in self.mc.update_pairs(x_u8, rec_u8).items()}
        names = [self.rel(self.files[i]) for i in idx]
        for name, v in scores.items():
            self.values[name] += v.tolist()
        self.per_image += [
            {"path": n, **{k: float(v[j]) for k, v in scores.items()}} for j, n in enumerate(names)
        ]
        if self.save_dir is not None:
            _save_pngs(self.save_dir, names, x_u8, rec_u8)
        if self.keep_worst:
            rank = scores["psnr"] if "psnr" in scores else psnr_per_image(x_u8, rec_u8).cpu()
            self.worst = _keep_worst(self.worst, names, scores, rank, x_u8, rec_u8, self.keep_worst)
        if self.latents is not None:
            self.latents.update(torch.stack([zk for _, (_, zk) in done]))  # (B, C, h, w)

    def result(self, resolution: int) -> ResolutionResult:
        summary = {"resolution": resolution, "num_images": len(self.per_image)}
        summary.update(self.mc.compute(strict=False))
        summary.update(num_upsampled=self.num_upsampled, num_skipped=len(self.skipped))
        return ResolutionResult(
            resolution=resolution,
            summary=summary,
            per_image=self.per_image,
            worst=self.worst,
            skipped=self.skipped,
            **(self.latents.results() if self.latents is not None else {}),
        )


def _save_pngs(save_dir: Path, names: list[str], x_u8: torch.Tensor, rec_u8: torch.Tensor) -> None:
    """Write the exact uint8 inputs and reconstructions of a batch (lossless PNG)."""
    from transvae.data.io import png_bytes
    from transvae.utils.files import atomic_write_bytes

    for kind, batch in (("inputs", x_u8), ("reconstructions", rec_u8)):
        arr = batch.permute(0, 2, 3, 1).cpu().numpy()  # (B, R, R, 3)
        for name, a in zip(names, arr, strict=True):
            path = Path(save_dir) / kind / Path(name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, png_bytes(a))


def _keep_worst(worst, names, scores, rank, x_u8, rec_u8, k) -> list[Example]:
    """Merge this batch into the k lowest-PSNR examples (identical images, PSNR inf, rank last).

    ``rank`` is the batch's per-image PSNR; ``scores`` the requested metrics' values.
    """
    threshold = worst[-1].rank if len(worst) >= k else math.inf
    for j in torch.argsort(rank)[:k].tolist():
        if len(worst) >= k and float(rank[j]) >= threshold:
            break
        worst.append(
            Example(
                path=names[j],
                scores={name: float(v[j]) for name, v in scores.items()},
                original=x_u8[j].permute(1, 2, 0).cpu().numpy(),
                reconstruction=rec_u8[j].permute(1, 2, 0).cpu().numpy(),
                rank=float(rank[j]),
            )
        )
    worst.sort(key=lambda e: e.rank)
    return worst[:k]


@torch.no_grad()
def reconstruct_files(
    model: torch.nn.Module,
    files: list[Path],
    resolution: int,
    protocol: str | Protocol = "transvae",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    count: int = 4,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The first ``count`` readable ``files`` reconstructed as ``evaluate_resolution`` does (same
    protocol, rounding and autocast), e.g. to show several models on the same images.

    Returns:
        (file names, inputs (N, 3, R, R) uint8, reconstructions (N, 3, R, R) uint8), on the CPU.
    """
    device, protocol = torch.device(device), get_protocol(protocol)
    ds = EvalImageDataset(files, resolution, protocol)
    names, items = [], []
    for i in range(len(ds)):
        it = ds[i]
        if it.image is not None:
            xin = None if it.model_input is None else it.model_input.to(device)
            items.append((i, (it.image.to(device), xin)))
            names.append(Path(files[i]).name)
        if len(items) == count:
            break
    if not items:
        empty = torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
        return [], empty, empty
    model.eval()
    recs = _reconstructor(model, device, dtype, LatentOptions(seed=seed), protocol)(items)
    return names, torch.stack([x for _, (x, _) in items]).cpu(), torch.stack([r for r, _ in recs]).cpu()

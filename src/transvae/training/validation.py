"""Validation of an autoencoder during training: reconstruction metrics over a held-out set, and sample grids.

The metrics are ``transvae.metrics``' plugins (the ones ``transvae evaluate`` reports), built
from names (``VALIDATION_METRICS``): on uint8-quantised images, per image, averaged over the
set; the reconstruction is the posterior mode. Every rank evaluates a disjoint share of the
images and the metrics' sums are all-reduced, so the figure is the same on every rank and
FSDP-sharded models (whose forward needs every rank) work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.datasets import collate
from ..data.io import save_image_grid, tensor_to_uint8
from ..metrics.base import build_metrics
from ..utils.distributed import DistInfo

VALIDATION_METRICS = ("psnr", "ssim", "ciede2000")  # CIEDE2000: colour drift shows early


def rank_batches(
    dataset: Dataset, batch_size: int, dist: DistInfo, check_stop=None
) -> Iterator[torch.Tensor]:
    """This rank's share of ``dataset`` (images r, r + world, ...) as batches of images on
    ``dist.device``; ``check_stop`` is called before every batch, batches without images are skipped.

    Args:
        dataset: items ``{"image": (3, H, W) in [-1, 1] or None}``.
        batch_size: images per batch.
        dist: the process layout.
        check_stop: as for ``reconstruction_metrics``.
    """
    share = Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    for batch in DataLoader(share, batch_size=batch_size, collate_fn=collate):
        if check_stop is not None:
            check_stop()
        if batch["image"] is not None:
            yield batch["image"].to(dist.device)


@torch.no_grad()
def reconstruction_metrics(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int,
    dist: DistInfo,
    autocast,
    check_stop=None,
    metrics: Sequence[str] = VALIDATION_METRICS,
) -> dict[str, float]:
    """``{"val/<metric>" ..., "val/images"}`` of ``model`` on ``dataset`` (every rank calls it).

    Args:
        model: the autoencoder (plain or FSDP-sharded); run in eval mode, posterior mode.
        dataset: items ``{"image": (3, H, W) in [-1, 1] or None}``.
        batch_size: images per forward.
        dist: the process layout (rank r evaluates images r, r + world, ...).
        autocast: a callable returning the autocast context of the run.
        check_stop: called before every batch (``Engine.check_stop``: raises once a signal came).
        metrics: names of per-image reconstruction metrics that need no pretrained network.
    Returns:
        Means over all images; SSIM is NaN for images of 10 px or less (no valid SSIM window).
    """
    built = build_metrics(metrics)
    was_training = model.training
    model.eval()
    images = 0
    for x in rank_batches(dataset, batch_size, dist, check_stop):
        with autocast():
            rec = model(x, sample_posterior=False).sample
        a, b = tensor_to_uint8(x).cpu(), tensor_to_uint8(rec).cpu()  # (B, 3, H, W) uint8
        for m in built:
            m.update(a, b)
        images += a.shape[0]
    model.train(was_training)
    out = {}
    for m in built:
        if dist.enabled:
            m.sync(dist.device)
        out[f"val/{m.name}"] = m.compute()[m.key]
    n = torch.tensor(float(images), dtype=torch.float64)
    if dist.enabled:
        n = n.to(dist.device)
        torch.distributed.all_reduce(n)
    return {**out, "val/images": float(n)}


@torch.no_grad()
def save_reconstruction_grid(
    model: torch.nn.Module,
    images: list[torch.Tensor],
    path: Path,
    write: bool,
    device: torch.device,
    autocast,
) -> Path | None:
    """PNG grid of (input | reconstruction) pairs (every rank runs the model; ``write`` on one).

    Args:
        model: the autoencoder; posterior mode.
        images: (3, H, W) tensors in [-1, 1], all the same size.
        path: the PNG to write.
        write: whether this rank writes the file.
        device: where the model runs.
        autocast: a callable returning the autocast context of the run.
    """
    if not images:
        return None
    was_training = model.training
    model.eval()
    xs = torch.stack(images).to(device)  # (k, 3, H, W)
    with autocast():
        rec = model(xs, sample_posterior=False).sample.float()
    model.train(was_training)
    if not write:
        return None
    pairs = torch.stack([xs, rec], 1).flatten(0, 1)  # (2k, 3, H, W): input, recon, input, ...
    return save_image_grid(tensor_to_uint8(pairs).cpu(), path, nrow=min(8, 2 * len(images)))

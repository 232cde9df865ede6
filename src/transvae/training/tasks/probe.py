"""The "diffusability" probe: how easily a small generator learns the tokenizer's current latents.

The paper judges a tokenizer by how fast a diffusion model trains on its latents (Section 4.3).
Training one takes far longer than a validation, but a tiny proxy fits in seconds: at a
validation, the posterior means of the validation images are normalised per channel (as
LightningDiT trains on them), split in two, and a fresh small LightningDiT
(``lightningdit-nano-1``, one class) is trained with the rectified-flow loss for a fixed number of
steps on the first part, from a fixed seed; its loss on the held-out part, at fixed noise, is
``val/diffusability`` (lower: easier latents). A user tuning ``loss.kl_weight`` or
``loss.vf_weight`` sees what it does to the generator's task over the run.

The value depends on the latent shape, the number of images and the probe's budget: compare it
across validations of **one run**, not across tokenizers (a tokenizer whose latents hold less
information is also easier to model; ``benchmarks/generation.py`` compares tokenizers in a shared
image space).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ...data.datasets import collate
from ...generation.flow import RectifiedFlow
from ...models.distributions import DiagonalGaussianDistribution
from ...models.registry import create_model
from ...utils.distributed import DistInfo


@torch.no_grad()
def _latents(
    encoder, dataset: Dataset, batch_size: int, dist: DistInfo, autocast, check_stop
) -> torch.Tensor:
    """Posterior means of the whole dataset on every rank: (N, C, h, w) float32 on the CPU."""
    share = Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    out = []
    for batch in DataLoader(share, batch_size=batch_size, collate_fn=collate):
        check_stop()
        if batch["image"] is None:
            continue
        with autocast():
            z = DiagonalGaussianDistribution(encoder(batch["image"].to(dist.device))).mean
        out.append(z.float().cpu())
    z = torch.cat(out) if out else torch.zeros(0)
    if dist.enabled:
        parts = [None] * dist.world_size
        torch.distributed.all_gather_object(parts, z)
        z = torch.cat([p for p in parts if p.numel()])
    return z


def diffusability(
    encoder,
    dataset: Dataset,
    steps: int,
    batch_size: int,
    dist: DistInfo,
    autocast,
    check_stop,
    model_name: str = "lightningdit-nano-1",
    seed: int = 0,
) -> dict[str, float]:
    """``{"val/diffusability": held-out flow loss}`` of a probe trained for ``steps`` steps on
    ``encoder``'s latents of ``dataset`` (module docstring). Every rank calls it and gets the
    same value (each encodes its share; the probe itself is trained identically everywhere).

    Args:
        encoder: image -> moments module (the EMA or current encoder).
        dataset: items ``{"image": (3, H, W) in [-1, 1] or None}``; at least 4 images.
        steps: probe optimizer steps (0: no probe).
        batch_size: images per encoder batch and latents per probe step.
        dist, autocast, check_stop: as for ``validation.reconstruction_metrics``.
        model_name: the probe generator (a registered LightningDiT).
        seed: the probe's init, data order and noise.
    """
    z = _latents(encoder, dataset, batch_size, dist, autocast, check_stop)
    if steps <= 0 or len(z) < 4:
        return {}
    mean, std = z.mean(dim=(0, 2, 3), keepdim=True), z.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    z = (z - mean) / std
    n_train = len(z) * 3 // 4
    train, held = z[:n_train], z[n_train:]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = create_model(model_name, in_channels=z.shape[1], num_classes=1, class_dropout=0.0)
    probe, train, held = probe.to(dist.device), train.to(dist.device), held.to(dist.device)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    flow = RectifiedFlow(cosine_loss=False)
    with torch.enable_grad():
        for _ in range(steps):
            check_stop()
            idx = torch.randint(0, len(train), (min(batch_size, len(train)),), generator=g)
            y = torch.zeros(len(idx), dtype=torch.int64, device=dist.device)
            loss, _ = flow.loss(probe, train[idx.to(dist.device)], y, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        g_eval = torch.Generator().manual_seed(seed + 1)
        y = torch.zeros(len(held), dtype=torch.int64, device=dist.device)
        loss, _ = flow.loss(probe, held, y, generator=g_eval)
    return {"val/diffusability": float(loss)}

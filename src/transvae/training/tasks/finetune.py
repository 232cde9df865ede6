"""Fine-tuning a tokenizer without breaking the latent space its diffusion models were trained on.

A fine-tune starts from any saved or imported tokenizer (``model.init``). Two modes (recipes
``configs/finetune-decoder.yaml`` and ``configs/finetune-full.yaml``):

- **decoder only** (``train.stage: 2``): the encoder is frozen, so every latent, and every
  diffusion model trained on them, is unchanged: the approach of SD's ft-EMA / ft-MSE decoders.
  Latent drift is exactly 0.
- **full** (``train.stage: 1`` with ``loss.anchor_weight > 0``): the encoder trains too, held near
  the starting encoder by a *latent-anchor* loss: the relative squared distance between the
  posterior means of the training batch under the current encoder and under a frozen copy of
  the starting one, ``||mu - mu0||^2 / ||mu0||^2``.

Every validation of a fine-tune logs the **latent drift** of a fixed reference set (the
validation images) against the starting encoder: relative L2 and cosine of the posterior means,
and how the statistics ``extract-latents`` would write move (global mean shift, std ratio, the
largest per-channel mean shift in units of that channel's std). ``train.max_latent_drift`` stops
the run with one line when the relative L2 drift exceeds it (the last checkpoint within the limit
is kept).

A tokenizer exported by a run (``RUN/model``) carries ``training_state.safetensors`` beside its
weights: the online (not averaged) weights and the discriminator. A decoder fine-tune (stage 2)
started from a folder exported by a GAN run continues its adversarial game (decoder online
weights, discriminator) and its EMA (from the published weights) instead of restarting them;
``transvae.from_pretrained`` ignores the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ...models.distributions import DiagonalGaussianDistribution
from ...utils.distributed import DistInfo
from ...utils.files import atomic_path
from ..validation import rank_batches

TRAINING_STATE_NAME = "training_state.safetensors"


def anchor_loss(mean: torch.Tensor, mean0: torch.Tensor) -> torch.Tensor:
    """Relative squared distance of posterior means to the starting encoder's, ``||mu - mu0||^2 /
    ||mu0||^2`` over the batch: 0 when the latents have not moved, 1 when they moved as far as
    they are from zero.

    Args:
        mean, mean0: (B, C, h, w) posterior means of the current and the starting encoder.
    """
    mean0 = mean0.float()
    return (mean.float() - mean0).pow(2).sum() / mean0.pow(2).sum().clamp_min(1e-12)


def save_training_state(folder: Path, online: nn.Module, discriminator: nn.Module | None) -> Path:
    """Write ``folder/training_state.safetensors``: ``online.*`` (the weights being trained, before
    averaging) and ``discriminator.*`` tensors, atomically."""
    from safetensors.torch import save_file

    state = {f"online.{k}": v for k, v in online.state_dict().items()}
    if discriminator is not None:
        state.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    path = Path(folder) / TRAINING_STATE_NAME
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "transvae-training-state"})
    return path


def load_training_state(folder: str | Path | None) -> dict[str, dict[str, torch.Tensor]]:
    """``{"online": {...}, "discriminator": {...}}`` from a model folder's training state (each
    empty when absent; safetensors only, never a pickle)."""
    out: dict[str, dict[str, torch.Tensor]] = {"online": {}, "discriminator": {}}
    if not folder:
        return out
    path = Path(folder) / TRAINING_STATE_NAME
    if not path.is_file():
        path = Path(folder) / "model" / TRAINING_STATE_NAME  # a run folder
    if not path.is_file():
        return out
    from safetensors.torch import load_file

    for key, value in load_file(str(path)).items():
        part, _, name = key.partition(".")
        if part in out:
            out[part][name] = value
    return out


def load_matching(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Load ``state`` into ``module`` when every key and shape matches (else leave it); returns
    whether it was loaded."""
    own = module.state_dict()
    if not state or state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
        return False
    module.load_state_dict({k: v.to(own[k]) for k, v in state.items()})
    return True


@torch.no_grad()
def latent_drift(
    encoder: nn.Module,
    reference: nn.Module,
    dataset: Dataset,
    batch_size: int,
    dist: DistInfo,
    autocast,
    check_stop=None,
) -> dict[str, float]:
    """The drift of ``encoder``'s posterior means from ``reference``'s on ``dataset`` (every rank
    calls it; each evaluates its share and the sums are all-reduced).

    Args:
        encoder, reference: image (B, 3, H, W) -> moments (B, 2C, h, w) modules.
        dataset: items ``{"image": (3, H, W) in [-1, 1] or None}``.
        batch_size, dist, autocast, check_stop: as for ``validation.reconstruction_metrics``.
    Returns:
        ``val/drift_rel_l2`` (``||z - z0|| / ||z0||``), ``val/drift_cos`` (cosine of the flattened
        sets), ``val/drift_mean_shift`` (global mean of z minus that of z0), ``val/drift_std_ratio``
        (global std of z over that of z0) and ``val/drift_channel_shift`` (the largest per-channel
        mean shift in units of that channel's std under the reference).
    """
    sums: torch.Tensor | None = None  # [sq diff, sq ref, dot, sq cur, count] + per-channel sums
    for x in rank_batches(dataset, batch_size, dist, check_stop):
        with autocast():
            z = DiagonalGaussianDistribution(encoder(x)).mean.double()
            z0 = DiagonalGaussianDistribution(reference(x)).mean.double()
        zc, z0c = (t.transpose(0, 1).flatten(1) for t in (z, z0))  # (C, values)
        part = torch.cat(
            [
                torch.stack([(z - z0).pow(2).sum(), z0.pow(2).sum(), (z * z0).sum(), z.pow(2).sum()]),
                torch.tensor([zc.shape[1]], dtype=torch.float64, device=z.device),
                zc.sum(1), zc.pow(2).sum(1), z0c.sum(1), z0c.pow(2).sum(1),
            ]
        )  # fmt: skip
        sums = part if sums is None else sums + part
    if dist.enabled:
        n = torch.tensor([0 if sums is None else sums.numel()], device=dist.device)
        torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MAX)
        sums = torch.zeros(int(n), dtype=torch.float64, device=dist.device) if sums is None else sums
        torch.distributed.all_reduce(sums)
    if sums is None:
        return {}
    sq_diff, sq_ref, dot, sq_cur, per_channel = (float(v) for v in sums[:5])
    c = (sums.numel() - 5) // 4
    m, m2, m0, m02 = sums[5:].view(4, c) / per_channel  # per-channel E[z], E[z^2], E[z0], E[z0^2]
    std0 = (m02 - m0.pow(2)).clamp_min(1e-12).sqrt()
    g_mean, g_mean0 = float(m.mean()), float(m0.mean())
    g_std = float((m2.mean() - g_mean**2) ** 0.5)
    g_std0 = float((m02.mean() - g_mean0**2) ** 0.5)
    return {
        "val/drift_rel_l2": (sq_diff / max(sq_ref, 1e-30)) ** 0.5,
        "val/drift_cos": dot / max((sq_ref * sq_cur) ** 0.5, 1e-30),
        "val/drift_mean_shift": g_mean - g_mean0,
        "val/drift_std_ratio": g_std / max(g_std0, 1e-30),
        "val/drift_channel_shift": float(((m - m0).abs() / std0).max()),
    }

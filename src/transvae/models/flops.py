"""FLOP counts of models, on the ``meta`` device (shapes only: milliseconds, nothing allocated).

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions (2 FLOPs per
multiply-add), attention through ``scaled_dot_product_attention``'s formula; element-wise work
(norms, activations, adds) is not counted. Counting on ``meta`` is also what counts attention
on every backend: on a CPU tensor the fused flash-attention kernel is invisible to the counter.

    >>> enc, dec = autoencoder_flops(create_model("transvae-t-f16d32", device="meta"), 256)
    >>> enc + dec                      # GFLOP per 256 x 256 image
    >>> training_step_flops(create_model("transvae-mini-f16d32", device="meta"), 128, batch_size=8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "autoencoder_flops",
    "count_flops",
    "encode_decode_flops",
    "flops_by_module",
    "training_step_flops",
]


def count_flops(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(GFLOP of calling ``fn()``, its return value)."""
    with FlopCounterMode(display=False) as fc:
        out = fn()
    return fc.get_total_flops() / 1e9, out


def encode_decode_flops(
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
) -> tuple[float, float]:
    """(encode, decode) GFLOP of ``decode(encode(x))`` for any pair of callables, without grad.

    Args:
        encode: images (B, 3, H, W) -> latents (the posterior mode, for a VAE).
        decode: latents -> images.
        x: the input, usually ``torch.empty(1, 3, H, W, device="meta")``.
    """
    with torch.no_grad():
        enc, z = count_flops(lambda: encode(x))
        dec, _ = count_flops(lambda: decode(z))
    return enc, dec


def autoencoder_flops(model: nn.Module, resolution: int | tuple[int, int]) -> tuple[float, float]:
    """(encode, decode) GFLOP per image of a transvae autoencoder (posterior mode, then decode).

    Args:
        model: an ``AutoencoderBase``, best built with ``create_model(name, device="meta")``.
        resolution: R (square) or (H, W).
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    device = next(model.parameters()).device
    # frozen: under no_grad the counter's module tracker trips over views of parameters that
    # require grad (ViT-VAE's learned position embedding)
    grads = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        x = torch.empty(1, 3, h, w, device=device)
        return encode_decode_flops(lambda t: model.encode(t).mode(), model.decode, x)
    finally:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)


def training_step_flops(model: nn.Module, resolution: int | tuple[int, int], batch_size: int = 1) -> float:
    """GFLOP of one stage-1 training step's forward and backward (L1 + KL: a sampled latent, the
    decoder, the loss's gradient into every parameter), for ``batch_size`` images.

    The optimizer update and the element-wise work are not counted (small next to the
    convolutions); LPIPS / VF / GAN terms are not included (they add their own networks' cost).

    Args:
        model: an ``AutoencoderBase`` (build it on ``meta``).
        resolution: training crop R or (H, W).
        batch_size: images per step.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    device = next(model.parameters()).device
    x = torch.empty(batch_size, 3, h, w, device=device)

    def step() -> None:
        out = model(x)
        loss = (out.sample - x).abs().mean() + out.posterior.kl().mean()
        loss.backward()

    with torch.enable_grad():
        gflop, _ = count_flops(step)
    model.zero_grad(set_to_none=True)
    return gflop


def flops_by_module(fn: Callable[[], Any]) -> dict[str, float]:
    """GFLOP of ``fn()`` per module path, as ``FlopCounterMode`` names them (the top module's
    class name, then the attribute path: ``"Encoder.stages.0"``); parents include children."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return {name: sum(ops.values()) / 1e9 for name, ops in fc.get_flop_counts().items()}

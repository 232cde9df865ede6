"""Memory estimates made before any real allocation, so impossible sizes fail in one line.

The model is run on the ``meta`` device (shapes only, nothing allocated, milliseconds even for
a 100000 px image): for training, the bytes of every tensor autograd saves for the backward pass
are summed; for inference, the largest module output is taken times a small factor (the input,
the output and one temporary are alive at once). Weights, gradients and Adam moments are added
from the parameter count. These are estimates (allocator overheads, cuDNN workspaces and the
CUDA context are not counted), good to within a small factor: enough to refuse a 24 GB crop
before the kernel kills the process, never a promise that a size fits.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["MemoryEstimate", "available_bytes", "estimate_memory", "estimate_module_memory", "format_bytes"]


class MemoryEstimate(dict):
    """``{"weights": ..., "activations": ..., "optimizer": ..., "total": ...}`` in bytes."""

    @property
    def total(self) -> float:
        return self["total"]


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text."""
    if n == float("inf"):
        return "more than any machine has"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA free bytes, or the host's MemAvailable for the CPU;
    None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


class _FusedAttention(torch.autograd.Function):
    """What a fused (flash / memory-efficient) SDPA kernel keeps: q, k, v and the output, never
    the N x N attention matrix that the meta device's reference decomposition would save."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: estimates only do forward passes
        q, k, v, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


class _FusedAttentionMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            return _FusedAttention.apply(*args[:3])
        return func(*args, **(kwargs or {}))


def _meta_copy(model: nn.Module) -> nn.Module:
    """The same architecture on the meta device (no weights allocated): any model of the package
    is rebuilt from its class and ``config``."""
    if not hasattr(model, "config"):
        raise TypeError(f"cannot estimate memory for {type(model).__name__} (no config to rebuild it from)")
    with torch.device("meta"):
        return type(model)(model.config)


def estimate_memory(
    model: nn.Module,
    batch: int,
    height: int,
    width: int,
    train: bool,
    dtype_bytes: int = 4,
) -> MemoryEstimate:
    """Estimate the memory of one autoencoder forward (+ backward when ``train``) pass.

    Args:
        model: an autoencoder (its weights are not touched; a meta copy runs).
        batch, height, width: the input size (B, 3, H, W).
        train: count saved activations, gradients and AdamW moments (training) instead of the
            peak of live activations (inference).
        dtype_bytes: bytes per activation element (4 for fp32, 2 under bf16 autocast).
    Returns:
        MemoryEstimate with ``weights``, ``activations``, ``optimizer`` and ``total`` bytes
        (``inf`` activations when the sizes overflow what any tensor can hold).
    """
    x = torch.empty(batch, 3, height, width, device="meta")
    return estimate_module_memory(_meta_copy(model), (x,), train, dtype_bytes)


def estimate_module_memory(
    meta_module: nn.Module, inputs: tuple, train: bool, dtype_bytes: int = 4
) -> MemoryEstimate:
    """``estimate_memory`` for any module built on the meta device and its meta-device inputs.

    Args:
        meta_module: the module, built with ``device="meta"`` (e.g. a diffusion generator).
        inputs: positional arguments of its ``forward``, meta tensors.
        train, dtype_bytes: as for ``estimate_memory``.
    """
    n_params = sum(p.numel() for p in meta_module.parameters())
    scale = dtype_bytes / 4  # activations are fp32 on meta
    if train:
        saved = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        meta_module.train()
        try:
            with _FusedAttentionMode(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                meta_module(*inputs)
        except RuntimeError as e:  # "Storage size calculation overflowed"
            if "overflow" not in str(e):
                raise
            saved = float("inf")
        activations = saved * scale
        optimizer = 3 * 4 * n_params  # gradients + two AdamW moments, fp32
    else:
        peak = 0

        def hook(_m, _inp, out) -> None:
            nonlocal peak
            if isinstance(out, torch.Tensor):
                peak = max(peak, out.numel() * out.element_size())

        handles = [m.register_forward_hook(hook) for m in meta_module.modules()]
        try:
            with torch.no_grad(), _FusedAttentionMode():
                meta_module.eval()(*inputs)
        except RuntimeError as e:
            if "overflow" not in str(e):
                raise
            peak = float("inf")
        finally:
            for h in handles:
                h.remove()
        activations = 3 * peak * scale
        optimizer = 0
    weights = 4 * n_params
    return MemoryEstimate(
        weights=weights, activations=activations, optimizer=optimizer, total=weights + activations + optimizer
    )

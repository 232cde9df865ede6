"""The process group that ``torchrun`` describes, joined once for training and inference alike.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; a plain ``python`` process is
rank 0 of 1 with no process group. CUDA ranks use NCCL on ``cuda:LOCAL_RANK``; CPU ranks gloo.
The only collectives here are tiny flags every rank must agree on; gradients are reduced by
DDP / FSDP (``transvae.training.distributed``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "any_rank", "barrier", "cleanup", "init_distributed"]


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_minutes: float = 60) -> DistInfo:
    """Join the process group of ``torchrun`` (no-op for a single process).

    Args:
        device: the requested device; a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per rank).
        timeout_minutes: collective timeout.
    Returns:
        DistInfo for this process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any rank (all ranks get the same answer)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def min_over_ranks(value: float, info: DistInfo) -> float:
    """The smallest of every rank's ``value`` (all ranks get the same answer)."""
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for a single process)."""
    if info.enabled:
        dist.barrier()

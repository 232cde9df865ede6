"""PyTorch's own distributed engine: process groups from ``torchrun``, DDP or FSDP wrapping.

Nothing here averages gradients by hand: DDP all-reduces them during ``backward``, FSDP
reduce-scatters them. The only explicit collectives are tiny flags (non-finite steps,
preemption) that every rank must agree on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn


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


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

    Args:
        device: the device type requested (``cuda`` -> NCCL on ``cuda:LOCAL_RANK``; CPU -> gloo).
    Returns:
        DistInfo; a single process (no ``torchrun``) gets rank 0 of 1 and no process group.
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
        dist.init_process_group(backend, timeout=timedelta(minutes=60))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any rank (all ranks get the same answer)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def wrap_ddp(module: nn.Module, info: DistInfo, ignore: list[str]) -> nn.Module:
    """DDP-wrap ``module`` (no-op on one process), ignoring the named parameters/buffers.

    Args:
        module: the module whose ``forward`` computes the loss.
        info: the process layout.
        ignore: fully qualified names of parameters that another optimizer/wrapper owns.
    """
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ignore:
        DDP._set_params_and_buffers_to_ignore_for_model(module, ignore)
    ids = [info.device.index] if info.device.type == "cuda" else None
    # buffers need no per-step broadcast: they are identical on every rank by construction
    # (seeded init, same checkpoints); torch >= 2.14 names the switch forward_sync_buffers
    import inspect

    params = inspect.signature(DDP.__init__).parameters
    sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    return DDP(module, device_ids=ids, **sync)


def shard_fsdp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Shard ``model`` with FSDP2 (``fully_shard``): each encoder/decoder stage, then the root.

    Parameters become DTensors sharded over ranks; gradients are reduce-scattered in backward.
    Used for the variants whose weights + Adam state do not fit one device (H, G).
    """
    if not info.enabled:
        return model
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard

    for part in (model.encoder, model.decoder):
        for child in part.children():
            if any(p.requires_grad for p in child.parameters()):
                fully_shard(child)
    fully_shard(model)
    return model

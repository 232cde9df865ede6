"""PyTorch's own distributed engine for training: DDP or FSDP wrapping (the process group itself
is joined by ``transvae.utils.distributed``, shared with inference).

Nothing here averages gradients by hand: DDP all-reduces them during ``backward``, FSDP
reduce-scatters them. The only explicit collectives are tiny flags (non-finite steps,
preemption) that every rank must agree on.
"""

from __future__ import annotations

import torch.nn as nn

from ..utils.distributed import DistInfo, any_rank, barrier, cleanup, init_distributed

__all__ = ["DistInfo", "any_rank", "barrier", "cleanup", "init_distributed", "shard_fsdp", "wrap_ddp"]


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

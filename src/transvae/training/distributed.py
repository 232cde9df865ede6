"""PyTorch's own distributed engine for training: DDP or FSDP wrapping (the process group itself
is joined by ``transvae.utils.distributed``, shared with inference).

Nothing here averages gradients by hand: DDP all-reduces them during ``backward``, FSDP
reduce-scatters them. The only explicit collectives are tiny flags (non-finite steps,
preemption) that every rank must agree on.
"""

from __future__ import annotations

import torch.nn as nn

from ..utils.distributed import DistInfo, any_rank, barrier, cleanup, init_distributed, min_over_ranks

__all__ = [
    "DistInfo",
    "any_rank",
    "barrier",
    "cleanup",
    "init_distributed",
    "min_over_ranks",
    "reshard",
    "shard_fsdp",
    "wrap_ddp",
]


def wrap_ddp(module: nn.Module, info: DistInfo, ignore: list[str]) -> nn.Module:
    """DDP-wrap ``module`` (no-op on one process), ignoring the named parameters/buffers.

    Args:
        module: the module whose ``forward`` computes the loss.
        info: the process layout.
        ignore: fully qualified names of parameters that another optimizer/wrapper owns.
    Returns:
        The DDP wrapper, or ``module`` itself on one process or when no trainable parameter is
        left to synchronise.
    """
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    skip = set(ignore)
    if not any(p.requires_grad for n, p in module.named_parameters() if n not in skip):
        return module  # nothing left for DDP to synchronise (e.g. everything else is FSDP-sharded)
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


def _residual_block_types() -> tuple[type, ...]:
    """The repeated residual blocks of every architecture: FSDP's units. Each returns a freshly
    computed tensor (``x + branch(x)``), never a view of one, so FSDP's pre-backward hook on its
    output is never bypassed by an in-place op downstream."""
    from timm.models.swin_transformer import SwinTransformerStage

    from ..models.blocks import ResBlock, TransformerBlock
    from ..models.cnn_vae import AttnBlock

    # timm's Swin blocks, stages, attention and MLP all return reshaped views (FSDP warns for the
    # Swin-VAE only): the stage is the unit there, and its gradients are checked against DDP too
    return (ResBlock, TransformerBlock, AttnBlock, SwinTransformerStage)


def shard_fsdp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Shard ``model`` with FSDP2 (``fully_shard``): every residual block (ResBlock, Transformer
    block, attention block; timm's Swin stage) is one unit, then the root (stems, down/up-sampling,
    heads, norms).

    Parameters become DTensors sharded over ranks; gradients are reduce-scattered in backward.
    Used for the variants whose weights + Adam state do not fit one device (H, G). Stages and
    resamplers are not units of their own: TransVAE's stages return their tokens as a
    channels-last view of the feature map and its up-samplers a view of the sub-pixel grid, and
    FSDP warns that an in-place op on such an output could skip its all-gather (none of ours
    does: ``tests/test_training_distributed.py`` compares FSDP's gradients with DDP's).
    """
    if not info.enabled:
        return model
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard

    blocks = _residual_block_types()
    for m in list(model.modules()):
        if isinstance(m, blocks) and any(p.requires_grad for p in m.parameters()):
            fully_shard(m)
    fully_shard(model)  # the root keeps its parameters unsharded from forward to backward
    return model


def reshard(module: nn.Module) -> None:
    """Free the unsharded parameters FSDP2 keeps after a forward without backward (evaluation):
    the root module otherwise keeps them until a backward, and the optimizer and checkpoints
    must see the sharded parameters again. No-op for modules that are not FSDP-sharded."""
    for m in module.modules():
        if hasattr(m, "reshard") and hasattr(m, "unshard"):  # FSDPModule
            m.reshard()

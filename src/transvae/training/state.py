"""Module and optimizer state for checkpoints, for plain, DDP and FSDP-sharded training alike.

Checkpoints hold full (unsharded) plain tensors, so a run saved with FSDP on 8 GPUs resumes with
DDP on 2, and the weights load without torch.distributed. For FSDP-sharded modules the state
is gathered to rank 0 (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict``,
offloaded to the CPU) and, on resume, every rank reads the full state and keeps its shard.
Everything else is the module's ordinary ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..models.persistence import unwrap_model


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is an FSDP2 ``DTensor`` shard."""
    return any(hasattr(p, "full_tensor") for p in module.parameters())


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict of ``module`` (collective under FSDP: every rank must call it; rank 0
    gets the tensors, on the CPU)."""
    module = unwrap_model(module)
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=_options(cpu_offload=True))
    return module.state_dict()


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
    """Load a full state dict (every rank, its own shard under FSDP); returns missing/unexpected keys."""
    module = unwrap_model(module)
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        return set_model_state_dict(module, state, options=_options(strict=strict))
    return module.load_state_dict(state, strict=strict)


def optimizer_state(optimizer: torch.optim.Optimizer, owner: nn.Module | None) -> dict[str, Any]:
    """Full optimizer state (collective under FSDP, where ``owner`` is the module holding the
    parameters and the state is keyed by parameter name instead of index)."""
    if owner is not None and is_sharded(unwrap_model(owner)):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(unwrap_model(owner), optimizer, options=_options(cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, owner: nn.Module | None, state: dict[str, Any]
) -> None:
    """Inverse of ``optimizer_state`` (every rank)."""
    if owner is not None and is_sharded(unwrap_model(owner)):
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(unwrap_model(owner), optimizer, state, options=_options())
        return
    optimizer.load_state_dict(state)

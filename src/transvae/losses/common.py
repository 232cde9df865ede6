"""Helpers shared by the loss modules: frozen pretrained networks and weight-loading errors."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..models.pretrained import WeightsUnavailableError

# One error for every pretrained network, losses and metrics alike (``transvae.models.pretrained``);
# the message names the config key that points at a local file and the option that disables the term.
MissingWeightsError = WeightsUnavailableError


class FrozenNetwork(nn.Module):
    """Holds a frozen pretrained network *outside* the module tree.

    The wrapped network moves with ``.to()`` / ``.cuda()`` (``_apply`` is forwarded) but it is
    never part of ``state_dict()`` (checkpoints hold only what is trained), ``parameters()``
    (no optimizer can pick it up) or ``train()`` (it stays in eval mode: no dropout, no
    batch-norm statistics updates).

    Args:
        net: the pretrained network; it is set to eval mode and ``requires_grad_(False)``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        net.requires_grad_(False).eval()
        object.__setattr__(self, "net", net)  # bypass nn.Module registration on purpose

    def _apply(self, fn: Any, recurse: bool = True) -> FrozenNetwork:
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

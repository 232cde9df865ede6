"""Helpers shared by the loss modules: frozen pretrained networks and weight-loading errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


class MissingWeightsError(RuntimeError):
    """Pretrained weights a loss term needs are neither on disk nor downloadable.

    The message names the config option that points to a local file and the option that
    disables the term; the trainer's CLI turns it into a one-line error.
    """


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


def load_state_dict_file(path: str | Path, option: str) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``torch.save`` state dict from ``path``.

    Args:
        path: the file.
        option: the config key that gave the path, for the error message.
    Returns:
        The tensors by name (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"{option}={str(path)!r}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise MissingWeightsError(f"{option}={str(path)!r} does not hold a state dict")
    return sd

"""Exponential moving average of a model's weights (timm's ``ModelEmaV3``).

With ``warmup=True`` the decay at update ``t`` is ``min(decay, 1 - (1 + t) ** -2/3)`` (0.95 at
t=100, 0.99 at t=1000, capped at ``decay``), so short runs export averaged weights that already
track training instead of the random initialisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class EMA:
    """EMA copy of a (plain, unwrapped) model.

    Args:
        model: the model being trained (not DDP-wrapped).
        decay: the final decay.
        warmup: ramp the decay up from 0 (see the module docstring).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        from timm.utils.model_ema import ModelEmaV3  # timm takes a second to import: only when used

        self._ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, warmup_gamma=1.0, warmup_power=2 / 3)
        self.module: nn.Module = self._ema.module
        self.module.requires_grad_(False)
        self.num_updates = 0

    @property
    def decay(self) -> float:
        """The decay that the next update will use."""
        return float(self._ema.get_decay(self.num_updates + 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.num_updates += 1
        self._ema.update(model, step=self.num_updates)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.num_updates = int(state["num_updates"])

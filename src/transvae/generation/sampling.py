"""ODE samplers for a rectified-flow velocity model: Euler and Heun, timestep shift, guidance.

Sampling integrates ``dx/dt = v(x, t, y)`` from noise at ``t = 0`` to data at ``t = 1`` on a
grid of ``steps + 1`` times (Euler: ``steps`` model calls; Heun, the second-order
predictor-corrector: ``2 * steps``). LightningDiT's two inference settings:

- timestep shift ``s``: the uniform grid ``t`` becomes ``s t / (1 + (s - 1) t)``; ``s < 1``
  (0.3 in its recipes) puts more steps near the noise end; ``s = 1`` is the uniform grid;
- classifier-free guidance with an interval: ``v = v_u + w (v_c - v_u)`` only for
  ``t >= interval_start`` (0.11 in its recipes), the plain conditional ``v_c`` before, where
  strong guidance on nearly pure noise hurts (Kynkaanniemi et al., 2024);
- which channels are guided: all (the standard form) or, as LightningDiT's ``forward_with_cfg``
  (a reproducibility quirk inherited from DiT), only the first ``cfg_channels``, the others
  taking the conditional ``v_c``. Its published guided FIDs (cfg 6.7 / 10) were measured so;
  guiding all channels at those weights over-guides.

Reproducibility: the starting noise of sample ``i`` comes from a CPU generator seeded with
``(seed, i)`` (``initial_noise``), so a sample depends on its seed and index only, not on the batch it was drawn in,
the number of samples or the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

SOLVERS = ("euler", "heun")
MAX_STEPS = 10_000  # LightningDiT samples with 250; more only costs time (and the time grid memory)


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample.

    Attributes:
        steps: integration steps (LightningDiT: 250 Euler steps).
        solver: ``"euler"`` or ``"heun"``.
        shift: timestep shift ``s`` (1 = none).
        cfg_scale: guidance weight ``w`` (1 = no guidance, one model call per step).
        cfg_interval_start: guidance only for ``t >= this`` (0 = always).
        cfg_channels: ``"all"`` or ``k``: guide only the first ``k`` latent channels (3 is
            LightningDiT's ``forward_with_cfg``), the rest follow the conditional velocity.
    """

    steps: int = 250
    solver: str = "euler"
    shift: float = 1.0
    cfg_scale: float = 1.0
    cfg_interval_start: float = 0.0
    cfg_channels: int | str = "all"

    def __post_init__(self):
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver '{self.solver}'; choose from {SOLVERS}")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"shift must be a finite number > 0, got {self.shift}")
        if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise ValueError(f"cfg_scale must be a finite number >= 0, got {self.cfg_scale}")
        if not 0.0 <= self.cfg_interval_start <= 1.0:
            raise ValueError(f"cfg_interval_start must be in [0, 1], got {self.cfg_interval_start}")
        check_cfg_channels(self.cfg_channels)


def check_cfg_channels(value: int | str, channels: int | None = None) -> None:
    """Refuse a ``cfg_channels`` that is neither ``"all"`` nor a count in [1, ``channels``].

    Raises:
        ValueError: naming the value (and the latent channels when it exceeds them).
    """
    if value == "all":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"cfg_channels must be 'all' or a channel count >= 1, got {value!r}")
    if channels is not None and value > channels:
        raise ValueError(f"cfg_channels {value} is more than the latents' {channels} channels")


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) float64 times from 0 to 1, shifted: ``s t / (1 + (s - 1) t)``."""
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    t[-1] = 1.0  # exactly, whatever the rounding of the shift
    return t


def guided_velocity(
    model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: float,
    y: torch.Tensor,
    null_label: int | None,
    cfg_scale: float,
    cfg_interval_start: float,
    cfg_channels: int | str = "all",
) -> torch.Tensor:
    """The velocity at time ``t``, with classifier-free guidance where it applies.

    Args:
        model: ``v = model(x, t, y)``.
        x: (B, C, h, w) current points; t: the (scalar) time; y: (B,) labels.
        null_label: the unconditional label (needed when guidance applies).
        cfg_scale: guidance weight; 1 means plain conditional sampling.
        cfg_interval_start: guidance only for ``t >= cfg_interval_start``.
        cfg_channels: ``"all"``, or guide only channels ``[:k]`` (LightningDiT: 3) and give the
            others the conditional velocity.
    Returns:
        (B, C, h, w) velocity.
    """
    tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)
    if cfg_scale == 1.0 or t < cfg_interval_start:
        return model(x, tt, y).float()
    if null_label is None:
        raise ValueError(
            "this model was trained without label dropout (class_dropout=0): it cannot use guidance"
        )
    both = model(
        torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, null_label)])
    ).float()
    v_c, v_u = both.chunk(2)
    if cfg_channels == "all":
        return v_u + cfg_scale * (v_c - v_u)
    check_cfg_channels(cfg_channels, x.shape[1])
    k = cfg_channels
    guided = v_u[:, :k] + cfg_scale * (v_c[:, :k] - v_u[:, :k])  # (B, k, h, w)
    return torch.cat([guided, v_c[:, k:]], dim=1)  # (B, C, h, w)


def initial_noise(shape: Sequence[int], seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Starting noise: row ``k`` is drawn from a generator seeded by ``(seed, indices[k])``.

    NumPy's ``SeedSequence([seed, index])`` keeps every pair distinct (torch's CPU generator
    keeps only 32 bits of a seed, so ``(seed << 32) | index`` would collide across seeds).

    Args:
        shape: (C, h, w) of one latent.
        seed: the sampling seed (>= 0); indices: the global sample indices.
    Returns:
        (len(indices), C, h, w) float32 on the CPU.
    """
    import numpy as np

    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rows = [
        np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, int(i)]))).standard_normal(
            tuple(shape), dtype=np.float32
        )
        for i in indices
    ]
    return torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, *shape)


@torch.no_grad()
def sample_ode(
    model: nn.Module | Callable,
    noise: torch.Tensor,
    labels: torch.Tensor,
    config: SamplerConfig,
    null_label: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE from ``noise`` (t = 0) to data (t = 1).

    Args:
        model: the velocity model ``model(x, t, y)``.
        noise: (B, C, h, w) starting points (``initial_noise``), on the model's device.
        labels: (B,) int64 class labels.
        config: steps, solver, shift and guidance.
        null_label: the model's unconditional label (``LightningDiT.null_label``).
        autocast_dtype: run the model under ``torch.autocast`` in this dtype (None: as is).
        progress: called with 1 after every step (e.g. ``tqdm.update``).
    Returns:
        (B, C, h, w) float32 samples in the model's (normalised) latent space.
    """
    ts = time_grid(config.steps, config.shift).tolist()
    x = noise.float()
    check_cfg_channels(config.cfg_channels, x.shape[1])  # before the first step, not at t = 0.11

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        ctx = (
            torch.autocast(x.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else torch.autocast(x.device.type, enabled=False)
        )
        with ctx:
            return guided_velocity(
                model,
                x,
                t,
                labels,
                null_label,
                config.cfg_scale,
                config.cfg_interval_start,
                config.cfg_channels,
            )

    for i in range(config.steps):
        t0, t1 = ts[i], ts[i + 1]
        dt = t1 - t0
        v0 = velocity(x, t0)
        if config.solver == "heun":
            x_pred = x + dt * v0
            x = x + dt * 0.5 * (v0 + velocity(x_pred, t1))
        else:
            x = x + dt * v0
        if progress is not None:
            progress(1)
    return x

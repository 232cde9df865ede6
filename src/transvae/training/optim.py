"""Optimizers as the engine steps them: AdamW (or Muon, ``optim.optimizer``) + warmup schedule +
clipping, skipped when non-finite.

A task registers each optimizer it needs with ``Engine.add_optimizer`` (the autoencoder: one for
the encoder/decoder, one for the discriminator; a generator model: one). The engine then owns
the whole update: it clips every optimizer's gradients, checks them and the step's logged
values for NaN/Inf in the same single host synchronisation, and either steps all optimizers
(and the EMA) or none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DECAYS = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "muon")
# Muon orthogonalises a weight's update as a matrix (first dim x the rest: out x in*kh*kw for a conv
# kernel); a tensor with a side shorter than this (the 3-channel RGB output conv, position tables of
# shape (1, N, D)) goes to AdamW with the 1-D biases and norm gains
MUON_MIN_SIDE = 8


class WarmupDecay:
    """LR factor of optimizer step ``s``: linear warmup over ``warmup`` steps, then constant
    (Appendix D), or decayed to ``floor`` x the LR at step ``total`` along a half cosine or a line.

    An object rather than a closure so that the engine can move ``total`` when it fits the run to
    its time budget (``train.fit_to_budget``)."""

    def __init__(self, warmup: int, decay: str = "constant", total: int = 0, floor: float = 0.0):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        self.warmup, self.decay, self.total, self.floor = warmup, decay, total, floor

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return (s + 1) / self.warmup
        if self.decay == "constant" or self.total <= self.warmup:
            return 1.0
        p = min(1.0, (s - self.warmup) / (self.total - self.warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if self.decay == "cosine" else 1.0 - p
        return self.floor + (1.0 - self.floor) * shape


@dataclass
class OptimizerSlot:
    """One optimizer with its schedule, its parameters and its clipping.

    Attributes:
        name: ``"main"`` or e.g. ``"disc"``; checkpoint key and log prefix
            (``train/grad_norm``, ``train/disc_grad_norm``).
        optimizer, scheduler: AdamW and its warmup ``LambdaLR``.
        params: the parameters it updates (gradients are clipped over these).
        grad_clip: max global gradient norm (``inf`` = no clipping).
        state_module: the module owning ``params`` (under FSDP, optimizer state is gathered and
            scattered through it); None when the parameters are plain tensors.
    """

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: list[torch.Tensor]
    grad_clip: float = float("inf")
    state_module: torch.nn.Module | None = None

    @property
    def norm_key(self) -> str:
        return "train/grad_norm" if self.name == "main" else f"train/{self.name}_grad_norm"

    def has_grads(self) -> bool:
        """Whether this step produced gradients for this optimizer (e.g. no GAN step before ``disc_start``)."""
        return any(p.grad is not None for p in self.params)

    def clip(self) -> torch.Tensor:
        """Clip the gradients in place; returns the pre-clipping global norm as a 0-d tensor (no sync).

        Under FSDP the parameters may mix sharded ``DTensor`` s (the autoencoder) and plain
        tensors (DDP-synchronised loss layers): the two groups' norms are combined.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        sharded = [g for g in grads if hasattr(g, "full_tensor")]
        if not sharded or len(sharded) == len(grads):
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.params if p.grad is not None], self.grad_clip
            )
            return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).detach().float()
        plain = [g for g in grads if not hasattr(g, "full_tensor")]
        norms = [torch.nn.utils.get_total_norm(sharded).full_tensor(), torch.nn.utils.get_total_norm(plain)]
        total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
        coef = (self.grad_clip / (total + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_
        torch._foreach_mul_([g.to_local() for g in sharded] + plain, coef)
        return total.detach()

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()

    def scheduler_state(self) -> dict:
        """The scheduler's checkpoint state without its LR factors: a resumed run takes its
        schedule from its own config (and the engine's ``set_total``), as with a closure."""
        state = self.scheduler.state_dict()
        return {**state, "lr_lambdas": [None] * len(self.scheduler.lr_lambdas)}

    def set_total(self, total: int) -> None:
        """Make the LR schedule end (decay to its floor) at optimizer step ``total``."""
        for factor in self.scheduler.lr_lambdas:
            factor.total = total

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel can update ``params``: plain floating-point tensors on
    the CPU or a CUDA device (not sharded ``DTensor`` s). On the CPU torch's default is the
    per-tensor loop: 19 ms a step for 3M parameters in 120 tensors, 7.7 ms fused (docs/training.md)."""
    return bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() and not hasattr(p, "full_tensor")
        for p in params
    )


def muon_split(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(muon, adamw)``: the tensors Muon updates (two or more dimensions, both sides of the
    matrix view at least ``MUON_MIN_SIDE``) and the rest, for AdamW; order kept."""
    muon = [p for p in params if p.ndim >= 2 and min(p.shape[0], p[0].numel()) >= MUON_MIN_SIDE]
    ids = {id(p) for p in muon}
    return muon, [p for p in params if id(p) not in ids]


def make_optimizer(
    name: str,
    params: list[torch.Tensor],
    lr: float,
    warmup_steps: int,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float,
    grad_clip: float,
    state_module: torch.nn.Module | None = None,
    decay: str = "constant",
    total_steps: int = 0,
    decay_floor: float = 0.0,
    optimizer: str = "adamw",
    muon_lr: float = 0.02,
    muon_momentum: float = 0.95,
) -> OptimizerSlot:
    """AdamW, or Muon (``optimizer="muon"``), + linear warmup (+ optional decay to ``decay_floor`` x
    the LR at ``total_steps``) as an ``OptimizerSlot`` (``grad_clip <= 0`` = no clipping).

    Muon is pytorch-optimizer's (Nesterov momentum ``muon_momentum``, the update orthogonalised by
    five Newton-Schulz iterations, step ``muon_lr``) on the tensors of ``muon_split``; the others
    get its AdamW at ``lr`` / ``betas`` / ``eps``. One schedule scales both LRs."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    params = [p for p in params if p.requires_grad]
    if optimizer == "muon":
        from pytorch_optimizer import Muon  # ~2 s to import: only when asked for

        muon, rest = muon_split(params)
        groups = [dict(params=muon, lr=muon_lr, momentum=muon_momentum, weight_decay=weight_decay, use_muon=True)]
        if rest:
            groups.append(dict(params=rest, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, use_muon=False))
        opt = Muon(groups)
    else:
        opt = torch.optim.AdamW(
            params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, fused=can_fuse(params) or None
        )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupDecay(warmup_steps, decay, total_steps, decay_floor))
    clip = grad_clip if grad_clip > 0 else float("inf")
    return OptimizerSlot(name, opt, sched, params, clip, state_module)

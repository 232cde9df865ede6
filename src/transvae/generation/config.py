"""The ``transvae gen-train`` configuration: the engine's sections plus the generator's own.

A ``GenConfig`` is read like every training config (``transvae.training.config.ConfigTree``: YAML
recipes as data, ``--section.key=value`` overrides, unknown keys and wrong types refused). The
defaults are LightningDiT's recipe as the paper uses it (Appendix D, VA-VAE settings): AdamW with
a constant LR 2e-4, betas (0.9, 0.95), no weight decay, no warmup, no clipping, global batch
1024, EMA 0.9999; rectified flow with logit-normal timesteps and the cosine term; sampling with
250 Euler steps, timestep shift 0.3 and a guidance interval from t = 0.11.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..training.config import ConfigTree, LogSection, OptimSection, TrainSection
from .sampling import SOLVERS


@dataclass
class GenModelSection:
    """Which LightningDiT to train (channels and classes come from the latents)."""

    name: str = "lightningdit-xl-1"  # a name from `transvae list 'lightningdit-*'`
    class_dropout: float = 0.1  # label dropout for classifier-free guidance (0: no null class)
    qk_norm: bool = False  # RMSNorm on queries and keys (the cure for NaN losses at scale)
    gradient_checkpointing: bool = False


@dataclass
class GenDataSection:
    """The latents (folders written by ``transvae extract-latents``) and their normalisation."""

    latents: str = ""  # training latents
    val_latents: str = ""  # held-out latents: validation loss and latent FD against them
    latent_norm: bool = True  # normalise with latents_stats.pt: (z - mean) / std
    multiplier: float = 1.0  # LightningDiT's latent_multiplier, applied after the normalisation
    flip: bool = True  # also train on latents_flip (mirrored images)
    num_workers: int = 2  # DataLoader worker processes per rank
    cache_gb: float = 4.0  # keep the latents in memory when they take at most this (float32)
    val_size: int = 1000  # held-out latents used (0 = all)
    vae: str = ""  # optional tokenizer (folder / run folder) to decode sample grids during training


@dataclass
class FlowSection:
    """Rectified flow (``transvae.generation.flow``)."""

    logit_normal: bool = True
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cosine_loss: bool = True


@dataclass
class SampleSection:
    """Sampling defaults (``gen-sample`` options) and the validation samples."""

    steps: int = 250
    solver: str = "euler"
    shift: float = 0.3
    cfg_scale: float = 1.0  # the paper's Figure 6 is without guidance
    cfg_interval_start: float = 0.11
    val_num: int = 1000  # latents generated at each validation for the latent FD (0 = none)
    val_steps: int = 50  # ODE steps of those validation samples
    val_seed: int = 0  # the same noise at every validation: checkpoints are compared on equal terms


@dataclass
class GenOptimSection(OptimSection):
    """AdamW as LightningDiT: constant 2e-4, betas (0.9, 0.95), no warmup, decay or clipping."""

    lr: float = 2.0e-4
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 0.0


@dataclass
class GenTrainSection(TrainSection):
    """The loop (Appendix D: global batch 1024; EMA 0.9999 from the first step)."""

    max_steps: int = 200_000  # 160 ImageNet epochs at batch 1024
    batch_size: int = 1024
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # LightningDiT averages with 0.9999 from the start
    checkpoint_every: int = 20_000
    keep_checkpoints: int = 100  # step snapshots for the FID-against-steps curve


@dataclass
class GenLogSection(LogSection):
    every: int = 100
    image_every: int = 20_000
    val_every: int = 20_000
    grid_images: int = 16


@dataclass
class GenConfig(ConfigTree):
    """The whole ``gen-train`` configuration."""

    model: GenModelSection = field(default_factory=GenModelSection)
    data: GenDataSection = field(default_factory=GenDataSection)
    flow: FlowSection = field(default_factory=FlowSection)
    sample: SampleSection = field(default_factory=SampleSection)
    optim: GenOptimSection = field(default_factory=GenOptimSection)
    train: GenTrainSection = field(default_factory=GenTrainSection)
    log: GenLogSection = field(default_factory=GenLogSection)

    def validate(self) -> None:
        super().validate()
        m, d, f, s = self.model, self.data, self.flow, self.sample
        checks = [
            (0.0 <= m.class_dropout < 1.0, f"model.class_dropout must be in [0, 1), got {m.class_dropout}"),
            (d.multiplier > 0, f"data.multiplier must be > 0, got {d.multiplier}"),
            (d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}"),
            (d.cache_gb >= 0, f"data.cache_gb must be >= 0, got {d.cache_gb}"),
            (d.val_size >= 0, f"data.val_size must be >= 0, got {d.val_size}"),
            (f.logit_std > 0, f"flow.logit_std must be > 0, got {f.logit_std}"),
            (s.steps >= 1 and s.val_steps >= 1, "sample.steps and sample.val_steps must be >= 1"),
            (s.solver in SOLVERS, f"sample.solver must be one of {list(SOLVERS)}, got '{s.solver}'"),
            (s.shift > 0, f"sample.shift must be > 0, got {s.shift}"),
            (s.cfg_scale >= 0, f"sample.cfg_scale must be >= 0, got {s.cfg_scale}"),
            (0 <= s.cfg_interval_start <= 1, "sample.cfg_interval_start must be in [0, 1]"),
            (s.val_num >= 0 and s.val_seed >= 0, "sample.val_num and sample.val_seed must be >= 0"),
            (
                self.train.distributed == "ddp",
                "gen-train shards nothing: train.distributed must be ddp (XL/1 and its AdamW state fit one GPU)",
            ),
            (
                s.cfg_scale == 1.0 or m.class_dropout > 0,
                "sample.cfg_scale != 1 needs model.class_dropout > 0 (the unconditional label)",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise self.error(msg)

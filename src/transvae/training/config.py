"""Training configurations: trees of dataclass sections, read from YAML as plain data.

A config is a ``ConfigTree``: a dataclass whose fields are *sections* (dataclasses of plain
fields). Every field is addressable as ``section.field`` (``optim.lr``, ``loss.kl_weight``) from
a YAML recipe or a ``--section.field=value`` command-line override; values go through the one
config parser (``transvae.utils.config``), so unknown keys and wrong types are errors that list
the valid keys. Recipes are parsed with ``yaml.safe_load`` (data only; nothing is instantiated
from names in a file).

The engine's own sections, ``TrainSection`` and ``LogSection`` (and the AdamW basics in
``OptimSection``), are shared by every kind of training; each task adds or extends sections for
what only it needs, all in this one schema: ``TrainConfig`` (``transvae train``: the
autoencoder's model/data/loss sections, the stage, the discriminator's warmup) and ``GenConfig``
(``transvae gen-train``: the generator's model/data/flow/sample sections).

``TrainConfig``'s defaults are the paper's recipe (Appendix D, following VA-VAE): AdamW, constant
LR 1e-4 after a 1000-step linear warmup, no weight decay, global batch 256, L1 1.0 / LPIPS 1.0 /
KL 1e-8 / GAN 0.1 / VF 0.1, 256x256 crops.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_origin, get_type_hints

import torch

from ..data.datasets import is_webdataset
from ..generation.sampling import SOLVERS
from ..losses import LossConfig
from ..models.distributions import LOGVAR_MAX, LOGVAR_MIN
from ..utils.config import ConfigError, coerce, field_types, parse_value, read_yaml, to_plain, type_name
from ..utils.device import choose_dtype
from .optim import DECAYS, OPTIMIZERS


class TrainConfigError(ConfigError):
    """An unknown key, a value of the wrong type or an impossible combination in the config."""


# -- the engine's sections (shared by every task) -------------------------------------------------
@dataclass
class OptimSection:
    """AdamW and its schedule: linear warmup, then constant (or decayed to train.max_steps)."""

    lr: float = 1.0e-4
    warmup_steps: int = 1000  # linear warmup from 0, then constant (or decayed)
    decay: str = "constant"  # after the warmup: constant | cosine | linear (to decay_floor x lr at train.max_steps)
    decay_floor: float = 0.0  # the LR at train.max_steps, as a fraction of lr (cosine / linear)
    betas: tuple[float, float] = (0.5, 0.9)  # the LDM / VA-VAE autoencoder betas
    weight_decay: float = 0.0
    eps: float = 1.0e-8
    grad_clip: float = 1.0  # max global grad norm (0 = no clipping)
    # adamw | muon: Muon (pytorch-optimizer's) for the weight matrices and conv kernels, AdamW at lr
    # for the biases, norm gains and the RGB output conv (training.optim.muon_split; docs/training.md)
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # Muon's step (scaled by the same warmup / decay as lr)
    muon_momentum: float = 0.95


@dataclass
class TrainSection:
    """The loop: length, batch, precision, EMA, checkpoints and fault handling."""

    max_steps: int = 500_000  # optimizer steps
    batch_size: int = 256  # GLOBAL batch = per-rank micro-batch x ranks x grad_accum
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    force_bf16: bool = False  # bf16 even on a CPU without native bf16 (tens of times slower there)
    ema: bool = True
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay ramps up from 0 (1 - (1 + t)^-2/3): short runs export useful weights
    seed: int = 0
    device: str = "auto"
    distributed: str = "ddp"  # ddp | fsdp (parameter sharding for the H/G variants)
    checkpoint_every: int = 1000  # steps between checkpoints (and model/ exports)
    keep_checkpoints: int = 0  # also keep step-numbered snapshots, the newest N (0 = only last.pt)
    max_nonfinite: int = 20  # stop after this many non-finite steps in a row
    max_minutes: float = 0.0  # wall-clock budget: checkpoint and stop cleanly after it (0 = none)
    # with max_minutes: after 5% of the steps (at most 50), then at 50/80/95% of the way, plan the
    # steps that fit in the budget at the speed measured since (at most max_steps), so the LR decay
    # (optim.decay) ends within the budget instead of being cut by it
    fit_to_budget: bool = False
    check_memory: bool = True  # refuse sizes whose estimated memory exceeds what the device has free

    def autocast_dtype(self, device: torch.device) -> tuple[torch.dtype | None, str | None]:
        """``precision`` on ``device``: (the autocast dtype, or None for fp32; a one-line warning
        when bf16 was asked for on a CPU without native bf16 and fp32 is used instead, unless
        ``force_bf16``)."""
        if self.precision == "fp32" or (self.precision == "auto" and device.type != "cuda"):
            return None, None
        dtype, warning = choose_dtype("bf16", device, force=self.force_bf16)
        if warning:
            warning = f"train.precision=bf16: {warning.replace('--force-bf16', '--force-bf16 (train.force_bf16=true)')}"
        return (None if dtype == torch.float32 else dtype), warning


@dataclass
class LogSection:
    """What the run folder receives and how often."""

    every: int = 50  # scalars to TensorBoard + metrics.jsonl
    image_every: int = 1000  # sample grids (PNG)
    val_every: int = 5000  # validation metrics (also at the start and the end)
    grid_images: int = 8
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on rank 0


class ConfigTree:
    """Base of a training configuration: a dataclass whose fields are sections.

    Subclasses are dataclasses with one field per section (each a dataclass with typed fields),
    and must include ``train`` (a ``TrainSection``), ``log`` (a ``LogSection``) and ``optim`` (an
    ``OptimSection``) for the engine. A section is declared by its type alone (``model:
    ModelSection``): its default is a fresh instance of that type. ``to_dict`` / ``from_dict``
    round-trip through plain data; ``validate`` checks the engine's sections and ``checks``, which
    subclasses extend for their own.
    """

    error: ClassVar[type[ConfigError]] = TrainConfigError
    # keys that hold paths: stored absolute, so a resumed run reads the same files wherever it is
    # started from (a local path is resolved; a Hub id, a URL or a pipe is kept as given)
    PATH_KEYS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # runs before ``@dataclass`` reads the class: every section declared without a default
        # gets ``field(default_factory=<its type>)``
        super().__init_subclass__(**kwargs)
        hints = get_type_hints(cls)
        for name in cls.__dict__.get("__annotations__", {}):
            tp = hints[name]
            if name not in cls.__dict__ and get_origin(tp) is not ClassVar and dataclasses.is_dataclass(tp):
                setattr(cls, name, field(default_factory=tp))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists instead of tuples), suitable for YAML/JSON and checkpoints."""
        return to_plain(self)

    @classmethod
    def sections(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        cfg = cls()
        cfg.update(d)
        return cfg

    @classmethod
    def build(
        cls,
        yaml_path: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        extra: list[str] | None = None,
        base: dict[str, Any] | None = None,
    ):
        """Defaults <- ``base`` (e.g. a checkpoint's config) <- YAML recipe <- explicit overrides
        (dotted keys) <- ``--key=value`` strings; then ``validate``."""
        cfg = cls()
        if base:
            cfg.update(base)
        if yaml_path:
            cfg.update(load_yaml(yaml_path))
        for k, v in (overrides or {}).items():
            cfg.set(k, v)
        for item in extra or []:
            cfg.set(*parse_override(item))
        cfg.absolutize_paths()
        cfg.validate()
        return cfg

    def absolutize_paths(self) -> None:
        """Make every local path of ``PATH_KEYS`` absolute (see there)."""
        for key in self.PATH_KEYS:
            value = self.get(key)
            if isinstance(value, tuple):
                self.set(key, [_absolute(v) for v in value])
            elif value:
                self.set(key, _absolute(value))

    def update(self, d: dict[str, Any]) -> None:
        """Apply a nested dict of values (as in a YAML recipe), validating every key and type."""
        if not isinstance(d, dict):
            raise self.error(f"a config must be a mapping of sections, got {type(d).__name__}")
        for section, values in d.items():
            if section not in self.sections():
                raise self.error(f"unknown config section '{section}'; valid sections: {self.sections()}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise self.error(f"config section '{section}' must be a mapping, got {values!r}")
            for key, value in values.items():
                self.set(f"{section}.{key}", value)

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.field`` to ``value`` after checking the key and the type."""
        section, _, name = dotted.partition(".")
        hints = field_types(type(getattr(self, section))) if section in self.sections() else {}
        if name not in hints:
            raise self.error(
                f"unknown config key '{dotted}'; valid keys:\n  " + "\n  ".join(self.valid_keys())
            )
        try:
            setattr(getattr(self, section), name, coerce(dotted, value, hints[name]))
        except ConfigError as e:
            raise self.error(str(e)) from e

    def get(self, dotted: str) -> Any:
        section, _, name = dotted.partition(".")
        return getattr(getattr(self, section), name)

    @classmethod
    def valid_keys(cls) -> list[str]:
        """Every ``section.field`` key with its type and default, e.g. ``optim.lr (float, 0.0001)``."""
        cfg = cls()
        out = []
        for section in cls.sections():
            obj = getattr(cfg, section)
            for name, tp in field_types(type(obj)).items():
                out.append(f"{section}.{name} ({type_name(tp)}, default {to_plain(getattr(obj, name))!r})")
        return out

    def validate(self) -> None:
        """Raise ``error`` with the message of the first failed check (``checks``)."""
        for ok, msg in self.checks():
            if not ok:
                raise self.error(msg)

    def checks(self) -> list[tuple[bool, str]]:
        """(passed, message) for each check of the engine's sections: ranges and combinations no
        single type check can see. Subclasses add their sections' after these."""
        t, o, lg = self.train, self.optim, self.log
        return [
            (t.max_steps >= 0, f"train.max_steps must be >= 0, got {t.max_steps}"),
            (t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}"),
            (t.grad_accum > 0, f"train.grad_accum must be positive, got {t.grad_accum}"),
            (
                t.precision in ("auto", "bf16", "fp32"),
                f"train.precision must be auto|bf16|fp32, got '{t.precision}'",
            ),
            (t.distributed in ("ddp", "fsdp"), f"train.distributed must be ddp|fsdp, got '{t.distributed}'"),
            (0.0 <= t.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {t.ema_decay}"),
            (t.checkpoint_every > 0, f"train.checkpoint_every must be positive, got {t.checkpoint_every}"),
            (t.keep_checkpoints >= 0, f"train.keep_checkpoints must be >= 0, got {t.keep_checkpoints}"),
            (t.max_nonfinite > 0, f"train.max_nonfinite must be positive, got {t.max_nonfinite}"),
            (t.max_minutes >= 0, f"train.max_minutes must be >= 0, got {t.max_minutes}"),
            (
                not t.fit_to_budget or t.max_minutes > 0,
                "train.fit_to_budget needs a budget: set train.max_minutes > 0",
            ),
            # AdamW's step is about lr per weight per step: above 1 nothing can train
            (0 < o.lr <= 1, f"optim.lr must be in (0, 1], got {o.lr}"),
            (o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}"),
            (o.decay in DECAYS, f"optim.decay must be one of {'|'.join(DECAYS)}, got '{o.decay}'"),
            (0 <= o.decay_floor <= 1, f"optim.decay_floor must be in [0, 1], got {o.decay_floor}"),
            (all(0 <= b < 1 for b in o.betas), f"optim.betas must be in [0, 1), got {list(o.betas)}"),
            (0 <= o.weight_decay <= 1, f"optim.weight_decay must be in [0, 1], got {o.weight_decay}"),
            (0 < o.eps <= 1, f"optim.eps must be in (0, 1], got {o.eps}"),
            (o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 = off), got {o.grad_clip}"),
            (o.optimizer in OPTIMIZERS, f"optim.optimizer must be one of {'|'.join(OPTIMIZERS)}, got '{o.optimizer}'"),
            (0 < o.muon_lr <= 1, f"optim.muon_lr must be in (0, 1], got {o.muon_lr}"),
            (0 <= o.muon_momentum < 1, f"optim.muon_momentum must be in [0, 1), got {o.muon_momentum}"),
            (
                lg.every > 0 and lg.image_every > 0 and lg.val_every > 0,
                "log.every, log.image_every and log.val_every must be > 0",
            ),
            (lg.grid_images >= 0, f"log.grid_images must be >= 0, got {lg.grid_images}"),
        ]


def _absolute(p: str) -> str:
    """``p`` as an absolute path when it names a local file, folder or shard pattern."""
    if "://" in p or p.startswith("pipe:"):
        return p
    path = Path(p).expanduser()
    if path.exists() or "{" in p or p.endswith(".tar"):
        return str(path.absolute())
    return p


# -- the autoencoder's sections -------------------------------------------------------------------
@dataclass
class ModelSection:
    """Which autoencoder to train."""

    name: str = "transvae-t-f16d32"  # a name from `transvae list`
    init: str = ""  # a saved model (folder / run folder / Hub id) to start from; stage 2 needs one
    gradient_checkpointing: bool = False  # recompute activations in backward: for the L/H/G variants
    # a model trained from scratch: its posterior's log-variance starts here (None: the usual init,
    # std ~1); `AutoencoderBase.init_logvar_`
    logvar_init: float | None = None


@dataclass
class DataSection:
    """Where the images come from and how they are cropped."""

    train: tuple[str, ...] = ()  # image folders (recursive) or WebDataset .tar shards
    val: tuple[
        str, ...
    ] = ()  # validation folders (the evaluation protocol: resize shorter side, center crop)
    resolution: int = 256  # training crop size (the paper trains at 256 only)
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range on top of "resize shorter side to cover the crop"
    hflip: bool = True
    # colour augmentation (torchvision ColorJitter's semantics; 0 / false = off, as in the paper)
    contrast: float = 0.0  # contrast factor uniform in [max(0, 1 - c), 1 + c]
    saturation: float = 0.0  # saturation factor uniform in [max(0, 1 - s), 1 + s]
    hue: float = 0.0  # hue rotation uniform in +-this fraction of the colour circle (<= 0.5)
    channel_shuffle: bool = False  # random order of the R, G, B channels of each crop
    colour_p: float = 1.0  # probability that a crop gets the colour changes above (1 = every crop)
    buckets: tuple[str, ...] = ()  # multi-resolution training, e.g. ["256x256", "192x320", "320x192"]
    num_workers: int = 4  # DataLoader worker processes per rank
    cache_mb: float = 0  # decoded training images kept in memory per data process (image folders; 0 = off)
    strict: bool = False  # stop at the first bad image instead of skipping and counting it
    val_images: int = 256  # validation images used (0 = all)
    shuffle_buffer: int = 1000  # WebDataset shuffle buffer


@dataclass
class AutoencoderOptimSection(OptimSection):
    """AdamW (Appendix D: constant 1e-4 after 1000 warmup steps, no weight decay) + the discriminator's."""

    disc_warmup_steps: int = 0  # discriminator LR = lr x loss.disc_lr_mult, after this warmup


@dataclass
class AutoencoderTrainSection(TrainSection):
    """The loop, plus which stage of the two-stage recipe runs."""

    stage: int = 1  # 1: encoder+decoder, no GAN; 2: frozen encoder, decoder + GAN
    max_latent_drift: float = 0.0  # a fine-tune stops when its latents drift further (rel. L2; 0 = off)
    diffusability_steps: int = (
        0  # at each validation, train a probe generator this long on the latents (0 = off)
    )


@dataclass
class TrainConfig(ConfigTree):
    """The autoencoder's whole configuration (``transvae train``)."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("model.init", "data.train", "data.val")

    model: ModelSection
    data: DataSection
    optim: AutoencoderOptimSection
    loss: LossConfig
    train: AutoencoderTrainSection
    log: LogSection

    def checks(self) -> list[tuple[bool, str]]:
        t, d, o = self.train, self.data, self.optim
        return super().checks() + [
            (t.stage in (1, 2), f"train.stage must be 1 or 2, got {t.stage}"),
            (d.resolution > 0, f"data.resolution must be positive, got {d.resolution}"),
            (d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}"),
            (d.cache_mb >= 0, f"data.cache_mb must be >= 0, got {d.cache_mb}"),
            (
                d.cache_mb == 0 or not is_webdataset(d.train),
                "data.cache_mb caches image folders; WebDataset shards stream (set it to 0)",
            ),
            (0.0 <= d.hue <= 0.5, f"data.hue must be in [0, 0.5], got {d.hue}"),
            (d.contrast >= 0, f"data.contrast must be >= 0, got {d.contrast}"),
            (d.saturation >= 0, f"data.saturation must be >= 0, got {d.saturation}"),
            (0.0 <= d.colour_p <= 1.0, f"data.colour_p must be in [0, 1], got {d.colour_p}"),
            (d.val_images >= 0, f"data.val_images must be >= 0, got {d.val_images}"),
            (
                1.0 <= d.scale[0] <= d.scale[1],
                f"data.scale must satisfy 1 <= min <= max, got {list(d.scale)}",
            ),
            (o.disc_warmup_steps >= 0, f"optim.disc_warmup_steps must be >= 0, got {o.disc_warmup_steps}"),
            (
                t.max_latent_drift >= 0,
                f"train.max_latent_drift must be >= 0 (0 = off), got {t.max_latent_drift}",
            ),
            (
                self.model.logvar_init is None or not self.model.init,
                "model.logvar_init initialises a model trained from scratch; model.init loads trained weights",
            ),
            (
                self.model.logvar_init is None or LOGVAR_MIN <= self.model.logvar_init <= LOGVAR_MAX,
                f"model.logvar_init must be within [{LOGVAR_MIN:g}, {LOGVAR_MAX:g}] (the posterior's clamp), "
                f"got {self.model.logvar_init}",
            ),
            (
                self.loss.anchor_weight == 0 or bool(self.model.init),
                "loss.anchor_weight > 0 anchors the latents to a starting tokenizer: set model.init (--init)",
            ),
            (
                math.isfinite(o.lr * self.loss.disc_lr_mult) and o.lr * self.loss.disc_lr_mult <= 1,
                f"optim.lr x loss.disc_lr_mult must be <= 1, got {o.lr * self.loss.disc_lr_mult:g}",
            ),
        ]

    def validate(self) -> None:
        super().validate()
        try:  # the loss section's own range checks (weights >= 0, margins > 0, ...)
            LossConfig(**dataclasses.asdict(self.loss))
        except ConfigError as e:
            raise self.error(str(e)) from e


# -- the generator's sections (``transvae gen-train``) ----------------------------------------------
# Defaults: LightningDiT's recipe as the paper uses it (Appendix D, VA-VAE settings): AdamW with a
# constant LR 2e-4, betas (0.9, 0.95), no weight decay, no warmup, no clipping, global batch 1024,
# EMA 0.9999; rectified flow with logit-normal timesteps and the cosine term; sampling with 250
# Euler steps, timestep shift 0.3 and a guidance interval from t = 0.11.
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
    # "all", or guide only the first k channels: 3 is LightningDiT's forward_with_cfg, with which
    # its guided FIDs (cfg 6.7 / 10) were measured
    cfg_channels: int | str = "all"
    val_num: int = 1000  # latents generated at each validation for the latent FD (0 = none)
    val_steps: int = 50  # ODE steps of those validation samples
    val_seed: int = 0  # the same noise at every validation: checkpoints are compared on equal terms


@dataclass
class GenOptimSection(OptimSection):
    """AdamW as LightningDiT: constant 2e-4, betas (0.9, 0.95), no warmup, decay or clipping."""

    lr: float = 2.0e-4
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
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

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("data.latents", "data.val_latents", "data.vae")

    model: GenModelSection
    data: GenDataSection
    flow: FlowSection
    sample: SampleSection
    optim: GenOptimSection
    train: GenTrainSection
    log: GenLogSection

    def checks(self) -> list[tuple[bool, str]]:
        m, d, f, s = self.model, self.data, self.flow, self.sample
        return super().checks() + [
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
            (
                s.cfg_channels == "all" or (type(s.cfg_channels) is int and s.cfg_channels >= 1),
                f"sample.cfg_channels must be 'all' or a channel count >= 1, got {s.cfg_channels!r}",
            ),
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


SECTIONS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def valid_keys() -> list[str]:
    """Every key of ``TrainConfig`` with its type and default (``transvae train --list-keys``)."""
    return TrainConfig.valid_keys()


def parse_override(item: str) -> tuple[str, Any]:
    """``"--optim.lr=2e-4"`` or ``"optim.lr=2e-4"`` -> ``("optim.lr", 2e-4)`` (value parsed as YAML)."""
    s = item[2:] if item.startswith("--") else item
    if "=" not in s:
        raise TrainConfigError(f"override '{item}' must look like --section.key=value")
    key, raw = s.split("=", 1)
    return key.replace("-", "_"), parse_value(raw)


RECIPES = Path(__file__).resolve().parents[3] / "configs"  # the recipes of a source checkout


def find_recipe(path: str | Path) -> Path:
    """``path`` if it exists; else the shipped recipe it names (``configs/X.yaml``, ``X.yaml`` or
    ``X``) in the source checkout's ``configs/``, so the documented ``--config configs/...``
    works from any folder, not only from the checkout's root.

    Raises:
        TrainConfigError: neither exists (the message lists the shipped recipes, or says that an
            installed wheel has none: they live in the source repository's ``configs/``).
    """
    p = Path(path)
    if p.exists():
        return p
    shipped = RECIPES / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if shipped.is_file() and (len(p.parts) == 1 or p.parent.name == "configs"):
        return shipped
    names = sorted(x.stem for x in RECIPES.glob("*.yaml")) if RECIPES.is_dir() else []
    where = (
        f"shipped recipes: {', '.join(names)}"
        if names
        else "this install has no recipes (they are in the source repository's configs/)"
    )
    raise TrainConfigError(f"config file not found: {path}; {where}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe as data (``yaml.safe_load``: no object construction; bounded in size and
    nesting, regular files only: ``--config /dev/zero`` is refused in one line). A missing path
    that names a shipped recipe reads that (``find_recipe``)."""
    try:
        d = read_yaml(find_recipe(path), what="config file")
    except FileNotFoundError as e:
        raise TrainConfigError(f"config file not found: {path}") from e
    except IsADirectoryError as e:
        raise TrainConfigError(f"config file {path} is a folder") from e
    except ConfigError as e:
        raise TrainConfigError(str(e)) from e
    return d or {}


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    extra: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- ``base`` <- YAML recipe <- explicit overrides (dotted keys) <- ``--key=value`` strings."""
    return TrainConfig.build(yaml_path, overrides, extra, base)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` for every key whose value differs (plain data)."""
    out = []
    for section, values in new.items():
        for key, value in values.items():
            before = old.get(section, {}).get(key, value)
            if before != value:
                out.append((f"{section}.{key}", before, value))
    return out

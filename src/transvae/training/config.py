"""The training configuration: a tree of dataclasses, read from YAML as plain data.

``TrainConfig`` has the sections ``model``, ``data``, ``optim``, ``loss``, ``train`` and ``log``;
every field is addressable as ``section.field`` (e.g. ``optim.lr``, ``loss.kl_weight``) from a
YAML recipe or a ``--section.field=value`` command-line override. Recipes are parsed with
``yaml.safe_load`` (data only; nothing is instantiated from names in a file). Unknown keys and
values of the wrong type are errors that list the valid keys.

Defaults are the paper's recipe (Appendix D, following VA-VAE): AdamW, constant LR 1e-4 after a
1000-step linear warmup, no weight decay, global batch 256, L1 1.0 / LPIPS 1.0 / KL 1e-8 /
GAN 0.1 / VF 0.1, 256x256 crops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..losses import LossConfig
from ..utils.config import ConfigError, coerce, field_types, parse_value, to_plain, type_name


class TrainConfigError(ConfigError):
    """An unknown key, a value of the wrong type or an impossible combination in the config."""


@dataclass
class ModelSection:
    """Which autoencoder to train."""

    name: str = "transvae-t-f16d32"  # a name from `transvae list`
    init: str = ""  # a saved model (folder / run folder / Hub id) to start from; stage 2 needs one
    gradient_checkpointing: bool = False  # recompute activations in backward: for the L/H/G variants


@dataclass
class DataSection:
    """Where the images come from and how they are cropped."""

    train: tuple[str, ...] = ()  # image folders (recursive) or WebDataset .tar shards
    val: tuple[str, ...] = ()  # validation folders (resize shorter side + center crop)
    resolution: int = 256  # training crop size (the paper trains at 256 only)
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range on top of "resize shorter side to cover the crop"
    hflip: bool = True
    buckets: tuple[str, ...] = ()  # multi-resolution training, e.g. ["256x256", "192x320", "320x192"]
    num_workers: int = 4  # DataLoader worker processes per rank
    strict: bool = False  # stop at the first bad image instead of skipping and counting it
    val_images: int = 256  # validation images used (0 = all)
    shuffle_buffer: int = 1000  # WebDataset shuffle buffer


@dataclass
class OptimSection:
    """AdamW and its schedule (Appendix D: constant 1e-4 after 1000 warmup steps, no weight decay)."""

    lr: float = 1.0e-4
    warmup_steps: int = 1000  # linear warmup from 0, then constant
    betas: tuple[float, float] = (0.5, 0.9)  # the LDM / VA-VAE autoencoder betas
    weight_decay: float = 0.0
    eps: float = 1.0e-8
    grad_clip: float = 1.0  # max global grad norm (0 = no clipping)
    disc_warmup_steps: int = 0  # discriminator LR = lr x loss.disc_lr_mult, after this warmup


@dataclass
class TrainSection:
    """The loop: stage, length, batch, precision, EMA, checkpoints and fault handling."""

    stage: int = 1  # 1: encoder+decoder, no GAN; 2: frozen encoder, decoder + GAN
    max_steps: int = 500_000  # optimizer steps
    batch_size: int = 256  # GLOBAL batch = per-rank micro-batch x ranks x grad_accum
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
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


@dataclass
class LogSection:
    """What the run folder receives and how often."""

    every: int = 50  # scalars to TensorBoard + metrics.jsonl
    image_every: int = 1000  # reconstruction grids (input | reconstruction) PNG
    val_every: int = 5000  # validation PSNR/SSIM (also at the start and the end)
    grid_images: int = 8
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class TrainConfig:
    """The whole configuration; ``to_dict`` / ``from_dict`` round-trip through plain data."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainSection = field(default_factory=TrainSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists instead of tuples), suitable for YAML/JSON and checkpoints."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        cfg.update(d)
        return cfg

    def update(self, d: dict[str, Any]) -> None:
        """Apply a nested dict of values (as in a YAML recipe), validating every key and type."""
        if not isinstance(d, dict):
            raise TrainConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
        for section, values in d.items():
            if section not in SECTIONS:
                raise TrainConfigError(
                    f"unknown config section '{section}'; valid sections: {list(SECTIONS)}"
                )
            if values is None:
                continue
            if not isinstance(values, dict):
                raise TrainConfigError(f"config section '{section}' must be a mapping, got {values!r}")
            for key, value in values.items():
                self.set(f"{section}.{key}", value)

    def set(self, dotted: str, value: Any) -> None:
        """Set ``section.field`` to ``value`` after checking the key and the type."""
        section, _, name = dotted.partition(".")
        if section not in SECTIONS or not name:
            raise TrainConfigError(
                f"unknown config key '{dotted}'; valid keys:\n  " + "\n  ".join(valid_keys())
            )
        obj = getattr(self, section)
        hints = field_types(type(obj))
        if name not in hints:
            raise TrainConfigError(
                f"unknown config key '{dotted}'; valid keys:\n  " + "\n  ".join(valid_keys())
            )
        try:
            setattr(obj, name, coerce(dotted, value, hints[name]))
        except ConfigError as e:
            raise TrainConfigError(str(e)) from e

    def validate(self) -> None:
        """Check combinations that no single type check can see."""
        t, d, o = self.train, self.data, self.optim
        checks = [
            (t.stage in (1, 2), f"train.stage must be 1 or 2, got {t.stage}"),
            (t.max_steps >= 0, "train.max_steps must be >= 0"),
            (t.batch_size > 0 and t.grad_accum > 0, "train.batch_size and train.grad_accum must be positive"),
            (
                t.precision in ("auto", "bf16", "fp32"),
                f"train.precision must be auto|bf16|fp32, got '{t.precision}'",
            ),
            (t.distributed in ("ddp", "fsdp"), f"train.distributed must be ddp|fsdp, got '{t.distributed}'"),
            (0.0 <= t.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
            (t.checkpoint_every > 0, "train.checkpoint_every must be positive"),
            (t.max_nonfinite > 0, "train.max_nonfinite must be positive"),
            (d.resolution > 0, "data.resolution must be positive"),
            (d.num_workers >= 0, "data.num_workers must be >= 0"),
            (o.lr > 0 and o.warmup_steps >= 0, "optim.lr must be > 0 and optim.warmup_steps >= 0"),
            (
                self.log.every > 0 and self.log.image_every > 0 and self.log.val_every > 0,
                "log.* intervals must be > 0",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainConfigError(msg)
        try:  # the loss section's own range checks (weights >= 0, margins > 0, ...)
            LossConfig(**dataclasses.asdict(self.loss))
        except ConfigError as e:
            raise TrainConfigError(str(e)) from e


SECTIONS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def valid_keys() -> list[str]:
    """Every ``section.field`` key with its type and default, e.g. ``optim.lr (float, 0.0001)``."""
    cfg = TrainConfig()
    out = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for name, tp in field_types(type(obj)).items():
            out.append(f"{section}.{name} ({type_name(tp)}, default {to_plain(getattr(obj, name))!r})")
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"--optim.lr=2e-4"`` or ``"optim.lr=2e-4"`` -> ``("optim.lr", 2e-4)`` (value parsed as YAML)."""
    s = item[2:] if item.startswith("--") else item
    if "=" not in s:
        raise TrainConfigError(f"override '{item}' must look like --section.key=value")
    key, raw = s.split("=", 1)
    return key.replace("-", "_"), parse_value(raw)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe as data (``yaml.safe_load``: no object construction)."""
    try:
        d = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise TrainConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path} is not valid YAML: {e}") from e
    return d or {}


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    extra: list[str] | None = None,
) -> TrainConfig:
    """Defaults <- YAML recipe <- explicit overrides (dotted keys) <- ``--key=value`` strings."""
    cfg = TrainConfig()
    if yaml_path:
        cfg.update(load_yaml(yaml_path))
    for k, v in (overrides or {}).items():
        cfg.set(k, v)
    for item in extra or []:
        cfg.set(*parse_override(item))
    cfg.validate()
    return cfg

"""Training: configuration, the two-stage trainer, EMA, checkpoints and distributed helpers."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainConfigError, build_config, valid_keys
from .trainer import Trainer, TrainingError

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "TrainingError",
    "build_config",
    "load_checkpoint",
    "save_checkpoint",
    "valid_keys",
]

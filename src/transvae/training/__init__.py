"""Training: one engine (loop, checkpoints, faults) and the tasks it runs.

- ``engine.Engine`` + ``task.Task``: the loop and the interface a kind of training implements;
- ``autoencoder.AutoencoderTask`` / ``trainer.Trainer``: the paper's two-stage VAE training;
- ``config``: configuration trees (``ConfigTree``; the engine's ``TrainSection`` / ``LogSection``
  / ``OptimSection``); ``checkpoint`` / ``state``: the files; ``ema``, ``optim``, ``runlog``,
  ``validation``, ``distributed``: the pieces.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ConfigTree,
    LogSection,
    OptimSection,
    TrainConfig,
    TrainConfigError,
    TrainSection,
    build_config,
    valid_keys,
)
from .engine import EXIT_STATUS, Engine, TrainingError
from .task import Task
from .trainer import Trainer

__all__ = [
    "EXIT_STATUS",
    "CheckpointError",
    "ConfigTree",
    "Engine",
    "LogSection",
    "OptimSection",
    "Task",
    "TrainConfig",
    "TrainConfigError",
    "TrainSection",
    "Trainer",
    "TrainingError",
    "build_config",
    "load_checkpoint",
    "save_checkpoint",
    "valid_keys",
]

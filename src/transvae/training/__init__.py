"""Training: one engine (loop, checkpoints, faults), the run folder it writes, and the tasks it runs.

- ``engine.Engine`` + ``task.Task``: the loop and the interface a kind of training implements
  (the engine imports no task; a task imports only the interface);
- ``tasks.autoencoder.AutoencoderTask`` (``transvae train``, the paper's two-stage VAE training;
  ``trainer.Trainer`` runs it) and ``tasks.generator.GenerationTask`` (``transvae gen-train``,
  LightningDiT on extracted latents);
- ``run_folder.RunFolder``: the layout of a run folder and every write into it;
- ``config``: the one configuration schema (``ConfigTree``; the engine's ``train`` / ``log`` /
  ``optim`` sections and each task's own); ``checkpoint`` / ``state``: the files; ``ema``,
  ``optim``, ``validation``, ``distributed``: the pieces.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ConfigTree,
    GenConfig,
    LogSection,
    OptimSection,
    TrainConfig,
    TrainConfigError,
    TrainSection,
    build_config,
    valid_keys,
)
from .engine import EXIT_STATUS, Engine
from .run_folder import RunFolder, RunFolderError
from .task import Task, TrainingError
from .trainer import Trainer

__all__ = [
    "EXIT_STATUS",
    "CheckpointError",
    "ConfigTree",
    "Engine",
    "GenConfig",
    "LogSection",
    "OptimSection",
    "RunFolder",
    "RunFolderError",
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

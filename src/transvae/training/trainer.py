"""``Trainer``: the autoencoder task on the engine, behind the API the quick start and scripts use.

    cfg = build_config("configs/transvae-t-f16d32-stage1.yaml", {"data.train": ["imgs/"]})
    summary = Trainer(cfg, "runs/x").fit()

The loop, checkpoints and fault rules are ``engine.Engine``'s; what is specific to training an
autoencoder (model, loss, data, step, validation, export) is ``tasks.autoencoder.AutoencoderTask``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from .config import TrainConfig
from .engine import CHECKPOINT_NAME, EXIT_STATUS, Engine
from .task import TrainingError
from .tasks.autoencoder import AutoencoderTask

__all__ = ["CHECKPOINT_NAME", "EXIT_STATUS", "Trainer", "TrainingError"]


def _task_attribute(name: str, doc: str) -> property:
    """A read-only property that returns ``self.task.<name>``."""
    return property(lambda self: getattr(self.task, name), doc=doc)


class Trainer(Engine):
    """Builds everything from a ``TrainConfig`` and runs the loop (``fit``).

    Args:
        cfg: the resolved configuration (``build_config``).
        run_dir: the run folder (config, logs, TensorBoard, grids, checkpoints, ``model/``).
        resume: continue from ``run_dir/checkpoints/last.pt``; ``cfg`` may change options other
            than ``model.name`` and ``train.stage`` (each change is logged in one line).
        train_dataset / val_dataset: optional ready datasets (quick start, tests) instead of
            the folders of ``cfg.data``.
    """

    task: AutoencoderTask

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | os.PathLike,
        resume: bool = False,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        saved: dict | None = None,
    ):
        super().__init__(AutoencoderTask(cfg, train_dataset, val_dataset), Path(run_dir), resume, saved)

    model = _task_attribute("model", "The autoencoder being trained (plain module, possibly FSDP-sharded).")
    loss_fn = _task_attribute("loss_fn", "The loss (``losses.VAELoss``).")
    train_dataset = _task_attribute("train_dataset", "The training images.")
    val_dataset = _task_attribute("val_dataset", "The validation images (or None).")

    def validate(self) -> dict[str, float]:
        """Validation PSNR / SSIM of the EMA (or current) weights; every rank calls it."""
        return self.task.validate()

    def export_model(self) -> Path | None:
        """Write ``RUN_DIR/model`` now (EMA weights when enabled)."""
        return self.task.export()

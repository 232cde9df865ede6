"""The interface between the training engine and one kind of training (a *task*).

The engine (``transvae.training.engine.Engine``) owns everything that every training run needs:
the process group, seeding, the run-folder lock, signals and the time budget, limits checked
before work, precision, the progress bar, logging (``metrics.jsonl``, TensorBoard, ``train.log``),
checkpoints (save, load, exact resume), the EMA, the optimizer update (clipping, the NaN/Inf
check, skipping, EMA update: one host synchronisation per step), the validation / sample /
checkpoint cadence, and the run's exit status.

A task owns what is specific to it: building its model(s) and loss, its data stream, the
forward + backward of one step, validation, sample images and the export of the weights to
publish. ``transvae.training.tasks.autoencoder.AutoencoderTask`` (``transvae train``) is one task; a
latent diffusion model trained on extracted latents (``transvae gen-train``) is another.

Call order (``Engine.__init__`` then ``Engine.fit``)::

    task.engine = engine
    task.preflight()                  limits before any allocation; returns checkpoint bytes
    task.build()                      models on engine.device, engine.add_optimizer(...)
    [engine loads a checkpoint into task.modules(), the optimizers, the EMA, task.load_state_dict]
    task.validate(); task.save_samples(path)       at step 0, every log.val_every, at the end
    it = task.batches()
    loop:  logs = task.train_step(it, step)        forward + backward only; tensors, no .item()
           [engine: clip, one sync, step optimizers + EMA or skip, log, cadence]
    task.export()                                  with every checkpoint
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .config import ConfigTree


class StopRequested(Exception):
    """Raised by ``Engine.check_stop`` inside long task work (validation, sample grids) once a
    SIGTERM / SIGINT has arrived: the engine abandons that work, saves a checkpoint and stops."""


class TrainingError(RuntimeError):
    """The run cannot start or continue (limits, diverged, folder in use); the message says why."""


def ignore_sigterm(worker_id: int) -> None:  # noqa: ARG001
    """DataLoader ``worker_init_fn``: a scheduler preempting the job signals the whole process
    group; the workers must not die first, or the main process fails before it can save its
    checkpoint. The main process shuts its workers down itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Task:
    """Base class of a training task; subclasses override the methods marked "required".

    Attributes:
        cfg: the task's ``ConfigTree``; it must have ``train`` (``TrainSection``), ``log``
            (``LogSection``) and ``optim`` (``OptimSection``) sections for the engine.
        engine: set by the engine before ``preflight``.
        label: progress-bar label (e.g. ``"stage 1"``).
        progress_keys: short names of logged values shown on the progress bar.
        fixed_on_resume: config keys that ``--resume`` refuses to change (others are applied
            with a one-line notice naming the old and new values).
        optional_state: names in ``modules()`` whose checkpointed state may have missing or
            unexpected keys (e.g. a loss whose weights changed between runs).
    """

    cfg: ConfigTree
    engine: Any  # the ``engine.Engine`` running this task (set by it; not imported here)
    label: str = "train"
    progress_keys: tuple[str, ...] = ()
    fixed_on_resume: tuple[str, ...] = ()
    optional_state: tuple[str, ...] = ()

    # -- building ---------------------------------------------------------------------------
    def preflight(self) -> int:
        """Check sizes and limits before anything big is allocated (meta-device estimates);
        raise ``TrainingError`` with one line naming the value and the option.

        Returns:
            Bytes one checkpoint round needs on disk (checked against the free space).
        """
        return 64 << 20

    def build(self) -> None:
        """Required. Build the model(s) and losses on ``engine.device``, wrap them for
        DDP/FSDP, and register optimizers with ``engine.add_optimizer``. ``engine.resuming``
        says whether a checkpoint will be loaded afterwards (skip ``--init``-style loading)."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Required. The (unwrapped) modules whose state goes into checkpoints, by name
        (``"model"`` first); the engine saves and restores them, FSDP shards included."""
        raise NotImplementedError

    def ema_target(self) -> nn.Module | None:
        """The module whose weights the engine averages when ``train.ema`` is on."""
        return None

    def ema_init(self) -> dict[str, torch.Tensor] | None:
        """Weights to start the average from instead of ``ema_target``'s (a fine-tune continuing
        a run's EMA); None: a copy of the target."""
        return None

    # -- the step -----------------------------------------------------------------------------
    def batches(self) -> Iterator[Any]:
        """Required. This rank's endless stream of batches, starting at ``engine.data_pos``.
        Update ``engine.data_pos`` as batches are consumed and report unreadable inputs with
        ``engine.record_bad``."""
        raise NotImplementedError

    def train_step(self, batches: Iterator[Any], step: int) -> dict[str, torch.Tensor | float]:
        """Required. Forward + backward of one optimizer step (all ``train.grad_accum``
        micro-batches; use ``engine.no_sync(module, last)`` and ``engine.autocast()``).

        Never call ``.item()`` / ``float()`` on a device tensor here: return the values to log
        as 0-d tensors (``"loss/total"``...) and the engine reads them, the gradient norms and
        the finite check in one host synchronisation. A non-finite value among them skips the
        step for every optimizer.
        """
        raise NotImplementedError

    # -- evaluation and outputs ------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation metrics (``"val/..."``), the same on every rank; called on every rank.
        Long loops call ``engine.check_stop()`` between batches, so a SIGTERM is honoured at once."""
        return {}

    def describe(self, metrics: dict[str, float]) -> str:
        """One line for the log about ``validate``'s metrics."""
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())

    def save_samples(self, path: Path) -> Path | None:
        """Write a sample image grid to ``path`` (rank 0 writes; called on every rank)."""
        return None

    def export(self) -> Path | None:
        """Write the weights to publish (EMA when enabled) under ``engine.run_dir`` (rank 0
        writes; called on every rank, after each checkpoint)."""
        return None

    def checkpoint_note(self) -> dict[str, Any]:
        """Extra plain data stored in checkpoints (e.g. the model name)."""
        return {}

    def load_checkpoint_note(self, note: dict[str, Any]) -> None:
        """Receive ``checkpoint_note``'s data when resuming (raise ``TrainingError`` on a mismatch)."""

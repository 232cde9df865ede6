"""The run folder: one owner of its layout, its lock and everything written into it.

Every training run (``transvae train``, ``transvae gen-train``) writes one folder::

    RUN/
      .lock               held by the one process that writes the run (``utils.runlock``)
      config.yaml         the resolved configuration (atomic)
      train.log           the log (appended; never through a link)
      metrics.jsonl       one line of scalars per logged step (appended; cut back on resume)
      tensorboard/        TensorBoard event files
      samples/            sample / reconstruction grids, ``step_XXXXXXXX.png`` (atomic)
      checkpoints/        ``last.pt`` (atomic) and ``step_XXXXXXXX.pt`` snapshots (hard links)
      model/              the weights to publish (``save_pretrained``), EMA when enabled
      summary.json        the outcome (status, steps, wall time, history)
      bad_files.txt       unreadable inputs that were skipped

``RunFolder`` knows this layout. It refuses, before any work, a new run over a folder that
holds anything (a user's files are never overwritten: a finished run whose checkpoints were
deleted still holds its model), a resume without a checkpoint, a folder another process writes,
and a folder whose own entries are symbolic links (nothing is ever written through a link, so a
planted ``.lock`` or ``metrics.jsonl`` link cannot truncate or append to a file elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..utils.files import atomic_write_text, check_writable, open_nofollow
from ..utils.runlock import RunLock, lock_holder
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger("transvae.train")

__all__ = ["RunFolder", "RunFolderError"]


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class RunFolder:
    """The layout of a training run folder and the only code that writes into it.

    Args:
        path: the run folder.
    """

    CONFIG = "config.yaml"
    LOG = "train.log"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    BAD_FILES = "bad_files.txt"
    CHECKPOINTS = "checkpoints"
    LAST = "last.pt"
    MODEL = "model"
    SAMPLES = "samples"
    TENSORBOARD = "tensorboard"
    # the entries the run writes: none may be a symbolic link when the run starts
    ENTRIES = (".lock", CONFIG, LOG, METRICS, SUMMARY, BAD_FILES, CHECKPOINTS, MODEL, SAMPLES, TENSORBOARD)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock = RunLock(self.path)
        self._writer = None  # TensorBoard
        self._handler: logging.Handler | None = None

    # -- the layout ---------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINTS / self.LAST

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    def sample_path(self, step: int) -> Path:
        return self.path / self.SAMPLES / f"step_{step:08d}.png"

    def snapshot_path(self, step: int) -> Path:
        return self.path / self.CHECKPOINTS / f"step_{step:08d}.pt"

    def snapshot_steps(self) -> list[int]:
        """Steps of the ``step_XXXXXXXX.pt`` snapshots kept (``train.keep_checkpoints``)."""
        steps = []
        for p in (self.path / self.CHECKPOINTS).glob("step_*.pt"):
            digits = p.stem.split("_", 1)[1]
            if digits.isdigit():
                steps.append(int(digits))
        return sorted(steps)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | os.PathLike | None, resume: bool, rank: int = 0
    ) -> tuple[RunFolder, dict | None]:
        """Check a run folder before any work (the ``--out`` of ``train`` / ``gen-train``).

        Args:
            path: the folder (``--out``).
            resume: continue the run (its checkpoint must exist) instead of starting one.
            rank: this process's rank; only rank 0 probes the lock (it takes it later) and checks
                that a new run's folder is empty: the other ranks of a torchrun may start after
                rank 0 has begun writing into it (torchrun stops them all when rank 0 refuses).
        Returns:
            ``(run, saved)``: ``saved`` is the checkpoint to resume (its stored config is the base
            of the new one), or None for a new run.
        Raises:
            RunFolderError: one line naming the problem and the fix.
        """
        if not path:
            raise RunFolderError("--out RUN_DIR is required")
        run = cls(path)
        p = run.path
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise RunFolderError(f"--out {p} is an existing file or link, not a folder; choose another --out")
        if rank == 0:
            holder = lock_holder(p)
            if holder is not None:
                raise RunFolderError(
                    f"run folder {p} is in use by another process ({holder}); wait for it to finish, "
                    f"stop it, or choose another --out"
                )
        if not resume:
            if rank == 0 and p.is_dir() and any(p.iterdir()):
                what = "a run" if run.checkpoint_path.exists() or (p / cls.CONFIG).exists() else "files"
                hint = "pass --resume to continue it or choose" if what == "a run" else "choose"
                raise RunFolderError(
                    f"--out {p} already holds {what}; {hint} another --out (nothing was changed)"
                )
            return run, None
        if not run.checkpoint_path.is_file():
            raise RunFolderError(f"--resume: no checkpoint at {run.checkpoint_path}")
        run.check_no_links()
        try:
            return run, load_checkpoint(run.checkpoint_path)
        except CheckpointError as e:
            raise RunFolderError(f"--resume: {e}") from e

    def check_no_links(self) -> None:
        """Refuse a run folder whose own entries are symbolic links (see the module docstring)."""
        for name in self.ENTRIES:
            if (self.path / name).is_symlink():
                raise RunFolderError(
                    f"{self.path / name} is a symbolic link; a run never writes through links: remove it"
                )

    def claim(self, needed_bytes: int = 0) -> None:
        """Take the folder: writable, ``needed_bytes`` free, no links among its entries, the lock.
        Stale temporary files of a killed writer are removed.

        Raises:
            OSError / DiskFullError: not writable, not enough space (message names the folder).
            RunLockedError: another live process holds the lock.
            RunFolderError: a link among the entries.
        """
        check_writable(self.path, needed_bytes, what="run folder")
        self.check_no_links()
        self.lock.acquire()
        if self.lock.stale:
            log.warning("run folder lock of %s (no longer running) taken over", self.lock.stale)
        for stale in (self.path / self.CHECKPOINTS).glob(".*.tmp"):
            stale.unlink()

    def release(self) -> None:
        self.lock.release()

    # -- writing ---------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """``config.yaml`` (atomic). No ``config.json``: that name marks a model folder, and
        ``transvae.from_pretrained(RUN)`` must find ``RUN/model``."""
        atomic_write_text(self.path / self.CONFIG, yaml.safe_dump(config, sort_keys=False))

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def write_bad_files(self, bad: dict[str, str]) -> Path:
        path = self.path / self.BAD_FILES
        atomic_write_text(path, "".join(f"{p}: {r}\n" for p, r in bad.items()))
        return path

    def append_metrics(self, step: int, values: dict[str, float]) -> None:
        """One line ``{"step": step, **values}`` of ``metrics.jsonl`` (never through a link)."""
        with open_nofollow(self.path / self.METRICS, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def truncate_metrics(self, step: int) -> int:
        """Drop the ``metrics.jsonl`` lines logged after ``step`` (a resumed run repeats those
        steps); returns how many were dropped. Lines that are not JSON (a line cut by a kill) go too."""
        path = self.path / self.METRICS
        if not path.is_file():
            return 0
        keep, dropped = [], 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                ok = int(json.loads(line)["step"]) <= step
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                keep.append(line + "\n")
            else:
                dropped += 1
        if dropped:
            atomic_write_text(path, "".join(keep))
        return dropped

    def start_logging(self, config: dict[str, Any], tensorboard: bool) -> None:
        """Write ``config.yaml``, send the ``transvae.train`` log to ``train.log`` and open the
        TensorBoard writer (rank 0 calls this; other ranks write nothing)."""
        self.write_config(config)
        handler = logging.StreamHandler(open_nofollow(self.path / self.LOG, "a"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._handler = handler
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path / self.TENSORBOARD))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """One line of ``metrics.jsonl`` and the TensorBoard scalars."""
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
        self.append_metrics(step, values)

    def stop_logging(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def save_checkpoint(self, state: dict[str, Any], step: int, keep: int) -> Path:
        """Write ``last.pt`` atomically; with ``keep > 0`` also a ``step_XXXXXXXX.pt`` hard link
        (a second name for the same bytes), keeping the newest ``keep`` snapshots."""
        path = save_checkpoint(self.checkpoint_path, state)
        if keep > 0:
            snap = self.snapshot_path(step)
            snap.unlink(missing_ok=True)
            snap.hardlink_to(path)
            for old in self.snapshot_steps()[:-keep]:
                self.snapshot_path(old).unlink()
        return path

    # -- reading ---------------------------------------------------------------------------------
    def snapshot_weights(self, step: int) -> dict[str, Any]:
        """The model weights (the EMA copy when the run kept one) of snapshot ``step``.

        Raises:
            FileNotFoundError: no such snapshot (the message lists the steps kept).
            RunFolderError: the file is not a checkpoint of a model.
        """
        path = self.snapshot_path(step)
        if not path.is_file():
            raise FileNotFoundError(
                f"no snapshot of step {step} in {path.parent} (steps kept: {self.snapshot_steps()})"
            )
        try:
            ck = load_checkpoint(path, map_location="cpu")  # the optimizer state stays off the GPU
        except CheckpointError as e:
            raise RunFolderError(str(e)) from e
        state = ck["ema"]["weights"] if "ema" in ck else ck.get("model")
        if not isinstance(state, dict):
            raise RunFolderError(f"{path} holds no model weights")
        return state

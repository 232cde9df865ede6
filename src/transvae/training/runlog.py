"""What a run writes besides checkpoints: the resolved config, ``train.log``, ``metrics.jsonl``
and TensorBoard scalars (rank 0 only; every other rank gets a ``RunLog`` that writes nothing)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from ..utils.files import atomic_write_text

log = logging.getLogger("transvae.train")


class RunLog:
    """Rank 0's writers into the run folder.

    Args:
        run_dir: the run folder.
        config: the resolved configuration as plain data, written atomically as ``config.yaml``
            (a crash never leaves half a config). No ``config.json``: that name marks a model
            folder, and ``transvae.from_pretrained(RUN_DIR)`` must find ``RUN_DIR/model``.
        tensorboard: also write TensorBoard event files under ``run_dir/tensorboard``.
        enabled: False on ranks other than 0 (every method is then a no-op).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], tensorboard: bool, enabled: bool):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.writer = None
        self._handler: logging.Handler | None = None
        if not enabled:
            return
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        fh = logging.FileHandler(self.run_dir / "train.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
        log.setLevel(logging.INFO)
        self._handler = fh
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One line of ``metrics.jsonl`` (``{"step": ..., **values}``) and the TensorBoard scalars."""
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def write_json(self, name: str, data: Any) -> None:
        if self.enabled:
            atomic_write_text(self.run_dir / name, json.dumps(data, indent=2) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

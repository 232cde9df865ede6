"""Training checkpoints: plain tensors and containers only, written atomically.

A checkpoint is a dict of tensors, dicts, lists, ints, floats and strings (no pickled classes),
so it loads with ``torch.load(weights_only=True)``, which refuses anything else: a crafted file
cannot execute code. It is written to a temp file in the same folder, fsynced and renamed
over the previous one, so a crash or SIGKILL at any moment leaves the previous checkpoint
intact and loadable.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.files import DiskFullError, atomic_path

FORMAT_VERSION = 2  # 2: the engine's layout (optimizers by name, task note); 1: before the engine


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or holds something other than plain data."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plain data) to ``path``: temp file + fsync + rename + dir fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    except RuntimeError as e:
        # torch's zip writer reports a failed write (disk full, EFBIG, quota) as a RuntimeError
        # ("PytorchStreamWriter failed writing file ... file write failed"); the previous checkpoint
        # is intact (the temporary file is removed)
        if "write" not in str(e).lower():
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full (or file too large) while writing {path}: {str(e).splitlines()[0][:160]}",
        ) from e
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (refuses pickled objects; never executes code).

    Tensors are memory-mapped (read from disk when used), so reading a large checkpoint for its
    stored configuration costs almost no memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # UnpicklingError for payloads, RuntimeError/EOFError for truncation
        raise CheckpointError(
            f"{path} is not a loadable training checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a transvae training checkpoint (format {FORMAT_VERSION})")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']!r}, this transvae reads format "
            f"{FORMAT_VERSION}; its weights are in the run's model/ folder (use it with --init)"
        )
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors / ints."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Measured peak memory of a piece of code (``utils.memory`` estimates it beforehand instead).

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, above what was
  allocated before; ``measure_peak`` also reports the allocator's reserved peak and the device
  memory outside the allocator (CUDA context, kernels, library handles).
- CPU (Linux): the growth of the process' peak resident set (``VmHWM``, reset to the current
  RSS through ``/proc/self/clear_refs``). glibc's malloc is told, the first time a measurement
  starts, to return blocks of 1 MiB and more to the OS when freed (``M_MMAP_THRESHOLD``; a
  process-wide setting), so activations freed earlier cannot hide the peak of later ones.
  ``None`` on other systems.

    with PeakMemory(device) as pm:
        model.decode(model.encode(x).mode())
    pm.mb   # MiB above what was resident before
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["PeakMemory", "measure_peak"]

GIB = 2**30
_libc: Any = None


def _malloc_returning_big_blocks():
    """glibc with a fixed 1 MiB mmap threshold (once per process), or None off glibc."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Context manager: ``mb`` = peak MiB used inside the block above what was in use before it
    (None when the platform cannot tell).

    Args:
        device: where the code allocates (``cuda`` or ``cpu``).
    """

    def __init__(self, device: torch.device | str):
        self.device, self.mb = torch.device(device), None
        self.base: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        libc = _malloc_returning_big_blocks()
        if libc is not None:
            libc.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
            self.base = _status_kb("VmRSS")
        except OSError:
            self.base = None
        return self

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            _sync(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            peak = _status_kb("VmHWM")
            self.mb = None if peak is None else (peak - self.base) / 1024
        return False


def measure_peak(fn: Callable[[], object], device: torch.device | str) -> dict[str, float | None]:
    """Run ``fn()`` once and return what it used, in GiB.

    Returns:
        ``activation_peak_gib`` (peak above what was allocated before, every device); on CUDA
        also ``peak_allocated_gib`` (the allocator's absolute peak: weights, inputs and
        activations), ``peak_reserved_gib`` (its segments, used or cached) and
        ``non_allocator_gib`` (device memory in use outside the allocator right after: context,
        kernels, library handles).
    """
    device = torch.device(device)
    if device.type != "cuda":
        with PeakMemory(device) as pm:
            fn()
        return {"activation_peak_gib": None if pm.mb is None else pm.mb / 1024}
    gc.collect()
    with PeakMemory(device) as pm:
        fn()
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    return {
        "activation_peak_gib": pm.mb / 1024,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
        "non_allocator_gib": (total - free - reserved) / GIB,
    }

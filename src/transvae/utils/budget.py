"""Measurements under a time budget: every item recorded, none fatal, the results always on disk.

A suite of measurements on a borrowed machine (a GPU for fifteen minutes) must stop in time and
must not lose what it measured to one out-of-memory error. ``BudgetedRun`` runs items grouped in
*parts*: each part may use its share of the time left when it starts (``shares``, relative to the
parts still to run, so a part's unused time passes on); an item whose estimate does not fit is
skipped with the reason; an item that overruns is interrupted (SIGALRM, main thread); an item
that raises is recorded with its one-line error; ``write`` is called after every item.

    run = BudgetedRun(420, {"speed": 0.5, "train": 0.5}, write=lambda r: write_result(path, r, prov))
    run.begin_part("speed")
    run.run("speed", {"model": "transvae-t-f16d32"}, estimate_s=12, fn=lambda: {"img_s": measure()})
    run.end_part("speed")      # status: ok | partial | failed | skipped
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["BudgetExceeded", "BudgetedRun", "deadline", "one_line"]


class BudgetExceeded(Exception):
    """Raised inside an item that ran past the end of its part's share of the budget."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``BudgetExceeded`` in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main or not math.isfinite(seconds):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise BudgetExceeded(f"interrupted after its {seconds:.0f} s of budget")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(e: BaseException) -> str:
    """``"OutOfMemoryError: CUDA out of memory. Tried to ..."`` (first line, at most 300 chars)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BudgetedRun:
    """Parts of items under one budget; ``results["parts"][name]["rows"]`` holds one row per item.

    Args:
        budget_s: seconds for everything.
        shares: relative share of each part (see the module docstring).
        write: called with ``results`` after every item and part (e.g. an atomic JSON writer).
        parts: the parts planned, in order (default: ``shares``' keys).
        log: where progress lines go (default: this module's logger).
        cleanup: called after every item (default: ``gc`` and the CUDA cache).
    """

    def __init__(
        self,
        budget_s: float,
        shares: Mapping[str, float],
        write: Callable[[dict], None] = lambda results: None,
        parts: tuple[str, ...] | None = None,
        log: logging.Logger | None = None,
        cleanup: Callable[[], None] = _free_memory,
    ):
        self.shares, self.write_fn, self.cleanup = dict(shares), write, cleanup
        self.planned = list(parts if parts is not None else shares)
        self.log = log or logging.getLogger(__name__)
        self.t0 = time.monotonic()
        self.end = self.part_end = self.t0 + budget_s
        self.results: dict[str, Any] = {"parts": {}}

    def left(self) -> float:
        """Seconds left for the current part (and the whole run)."""
        return min(self.end, self.part_end) - time.monotonic()

    def begin_part(self, name: str, **info: Any) -> dict:
        todo = self.planned[self.planned.index(name) :] if name in self.planned else [name]
        share = self.shares[name] / sum(self.shares[p] for p in todo)
        self.part_end = time.monotonic() + share * max(self.end - time.monotonic(), 0)
        part = {
            "status": "running",
            "budget_s": round(self.part_end - time.monotonic(), 1),
            **info,
            "rows": [],
        }
        self.results["parts"][name], self._part_t0 = part, time.monotonic()
        self.log.info(
            "== %s (up to %.0f s; %.0f s left in all)", name, part["budget_s"], self.end - time.monotonic()
        )
        return part

    def end_part(self, name: str) -> None:
        part = self.results["parts"][name]
        st = [r["status"] for r in part["rows"]]
        if st and all(s == "ok" for s in st):
            part["status"] = "ok"
        elif "ok" in st:
            part["status"] = "partial"
        else:
            part["status"] = "failed" if "error" in st else "skipped"
        part["elapsed_s"] = round(time.monotonic() - self._part_t0, 1)
        self.write()

    def run(self, part: str, label: dict, estimate_s: float, fn: Callable[[], dict]) -> dict:
        """Run ``fn`` (returns the row's values) as one item of ``part`` if ``estimate_s`` fits."""
        row, left = {**label, "estimate_s": round(estimate_s, 1)}, self.left()
        name = " ".join(f"{v}" if k == "model" else f"{k}={v}" for k, v in label.items())
        if estimate_s > left:
            row.update(
                status="skipped", reason=f"budget: needs ~{estimate_s:.0f} s, {max(left, 0):.0f} s left"
            )
            self.log.info("[%s] %s skipped: %s", part, name, row["reason"])
        else:
            t0 = time.perf_counter()
            try:
                with deadline(left):
                    row.update(fn(), status="ok")
            except (Exception, BudgetExceeded) as e:  # every failure is a result
                row.update(status="error", error=one_line(e))
                self.log.warning("[%s] %s failed: %s", part, name, row["error"])
                self.log.debug("%s", traceback.format_exc())
            row["elapsed_s"] = round(time.perf_counter() - t0, 2)
            self.cleanup()
            took = f"{row['elapsed_s']:.1f} s, estimated {estimate_s:.1f} s"
            self.log.info("[%s] %s: %s (%s)", part, name, row["status"], took)
        self.results["parts"][part]["rows"].append(row)
        self.write()
        return row

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.write_fn(self.results)

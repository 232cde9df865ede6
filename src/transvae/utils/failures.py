"""One bad file never stops a folder job: batch work that falls back to one item at a time.

``run_isolated`` runs a function on a batch; if the batch fails it retries each item alone, so
only the items that fail on their own are reported (``on_failure(key, reason)``) and the others
still produce outputs. ``failure_reason`` turns any exception into the one line a user sees;
``is_out_of_memory`` recognises both CUDA and CPU allocation failures (the CPU allocator raises a
plain ``RuntimeError``, "DefaultCPUAllocator: can't allocate memory").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from .files import DiskFullError

__all__ = ["failure_reason", "is_out_of_memory", "run_isolated"]

K = TypeVar("K")
_OOM_WORDS = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")


def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA out-of-memory and for CPU allocation failures."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _OOM_WORDS)


def failure_reason(e: BaseException, limit: int = 300) -> str:
    """One line describing ``e``: "out of memory (...)", a ``ValueError``'s own message, or
    "TypeName: message" for anything unexpected; at most ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    if is_out_of_memory(e):
        text = f"out of memory ({text})"
    elif not isinstance(e, (ValueError, OSError)):
        text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_isolated(
    fn: Callable[[Sequence[Any]], Sequence[Any]],
    keys: Sequence[K],
    items: Sequence[Any],
    on_failure: Callable[[K, str], None],
) -> list[tuple[K, Any]]:
    """``fn(items)`` for a batch; when it raises, each item is retried alone.

    Args:
        fn: maps a list of items to a list of results of the same length.
        keys: one key per item (a path, an index), passed to ``on_failure``.
        items: the batch.
        on_failure: called as ``on_failure(key, reason)`` for each item that fails on its own
            (it may raise to stop the job, e.g. in ``--strict`` mode).
    Returns:
        [(key, result)] for the items that succeeded, in order.
    Raises:
        DiskFullError: never isolated: a full disk fails every later file too.
    """
    try:
        return list(zip(keys, fn(items), strict=True))
    except (DiskFullError, KeyboardInterrupt):
        raise
    except Exception as e:  # reported per item below; the other items still produce outputs
        reason = failure_reason(e)
    # retried outside the except block, so the failed attempt's tensors (held by the traceback) are freed
    _free_cached_memory()
    if len(items) == 1:
        on_failure(keys[0], reason)
        return []
    out: list[tuple[K, Any]] = []
    for k, x in zip(keys, items, strict=True):
        out += run_isolated(fn, [k], [x], on_failure)
    return out

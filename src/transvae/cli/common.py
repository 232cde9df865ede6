"""Helpers shared by the sub-commands: the one-line error type, argument types, the output-folder
check, one-line warnings and model loading with every failure turned into one line."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Iterator

import torch

from ..utils import device as _device
from ..utils.device import DTYPES  # noqa: F401  (re-exported for the sub-commands)


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2, no traceback."""


def resolve_device(name: str | None) -> torch.device:
    """``transvae.utils.device.resolve_device`` with a bad ``--device`` turned into a ``UserError``."""
    try:
        return _device.resolve_device(name)
    except ValueError as e:
        raise UserError(f"--device: {e}") from e


def finite_float(v: str) -> float:
    """argparse type: a finite float (``nan`` and ``inf`` refused in one line)."""
    try:
        x = float(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number, got '{v}'") from e
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{v}'")
    return x


def add_precision_args(g, default: str = "fp32", choices: tuple[str, ...] = tuple(DTYPES)) -> None:
    """``--dtype`` plus ``--force-bf16`` / ``--force-fp16`` (on CPUs without native support a
    reduced precision falls back to fp32 with a one-line warning unless forced)."""
    g.add_argument(
        "--dtype",
        choices=list(choices),
        default=default,
        help="compute precision (autocast); on a CPU without native bf16/fp16 arithmetic fp32 is used "
        "with a warning unless --force-bf16/--force-fp16",
    )
    g.add_argument("--force-bf16", action="store_true", help="use bf16 even on a CPU without native bf16")
    g.add_argument("--force-fp16", action="store_true", help="use fp16 even on a CPU without native fp16")


def forced(args, dtype: str) -> bool:
    """Whether the user insisted on ``dtype`` (``--force-bf16`` / ``--force-fp16``)."""
    return bool(getattr(args, f"force_{dtype}", False))


@contextlib.contextmanager
def one_line_warnings(cmd: str) -> Iterator[None]:
    """Show every Python warning raised inside the block as ``transvae CMD: warning: ...`` (one line,
    written through tqdm so progress bars stay intact)."""
    from tqdm import tqdm

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        tqdm.write(f"transvae {cmd}: warning: {text}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


def prepare_out(out: str, inputs: list[str], needed_bytes: int = 0):
    """``transvae.inference.files.check_output_folder`` with its refusals as one-line ``UserError``s:
    an ``--out`` that is, contains or lies inside an input, is a file, is not writable, or sits on
    a full disk is refused before any model is loaded."""
    from transvae.inference.files import InputError, check_output_folder

    try:
        return check_output_folder(out, inputs, needed_bytes)
    except InputError as e:
        raise UserError(str(e)) from e
    except OSError as e:
        raise UserError(e.strerror or str(e)) from e


def load_model_or_exit(path: str, device: torch.device | None = None):
    """``transvae.from_pretrained`` with every failure (missing or unreachable model, a bad
    ``config.json`` or weights file, an error while building the architecture it describes) turned
    into a one-line ``UserError``."""
    import transvae

    try:
        return transvae.from_pretrained(path, device=device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, MemoryError) as e:
        msg = " ".join(str(e).split()) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        if isinstance(e, (TypeError, RuntimeError, MemoryError)):
            msg = f"{type(e).__name__}: {msg}"
        raise UserError(f"cannot load model '{path}': {msg}") from e

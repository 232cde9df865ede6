"""Helpers shared by the sub-commands: the one-line error type and its conversions."""

from __future__ import annotations

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


def load_model_or_exit(path: str, device: torch.device | None = None):
    """``transvae.from_pretrained`` with failures turned into a one-line ``UserError``."""
    import transvae
    from transvae.models.base import ConfigError

    try:
        return transvae.from_pretrained(path, device=device)
    except (FileNotFoundError, ConfigError, KeyError) as e:
        raise UserError(f"cannot load model '{path}': {e}") from e


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

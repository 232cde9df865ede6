"""Helpers shared by the sub-commands."""

from __future__ import annotations

import torch


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2, no traceback."""


def resolve_device(name: str | None) -> torch.device:
    """``"auto"``/None -> CUDA if available else CPU; otherwise validate the given device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"invalid --device '{name}' ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but CUDA is not available on this machine")
    return dev


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model_or_exit(path: str, device: torch.device | None = None):
    """``transvae.from_pretrained`` with failures turned into a one-line ``UserError``."""
    import transvae
    from transvae.models.base import ConfigError

    try:
        return transvae.from_pretrained(path, device=device)
    except (FileNotFoundError, ConfigError, KeyError) as e:
        raise UserError(f"cannot load model '{path}': {e}") from e

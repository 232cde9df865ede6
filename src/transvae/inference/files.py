"""Inputs and outputs of the folder commands: what is read, where it is written, and never both.

``collect_inputs`` turns the files and folders given on the command line into (source, output
name) pairs; ``check_output_folder`` refuses an output folder that is, contains or lies inside an
input (``transvae reconstruct photos/ --out photos/`` would overwrite the originals, and an output
inside the input tree would be read back as input by the next run), then proves the folder is
writable before any model is loaded.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..utils.files import check_writable

__all__ = ["InputError", "check_output_folder", "collect_inputs", "overlapping_input"]


class InputError(ValueError):
    """The inputs or the output folder of a command cannot be used; the message says why."""


def _real(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(p)))


def overlapping_input(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> str | None:
    """The first input that ``out`` is, contains or lies inside (symlinks resolved), else None."""
    o = _real(out)
    for inp in inputs:
        i = _real(inp)
        if o == i or i in o.parents or o in i.parents:
            return str(inp)
    return None


def check_output_folder(
    out: str | os.PathLike, inputs: Sequence[str | os.PathLike], needed_bytes: int = 0
) -> Path:
    """Refuse an output folder that overlaps an input, then create it and probe it for writing.

    Args:
        out: the ``--out`` folder.
        inputs: every input file or folder of the command.
        needed_bytes: estimated size of the outputs (checked against the free space).
    Returns:
        ``out`` as a Path (it exists and is writable).
    Raises:
        InputError: ``out`` is, contains or lies inside an input.
        OSError / DiskFullError: ``out`` is a file, not writable, or the disk is (nearly) full.
    """
    hit = overlapping_input(out, inputs)
    if hit is not None:
        o, i = _real(out), _real(hit)
        how = "is" if o == i else ("lies inside" if i in o.parents else "contains")
        raise InputError(
            f"--out {out} {how} the input {hit}: outputs would overwrite or be read back as inputs; "
            f"choose an output folder outside every input"
        )
    return check_writable(out, needed_bytes, what="--out")


def collect_inputs(
    inputs: Sequence[str | os.PathLike], suffixes: tuple[str, ...] | None, out_suffix: str
) -> list[tuple[Path, Path]]:
    """(source file, output path relative to ``--out``) for every input; folders keep relative names.

    Args:
        inputs: files and folders (folders are searched recursively).
        suffixes: file suffixes to take from folders (lower case, with the dot); None = images.
        out_suffix: suffix of the output files (``".png"``, ``".safetensors"``).
    Raises:
        InputError: a missing input, an empty folder, or two inputs that map to one output.
    """
    from ..data.io import list_images

    items: list[tuple[Path, Path]] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            items.append((p, Path(p.name)))
        elif p.is_dir():
            if suffixes is None:
                found = list_images(p)
            else:
                found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"no input files found under {p}")
            items.extend((f, f.relative_to(p)) for f in found)
        else:
            raise InputError(f"no such file or folder: {p}")
    counts: dict[Path, int] = defaultdict(int)
    for _, rel in items:
        counts[rel.with_suffix(out_suffix)] += 1
    out: list[tuple[Path, Path]] = []
    for src, rel in items:
        dst = rel.with_suffix(out_suffix)
        if counts[dst] > 1:  # photo.jpg and photo.png in one folder -> photo.jpg.png, photo.png.png
            dst = rel.with_name(rel.name + out_suffix)
        out.append((src, dst))
    seen: dict[Path, Path] = {}
    for src, dst in out:
        if dst in seen:
            raise InputError(f"{seen[dst]} and {src} would both be written to {dst}; run them separately")
        seen[dst] = src
    return out

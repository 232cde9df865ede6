"""Helpers shared by the sub-commands: the one-line error type, argument types, the output-folder
check, one-line warnings and model loading with every failure turned into one line."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..utils import device as _device
from ..utils.device import DTYPES  # noqa: F401  (re-exported for the sub-commands)


def _convert(v: str, convert: Callable[[str], Any], what: str) -> Any:
    """``convert(v)`` with a ``ValueError`` turned into the usage error "expected WHAT, got 'v'"."""
    try:
        return convert(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{v}'") from e


def nonneg_int(v: str) -> int:
    """argparse ``type=``: an integer >= 0 (a bad value is argparse's one-line usage error)."""
    n = _convert(v, int, "an integer")
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {n}")
    return n


def positive_int(v: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    n = nonneg_int(v)
    if n == 0:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got 0")
    return n


def bounded_int(lo: int, hi: int):
    """argparse ``type=``: an integer in [lo, hi] (checked before anything is allocated)."""

    def parse(v: str) -> int:
        n = nonneg_int(v) if lo >= 0 else int(v)
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {n}")
        return n

    return parse


def max_pixels(v: str) -> int | str:
    """argparse ``type=`` of ``--max-pixels``: ``"auto"`` or a pixel count >= 0."""
    if v == "auto":
        return v
    try:
        return nonneg_int(v)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a pixel count >= 0, got '{v}'") from e


# One command-line option: ``add_argument``'s positional and keyword arguments.
Option = tuple[tuple[str, ...], dict[str, Any]]


def option(*flags: str, **kwargs: Any) -> Option:
    """A row of an option table (``add_options``): the arguments of one ``add_argument`` call."""
    return flags, kwargs


def add_options(p, options: Iterable[Option]) -> None:
    """Add each ``option(...)`` of ``options`` to ``p`` (a parser or an argument group), in order."""
    for flags, kwargs in options:
        p.add_argument(*flags, **kwargs)


def add_command(
    sub, name: str, func: Callable, help: str, options: Iterable[Option] = (), **parser_kwargs: Any
) -> argparse.ArgumentParser:
    """Declare the sub-command ``name``: its parser, its ``options`` and the function it runs.

    Args:
        sub: what ``add_subparsers`` returned.
        name: the command's name.
        func: ``func(args) -> exit status``; its docstring, in one line, is the description shown
            by ``transvae NAME --help`` unless ``parser_kwargs`` gives one.
        help: the one-line summary in ``transvae --help``.
        options: ``option(...)`` rows, added in order (``add_options``).
        parser_kwargs: more ``add_parser`` arguments (``description``, ``epilog``, ``formatter_class``).
    Returns:
        the parser, for argument groups added after the options.
    """
    parser_kwargs.setdefault("description", " ".join((func.__doc__ or "").split()))
    p = sub.add_parser(name, help=help, **parser_kwargs)
    add_options(p, options)
    p.set_defaults(func=func)
    return p


DEVICE = option("--device", default="auto", help="cuda, cuda:1, cpu or auto (default)")
OUT = option("--out", required=True, help="output folder")


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
    x = _convert(v, float, "a number")
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


def add_tiling_args(
    g, what: str = "encode/decode images (or latent grids, in pixels)", part: str = "encoder and decoder"
) -> None:
    """``--max-pixels`` / ``--tile-size`` / ``--tile-overlap`` / ``--compile``: how an
    ``InferenceRunner`` tiles large inputs and whether it compiles ``part``."""
    g.add_argument(
        "--max-pixels",
        type=max_pixels,
        default="auto",
        help=f"{what} larger than this in overlapping tiles; "
        "auto (default): what fits in half the free memory, at most 2048x2048; 0 = always tile",
    )
    g.add_argument("--tile-size", type=int, default=512, help="tile side in pixels when tiling (default 512)")
    g.add_argument(
        "--tile-overlap", type=int, default=None, help="tile overlap in pixels (default tile-size/4)"
    )
    g.add_argument("--compile", action="store_true", help=f"torch.compile the {part}")


def check_runtime(args) -> None:
    """The runtime options every inference command shares (``--batch-size``, ``--num-workers``)."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")


def make_runner(args, model, device):
    """The ``InferenceRunner`` the precision and tiling options (``add_precision_args``,
    ``add_tiling_args``) ask for."""
    from transvae.inference import InferenceRunner

    f = model.spatial_compression_ratio
    if args.tile_size < f:
        raise UserError(f"--tile-size must be at least the compression ratio {f}, got {args.tile_size}")
    if args.tile_overlap is not None and not 0 <= args.tile_overlap < args.tile_size:
        raise UserError(f"--tile-overlap must be in [0, --tile-size), got {args.tile_overlap}")
    return InferenceRunner(
        model,
        device=device,
        dtype=args.dtype,
        force_dtype=forced(args, args.dtype),
        max_pixels=args.max_pixels,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        compile=args.compile,
        progress=True,
    )


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


def open_run_folder(out: str | None, resume: bool) -> tuple[Path, dict | None]:
    """The ``--out`` run folder of ``train`` / ``gen-train``, checked before any work
    (``transvae.training.RunFolder.open``), its refusals as one-line ``UserError``s.

    Returns:
        ``(run_dir, saved)``: ``saved`` is the checkpoint to resume (its stored config is the base
        of the new one), or None for a new run.
    """
    from ..training.run_folder import RunFolder, RunFolderError

    try:
        run, saved = RunFolder.open(out, resume, rank=int(os.environ.get("RANK", "0")))
    except RunFolderError as e:
        raise UserError(str(e)) from e
    return run.path, saved


def add_run_args(p, command: str) -> None:
    """The options of a config-driven training command (``train``, ``gen-train``) that both share.

    Args:
        p: the command's parser; it also accepts ``--section.key=value`` (``run_overrides``).
        command: the command's name, for the epilog.
    """
    p.add_argument("--batch-size", type=int, help="GLOBAL batch size over all processes (train.batch_size)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from OUT/checkpoints/last.pt, with the configuration stored in it "
        "(options given now are applied, each announced in one line)",
    )
    p.add_argument("--workers", type=int, help="DataLoader workers per process (data.num_workers)")
    p.add_argument("--device", help="auto | cpu | cuda (train.device)")
    p.add_argument(
        "--list-keys", action="store_true", help="print every config key with its default and exit"
    )
    p.epilog = (
        f"Any config key can be set with --section.key=value; `transvae {command} --list-keys` lists them."
    )
    p.set_defaults(accepts_extra=True)


# The config key of each option ``add_run_args`` adds: ``{argparse dest: dotted key}``.
RUN_KEYS = {
    "batch_size": "train.batch_size",
    "max_steps": "train.max_steps",
    "workers": "data.num_workers",
    "device": "train.device",
}


def run_overrides(args, keys: dict[str, str]) -> dict[str, object]:
    """``given`` over the options of ``keys`` (``{argparse dest: dotted key}``), then those of
    ``RUN_KEYS``."""
    return given([(key, getattr(args, dest)) for dest, key in (keys | RUN_KEYS).items()])


def run_config(
    args,
    keys: dict[str, str],
    build: Callable,
    error: type[Exception],
    more: dict[str, object] | None = None,
) -> tuple[Any, Path, dict | None]:
    """The config of a ``train`` / ``gen-train`` run from its arguments: the run folder is opened
    (``open_run_folder``), then ``build(recipe, overrides, extra, base=...)`` applies the options
    on top of the checkpoint's stored config on ``--resume``.

    Args:
        args: the parsed arguments (``add_run_args``'s and ``--config``, ``--out``).
        keys: ``{argparse dest: dotted key}`` of the command's own options (``run_overrides``).
        build: ``build_config`` or ``GenConfig.build``.
        error: what ``build`` raises for a bad configuration (a one-line ``UserError`` here).
        more: overrides set after those of ``keys``.
    Returns:
        ``(cfg, run_dir, saved)``: ``saved`` is the checkpoint to resume, or None.
    """
    run_dir, saved = open_run_folder(args.out, args.resume)
    base = saved["config"] if saved is not None else None
    overrides = run_overrides(args, keys) | (more or {})
    try:
        cfg = build(args.config, overrides, list(args.extra or []), base=base)
    except error as e:
        raise UserError(str(e)) from e
    return cfg, run_dir, saved


def print_run_summary(summary: dict, notes: list[str], result: str, command: str, run_dir: Path) -> None:
    """The lines ``train`` / ``gen-train`` print when a run ends.

    Args:
        summary: what the trainer's ``fit()`` returned.
        notes: ``"; ..."`` parts of the first line, after status, step and time.
        result: the line that says where the trained model is.
        command: the command, for the line that tells how to continue an unfinished run.
        run_dir: the run folder.
    """
    msg = f"{summary['status']} at step {summary['step']} in {summary['wall_seconds']:.0f}s" + "".join(notes)
    if summary["nonfinite_steps"]:
        msg += f"; {summary['nonfinite_steps']} non-finite steps skipped"
    print(msg)
    print(result)
    if summary["status"] != "finished":
        print(f"continue with: transvae {command} --out {run_dir} --resume")


def given(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``{dotted key: value}`` for the command-line options that were given (not None)."""
    return {k: v for k, v in pairs if v is not None}

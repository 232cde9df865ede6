"""The ``transvae`` command line. Each sub-command lives in its own module of this package
and exposes ``register(subparsers)``; user errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..utils.text import printable
from .common import UserError

# sub-command -> module (imported lazily, so `transvae list` does not import the trainer)
COMMANDS = {
    "list": "transvae.cli.list_cmd",
    "quickstart": "transvae.cli.quickstart",
    "train": "transvae.cli.train",
    "evaluate": "transvae.cli.evaluate",
    "reconstruct": "transvae.cli.infer",
    "encode": "transvae.cli.infer",
    "decode": "transvae.cli.infer",
    "extract-latents": "transvae.cli.infer",
    "convert": "transvae.cli.convert",
    "gen-train": "transvae.cli.gen",
    "gen-sample": "transvae.cli.gen",
    "gen-eval": "transvae.cli.gen",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transvae",
        description="TransVAE: train, evaluate and run hybrid CNN + Transformer image VAEs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    seen = set()
    for cmd, module in COMMANDS.items():
        if wanted is not None and cmd != wanted:
            # only the chosen sub-command's module is imported; the others get a stub for --help
            continue
        if module in seen:
            continue
        seen.add(module)
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    if wanted is None:
        for cmd in COMMANDS:
            if cmd not in sub.choices:
                sub.add_parser(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "func"):
        parser.error(f"command '{args.command}' is not available in this installation")
    args.extra = extra
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"transvae {args.command}: error: {printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"transvae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``transvae reconstruct | encode | decode | extract-latents``: inference from the command line.

    transvae reconstruct photos/ --model runs/x/model --out rec/ --dtype bf16 --compare
    transvae encode photos/ --model runs/x/model --out latents/
    transvae decode latents/ --model runs/x/model --out decoded/
    transvae extract-latents imagenet/train --model runs/x/model --out lat/ --resolution 256
    torchrun --nproc_per_node 8 --no-python transvae extract-latents ...   (one GPU per rank)

This module parses arguments and prints; the work is done by ``transvae.inference`` (``jobs``,
``extract``). Single-file inputs fail with one line naming the file; folder runs report each
failed file in one line, go on, print a summary and exit with status 1 (``--strict`` stops at the
first one instead). An ``--out`` that overlaps an input, is not writable or sits on a full disk is
refused before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..utils.text import printable
from .common import (
    DEVICE,
    Option,
    UserError,
    add_command,
    add_options,
    add_precision_args,
    add_tiling_args,
    check_runtime,
    finite_float,
    load_model_or_exit,
    make_runner,
    one_line_warnings,
    option,
    prepare_out,
    resolve_device,
)

LATENT_SUFFIX = ".safetensors"


# --- arguments ------------------------------------------------------------------------------------
MODEL = option("--model", required=True, help="model folder, training run folder or Hub repo id")
LATENT_DTYPE = option("--latent-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype")


def _runtime_args(p: argparse.ArgumentParser, batch: int = 8) -> None:
    g = p.add_argument_group("runtime")
    add_options(g, [DEVICE])
    add_precision_args(g)
    g.add_argument(
        "--batch-size", type=int, default=batch, help="images per forward pass (same-size images batch)"
    )
    add_tiling_args(g)
    g.add_argument("--num-workers", type=int, default=2, help="image decoding worker processes")


def _inputs(what: str = "IMG_OR_DIR") -> list[Option]:
    """The inputs, ``--out`` and ``--strict`` of reconstruct, encode and decode."""
    return [
        option("inputs", nargs="+", metavar=what, help="files or folders (searched recursively)"),
        option(
            "--out",
            required=True,
            help="output folder (relative names of the inputs are kept); must not be, contain or lie inside "
            "an input",
        ),
        option("--strict", action="store_true", help="stop at the first input that fails"),
    ]


def _sample(what: str) -> list[Option]:
    """``--sample`` (decode or store ``what`` instead of the posterior mean) and its ``--seed``."""
    return [
        option("--sample", action="store_true", help=f"{what} a posterior sample instead of its mean"),
        option("--seed", type=int, default=0, help="seed for --sample"),
    ]


_RECONSTRUCT = [
    *_inputs(),
    MODEL,
    option(
        "--compare", action="store_true", help="also write input|reconstruction side by side to OUT/compare/"
    ),
    *_sample("decode"),
]
_ENCODE = [
    *_inputs(),
    MODEL,
    *_sample("store"),
    option(
        "--scaling-factor",
        type=finite_float,
        default=None,
        help="store (z - shift) * scale (default: the model folder's metadata, else 1)",
    ),
    option(
        "--shift-factor",
        type=finite_float,
        default=None,
        help="see --scaling-factor (default: metadata, else 0)",
    ),
    LATENT_DTYPE,
]
_DECODE = [
    *_inputs("LATENT_OR_DIR"),
    option("--model", default=None, help="model to decode with (folder, run folder or Hub repo id)"),
    option(
        "--model-from-files",
        action="store_true",
        help="without --model: decode each file with the model folder recorded in it (local folders only)",
    ),
    option(
        "--force", action="store_true", help="decode files whose recorded model_name differs from the model's"
    ),
]
_EXTRACT = [
    option("data_dir", metavar="DATA_DIR"),
    MODEL,
    option("--out", required=True, help="output folder (outside DATA_DIR)"),
    option("--resolution", type=int, default=256, help="centre-crop + resize side in pixels (default 256)"),
    option("--shard-size", type=int, default=10000, help="images per shard (default 10000)"),
    option(
        "--no-flip",
        dest="flip",
        action="store_false",
        help="skip the horizontally flipped latents (LightningDiT's dataset then cannot read the shards)",
    ),
    option("--sample", action="store_true", help="store posterior samples instead of means"),
    LATENT_DTYPE,
]


def register(sub) -> None:
    for name, func, summary, options, batch in (
        ("reconstruct", run_reconstruct, "encode + decode images of any size to PNGs", _RECONSTRUCT, 8),
        ("encode", run_encode, "images -> latent .safetensors files", _ENCODE, 8),
        ("decode", run_decode, "latent .safetensors files -> PNG images", _DECODE, 8),
        (
            "extract-latents",
            run_extract,
            "a dataset -> sharded latent safetensors + statistics (LightningDiT format)",
            _EXTRACT,
            32,
        ),
    ):
        _runtime_args(add_command(sub, name, func, summary, options), batch)


# --- shared helpers ---------------------------------------------------------------------------------
def _collect(args, suffixes: tuple[str, ...] | None, out_suffix: str) -> tuple[list[tuple[Path, Path]], bool]:
    """The (source, output name) pairs, whether this is a single-file run, and the --out check."""
    from transvae.inference.files import InputError, collect_inputs

    try:
        items = collect_inputs(args.inputs, suffixes, out_suffix)
    except InputError as e:
        raise UserError(str(e)) from e
    prepare_out(args.out, args.inputs)
    single = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    return items, single


def _on_failure(single: bool, strict: bool):
    """Print one line per failed input; raise (exit 2) for a single file or under --strict."""
    from tqdm import tqdm

    def report(path: Path, reason: str) -> None:
        if single or strict:
            raise UserError(f"{printable(path)}: {printable(reason)}")
        tqdm.write(f"failed {printable(path)}: {printable(reason)}", file=sys.stderr)

    return report


def _summary(cmd: str, report, out: str, extra: str = "") -> int:
    msg = f"{cmd}: wrote {report.written} file(s) to {out}{extra}"
    if report.failures:
        msg += f"; skipped {len(report.failures)} input(s) that failed (listed above)"
    print(msg)
    if report.stopped:
        raise UserError(f"{report.stopped}; stopped after writing {report.written} file(s)")
    return 1 if report.failures else 0


def _run_files(args, job, suffixes: tuple[str, ...] | None, out_suffix: str, check=None) -> int:
    """The frame shared by reconstruct, encode and decode; returns the exit status.

    Checks the runtime arguments, collects the inputs and checks ``--out``, lets ``check(items)``
    refuse the run, then calls ``job(items, out, device, **common) -> (report, summary_extra)``
    under one-line warnings, where ``common`` holds ``batch_size``, ``on_failure`` (one line per
    failed file; exit 2 for a single file or under ``--strict``) and ``progress``.
    """
    check_runtime(args)
    items, single = _collect(args, suffixes, out_suffix)
    if check is not None:
        check(items)
    with one_line_warnings(args.command):
        device = resolve_device(args.device)
        on_failure = _on_failure(single, args.strict)
        common = dict(batch_size=args.batch_size, on_failure=on_failure, progress=not single)
        report, extra = job(items, Path(args.out), device, **common)
    return _summary(args.command, report, args.out, extra)


def _reading(args) -> dict[str, object]:
    """The options reconstruct and encode pass on as they are: ``num_workers``, ``sample``, ``seed``."""
    return dict(num_workers=args.num_workers, sample=args.sample, seed=args.seed)


# --- reconstruct ------------------------------------------------------------------------------------
def run_reconstruct(args) -> int:
    """Reconstruct images of any size and aspect ratio (reflection-padded to a multiple of the
    compression ratio and cropped back) and write PNGs with the same relative names."""
    from transvae.inference.jobs import reconstruct_files

    def job(items, out, device, **common):
        runner = make_runner(args, load_model_or_exit(args.model, device), device)
        report = reconstruct_files(runner, items, out, compare=args.compare, **_reading(args), **common)
        finite = [p for p in report.psnr if p != float("inf")]
        return report, f" (mean PSNR vs input {sum(finite) / len(finite):.2f} dB)" if finite else ""

    return _run_files(args, job, None, ".png")


# --- encode -----------------------------------------------------------------------------------------
def run_encode(args) -> int:
    """Encode images to one .safetensors file each (tensor 'latent' (C, h, w) plus the metadata
    needed to decode it back to the original size)."""
    from transvae.inference.jobs import encode_files
    from transvae.inference.latent_files import latent_scaling
    from transvae.utils.device import DTYPES

    def job(items, out, device, **common):
        model = load_model_or_exit(args.model, device)
        runner = make_runner(args, model, device)
        try:
            scale, shift = latent_scaling(model, args.scaling_factor, args.shift_factor)
        except ValueError as e:
            raise UserError(str(e)) from e
        report = encode_files(
            runner,
            items,
            out,
            model_ref=args.model,
            scaling_factor=scale,
            shift_factor=shift,
            latent_dtype=DTYPES[args.latent_dtype],
            **_reading(args),
            **common,
        )
        return report, f" (stored (z - {shift:g}) * {scale:g})" if (scale, shift) != (1.0, 0.0) else ""

    return _run_files(args, job, None, LATENT_SUFFIX)


# --- decode -----------------------------------------------------------------------------------------
def _decode_runners(args, device):
    """``runner_for(record)``: the --model runner, or (with --model-from-files) the local model
    folder recorded in the file, loaded once per folder; a recorded Hub repo is never fetched."""
    from transvae.inference.latent_files import recorded_model_folder

    if args.model is not None:
        runner = make_runner(args, load_model_or_exit(args.model, device), device)
        return lambda rec: runner
    cache: dict[str, object] = {}

    def runner_for(rec):
        folder = str(recorded_model_folder(rec).resolve())
        if folder not in cache:
            try:
                cache[folder] = make_runner(args, load_model_or_exit(folder, device), device)
            except UserError as e:
                cache[folder] = ValueError(str(e))
        got = cache[folder]
        if isinstance(got, ValueError):
            raise got
        return got

    return runner_for


def run_decode(args) -> int:
    """Decode files written by 'transvae encode' back to PNGs of the original size, with the model
    given by --model. A latent file is data: the model it names is used only with
    --model-from-files, and only if it is a local folder (never fetched from the Hub)."""
    from transvae.inference import load_latent
    from transvae.inference.jobs import decode_files

    def check(items):
        if args.model is None and not args.model_from_files:
            try:
                recorded = f"; the first file names '{load_latent(items[0][0]).model}'"
            except ValueError:
                recorded = ""
            raise UserError(
                f"pass --model (the model that encoded the latents){recorded}; to use the local model folder "
                "recorded in each file instead, pass --model-from-files"
            )
        if args.model is not None and args.model_from_files:
            raise UserError("--model and --model-from-files exclude each other")

    def job(items, out, device, **common):
        return decode_files(items, out, _decode_runners(args, device), force=args.force, **common), ""

    return _run_files(args, job, (LATENT_SUFFIX,), ".png", check=check)


# --- extract-latents ----------------------------------------------------------------------------------
# the options extract-latents passes to ``extract_latents`` as they are
_EXTRACT_AS_GIVEN = ("resolution", "shard_size", "batch_size", "flip", "sample", "num_workers")


def run_extract(args) -> int:
    """Encode a whole image folder (class sub-folders give labels) into sharded safetensors with
    'latents', 'latents_flip', 'labels', plus latents_stats.pt/.json and manifest.json. Resumable;
    with torchrun each rank extracts a disjoint set of shards."""
    from transvae.inference import extract_latents
    from transvae.utils.device import DTYPES
    from transvae.utils.distributed import barrier, cleanup, init_distributed

    check_runtime(args)
    if args.shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.resolution < 1:
        raise UserError(f"--resolution must be >= 1, got {args.resolution}")
    if not Path(args.data_dir).is_dir():
        raise UserError(f"no such folder: {args.data_dir}")
    prepare_out(args.out, [args.data_dir])
    with one_line_warnings(args.command):
        info = init_distributed(resolve_device(args.device))
        if not args.flip and info.is_main:
            print(
                "transvae extract-latents: warning: --no-flip writes no 'latents_flip'; LightningDiT's "
                "ImgLatentDataset reads it from every shard and will fail: drop --no-flip for LightningDiT",
                file=sys.stderr,
            )
        try:
            model = load_model_or_exit(args.model, info.device)
            runner = make_runner(args, model, info.device)
            manifest = extract_latents(
                args.data_dir,
                runner,
                args.out,
                model_ref=args.model,
                latent_dtype=DTYPES[args.latent_dtype],
                **{k: getattr(args, k) for k in _EXTRACT_AS_GIVEN},
                rank=info.rank,
                world_size=info.world_size,
                barrier=(lambda: barrier(info)) if info.enabled else None,
            )
        except (ValueError, OSError, MemoryError) as e:  # settings, disk, sizes: all before any work
            raise UserError(getattr(e, "strerror", None) or str(e)) from e
        finally:
            cleanup()
    if manifest is None:
        return 0
    skipped = len(manifest["skipped"])
    s = manifest.get("scaling") or {}
    print(
        f"extract-latents: {manifest['num_latents']} latents in {len(manifest['shards'])} shard(s) under "
        f"{args.out}; statistics in latents_stats.pt/.json"
        + (f"; {skipped} image(s) failed and were skipped (see manifest.json)" if skipped else "")
    )
    if s:
        print(
            f"diffusion scaling: pipelines that use z * scaling_factor and ignore shift_factor (diffusers DiT, "
            f"SD 1.x/2.x/XL, PixArt): scaling_factor={s['scaling_factor_no_shift']:.6g} (scaling_factor_no_shift); "
            f"pipelines that use (z - shift_factor) * scaling_factor (SD3, FLUX): "
            f"scaling_factor={s['scaling_factor']:.6g}, shift_factor={s['shift_factor']:.6g}; "
            "LightningDiT normalises per channel with latents_stats.pt"
        )
    print(json.dumps({"classes": len(manifest["classes"]), "num_latents": manifest["num_latents"]}))
    return 1 if skipped else 0

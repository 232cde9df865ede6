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
    UserError,
    add_precision_args,
    add_tiling_args,
    check_runtime,
    finite_float,
    load_model_or_exit,
    make_runner,
    one_line_warnings,
    prepare_out,
    resolve_device,
)

LATENT_SUFFIX = ".safetensors"


# --- arguments ------------------------------------------------------------------------------------
def _runtime_args(p: argparse.ArgumentParser, batch: int = 8) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (default)")
    add_precision_args(g)
    g.add_argument(
        "--batch-size", type=int, default=batch, help="images per forward pass (same-size images batch)"
    )
    add_tiling_args(g)
    g.add_argument("--num-workers", type=int, default=2, help="image decoding worker processes")


def _input_args(p: argparse.ArgumentParser, what: str = "IMG_OR_DIR") -> None:
    p.add_argument("inputs", nargs="+", metavar=what, help="files or folders (searched recursively)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (relative names of the inputs are kept); must not be, contain or lie inside an input",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first input that fails")


def register(sub) -> None:
    for add in (_register_reconstruct, _register_encode, _register_decode, _register_extract):
        add(sub)


def _register_reconstruct(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="encode + decode images of any size to PNGs",
        description="Reconstruct images of any size and aspect ratio (reflection-padded to a multiple of "
        "the compression ratio and cropped back) and write PNGs with the same relative names.",
    )
    _input_args(p)
    p.add_argument("--model", required=True, help="model folder, training run folder or Hub repo id")
    p.add_argument(
        "--compare", action="store_true", help="also write input|reconstruction side by side to OUT/compare/"
    )
    p.add_argument("--sample", action="store_true", help="decode a posterior sample instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    _runtime_args(p)
    p.set_defaults(func=run_reconstruct)


def _register_encode(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="images -> latent .safetensors files",
        description="Encode images to one .safetensors file each (tensor 'latent' (C, h, w) plus the metadata "
        "needed to decode it back to the original size).",
    )
    _input_args(p)
    p.add_argument("--model", required=True, help="model folder, training run folder or Hub repo id")
    p.add_argument("--sample", action="store_true", help="store a posterior sample instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p.add_argument(
        "--scaling-factor",
        type=finite_float,
        default=None,
        help="store (z - shift) * scale (default: the model folder's metadata, else 1)",
    )
    p.add_argument(
        "--shift-factor",
        type=finite_float,
        default=None,
        help="see --scaling-factor (default: metadata, else 0)",
    )
    p.add_argument("--latent-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype")
    _runtime_args(p)
    p.set_defaults(func=run_encode)


def _register_decode(sub) -> None:
    p = sub.add_parser(
        "decode",
        help="latent .safetensors files -> PNG images",
        description="Decode files written by 'transvae encode' back to PNGs of the original size, with the "
        "model given by --model. A latent file is data: the model it names is used only with "
        "--model-from-files, and only if it is a local folder (never fetched from the Hub).",
    )
    _input_args(p, "LATENT_OR_DIR")
    p.add_argument("--model", default=None, help="model to decode with (folder, run folder or Hub repo id)")
    p.add_argument(
        "--model-from-files",
        action="store_true",
        help="without --model: decode each file with the model folder recorded in it (local folders only)",
    )
    p.add_argument(
        "--force", action="store_true", help="decode files whose recorded model_name differs from the model's"
    )
    _runtime_args(p)
    p.set_defaults(func=run_decode)


def _register_extract(sub) -> None:
    p = sub.add_parser(
        "extract-latents",
        help="a dataset -> sharded latent safetensors + statistics (LightningDiT format)",
        description="Encode a whole image folder (class sub-folders give labels) into sharded safetensors "
        "with 'latents', 'latents_flip', 'labels', plus latents_stats.pt/.json and manifest.json. "
        "Resumable; with torchrun each rank extracts a disjoint set of shards.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--model", required=True, help="model folder, training run folder or Hub repo id")
    p.add_argument("--out", required=True, help="output folder (outside DATA_DIR)")
    p.add_argument(
        "--resolution", type=int, default=256, help="centre-crop + resize side in pixels (default 256)"
    )
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    p.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        help="skip the horizontally flipped latents (LightningDiT's dataset then cannot read the shards)",
    )
    p.add_argument("--sample", action="store_true", help="store posterior samples instead of means")
    p.add_argument("--latent-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype")
    _runtime_args(p, batch=32)
    p.set_defaults(func=run_extract)


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


# --- reconstruct ------------------------------------------------------------------------------------
def run_reconstruct(args) -> int:
    from transvae.inference.jobs import reconstruct_files

    def job(items, out, device, **common):
        runner = make_runner(args, load_model_or_exit(args.model, device), device)
        report = reconstruct_files(
            runner,
            items,
            out,
            num_workers=args.num_workers,
            sample=args.sample,
            seed=args.seed,
            compare=args.compare,
            **common,
        )
        finite = [p for p in report.psnr if p != float("inf")]
        return report, f" (mean PSNR vs input {sum(finite) / len(finite):.2f} dB)" if finite else ""

    return _run_files(args, job, None, ".png")


# --- encode -----------------------------------------------------------------------------------------
def run_encode(args) -> int:
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
            num_workers=args.num_workers,
            sample=args.sample,
            seed=args.seed,
            scaling_factor=scale,
            shift_factor=shift,
            latent_dtype=DTYPES[args.latent_dtype],
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
def run_extract(args) -> int:
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
                resolution=args.resolution,
                shard_size=args.shard_size,
                batch_size=args.batch_size,
                flip=args.flip,
                sample=args.sample,
                latent_dtype=DTYPES[args.latent_dtype],
                num_workers=args.num_workers,
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

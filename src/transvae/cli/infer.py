"""``transvae reconstruct | encode | decode | extract-latents``: inference from the command line.

    transvae reconstruct photos/ --model runs/x/model --out rec/ --dtype bf16 --compare
    transvae encode photos/ --model runs/x/model --out latents/
    transvae decode latents/ --out decoded/
    transvae extract-latents imagenet/train --model runs/x/model --out lat/ --resolution 256
    torchrun --nproc_per_node 8 --no-python transvae extract-latents ...   (one GPU per rank)

Single-file inputs fail with one line naming the file; folder runs skip unreadable files, list
them, print a summary and exit with status 1 (``--strict`` stops at the first one instead).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from .common import UserError, prepare_out, resolve_device

LATENT_SUFFIX = ".safetensors"


# --- arguments ------------------------------------------------------------------------------------
def _runtime_args(p: argparse.ArgumentParser, batch: int = 8) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (default)")
    g.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="compute precision (autocast)"
    )
    g.add_argument(
        "--batch-size", type=int, default=batch, help="images per forward pass (same-size images batch)"
    )
    g.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="encode/decode images with more (padded) pixels than this in overlapping tiles; 0 = always tile",
    )
    g.add_argument("--tile-size", type=int, default=512, help="tile side in pixels when tiling (default 512)")
    g.add_argument(
        "--tile-overlap", type=int, default=None, help="tile overlap in pixels (default tile-size/4)"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder")
    g.add_argument("--num-workers", type=int, default=2, help="image decoding worker processes")


def _input_args(p: argparse.ArgumentParser, what: str = "IMG_OR_DIR") -> None:
    p.add_argument("inputs", nargs="+", metavar=what, help="files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (relative names of the inputs are kept)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input")


def register(sub) -> None:
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
    p.add_argument("--scaling-factor", type=float, default=None, help="store (z - shift) * scale (default 1)")
    p.add_argument("--shift-factor", type=float, default=None, help="see --scaling-factor (default 0)")
    p.add_argument("--latent-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype")
    _runtime_args(p)
    p.set_defaults(func=run_encode)

    p = sub.add_parser(
        "decode",
        help="latent .safetensors files -> PNG images",
        description="Decode files written by 'transvae encode' back to PNGs of the original size.",
    )
    _input_args(p, "LATENT_OR_DIR")
    p.add_argument(
        "--model", default=None, help="model to decode with (default: the one recorded in each file)"
    )
    _runtime_args(p)
    p.set_defaults(func=run_decode)

    p = sub.add_parser(
        "extract-latents",
        help="a dataset -> sharded latent safetensors + statistics (LightningDiT format)",
        description="Encode a whole image folder (class sub-folders give labels) into sharded safetensors "
        "with 'latents', 'latents_flip', 'labels', plus latents_stats.pt/.json and manifest.json. "
        "Resumable; with torchrun each rank extracts a disjoint set of shards.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--model", required=True, help="model folder, training run folder or Hub repo id")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--resolution", type=int, default=256, help="centre-crop + resize side in pixels (default 256)"
    )
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    p.add_argument(
        "--no-flip", dest="flip", action="store_false", help="skip the horizontally flipped latents"
    )
    p.add_argument("--sample", action="store_true", help="store posterior samples instead of means")
    p.add_argument("--latent-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype")
    _runtime_args(p, batch=32)
    p.set_defaults(func=run_extract)


# --- shared helpers ---------------------------------------------------------------------------------
def _check_runtime(args) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise UserError(f"--max-pixels must be >= 0, got {args.max_pixels}")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")


def _make_runner(args, model, device):
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
        max_pixels=args.max_pixels,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        compile=args.compile,
    )


def _load_model(ref: str, device: torch.device):
    from .common import load_model_or_exit

    return load_model_or_exit(ref, device=device)


def collect_inputs(
    inputs: list[str], suffixes: tuple[str, ...] | None, out_suffix: str
) -> list[tuple[Path, Path]]:
    """``transvae.inference.files.collect_inputs`` with its refusals as ``UserError``s."""
    from transvae.inference.files import InputError
    from transvae.inference.files import collect_inputs as collect

    try:
        return collect(inputs, suffixes, out_suffix)
    except InputError as e:
        raise UserError(str(e)) from e


class _Failures:
    """Counts skipped inputs; raises in single-file or --strict mode."""

    def __init__(self, single: bool, strict: bool, bar):
        self.single, self.strict, self.bar, self.items = single, strict, bar, []

    def add(self, path: Path, reason: str) -> None:
        if self.single or self.strict:
            raise UserError(f"{path}: {reason}")
        self.items.append((path, reason))
        self.bar.write(f"skipped {path}: {reason}", file=sys.stderr)


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from transvae.data.io import ImageLoadError, load_image, pil_to_tensor

        try:
            return i, pil_to_tensor(load_image(self.files[i])), ""
        except ImageLoadError as e:
            return i, None, e.reason


def _identity(x):
    return x


def iter_image_batches(
    files: list[Path], multiple: int, batch_size: int, num_workers: int, buffer: int | None = None
) -> Iterator[tuple[list[int], list[torch.Tensor] | None, str]]:
    """Load images in the background and yield batches of images with the same padded size.

    Yields:
        (indices, tensors, "") for a batch of (3, H, W) tensors in [-1, 1] whose sizes pad to
        the same multiple of ``multiple``, or ([index], None, reason) for an unreadable file.
    """
    from transvae.inference import padded_size

    loader = torch.utils.data.DataLoader(
        _ImageDataset(files), batch_size=None, num_workers=num_workers, collate_fn=_identity
    )
    buffer = buffer or 4 * batch_size
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = defaultdict(list)
    pending = 0
    for i, x, err in loader:
        if x is None:
            yield [i], None, err
            continue
        key = padded_size(x.shape[1], x.shape[2], multiple)
        groups[key].append((i, x))
        pending += 1
        if len(groups[key]) == batch_size:
            batch = groups.pop(key)
            pending -= len(batch)
            yield [k for k, _ in batch], [t for _, t in batch], ""
        elif pending >= buffer:  # bound memory: flush everything buffered so far
            for batch in groups.values():
                yield [k for k, _ in batch], [t for _, t in batch], ""
            groups.clear()
            pending = 0
    for batch in groups.values():
        yield [k for k, _ in batch], [t for _, t in batch], ""


def _pad_batch(xs: list[torch.Tensor], multiple: int):
    """Stack images of possibly different sizes (same padded size) after padding each one."""
    from transvae.inference import pad_to_multiple

    padded, pads = zip(*(pad_to_multiple(x, multiple) for x in xs), strict=True)
    return torch.stack(padded), list(pads)


def _write_png(path: Path, x: torch.Tensor) -> None:
    from transvae.data.io import tensor_to_pil
    from transvae.utils.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    tensor_to_pil(x).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    from transvae.data.io import tensor_to_uint8

    mse = (tensor_to_uint8(a).float() - tensor_to_uint8(b).float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(255.0**2 / mse)).item()


def _summary(cmd: str, done: int, failures: _Failures, out: Path, extra: str = "") -> int:
    msg = f"{cmd}: wrote {done} file(s) to {out}{extra}"
    if failures.items:
        msg += f"; skipped {len(failures.items)} unreadable input(s) (listed above)"
    print(msg)
    return 1 if failures.items else 0


# --- reconstruct ------------------------------------------------------------------------------------
def run_reconstruct(args) -> int:
    from tqdm import tqdm

    from transvae.inference import crop

    _check_runtime(args)
    items = collect_inputs(args.inputs, None, ".png")
    prepare_out(args.out, args.inputs)
    single = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    device = resolve_device(args.device)
    model = _load_model(args.model, device)
    runner = _make_runner(args, model, device)
    out = Path(args.out)
    gen = torch.Generator(device=runner.device).manual_seed(args.seed) if args.sample else None
    files = [src for src, _ in items]
    bar = tqdm(total=len(files), desc="reconstruct", unit="img", disable=single)
    failures = _Failures(single, args.strict, bar)
    done, psnrs = 0, []
    for idx, xs, err in iter_image_batches(files, runner.f, args.batch_size, args.num_workers):
        if xs is None:
            failures.add(files[idx[0]], err)
            bar.update(1)
            continue
        x, pads = _pad_batch(xs, runner.f)  # (B, 3, H', W')
        rec = runner.reconstruct(x, sample=args.sample, generator=gen).cpu()
        for k, i in enumerate(idx):
            r = crop(rec[k], pads[k])  # (3, H, W)
            _write_png(out / items[i][1], r)
            if args.compare:
                _write_png(out / "compare" / items[i][1], torch.cat([xs[k], r], dim=-1))
            psnrs.append(_psnr_uint8(r, xs[k]))
            done += 1
        bar.update(len(idx))
    bar.close()
    extra = f" (mean PSNR vs input {sum(psnrs) / len(psnrs):.2f} dB)" if psnrs else ""
    return _summary("reconstruct", done, failures, out, extra)


# --- encode -----------------------------------------------------------------------------------------
def _scaling_from_model(model, args) -> tuple[float, float]:
    """--scaling-factor / --shift-factor, else those saved in the model folder's metadata, else 1 / 0."""
    meta = getattr(model, "metadata", None) or {}
    scale = args.scaling_factor if args.scaling_factor is not None else float(meta.get("scaling_factor", 1.0))
    shift = args.shift_factor if args.shift_factor is not None else float(meta.get("shift_factor", 0.0))
    if scale == 0:
        raise UserError("--scaling-factor must not be 0")
    return scale, shift


def run_encode(args) -> int:
    from tqdm import tqdm

    from transvae.cli.common import DTYPES
    from transvae.inference import LatentRecord, save_latent

    _check_runtime(args)
    items = collect_inputs(args.inputs, None, LATENT_SUFFIX)
    prepare_out(args.out, args.inputs)
    single = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    device = resolve_device(args.device)
    model = _load_model(args.model, device)
    runner = _make_runner(args, model, device)
    scale, shift = _scaling_from_model(model, args)
    out = Path(args.out)
    gen = torch.Generator(device=runner.device).manual_seed(args.seed) if args.sample else None
    files = [src for src, _ in items]
    bar = tqdm(total=len(files), desc="encode", unit="img", disable=single)
    failures = _Failures(single, args.strict, bar)
    done = 0
    for idx, xs, err in iter_image_batches(files, runner.f, args.batch_size, args.num_workers):
        if xs is None:
            failures.add(files[idx[0]], err)
            bar.update(1)
            continue
        x, pads = _pad_batch(xs, runner.f)
        z = runner.encode(x, sample=args.sample, generator=gen).latent.cpu()  # (B, C, h, w)
        for k, i in enumerate(idx):
            rec = LatentRecord(
                latent=((z[k] - shift) * scale).to(DTYPES[args.latent_dtype]),
                model=args.model,
                model_name=runner.model.model_name,
                size=(xs[k].shape[1], xs[k].shape[2]),
                pad=pads[k],
                scaling_factor=scale,
                shift_factor=shift,
                sampled=args.sample,
            )
            save_latent(
                out / items[i][1],
                rec,
                architecture=runner.model.config.architecture,
                latent_channels=str(runner.model.latent_channels),
                spatial_compression_ratio=str(runner.f),
                source=str(files[i]),
            )
            done += 1
        bar.update(len(idx))
    bar.close()
    return _summary("encode", done, failures, out)


# --- decode -----------------------------------------------------------------------------------------
def run_decode(args) -> int:
    from tqdm import tqdm

    from transvae.inference import crop, load_latent

    _check_runtime(args)
    items = collect_inputs(args.inputs, (LATENT_SUFFIX,), ".png")
    prepare_out(args.out, args.inputs)
    single = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    device = resolve_device(args.device)
    runners: dict[str, object] = {}
    out = Path(args.out)
    bar = tqdm(total=len(items), desc="decode", unit="img", disable=single)
    failures = _Failures(single, args.strict, bar)
    # group by (model, latent shape) so that files batch together; tensors are re-read per batch
    # so memory stays bounded for large folders
    groups: dict[tuple, list] = defaultdict(list)
    for src, dst in items:
        try:
            rec = load_latent(src)
        except ValueError as e:
            failures.add(src, str(e).removeprefix(f"{src}: "))
            bar.update(1)
            continue
        ref = args.model or rec.model
        if not ref:
            failures.add(src, "no model recorded in the file; pass --model")
            bar.update(1)
            continue
        groups[(ref, tuple(rec.latent.shape))].append((src, dst))
    done = 0
    for (ref, shape), members in groups.items():
        if ref not in runners:
            runners[ref] = _make_runner(args, _load_model(ref, device), device)
        runner = runners[ref]
        if shape[0] != runner.model.latent_channels:
            for src, _ in members:
                failures.add(
                    src, f"latent has {shape[0]} channels, model {ref} expects {runner.model.latent_channels}"
                )
                bar.update(1)
            continue
        for s in range(0, len(members), args.batch_size):
            chunk = [(src, dst, load_latent(src)) for src, dst in members[s : s + args.batch_size]]
            z = torch.stack([rec.unscaled() for _, _, rec in chunk])  # (B, C, h, w)
            x = runner.decode(z).cpu()
            for k, (src, dst, rec) in enumerate(chunk):
                img = crop(x[k], rec.pad)
                if tuple(img.shape[-2:]) != rec.size:
                    failures.add(
                        src, f"metadata size {rec.size} does not match the decoded {tuple(img.shape[-2:])}"
                    )
                    continue
                _write_png(out / dst, img)
                done += 1
            bar.update(len(chunk))
    bar.close()
    return _summary("decode", done, failures, out)


# --- extract-latents ----------------------------------------------------------------------------------
def _init_distributed(device_arg: str) -> tuple[int, int, torch.device, object]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the process group, one GPU per rank."""
    from transvae.utils.distributed import barrier, init_distributed

    info = init_distributed(resolve_device(device_arg))
    return info.rank, info.world_size, info.device, (lambda: barrier(info)) if info.enabled else None


def run_extract(args) -> int:
    from transvae.cli.common import DTYPES
    from transvae.inference import extract_latents

    _check_runtime(args)
    if args.shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {args.shard_size}")
    if not Path(args.data_dir).is_dir():
        raise UserError(f"no such folder: {args.data_dir}")
    prepare_out(args.out, [args.data_dir])
    rank, world, device, barrier = _init_distributed(args.device)
    model = _load_model(args.model, device)
    runner = _make_runner(args, model, device)
    try:
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
            rank=rank,
            world_size=world,
            barrier=barrier,
        )
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    finally:
        if barrier is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    if manifest is not None:
        skipped = len(manifest["skipped"])
        print(
            f"extract-latents: {manifest['num_latents']} latents in {len(manifest['shards'])} shard(s) under "
            f"{args.out}; statistics in latents_stats.pt/.json"
            + (f"; {skipped} unreadable image(s) skipped (see manifest.json)" if skipped else "")
        )
        print(json.dumps({"classes": len(manifest["classes"]), "num_latents": manifest["num_latents"]}))
    return 0

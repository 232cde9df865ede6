"""``transvae convert``: import a published autoencoder as a transvae model folder.

    transvae convert stabilityai/sd-vae-ft-mse --out sd-vae/
    transvae convert black-forest-labs/FLUX.1-schnell --subfolder vae --out flux-vae/
    transvae convert vae-ft-mse-840000-ema-pruned.safetensors --preset sd-vae --out sd-vae/
    transvae convert vavae-imagenet256-f16d32-dinov2.pt --preset vavae-f16d32 --out vavae/
    transvae convert model.ckpt --config autoencoder_kl_f16.yaml --out ldm-f16/
    transvae convert mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers --out dc-ae/
    transvae convert lightningdit-xl-800ep.pt --preset lightningdit --latents-stats latents_stats.pt --out dit/
    transvae convert runs/dit --to lightningdit --out lightningdit.pt     # ours -> the reference code

The work is ``transvae.models.convert``; this module parses arguments, checks ``--out`` and prints.
The folder written (``config.json`` + ``model.safetensors``, the latent scaling as metadata) is
what every other command takes as ``--model`` (and ``train --init``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    UserError,
    add_command,
    add_options,
    finite_float,
    one_line_warnings,
    option,
    positive_int,
    prepare_out,
)


def _presets_epilog() -> str:
    from transvae.models.convert import PRESETS

    rows = []
    for p in PRESETS.values():
        scale = ", ".join(f"{k}={v}" for k, v in p.metadata.items()) or "no scaling factor"
        rows.append(f"  {p.name:<14} {p.description}; {scale}")
    return "presets (--preset, for checkpoint files):\n" + "\n".join(rows)


def register(sub) -> None:
    p = add_command(
        sub,
        "convert",
        run_convert,
        "import an SD / SDXL / SD3 / FLUX / VA-VAE / DC-AE autoencoder as a transvae model folder",
        [
            option(
                "source",
                metavar="SRC",
                help="a diffusers AutoencoderKL / AutoencoderDC folder or Hub repo id, or a checkpoint file "
                "(.ckpt .pt .pth .safetensors)",
            ),
            option("--out", required=True, help="new (or empty) output folder; never overwritten"),
            option(
                "--preset",
                help="architecture of a checkpoint file: sd-vae, sdxl-vae, sd3-vae, flux-vae, vavae-f16d32; "
                "lightningdit for a hustvl/LightningDiT generator checkpoint",
            ),
            option(
                "--config",
                dest="ldm_config",
                metavar="LDM_YAML",
                help="an LDM YAML describing a checkpoint's architecture",
            ),
            option("--subfolder", help="the VAE's folder inside SRC, e.g. vae for a diffusers pipeline repo"),
            option("--revision", help="Hub revision of SRC"),
            option("--name", help="model_name to record (default: the preset or the source kind)"),
        ],
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group(
        "generators (hustvl/LightningDiT checkpoints: --preset lightningdit; back: --to lightningdit)"
    )
    add_options(g, _GENERATOR_OPTIONS)


_GENERATOR_OPTIONS = [
    option(
        "--to",
        choices=["lightningdit"],
        help="write our generator as a reference checkpoint (.pt/.safetensors)",
    ),
    option(
        "--latents-stats", help="the latents_stats.pt the generator was trained with (gen-sample needs it)"
    ),
    option("--latent-multiplier", type=finite_float, default=1.0, help="the reference's latent_multiplier"),
    option("--cfg-scale", type=finite_float, default=1.0, help="gen-sample's default guidance weight"),
    option("--cfg-interval-start", type=finite_float, default=0.11, help="gen-sample's default interval"),
    option("--num-classes", type=positive_int, help="classes (default: the label table minus the null row)"),
    option("--num-heads", type=positive_int, help="heads (checkpoints without RoPE buffers only)"),
    option("--input-size", type=positive_int, help="with --to: the reference's latent side"),
]


def _scaling_line(meta: dict) -> str:
    if "scaling_factor" not in meta:
        return (
            "latent scaling: the source has no scaling factor; measure one with `transvae extract-latents` "
            "(latents_stats) or pass --scaling-factor to `transvae encode`"
        )
    shift = meta.get("shift_factor")
    rule = (
        f"(z - {shift}) * {meta['scaling_factor']}" if shift is not None else f"z * {meta['scaling_factor']}"
    )
    return (
        f"latent scaling: scaling_factor={meta['scaling_factor']}"
        + (f", shift_factor={shift}" if shift is not None else "")
        + f"; diffusion latents are {rule} (transvae encode uses them by default)"
    )


def _run_lightningdit(args) -> int:
    """A hustvl/LightningDiT checkpoint -> our generator folder, or back (``--to lightningdit``)."""
    from transvae.models.convert import lightningdit as L

    try:
        if args.to == "lightningdit":
            path, ref = L.export_lightningdit(args.source, args.out, args.input_size)
            shown = ", ".join(f"{k}={v}" for k, v in ref.items())
            print(f"convert: wrote {path}: load it into the reference's LightningDiT({shown})")
            return 0
        given = {k: v for k, v in (("num_classes", args.num_classes), ("num_heads", args.num_heads)) if v}
        folder = L.convert_lightningdit(
            args.source, args.out, args.latents_stats, args.latent_multiplier, args.cfg_scale,
            args.cfg_interval_start, **given,
        )  # fmt: skip
    except (ValueError, OSError, KeyError) as e:
        raise UserError(" ".join(str(e).split())) from e
    print(f"convert: wrote {folder} (transvae gen-sample --run {folder} --vae TOKENIZER ...)")
    return 0


def run_convert(args) -> int:
    """Convert a diffusers AutoencoderKL folder or Hub repo (SD, SDXL, SD3, FLUX.1 VAEs) or an
    LDM-family checkpoint (with --preset or --config) to the CNN-VAE, or wrap a diffusers
    AutoencoderDC (DC-AE), and write a model folder that every transvae command loads. Files are
    read as data only (JSON, safe YAML, safetensors, torch.load(weights_only=True))."""
    from transvae.models.base import ConfigError
    from transvae.models.convert import convert, detect

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out {out} already exists and is not an empty folder; convert never overwrites: choose a new folder"
        )
    if args.preset is not None and args.ldm_config is not None:
        raise UserError("--preset and --config exclude each other: one describes the architecture")
    if args.preset == "lightningdit" or args.to == "lightningdit":
        if args.to != "lightningdit":
            prepare_out(args.out, [args.source])
        return _run_lightningdit(args)
    prepare_out(args.out, [p for p in (args.source, args.ldm_config) if p and Path(p).exists()])
    with one_line_warnings(args.command):
        try:
            print(
                f"convert: reading {args.source}{f' ({args.subfolder})' if args.subfolder else ''}",
                flush=True,
            )
            src = detect(args.source, args.subfolder, args.revision)
            print(f"convert: {src.description}: {src.path}", flush=True)
            model = convert(src.path, preset=args.preset, ldm_config=args.ldm_config, name=args.name)
        except (ConfigError, OSError, KeyError) as e:
            msg = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
            raise UserError(msg) from e
    meta = dict(getattr(model, "metadata", {}) or {})
    n = model.num_parameters()
    print(
        f"convert: {type(model).__name__} (architecture {model.config.architecture}, model_name {model.model_name}): "
        f"f={model.spatial_compression_ratio}, {model.latent_channels} latent channels, {n / 1e6:.2f}M parameters"
    )
    ignored = meta.get("ignored_tensors") or {}
    if ignored:
        print("convert: left out " + ", ".join(f"{k} ({v} tensors)" for k, v in ignored.items()))
    folder = model.save_pretrained(out, **meta)
    print(f"convert: wrote {folder / 'config.json'} and {folder / 'model.safetensors'}")
    print(_scaling_line(meta))
    return 0

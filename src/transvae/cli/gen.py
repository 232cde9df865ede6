"""``transvae gen-train / gen-sample / gen-eval``: LightningDiT on tokenizer latents (paper Section 4.3).

    transvae extract-latents photos/ --model runs/vae --out latents/ --resolution 256
    transvae gen-train --latents latents/ --model lightningdit-b-1 --out runs/dit [--config YAML]
    transvae gen-sample --run runs/dit --vae runs/vae --num 10000 --out samples/ [--npz]
    transvae gen-eval --samples samples/ --reference val_images/ --out eval/ [--metrics fid is latent-fd]

See docs/generation.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .common import (
    DEVICE,
    OUT,
    UserError,
    add_command,
    add_options,
    add_run_args,
    bounded_int,
    finite_float,
    nonneg_int,
    option,
    positive_int,
    prepare_out,
    print_run_summary,
    resolve_device,
    run_config,
)

MAX_STEPS = 10_000  # generation.sampling.MAX_STEPS (kept here: the parser imports no torch)
MAX_SAMPLES = 10_000_000  # inference.generate.MAX_SAMPLES


def register(sub) -> None:
    _register_train(sub)
    _register_sample(sub)
    _register_eval(sub)


# -- gen-train ----------------------------------------------------------------------------------
def _register_train(sub) -> None:
    p = add_command(
        sub,
        "gen-train",
        run_train,
        "train a LightningDiT on latents written by extract-latents (paper Section 4.3)",
        [
            option("--latents", help="training latents folder (data.latents)"),
            option(
                "--val-latents",
                help="held-out latents folder: validation loss and latent FD (data.val_latents)",
            ),
            option(
                "--model", help="generator name, e.g. lightningdit-b-1 (see `transvae list 'lightningdit-*'`)"
            ),
            option("--out", help="run folder (config, logs, checkpoints, model/)"),
            option("--config", help="YAML recipe (e.g. configs/lightningdit-b-1-f16d32.yaml)"),
            option("--vae", help="tokenizer to decode sample grids during training (data.vae)"),
        ],
    )
    add_run_args(p, "gen-train")


def resolve_train(args: argparse.Namespace):
    """The ``GenConfig``, the run folder and the checkpoint to resume (or None) from the arguments
    (checks only; nothing is built).

    On ``--resume`` the configuration stored in the checkpoint is the base; a recipe and flags
    given again are applied on top of it (the engine refuses changes to fixed keys)."""
    from transvae.models import list_models
    from transvae.training.config import GenConfig
    from transvae.utils.config import ConfigError

    keys = {
        "latents": "data.latents",
        "val_latents": "data.val_latents",
        "model": "model.name",
        "vae": "data.vae",
    }
    cfg, run_dir, saved = run_config(args, keys, GenConfig.build, ConfigError)
    if saved is None and args.model is None and args.config is None:
        raise UserError("--model NAME is required (see `transvae list 'lightningdit-*'`)")
    generators = list_models(kind="generator")
    if cfg.model.name not in generators:
        raise UserError(f"unknown generator '{cfg.model.name}'; choices: {', '.join(generators)}")
    for opt, path in (
        ("--latents", cfg.data.latents),
        ("--val-latents", cfg.data.val_latents),
        ("--vae", cfg.data.vae),
    ):
        if path and not Path(path).exists():
            raise UserError(f"{opt} {path}: no such folder")
    if not cfg.data.latents:
        raise UserError("--latents DIR is required (a folder written by `transvae extract-latents`)")
    return cfg, run_dir, saved


def run_train(args) -> int:
    """Train a class-conditional LightningDiT with rectified flow on a latents folder. Defaults are
    the paper's recipe (Appendix D); configs/lightningdit-*.yaml hold its three runs. Multi-GPU:
    torchrun --nproc_per_node N --no-python transvae gen-train ..."""
    if args.list_keys:
        from transvae.training.config import GenConfig

        print("\n".join(GenConfig.valid_keys()))
        return 0
    cfg, run_dir, saved = resolve_train(args)

    from transvae.training import CheckpointError, Engine, RunFolderError, TrainingError
    from transvae.training import distributed as D
    from transvae.training.tasks.generator import GenerationTask
    from transvae.utils.runlock import RunLockedError

    engine = None
    try:
        engine = Engine(GenerationTask(cfg), run_dir, resume=args.resume, saved=saved)
        summary = engine.fit()
    except (TrainingError, CheckpointError, RunLockedError, RunFolderError, ValueError, OSError) as e:
        raise UserError(str(e).strip().splitlines()[0]) from e
    finally:
        D.cleanup()
    if engine.is_main:
        hist = [h for h in summary["history"] if "val/latent_fd" in h]
        notes = (
            [f"; latent FD {hist[0]['val/latent_fd']:.4f} -> {hist[-1]['val/latent_fd']:.4f}"] if hist else []
        )
        result = f"generator: {run_dir / 'model'}  (transvae gen-sample --run {run_dir} --vae VAE ...)"
        print_run_summary(summary, notes, result, "gen-train", run_dir)
    return int(summary["exit_status"])


# -- gen-sample ---------------------------------------------------------------------------------
def _register_sample(sub) -> None:
    from .common import add_precision_args, add_tiling_args

    p = add_command(
        sub,
        "gen-sample",
        run_sample,
        "sample images from a trained LightningDiT and decode them with the tokenizer",
        [
            option("--run", required=True, help="gen-train run folder (or its model/ folder)"),
            option(
                "--step",
                type=nonneg_int,
                default=None,
                help="sample the snapshot of this step (RUN/checkpoints/step_*.pt)",
            ),
            option(
                "--vae", required=True, help="the tokenizer that produced the latents (folder / run / Hub id)"
            ),
            option("--num", type=bounded_int(1, MAX_SAMPLES), required=True, help="number of samples"),
            OUT,
        ],
    )
    add_options(
        p.add_argument_group("sampler (defaults: the run's sample.* settings, i.e. its recipe's)"), _SAMPLER
    )
    add_options(p, _SAMPLE_OUTPUT)
    g = p.add_argument_group("runtime")
    add_options(g, [DEVICE])
    add_precision_args(g)  # --dtype (generator and decoder autocast), --force-bf16 / --force-fp16
    g.add_argument("--batch-size", type=positive_int, default=16, help="samples per batch (default 16)")
    add_tiling_args(g, what="decode images", part="decoder")
    p.set_defaults(num_workers=0)


def cfg_channels_arg(text: str) -> int | str:
    """``--cfg-channels``: ``all`` or a channel count >= 1."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'all' or a channel count >= 1, got {text!r}")
    return value


_SAMPLER = [
    option("--cfg-scale", type=finite_float, default=None, help="guidance weight, 1 = none (paper: 1)"),
    option(
        "--cfg-interval-start",
        type=finite_float,
        default=None,
        help="guidance only for t >= this (LightningDiT: 0.11)",
    ),
    option(
        "--cfg-channels",
        type=cfg_channels_arg,
        default=None,
        help="guide 'all' latent channels (the standard form) or only the first N; LightningDiT's "
        "forward_with_cfg guides 3, and its guided FIDs (cfg 6.7 / 10) assume it",
    ),
    option("--steps", type=bounded_int(1, MAX_STEPS), default=None, help="ODE steps (LightningDiT: 250)"),
    option("--solver", choices=["euler", "heun"], default=None, help="ODE solver (LightningDiT: euler)"),
    option("--shift", type=finite_float, default=None, help="timestep shift, 1 = none (LightningDiT: 0.3)"),
]
_SAMPLE_OUTPUT = [
    option(
        "--class-labels",
        type=int,
        nargs="+",
        default=None,
        help="labels to cycle through (default: all, balanced)",
    ),
    option("--seed", type=nonneg_int, default=0, help="sampling seed (default 0)"),
    option("--npz", action="store_true", help="also write OUT/samples_NxHxWx3.npz (ADM evaluator format)"),
    option("--force", action="store_true", help="decode with a tokenizer other than the one of the latents"),
]


def run_sample(args) -> int:
    """Generate --num samples with a gen-train run, decode them with --vae and write
    OUT/images/*.png, OUT/latents/*.safetensors and OUT/sampling.json (and an ADM-style .npz with
    --npz). Sample i depends only on --seed and i: a rerun with the same settings resumes."""
    import torch

    from transvae.data.latents import LatentStats
    from transvae.generation.sampling import check_cfg_channels
    from transvae.inference import generate as G
    from transvae.training.run_folder import RunFolderError

    from .common import check_runtime, load_model_or_exit, make_runner

    check_runtime(args)
    out, run = Path(args.out), Path(args.run)
    if out.exists() and any(out.iterdir()) and not (out / G.SETTINGS_NAME).is_file():
        raise UserError(
            f"--out {out} is a non-empty folder that gen-sample did not write; choose a new folder"
        )
    if out.resolve() in (run.resolve(), (run / "model").resolve()) or run.resolve().is_relative_to(
        out.resolve()
    ):
        raise UserError("--out must not be the run folder, its model/ or a folder that contains them")
    vae_dir = [args.vae] if Path(args.vae).exists() else []
    prepare_out(args.out, vae_dir)  # not a file, not under a file, writable, not in the tokenizer
    device = resolve_device(args.device)
    try:
        model = G.load_generator(run, device=device, step=args.step)
        meta = model.metadata
        stats, multiplier = LatentStats.from_metadata(meta)
        shape = G.latent_shape(model, meta)
        given = {k: getattr(args, k) for k in G.SAMPLER_DEFAULTS}
        sampler = G.sampler_config(meta, **given)
        check_cfg_channels(sampler.cfg_channels, shape[0])
        labels = G.sample_labels(args.num, model.config.num_classes, args.class_labels)
    except (FileNotFoundError, RunFolderError, ValueError) as e:
        raise UserError(f"cannot sample from '{run}': {e}") from e
    if sampler.cfg_scale != 1.0 and model.null_label is None:
        raise UserError(
            "this generator was trained without label dropout (class_dropout=0): use --cfg-scale 1"
        )
    vae = load_model_or_exit(args.vae, device=device)
    mismatch = G.check_tokenizer(meta, vae)
    if mismatch and not args.force:
        raise UserError(f"{mismatch} (pass --force to decode anyway)")
    runner = make_runner(args, vae, device)
    dtype = runner.dtype  # the precision the decoder really runs in (fp32 fallback on slow CPUs)
    try:
        G.check_generation_fits(model, shape, args.batch_size, device, 2 if dtype != torch.float32 else 4)
        pipe = G.GenerationPipeline(
            model, stats, multiplier, shape, runner, autocast_dtype=None if dtype == torch.float32 else dtype
        )
        settings = {"run": str(run.resolve()), "step": meta.get("step"), "vae": str(args.vae)}
        settings["vae_model_name"] = vae.model_name
        summary = G.generate_to_folder(
            pipe, out, labels, args.seed, sampler, batch_size=args.batch_size, settings=settings
        )
    except (ValueError, MemoryError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # not writable, disk full (checked before sampling; DiskFullError says so)
        raise UserError(e.strerror or str(e)) from e
    msg = f"{summary['num']} samples in {out / 'images'} ({summary['generated']} new"
    print(msg + (f", {summary['skipped']} already there)" if summary["skipped"] else ")"))
    if args.npz:
        _write_npz(out, labels)
    return 0


def _write_npz(out: Path, labels) -> None:
    """``OUT/samples_NxHxWx3.npz``; stray images of another size are named and left out."""
    from transvae.inference.generate import folder_to_npz
    from transvae.utils.text import printable

    path, left_out = folder_to_npz(out, labels)
    for f, why in left_out:
        print(
            f"transvae gen-sample: warning: {printable(f)} left out of the .npz: {printable(why)}",
            file=sys.stderr,
        )
    print(printable(f"wrote {path}" + (f" ({len(left_out)} stray image(s) left out)" if left_out else "")))


# -- gen-eval -----------------------------------------------------------------------------------
def _register_eval(sub) -> None:
    from transvae.evaluation.generation import METRICS

    add_command(
        sub,
        "gen-eval",
        run_eval,
        f"{' / '.join(METRICS)} of generated samples, with an HTML report",
        [
            option("--samples", required=True, help="gen-sample output folder, image folder or .npz"),
            option(
                "--reference",
                default=None,
                help="real images (folder or .npz) and/or an extract-latents folder",
            ),
            OUT,
            option(
                "--metrics",
                nargs="+",
                choices=METRICS,
                default=None,
                help="default: every metric the given --reference / --reference-latents allow",
            ),
            option(
                "--reference-latents",
                default=None,
                help="extract-latents folder of held-out images (for latent-fd)",
            ),
            option("--fid-weights", default=None, help="local pt_inception-2015-12-05 weights file"),
            option(
                "--num", type=nonneg_int, default=0, help="use at most N images / latents per set (0 = all)"
            ),
            option("--batch-size", type=positive_int, default=64, help="images per Inception batch"),
            option("--latent-fd-patch", type=positive_int, default=2, help="lFD patch side (default 2)"),
            option(
                "--latent-stats",
                default=None,
                help="latents folder whose latents_stats.pt normalises both sets for lFD (default: the generator's)",
            ),
            option(
                "--force",
                action="store_true",
                help="compute latent-fd against reference latents of another tokenizer or latent grid size",
            ),
            DEVICE,
        ],
    )


def _check_eval_paths(args) -> list[Path]:
    """The inputs exist, and --out is a writable folder that is none of them, inside none and
    contains none (else the grids would land in the reference data): before any work."""
    from transvae.inference.files import InputError, check_output_folder

    given = [("--samples", args.samples), ("--reference", args.reference)]
    given += [("--reference-latents", args.reference_latents), ("--latent-stats", args.latent_stats)]
    inputs = []
    for opt, val in given:
        if val is not None:
            if not Path(val).exists():
                raise UserError(f"{opt} {val}: no such file or folder")
            inputs.append(Path(val))
    try:
        check_output_folder(args.out, inputs)
    except (InputError, OSError) as e:
        raise UserError(str(e)) from e
    return inputs


def run_eval(args) -> int:
    """Score generated samples against reference data. The image metrics need the standard
    InceptionV3 weights (torch hub cache, a download, or --fid-weights PATH), one pass for all of
    them; latent-fd needs none: it compares the samples' latents with held-out real latents (an
    extract-latents folder). Every metric's inputs are checked before any is computed. Writes
    OUT/results.json and OUT/report.html."""
    from transvae.data.latents import LatentDataError
    from transvae.data.npz import NpzFormatError
    from transvae.evaluation.generation import EvalOptions, SourceError, evaluate_generation
    from transvae.evaluation.report import fmt, label
    from transvae.metrics import MetricInputError
    from transvae.models.pretrained import WeightsUnavailableError
    from transvae.utils.text import printable

    _check_eval_paths(args)
    opts = EvalOptions(
        metrics=tuple(dict.fromkeys(args.metrics)) if args.metrics else None,
        fid_weights=args.fid_weights,
        num=args.num,
        batch_size=args.batch_size,
        device=str(resolve_device(args.device)),
        latent_fd_patch=args.latent_fd_patch,
        latent_stats=args.latent_stats,
        force=args.force,
    )
    try:
        payload = evaluate_generation(
            args.samples,
            args.reference,
            args.out,
            opts,
            reference_latents=args.reference_latents,
            command=shlex.join(["transvae", *sys.argv[1:]]) if sys.argv[1:2] == ["gen-eval"] else "",
        )
    except WeightsUnavailableError as e:
        raise UserError(f"{e} (or leave the Inception metrics out: --metrics latent-fd)") from e
    except (MetricInputError, SourceError, LatentDataError, NpzFormatError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    r = payload["results"]
    parts = []
    for name in payload["metrics"]:
        key = name.replace("-", "_")
        std = f" ± {fmt(name, r[key + '_std'])}" if r.get(key + "_std") is not None else ""
        parts.append(f"{label(name).rstrip(' ↑↓')} {fmt(name, r[key])}{std}")
    print("; ".join(parts))
    for x in payload["skipped"][:20]:
        print(f"skipped {printable(x['path'])}: {printable(x['reason'])}", file=sys.stderr)
    if payload["skipped"]:
        print(
            f"skipped {len(payload['skipped'])} unreadable file(s); all are in results.json", file=sys.stderr
        )
    out = Path(args.out)
    print(printable(f"wrote {out / 'results.json'}, {out / 'report.html'}"))
    return 0

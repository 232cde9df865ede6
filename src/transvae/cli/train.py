"""``transvae train``: train any registered autoencoder with the paper's recipe.

    transvae train --model transvae-mini-f16d32 --data DIR [--data DIR2] --out runs/x \\
        [--config configs/transvae-t-f16d32-stage1.yaml] [--resolution 256] [--batch-size 256] \\
        [--max-steps N] [--val-data DIR] [--stage 1|2] [--init MODEL] [--resume] [--strict] \\
        [--section.key=value ...]

Multi-GPU / multi-process: ``torchrun --nproc_per_node N --no-python transvae train ...``.
Every configuration problem (unknown key, wrong type, unknown model, missing folder, run folder
not writable) is reported before any training work starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an autoencoder (stage 1 or 2 of the paper's recipe)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any config key can be set with --section.key=value; `transvae train --list-keys` lists them.",
    )
    p.add_argument("--model", help="model name (see `transvae list`)")
    p.add_argument(
        "--data",
        action="append",
        nargs="+",
        default=None,
        metavar="DIR",
        help="training image folder(s) or WebDataset .tar shards; repeatable",
    )
    p.add_argument(
        "--val-data", action="append", nargs="+", default=None, metavar="DIR", help="validation folder(s)"
    )
    p.add_argument("--out", help="run folder (config, logs, TensorBoard, grids, checkpoints, model/)")
    p.add_argument("--config", help="YAML recipe (e.g. configs/transvae-t-f16d32-stage1.yaml)")
    p.add_argument("--resolution", type=int, help="training crop size (data.resolution)")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch size over all processes (train.batch_size)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument(
        "--stage", type=int, choices=(1, 2), help="1: encoder+decoder, no GAN; 2: frozen encoder + GAN"
    )
    p.add_argument(
        "--init", help="model folder / run folder / Hub id to start from (stage 2: the stage-1 model)"
    )
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoints/last.pt")
    p.add_argument("--strict", action="store_true", help="stop at the first bad image instead of skipping it")
    p.add_argument("--workers", type=int, help="DataLoader workers per process (data.num_workers)")
    p.add_argument("--device", help="auto | cpu | cuda (train.device)")
    p.add_argument(
        "--list-keys", action="store_true", help="print every config key with its default and exit"
    )
    p.set_defaults(func=run, accepts_extra=True)


def _flat(values) -> list[str]:
    return [v for group in values for v in group] if values else []


def resolve(args: argparse.Namespace):
    """Build and validate the config from the arguments (no heavy work); returns (cfg, run_dir)."""
    from ..models.registry import list_models
    from ..training.config import TrainConfigError, build_config, load_yaml

    if not args.out:
        raise UserError("--out RUN_DIR is required")
    run_dir = Path(args.out)
    overrides = {}
    base_yaml = args.config
    if args.resume:
        saved = run_dir / "config.yaml"
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume: no checkpoint at {run_dir / 'checkpoints' / 'last.pt'}")
        if base_yaml is None and saved.is_file():
            base_yaml = str(saved)  # the run's own resolved config; CLI flags still override it
    for key, value in [
        ("model.name", args.model),
        ("model.init", args.init),
        ("data.resolution", args.resolution),
        ("train.batch_size", args.batch_size),
        ("train.max_steps", args.max_steps),
        ("train.stage", args.stage),
        ("data.num_workers", args.workers),
        ("train.device", args.device),
    ]:
        if value is not None:
            overrides[key] = value
    if args.data:
        overrides["data.train"] = _flat(args.data)
    if args.val_data:
        overrides["data.val"] = _flat(args.val_data)
    if args.strict:
        overrides["data.strict"] = True
    try:
        if base_yaml is not None:
            load_yaml(base_yaml)
        cfg = build_config(base_yaml, overrides, list(args.extra or []))
    except TrainConfigError as e:
        raise UserError(str(e)) from e
    if args.model is None and args.init is None and base_yaml is None:
        raise UserError("--model NAME is required (see `transvae list`)")
    if not cfg.model.init and cfg.model.name not in list_models():
        raise UserError(f"unknown model '{cfg.model.name}'; choices: {', '.join(list_models())}")
    if cfg.train.stage == 2 and not cfg.model.init and not args.resume:
        raise UserError(
            "--stage 2 needs --init STAGE1_MODEL (a folder written by stage 1, e.g. runs/x/model)"
        )
    for p in list(cfg.data.train) + list(cfg.data.val):
        if not p.endswith(".tar") and "{" not in p and not Path(p).exists():
            raise UserError(f"data path not found: {p}")
    if not cfg.data.train:
        raise UserError("no training data: pass --data DIR")
    if not cfg.model.init:
        _check_sizes(cfg)
    if run_dir.exists() and (run_dir / "checkpoints" / "last.pt").exists() and not args.resume:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    return cfg, run_dir


def _check_sizes(cfg) -> None:
    """Training sizes must be multiples of the model's compression ratio (checked before any work)."""
    from ..models import create_model

    f = create_model(cfg.model.name, device="meta").spatial_compression_ratio
    sizes = [(cfg.data.resolution, cfg.data.resolution)]
    for b in cfg.data.buckets:
        try:
            h, w = (int(v) for v in str(b).lower().split("x"))
        except ValueError as e:
            raise UserError(f"data.buckets entry '{b}' is not of the form HxW (e.g. 256x192)") from e
        sizes.append((h, w))
    for h, w in sizes:
        if h % f or w % f:
            raise UserError(
                f"training size {h}x{w} is not a multiple of {cfg.model.name}'s compression ratio {f}; "
                f"use e.g. --resolution {max(f, round(h / f) * f)}"
            )


def run(args: argparse.Namespace) -> int:
    if args.list_keys:
        from ..training.config import valid_keys

        print("\n".join(valid_keys()))
        return 0
    cfg, run_dir = resolve(args)

    from ..data.datasets import StrictDataError
    from ..losses import MissingWeightsError
    from ..training import CheckpointError, Trainer, TrainingError
    from ..training import distributed as D

    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume)
        summary = trainer.fit()
    except MissingWeightsError as e:
        raise UserError(str(e).strip().replace("\n", " ")) from e
    except (TrainingError, CheckpointError, StrictDataError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e).splitlines()[0] if isinstance(e, FileNotFoundError) else str(e)) from e
    except OSError as e:
        raise UserError(str(e)) from e
    except RuntimeError as e:
        if "StrictDataError" in str(e):  # re-raised from a DataLoader worker
            raise UserError(str(e).strip().splitlines()[-1]) from e
        raise
    finally:
        D.cleanup()
    if trainer.is_main:
        hist = summary["history"]
        msg = f"{summary['status']} at step {summary['step']} in {summary['wall_seconds']:.0f}s"
        if hist:
            msg += f"; validation PSNR {hist[0]['val/psnr']:.2f} -> {hist[-1]['val/psnr']:.2f} dB"
        if summary["bad_files"]:
            msg += f"; {summary['bad_files']} bad files skipped (see {run_dir / 'bad_files.txt'})"
        if summary["nonfinite_steps"]:
            msg += f"; {summary['nonfinite_steps']} non-finite steps skipped"
        print(msg)
        print(f"model: {run_dir / 'model'}  (transvae.from_pretrained('{run_dir / 'model'}'))")
        if summary["status"] != "finished":
            print(f"continue with: transvae train --out {run_dir} --resume")
    return 0

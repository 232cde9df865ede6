"""``transvae train``: train any registered autoencoder with the paper's recipe.

    transvae train --model transvae-mini-f16d32 --data DIR [--data DIR2] --out runs/x \\
        [--config configs/transvae-t-f16d32-stage1.yaml] [--resolution 256] [--batch-size 256] \\
        [--max-steps N] [--val-data DIR] [--stage 1|2] [--init MODEL] [--resume] [--strict] \\
        [--force-bf16] [--section.key=value ...]

Multi-GPU / multi-process: ``torchrun --nproc_per_node N --no-python transvae train ...``.
Every configuration problem (unknown key, wrong type, unknown model, missing folder, a size that
does not fit in memory, run folder not writable or in use) is reported in one line before any
training work starts. Exit status: 0 finished (or the ``train.max_minutes`` budget ran out),
2 a user error, 143 stopped by SIGTERM and 130 by SIGINT after saving a checkpoint (continue
with ``--resume``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .common import UserError, add_command, add_run_args, option, print_run_summary, run_config


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "train",
        run,
        "train an autoencoder (stage 1 or 2 of the paper's recipe)",
        [
            option("--model", help="model name (see `transvae list`)"),
            option(
                "--data",
                action="append",
                nargs="+",
                default=None,
                metavar="DIR",
                help="training image folder(s) or WebDataset .tar shards; repeatable",
            ),
            option(
                "--val-data",
                action="append",
                nargs="+",
                default=None,
                metavar="DIR",
                help="validation folder(s)",
            ),
            option("--out", help="run folder (config, logs, TensorBoard, grids, checkpoints, model/)"),
            option("--config", help="YAML recipe (e.g. configs/transvae-t-f16d32-stage1.yaml)"),
            option("--resolution", type=int, help="training crop size (data.resolution)"),
            option(
                "--stage",
                type=int,
                choices=(1, 2),
                help="1: encoder+decoder, no GAN; 2: frozen encoder + GAN",
            ),
            option(
                "--init", help="model folder / run folder / Hub id to start from (stage 2: the stage-1 model)"
            ),
            option(
                "--strict", action="store_true", help="stop at the first bad image instead of skipping it"
            ),
            option(
                "--force-bf16",
                action="store_true",
                help="with train.precision=bf16: use bf16 even on a CPU without native bf16 (train.force_bf16)",
            ),
        ],
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_args(p, "train")


def _flat(values) -> list[str]:
    return [v for group in values for v in group] if values else []


def resolve(args: argparse.Namespace):
    """Build and validate the config from the arguments, and check every limit that can be
    checked without training (no heavy work); returns (cfg, run_dir, the checkpoint to resume or None)."""
    from ..models.registry import list_models
    from ..training.config import TrainConfigError, build_config

    keys = {
        "model": "model.name",
        "init": "model.init",
        "resolution": "data.resolution",
        "stage": "train.stage",
    }
    more: dict[str, object] = {}
    if args.data:
        more["data.train"] = _flat(args.data)
    if args.val_data:
        more["data.val"] = _flat(args.val_data)
    if args.strict:
        more["data.strict"] = True
    if args.force_bf16:
        more["train.force_bf16"] = True
    cfg, run_dir, saved = run_config(args, keys, build_config, TrainConfigError, more)
    if not args.resume:
        if args.model is None and args.init is None and args.config is None:
            raise UserError("--model NAME is required (see `transvae list`)")
        if not cfg.model.init and cfg.model.name not in list_models():
            raise UserError(f"unknown model '{cfg.model.name}'; choices: {', '.join(list_models())}")
        if cfg.train.stage == 2 and not cfg.model.init:
            raise UserError(
                "--stage 2 needs --init STAGE1_MODEL (a folder written by stage 1, e.g. runs/x/model)"
            )
    for p in list(cfg.data.train) + list(cfg.data.val):
        if not p.endswith(".tar") and "{" not in p and not Path(p).exists():
            raise UserError(f"data path not found: {p}")
    if not cfg.data.train:
        raise UserError("no training data: pass --data DIR")
    _check_limits(cfg, run_dir, saved)
    return cfg, run_dir, saved


def _check_limits(cfg, run_dir: Path, saved: dict | None) -> None:
    """Sizes vs the model's ratio and the free memory, then the run folder's writability and free
    disk space: all before the trainer allocates anything."""
    from ..models.base import ConfigError
    from ..training.task import TrainingError
    from ..training.tasks.autoencoder import check_limits
    from ..utils.device import resolve_device
    from ..utils.files import check_writable

    try:
        device = resolve_device(cfg.train.device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        note = (saved or {}).get("task", {})
        needed = check_limits(cfg, device, world, local, note.get("model_config"))
    except (TrainingError, ValueError, ConfigError) as e:
        raise UserError(str(e)) from e
    except FileNotFoundError as e:
        raise UserError(f"--init: {str(e).splitlines()[0]}") from e
    if int(os.environ.get("RANK", "0")) == 0:
        try:
            check_writable(run_dir, needed, what="run folder")
        except OSError as e:
            raise UserError(_os_message(e)) from e


def _os_message(e: OSError) -> str:
    """One line for an OSError: our own messages live in ``strerror``; add the file if any."""
    text = e.strerror or str(e) or repr(e)
    return (f"{text}: {e.filename}" if e.filename else text).splitlines()[0]


def run(args: argparse.Namespace) -> int:
    if args.list_keys:
        from ..training.config import valid_keys

        print("\n".join(valid_keys()))
        return 0
    cfg, run_dir, saved = resolve(args)

    from ..data.datasets import StrictDataError
    from ..losses import MissingWeightsError
    from ..training import CheckpointError, RunFolderError, Trainer, TrainingError
    from ..training import distributed as D
    from ..utils.runlock import RunLockedError

    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume, saved=saved)
        summary = trainer.fit()
    except MissingWeightsError as e:
        raise UserError(str(e).strip().replace("\n", " ")) from e
    except (TrainingError, CheckpointError, StrictDataError, RunLockedError, RunFolderError, ValueError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # unwritable or full run folder (DiskFullError says "disk full")
        raise UserError(_os_message(e)) from e
    except RuntimeError as e:
        if "StrictDataError" in str(e):  # re-raised from a DataLoader worker
            raise UserError(str(e).strip().splitlines()[-1]) from e
        raise
    finally:
        D.cleanup()
    if trainer.is_main:
        hist = summary["history"]
        notes = (
            [f"; validation PSNR {hist[0]['val/psnr']:.2f} -> {hist[-1]['val/psnr']:.2f} dB"] if hist else []
        )
        if summary["bad_files"]:
            notes.append(f"; {summary['bad_files']} bad files skipped (see {run_dir / 'bad_files.txt'})")
        result = f"model: {run_dir / 'model'}  (transvae.from_pretrained('{run_dir / 'model'}'))"
        print_run_summary(summary, notes, result, "train", run_dir)
    return summary["exit_status"]

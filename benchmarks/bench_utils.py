"""What the benchmark scripts share that is about these scripts, not the library: paths, the
``--data`` argument, the CPU experiments' Trainer settings, line styles. Everything they measure
or run is the package's (``transvae.inference.benchmarking``, ``transvae.training.benchmark``,
``transvae.models.flops``, ``transvae.utils.provenance``; ``transvae.utils.process`` runs the CLI,
``transvae.evaluation.plots`` saves the figures).

The scripts import this module as ``bench_utils`` (Python puts the script's folder on the path).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transvae.evaluation.plots import save_figure, subplots  # noqa: F401 (the scripts' figures)
from transvae.utils.process import cli_env as env  # noqa: F401
from transvae.utils.process import evaluate_cached, evaluate_cli  # noqa: F401
from transvae.utils.process import run_cli as transvae_cli  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "benchmarks"
RUNS = REPO / "runs" / "bench"  # gitignored: trained weights never go into git
DATA_ENV = "TRANSVAE_BENCH_DATA"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is the script's first docstring paragraph."""
    raw = argparse.RawDescriptionHelpFormatter
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=raw)


def experiment_args(p: argparse.ArgumentParser, runs: str, quick: str, train: bool = True) -> None:
    """The options every experiment shares: data, seeds, run folders, output, the quick mode,
    and for those that train: parallel single-threaded runs and resuming."""
    p.add_argument(
        "--data", type=Path, default=None, help=f"BSDS500 root with train/ test/ val/ (default: ${DATA_ENV})"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    p.add_argument("--runs-dir", type=Path, default=None, help=f"run folders (default {runs})")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNGs written next to it)")
    p.add_argument("--quick", action="store_true", help=quick)
    if train:
        p.add_argument(
            "--workers", type=int, default=os.cpu_count() or 1, help="single-threaded runs at once"
        )
        p.add_argument(
            "--resume", action="store_true", help="continue interrupted runs, extend finished ones"
        )


def data_root(args: argparse.Namespace, needs: Sequence[str] = ("train", "test", "val")) -> Path:
    """``--data`` or ``$TRANSVAE_BENCH_DATA``, with the sub-folders ``needs``; exits in one line."""
    root = args.data or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    folders = "/ ".join(needs) + "/"
    if root is None:
        sys.exit(f"error: no data: pass --data BSDS500_ROOT or set {DATA_ENV} (a folder with {folders})")
    if missing := [n for n in needs if not (root / n).is_dir()]:
        sys.exit(f"error: --data {root} has no {'/, '.join(missing)}/ folder (BSDS500 has {folders})")
    return root


def cpu_recipe(name: str, data: Path, crop: int, seed: int, steps: int, batch: int, lr: float, warmup: int,
               eval_every: int, val_images: int, **more: Any) -> dict[str, Any]:  # fmt: skip
    """The Trainer settings the CPU experiments share: BSDS500 train + test, validation on val/,
    LDM's crops, L1 + KL (``more`` may add LPIPS), no EMA, one process with no loader workers,
    a checkpoint at every validation, no image grids, TensorBoard or progress bar."""
    return {
        "model.name": name, "data.train": [str(data / "train"), str(data / "test")], "data.val": [str(data / "val")],
        "data.resolution": crop, "data.scale": [1.0, 1.0], "data.num_workers": 0, "data.val_images": val_images,
        "optim.lr": lr, "optim.warmup_steps": warmup, "loss.lpips_weight": 0.0, "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0, "train.batch_size": batch, "train.max_steps": steps, "train.seed": seed,
        "train.ema": False, "train.device": "cpu", "train.checkpoint_every": eval_every,
        "log.every": 10 if eval_every % 10 == 0 else 1, "log.val_every": eval_every, "log.image_every": 10**9,
        "log.tensorboard": False, "log.progress": False, **more,
    }  # fmt: skip


def slug(label: str) -> str:
    """Filesystem-safe name for a model label: ``"+ SeqConv encoder"`` -> ``"seqconv-encoder"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min, max and count."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=statistics.fmean(values), std=sd, min=min(values), max=max(values), n=len(values))


def line_style(label: str, labels: list[str]) -> dict:
    """TransVAE black and thick (its variants black, dashed), CNN-VAE red, the design-ladder rungs
    in between coloured from ViT-VAE (dark blue) to the last rung (yellow)."""
    import matplotlib.pyplot as plt

    is_transvae = lambda x: x == "TransVAE" or "(= TransVAE)" in x  # noqa: E731
    if is_transvae(label):
        return dict(color="black", lw=2.2)
    if "TransVAE" in label:
        variants = [x for x in labels if "TransVAE" in x and not is_transvae(x)]
        return dict(color="black", lw=1.4, ls=("--", ":", "-.")[variants.index(label) % 3])
    if label.startswith("CNN-VAE"):
        return dict(color="tab:red", lw=2.2)
    rungs = [x for x in labels if not x.startswith("CNN-VAE") and "TransVAE" not in x]
    return dict(color=plt.cm.viridis(rungs.index(label) / max(len(rungs) - 1, 1)), lw=1.2)

"""``transvae quickstart``: train a mini TransVAE on a CPU in about five minutes, offline.

The data are colour photos that ship inside the dependencies' wheels, so nothing is downloaded:
for training scikit-image's astronaut, coffee, Hubble deep field, immunohistochemistry, both
motorcycle views, retina and rocket, scikit-learn's china and flower and matplotlib's
grace_hopper; scikit-image's chelsea the cat held out for validation. Every photo is resized to a
shorter side of 192 px; the held-out one is cut into tiles of the crop size. The loss is L1 + KL
only (LPIPS, VF and GAN need pretrained networks); the optimizer is Muon (AdamW for the biases, norm
gains and the RGB output conv), which gets about twice as far as AdamW in the same minutes
(docs/training.md, "Muon"). It writes, under ``--out``:

- ``data/train``, ``data/val``: the photos (train resized; val as tiles),
- ``recon_start.png`` / ``recon_end.png``: held-out tiles, input | reconstruction, before and after,
  and ``before_after.png``: both, one above the other,
- ``metrics.json``: PSNR / SSIM on the held-out tiles at the start and the end
  (``held_out_psnr`` is the final one),
- ``run/``: the full training run folder (``run/model`` loads with ``transvae.from_pretrained``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from .common import UserError

# Colour photographs that ship inside the wheels of the dependencies, so nothing is downloaded:
# scikit-image's (the synthetic images and the logo left out), scikit-learn's two sample photos and
# matplotlib's portrait. The cat is held out ("chelsea"; skimage's "cat" is the same photo and is
# therefore not trained on).
TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "retina",
    "rocket",
    "china",  # scikit-learn
    "flower",  # scikit-learn
    "grace_hopper",  # matplotlib
)
VAL_PHOTOS = ("chelsea",)
PHOTO_SIDE = 192  # shorter side of every photo; the held-out one is 192 x 288, tiled exactly by 32/64/96
# The training photos hold few colours: without these the model fails on saturated greens and yellows and
# pulls every image's contrast towards a learned typical value (docs/training.md, "Colour fidelity").
COLOUR_AUGMENT = {"data.hue": 0.5, "data.channel_shuffle": True, "data.contrast": 0.5, "data.saturation": 0.5}
# The cap on the steps fitted to --minutes: 5 idle minutes on 2 cores fit ~1300-1650 with Muon; a faster
# machine trains further, up to this (8000 AdamW steps reached CIEDE2000 2.65-2.75, docs/training.md)
STEPS = 8000
# Muon's step for the weight matrices and conv kernels (optim.muon_lr); --lr is AdamW's, for the rest
MUON_LR = 0.02
# The posterior's log-variance at the start: std e^-5 instead of ~1 (its mean's spread is ~0.3),
# so the decoder does not spend its first few hundred steps on noise (docs/training.md)
LOGVAR_INIT = -10.0
MARKER = ".transvae-quickstart"  # written into --out: a folder without it is never replaced


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="train a mini TransVAE on bundled photos in ~5 min on a CPU (no downloads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help=f"maximum optimizer steps (default {STEPS}; with --minutes, as many as fit in the budget)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="wall-clock budget for training (default 5): the steps are fitted to it so that the LR "
        "decay ends within it (train.fit_to_budget); 0 = no budget, exactly --steps steps",
    )
    p.add_argument(
        "--model",
        default="transvae-mini-f8d16",
        help="model to train (default transvae-mini-f8d16: the best held-out PSNR in 5 CPU minutes, docs/training.md)",
    )
    p.add_argument("--resolution", type=int, default=64, help="crop size (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument(
        "--optimizer",
        choices=("muon", "adamw"),
        default="muon",
        help="muon (default): Muon for the weight matrices and conv kernels at optim.muon_lr "
        f"({MUON_LR:g}), AdamW at --lr for the rest; adamw: AdamW at --lr for every weight, as the "
        "paper (docs/training.md, 'Muon')",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="AdamW's peak learning rate (with --optimizer muon: for the biases, norm gains and the RGB "
        "output conv), cosine-decayed to 0 at the last step as Muon's (default 1e-3)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=0,
        help="also validate on the held-out tiles every N steps (metrics.json 'curve'; default: start and end only)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (default 0: the cores not busy when it starts; on an idle 2-core machine "
        "2 threads take 0.16 s per step of the default model, 1 takes 0.26)",
    )
    p.add_argument(
        "--colour-augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random hue, channel order, contrast and saturation on the training crops (default on: "
        "the training photos hold too few colours, docs/training.md 'Colour fidelity')",
    )
    p.epilog = (
        "Any training config key can be set too, with --section.key=value (e.g. --train.ema_decay=0.999); "
        "`transvae train --list-keys` lists them."
    )
    p.set_defaults(func=run, accepts_extra=True)


def _photo(name: str):
    """One of the bundled photos (``TRAIN_PHOTOS``, ``VAL_PHOTOS``) as an RGB PIL image (no download)."""
    import numpy as np
    from PIL import Image

    if name in ("china", "flower"):  # scikit-learn's sample images (sklearn/datasets/images)
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    if name == "grace_hopper":  # matplotlib's sample data (mpl-data/sample_data)
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return Image.open(f).convert("RGB")
    import skimage.data

    if name.startswith("motorcycle_"):  # the stereo pair: (left, right, disparity)
        a = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    else:
        a = getattr(skimage.data, name)()
    return Image.fromarray(np.asarray(a)[..., :3])


def prepare_data(root: Path, resolution: int) -> tuple[Path, Path]:
    """Write the bundled photos as PNGs (shorter side ``PHOTO_SIDE``): train photos whole,
    held-out photos cut into ``resolution`` x ``resolution`` tiles."""
    from ..data.transforms import resize_center_crop, resize_to_cover

    train, val = root / "train", root / "val"
    for d in (train, val):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for name in TRAIN_PHOTOS:
        resize_to_cover(_photo(name), PHOTO_SIDE, PHOTO_SIDE).save(train / f"{name}.png")
    for name in VAL_PHOTOS:
        im, _ = resize_center_crop(_photo(name), (PHOTO_SIDE, 3 * PHOTO_SIDE // 2))  # a fixed 192 x 288
        w, h = im.size
        for i in range(h // resolution):
            for j in range(w // resolution):
                box = (j * resolution, i * resolution, (j + 1) * resolution, (i + 1) * resolution)
                im.crop(box).save(val / f"{name}_{i}_{j}.png")
    return train, val


def trainer_overrides(args: argparse.Namespace, train: Path, val: Path) -> dict:
    """The Trainer configuration of the quick start (dotted keys for ``build_config``)."""
    return {
        "model.name": args.model,
        "data.train": [str(train)],
        "data.val": [str(val)],
        "data.resolution": args.resolution,
        "data.scale": [1.0, 1.5],
        "data.num_workers": 0,  # with both cores computing, a worker only takes time from them
        "data.cache_mb": 64,  # the 11 photos take 1.5 MiB decoded: no PNG decode at every crop
        "train.batch_size": args.batch_size,
        "train.max_steps": args.steps,
        "train.max_minutes": args.minutes,
        "train.fit_to_budget": args.minutes > 0,  # the cosine decay ends within the budget
        "train.checkpoint_every": 100,
        "train.device": args.device,
        "train.ema_decay": 0.99,
        "optim.optimizer": args.optimizer,
        "optim.muon_lr": MUON_LR,
        "optim.lr": args.lr,
        "optim.warmup_steps": 20,
        # Adam's usual betas and a cosine decay to 0 at --steps: with the GAN recipe's (0.5, 0.9) and
        # a constant LR the last batches' random hues left a tint of up to 17 levels (docs/training.md)
        "optim.betas": [0.9, 0.99],
        "optim.decay": "cosine",
        "loss.lpips_weight": 0.0,
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
        "log.every": 10,
        "log.image_every": 10**9,
        "log.val_every": args.val_every or 10**9,
        "log.grid_images": 12,
        **(COLOUR_AUGMENT if args.colour_augment else {}),
        **({"model.logvar_init": LOGVAR_INIT} if _has_logvar(args.model) else {}),
    }


def _has_logvar(name: str) -> bool:
    """Whether the model ``name`` has a posterior log-variance to initialise (not a DC-AE); False
    for an unknown name or a generator, which the Trainer then reports."""
    from ..models.registry import create_model

    try:
        model = create_model(name, device="meta")
    except (KeyError, ValueError):
        return False
    return getattr(model, "logvar_layer", lambda: None)() is not None


def before_after(start: Path, end: Path, out: Path) -> None:
    """``start`` above ``end`` (the Trainer's input | reconstruction grids) with a label on each.

    Written as a plain RGB PNG (~0.4 MB for the default 12 tiles): the 256-colour palette it used
    to be reduced to moved the reconstructions' colours by CIEDE2000 2.6 on average (p95 6.7),
    as much as the colour error it is there to show (docs/training.md, "Colour fidelity")."""
    from PIL import Image, ImageDraw

    a, b = Image.open(start).convert("RGB"), Image.open(end).convert("RGB")
    label = 14
    grid = Image.new("RGB", (max(a.width, b.width), a.height + b.height + 2 * label), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((2, 1), "before training: input | reconstruction", fill="black")
    grid.paste(a, (0, label))
    draw.text((2, a.height + label + 1), "after training: input | reconstruction", fill="black")
    grid.paste(b, (0, a.height + 2 * label))
    grid.save(out, optimize=True)


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores are in use right now, from two reads of ``/proc/stat`` ``seconds`` apart
    (Linux); None where there is no ``/proc/stat``. Unlike the load average, it does not count a
    job that ended a minute ago."""
    import os

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(v), v[3] + v[4]

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    if total <= 0:
        return None
    return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1)


def cpu_threads(requested: int = 0) -> int:
    """``requested`` if > 0, else the CPU cores available to this process minus the busy ones
    (``busy_cores``, or the 1-minute load average where it cannot be read), at least 1: on a busy
    machine more threads than free cores make OpenMP's workers wait for each other (measured on
    2 loaded cores: 48 steps in 5 minutes with 2 threads, 392 with 1; docs/training.md)."""
    import os

    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def run(args: argparse.Namespace) -> int:
    import transvae

    from ..evaluation.colour import colour_fidelity

    if args.resolution % 16 or args.resolution <= 0:
        raise UserError(f"--resolution must be a positive multiple of 16, got {args.resolution}")
    if args.val_every < 0:
        raise UserError(f"--val-every must be >= 0, got {args.val_every}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    threads = cpu_threads(args.threads)
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and any(out.iterdir()) and not (out / MARKER).is_file()):
        raise UserError(f"--out {out} is not empty and not a quick start's folder: give a new folder")
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    train, val = prepare_data(out / "data", args.resolution)
    run_dir = out / "run"
    if run_dir.exists():  # the previous quick start's run, in a folder it made
        shutil.rmtree(run_dir)
    summary = _fit(args, train, val, run_dir, threads)
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    shutil.copyfile(samples[0], out / "recon_start.png")
    shutil.copyfile(samples[-1], out / "recon_end.png")
    before_after(out / "recon_start.png", out / "recon_end.png", out / "before_after.png")
    colour = colour_fidelity(transvae.from_pretrained(run_dir / "model"), val, args.resolution)
    metrics = quickstart_metrics(args, summary, threads, round(time.time() - t0, 1), colour)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"held-out PSNR {metrics['psnr_start']:.2f} -> {metrics['psnr_end']:.2f} dB, "
        f"SSIM {metrics['ssim_start']:.3f} -> {metrics['ssim_end']:.3f} after {summary['step']} steps "
        f"({summary['wall_seconds']:.0f} s)"
    )
    print(
        f"colour: held-out CIEDE2000 {metrics['held_out_ciede2000_mean']:.2f} (p95 {metrics['held_out_ciede2000_p95']:.2f}, "
        f"{metrics['held_out_ciede2000_lowpass']:.2f} at 1/4 scale), "
        "contrast R/G/B "
        + "/".join(f"{v:.2f}" for v in metrics["held_out_contrast_ratio"])
        + f"; colour chart CIEDE2000 {metrics['chart_ciede2000_mean']:.2f}"
    )
    print(f"grids: {out / 'before_after.png'} ({out / 'recon_start.png'}, {out / 'recon_end.png'})")
    print(f"model: {run_dir / 'model'}")
    return summary["exit_status"]  # 143 after SIGTERM, as `transvae train`


def _fit(args: argparse.Namespace, train: Path, val: Path, run_dir: Path, threads: int) -> dict:
    """Train with the shipped Trainer on ``threads`` CPU threads; returns its summary."""
    import torch

    from ..training import Trainer, TrainingError, build_config

    overrides = trainer_overrides(args, train, val)
    try:
        cfg = build_config(overrides=overrides, extra=list(getattr(args, "extra", None) or []))
        budget = f"{args.steps} steps"
        if args.minutes > 0:
            budget = f"{args.minutes:g} min (as many of at most {args.steps} steps as fit)"
        print(
            f"quickstart: training {args.model} on {len(TRAIN_PHOTOS)} bundled photos "
            f"(L1 + KL, {args.optimizer}, no downloads) for {budget}, {threads} CPU thread(s)"
        )
        trainer = Trainer(cfg, run_dir)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return trainer.fit()
        finally:
            torch.set_num_threads(before)  # the caller's setting (quickstart may run in-process)
    except (TrainingError, ValueError, KeyError) as e:
        raise UserError(str(e)) from e


def quickstart_metrics(
    args: argparse.Namespace, summary: dict, threads: int, seconds: float, colour: dict
) -> dict:
    """``metrics.json``: held-out PSNR / SSIM before and after, the colour figures, the curve."""
    hist = summary["history"]
    start, end = hist[0], hist[-1]
    held, chart = colour["held_out"], colour["chart"]
    return {
        "model": args.model,
        "optimizer": args.optimizer,
        "threads": threads,
        "colour_augment": bool(args.colour_augment),
        "steps": summary["step"],
        "train_seconds": summary["wall_seconds"],
        "total_seconds": seconds,
        "held_out_tiles": int(start["val/images"]),
        "psnr_start": round(start["val/psnr"], 3),
        "psnr_end": round(end["val/psnr"], 3),
        "held_out_psnr": round(end["val/psnr"], 3),
        "ssim_start": round(start["val/ssim"], 4),
        "ssim_end": round(end["val/ssim"], 4),
        "held_out_ciede2000_mean": round(held["ciede2000_mean"], 3),
        "held_out_ciede2000_p95": round(held["ciede2000_p95"], 3),
        "held_out_ciede2000_lowpass": round(held["ciede2000_lowpass"], 3),
        "held_out_ciede2000_luma_only": round(held["ciede2000_luma_only"], 3),
        "held_out_ciede2000_chroma_only": round(held["ciede2000_chroma_only"], 3),
        "held_out_contrast_ratio": [round(v, 3) for v in held["contrast_ratio"]],
        "held_out_mean_shift": [round(v, 2) for v in held["mean_shift"]],
        "held_out_lab_shift": [round(v, 2) for v in held["lab_shift"]],
        "chart_ciede2000_mean": round(chart["ciede2000_mean"], 3),
        "chart_ciede2000_p95": round(chart["ciede2000_p95"], 3),
        "chart_ciede2000_lowpass": round(chart["ciede2000_lowpass"], 3),
        "chart_psnr": round(chart["psnr"], 3),
        "curve": [[h["step"], round(h["val/psnr"], 3)] for h in hist],
    }

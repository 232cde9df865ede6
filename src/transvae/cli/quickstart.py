"""``transvae quickstart``: train a mini TransVAE on a CPU in about five minutes, offline.

The data are colour photos that ship inside scikit-image (astronaut, coffee, rocket, Hubble
deep field, immunohistochemistry for training; chelsea the cat held out for validation), so
nothing is downloaded. The loss is L1 + KL only (LPIPS, VF and GAN need pretrained networks).
It writes, under ``--out``:

- ``data/train``, ``data/val``: the photos (train at 160 px shorter side; val as 64x64 tiles),
- ``recon_start.png`` / ``recon_end.png``: held-out tiles, input | reconstruction, before and after,
- ``metrics.json``: PSNR / SSIM on the held-out tiles at the start and the end,
- ``run/``: the full training run folder (``run/model`` loads with ``transvae.from_pretrained``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from .common import UserError

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
VAL_PHOTOS = ("chelsea",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="train a mini TransVAE on scikit-image's photos in ~5 min on a CPU (no downloads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--steps", type=int, default=1000, help="maximum optimizer steps (default 1000)")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget for training (default 5)")
    p.add_argument(
        "--model", default="transvae-mini-f16d32", help="model to train (default transvae-mini-f16d32)"
    )
    p.add_argument("--resolution", type=int, default=64, help="crop size (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="learning rate (default 1e-3: short run, small model)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run)


def prepare_data(root: Path, resolution: int) -> tuple[Path, Path]:
    """Write the bundled photos as PNGs: train photos resized, held-out photos cut into tiles."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from ..data.transforms import resize_to_cover

    train, val = root / "train", root / "val"
    for d in (train, val):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    side = int(2.5 * resolution)  # training crops see about 1/6 of a photo's area
    for name in TRAIN_PHOTOS:
        im = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3])
        resize_to_cover(im, side, side).save(train / f"{name}.png")
    for name in VAL_PHOTOS:
        im = resize_to_cover(Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3]), side, side)
        w, h = im.size
        for i in range(h // resolution):
            for j in range(w // resolution):
                box = (j * resolution, i * resolution, (j + 1) * resolution, (i + 1) * resolution)
                im.crop(box).save(val / f"{name}_{i}_{j}.png")
    return train, val


def run(args: argparse.Namespace) -> int:
    from ..training import Trainer, TrainingError, build_config

    if args.resolution % 16 or args.resolution <= 0:
        raise UserError(f"--resolution must be a positive multiple of 16, got {args.resolution}")
    out = Path(args.out)
    t0 = time.time()
    train, val = prepare_data(out / "data", args.resolution)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    overrides = {
        "model.name": args.model,
        "data.train": [str(train)],
        "data.val": [str(val)],
        "data.resolution": args.resolution,
        "data.scale": [1.0, 1.5],
        "data.num_workers": 0,  # the photos are tiny PNGs; workers only cost memory here
        "train.batch_size": args.batch_size,
        "train.max_steps": args.steps,
        "train.max_minutes": args.minutes,
        "train.checkpoint_every": 100,
        "train.device": args.device,
        "train.ema_decay": 0.99,
        "optim.lr": args.lr,
        "optim.warmup_steps": 20,
        "loss.lpips_weight": 0.0,
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
        "log.every": 10,
        "log.image_every": 10**9,
        "log.val_every": 10**9,
        "log.grid_images": 12,
    }
    try:
        cfg = build_config(overrides=overrides)
        print(
            f"quickstart: training {args.model} on {len(TRAIN_PHOTOS)} scikit-image photos "
            f"(L1 + KL, no downloads) for up to {args.minutes:g} min / {args.steps} steps"
        )
        trainer = Trainer(cfg, run_dir)
        summary = trainer.fit()
    except (TrainingError, ValueError, KeyError) as e:
        raise UserError(str(e)) from e
    hist = summary["history"]
    start, end = hist[0], hist[-1]
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    shutil.copyfile(samples[0], out / "recon_start.png")
    shutil.copyfile(samples[-1], out / "recon_end.png")
    metrics = {
        "model": args.model,
        "steps": summary["step"],
        "train_seconds": summary["wall_seconds"],
        "total_seconds": round(time.time() - t0, 1),
        "held_out_tiles": int(start["val/images"]),
        "psnr_start": round(start["val/psnr"], 3),
        "psnr_end": round(end["val/psnr"], 3),
        "ssim_start": round(start["val/ssim"], 4),
        "ssim_end": round(end["val/ssim"], 4),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"held-out PSNR {metrics['psnr_start']:.2f} -> {metrics['psnr_end']:.2f} dB, "
        f"SSIM {metrics['ssim_start']:.3f} -> {metrics['ssim_end']:.3f} after {summary['step']} steps "
        f"({summary['wall_seconds']:.0f} s)"
    )
    print(f"grids: {out / 'recon_start.png'}  {out / 'recon_end.png'}   model: {run_dir / 'model'}")
    return summary["exit_status"]  # 143 after SIGTERM, as `transvae train`

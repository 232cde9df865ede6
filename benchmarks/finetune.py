"""Fine-tuning an imported tokenizer on new data without breaking its latent space (issue 23;
docs/training.md, "Fine-tuning a tokenizer you already use").

    python benchmarks/finetune.py --data ../shared/data/bsds500 --out runs/bench/finetune \
        --json docs/benchmarks/finetune.json

Every step is a shipped command (``transvae convert``, ``transvae train`` with the shipped recipes,
``transvae evaluate``), as a user runs them:

1. "the tokenizer you already use": a diffusers ``AutoencoderKL`` in SD's structure (narrowed to
   CPU size), imported with ``transvae convert`` and trained briefly on other photos
   (scikit-image's, ``transvae train --init``), standing in for a published VAE;
2. ``configs/finetune-decoder.yaml`` on ``DATA/train`` (+ ``DATA/test``): the decoder learns the
   new photos, the encoder is frozen (latent drift exactly 0);
3. ``configs/finetune-full.yaml``: encoder and decoder, held by the latent-anchor loss, stopped by
   ``train.max_latent_drift``;
4. ``transvae evaluate`` of the three on ``DATA/val`` (PSNR / SSIM at the training size).

Offline: LPIPS, VF and the GAN need pretrained or extra networks and are off except the GAN of
the decoder recipe (its discriminator is trained from scratch). Resumable: a finished step is
skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SD_LIKE = dict(  # SD 1.x's AutoencoderKL structure, narrowed: 4 latent channels, f8, quant convs
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 64, 64, 64],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
    scaling_factor=0.18215,
)


def cli(*argv) -> None:
    from transvae.cli import main

    print("$ transvae " + " ".join(map(str, argv)), flush=True)
    rc = main([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"step failed with exit status {rc}: transvae {' '.join(map(str, argv))}")


def common(size: int) -> list[str]:
    return ["--resolution", size, "--workers", "0", "--log.progress=false", "--log.tensorboard=false"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder with train/, test/ and val/ (BSDS500)")
    ap.add_argument("--out", default="runs/bench/finetune")
    ap.add_argument("--json", default="docs/benchmarks/finetune.json")
    ap.add_argument("--size", type=int, default=64, help="training / evaluation crop size")
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=600, help="steps of each fine-tune")
    ap.add_argument("--lr", type=float, default=5e-4, help="LR of the pretraining and the decoder fine-tune")
    ap.add_argument("--full-lr", type=float, default=1e-4, help="LR of the full fine-tune")
    ap.add_argument("--anchor-weight", type=float, default=1.0, help="loss.anchor_weight of the full fine-tune")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from diffusers import AutoencoderKL

    from transvae.cli.quickstart import prepare_data

    t0, out, data = time.time(), Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    size, seed = args.size, [f"--train.seed={args.seed}"]
    base = common(size)
    if not (out / "sd_like" / "config.json").is_file():
        torch.manual_seed(args.seed)
        AutoencoderKL(**SD_LIKE).save_pretrained(out / "sd_like")
    if not (out / "converted" / "config.json").is_file():
        cli("convert", out / "sd_like", "--out", out / "converted")
    other, _ = prepare_data(out / "other_photos", size)
    steps = [
        ("pretrained", ["--init", out / "converted", "--data", other, "--max-steps", args.pretrain_steps,
                        "--batch-size", 8, f"--optim.lr={args.lr}", "--optim.warmup_steps=20",
                        "--loss.lpips_weight=0", "--loss.vf_weight=0", "--loss.gan_weight=0"]),
        ("decoder", ["--config", ROOT / "configs/finetune-decoder.yaml", "--init", out / "pretrained" / "model",
                     "--max-steps", args.steps, "--batch-size", 8, f"--optim.lr={args.lr}",
                     "--optim.warmup_steps=20", "--loss.lpips_weight=0", "--loss.disc_ndf=16"]),
        ("full", ["--config", ROOT / "configs/finetune-full.yaml", "--init", out / "pretrained" / "model",
                  "--max-steps", args.steps, "--batch-size", 8, f"--optim.lr={args.full_lr}",
                  "--optim.warmup_steps=20", "--loss.lpips_weight=0", f"--loss.anchor_weight={args.anchor_weight}"]),
    ]  # fmt: skip
    val = ["--val-data", data / "val", "--data.val_images=100", f"--log.val_every={max(args.steps // 4, 1)}"]
    for name, argv_ in steps:
        if (out / name / "summary.json").is_file():
            continue
        train = [] if name == "pretrained" else ["--data", data / "train", "--data", data / "test"]
        cli("train", "--out", out / name, *argv_, *train, *val, *base, *seed)
    rows = {}
    for name in ("pretrained", "decoder", "full"):
        ev = out / "eval" / name
        if not (ev / "results.json").is_file():
            shutil.rmtree(ev, ignore_errors=True)
            cli("evaluate", "--model", out / name, "--data", data / "val", "--out", ev, "--resolution", size,
                "--metrics", "psnr", "ssim", "--quiet", "--num-workers", "0")  # fmt: skip
        res = json.loads((ev / "results.json").read_text())["results"][0]
        hist = json.loads((out / name / "summary.json").read_text())["history"]
        rows[name] = {
            "val_psnr": res["psnr"],
            "val_ssim": res["ssim"],
            "drift_rel_l2": hist[-1].get("val/drift_rel_l2"),
            "drift_cos": hist[-1].get("val/drift_cos"),
            "drift_channel_shift": hist[-1].get("val/drift_channel_shift"),
            "history": hist,
        }
        print(f"{name:<10} val PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f}, drift {rows[name]['drift_rel_l2']}")
    payload = {
        "command": "python benchmarks/finetune.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": vars(args),
        "sd_like_config": SD_LIKE,
        "rows": rows,
        "wall_seconds": round(time.time() - t0, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

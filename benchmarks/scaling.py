"""Scaling at the scale this machine allows (paper Section 3.4), trained by the product's Trainer.

Three TransVAE sizes -- nano (0.3M), mini (1.8M) and "wide" (mini with 2x wider Transformer
stages) -- trained with the same recipe and budget (steps, batch, crops, seed, L1 + KL, AdamW
with the recipe's betas) on BSDS500 at 64 px; validation PSNR against parameter count (the
Trainer's validation curve, and ``transvae evaluate`` of the final weights). The paper's claim
is that validation loss improves steadily with size; the models here are tiny and briefly
trained. Runs are Trainer run folders (resumable with ``--resume``).

    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --resume
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    REPO,
    evaluate_cli,
    has_checkpoint,
    machine_info,
    markdown_table,
    read_run,
    register_variant,
    save_figure,
    subplots,
    train_run,
    write_json,
)

SIZES: list[tuple[str, str, dict]] = [
    ("nano", "transvae-nano-f16d32", {}),
    ("mini", "transvae-mini-f16d32", {}),
    ("wide", "transvae-mini-f16d32", {"dims": (32, 32, 128, 128, 256)}),
]
RUNS = REPO / "runs" / "bench" / "scaling"  # gitignored


def plot(results: list[dict], path: Path) -> None:
    fig, (a, b) = subplots(1, 2, figsize=(10, 3.8), dpi=80)
    params = [r["params"] / 1e6 for r in results]
    a.plot(params, [r["psnr"] for r in results], marker="o")
    for r, x in zip(results, params, strict=True):
        a.annotate(r["label"], (x, r["psnr"]), fontsize=8)
    a.set_xscale("log")
    a.set_xlabel("parameters (M)")
    a.set_ylabel("final validation PSNR (dB, transvae evaluate)")
    for r in results:
        b.plot(
            [p["step"] for p in r["curve"]],
            [p["psnr"] for p in r["curve"]],
            label=f"{r['label']} ({r['params'] / 1e6:.1f}M)",
        )
    b.set_xlabel("training step")
    b.set_ylabel("validation PSNR (dB, Trainer)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sizes", nargs="+", choices=[s for s, _, _ in SIZES], default=[s for s, _, _ in SIZES])
    p.add_argument("--steps", type=int, default=None, help="default 250")
    p.add_argument("--batch-size", type=int, default=None, help="default 16")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=None, help="default 50")
    p.add_argument("--val-limit", type=int, default=None, help="val photos (default all 100)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue / extend existing runs")
    p.add_argument("--runs-dir", type=Path, default=None, help=f"default {RUNS.relative_to(REPO)}")
    p.add_argument("--quick", action="store_true", help="4 steps, batch 2, 4 val photos")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, batch, every, limit = (4, 2, 2, 4) if args.quick else (250, 16, 50, 0)
    steps, batch = args.steps or steps, args.batch_size or batch
    every, limit = args.eval_every or every, args.val_limit if args.val_limit is not None else limit
    runs = args.runs_dir or (RUNS.with_name("scaling_quick") if args.quick else RUNS)
    out = args.out or DOCS_DIR / ("scaling_quick.json" if args.quick else "scaling.json")

    from transvae.models import create_model

    results = []
    for label, base, o in (s for s in SIZES if s[0] in args.sizes):
        name = register_variant(f"bench-scaling-{label}", base, o)
        run_dir = runs / label
        if (run_dir / "config.json").exists() and not args.resume:
            sys.exit(f"error: {run_dir} exists; pass --resume to continue or extend it, or --runs-dir")
        overrides = {
            "model.name": name,
            "data.train": [str(args.data / "train"), str(args.data / "test")],
            "data.val": [str(args.data / "val")],
            "data.resolution": args.resolution,
            "data.num_workers": 0,
            "data.val_images": limit,
            "optim.lr": args.lr,
            "optim.warmup_steps": max(1, steps // 10),
            "loss.lpips_weight": 0.0,
            "loss.vf_weight": 0.0,
            "loss.gan_weight": 0.0,
            "train.batch_size": batch,
            "train.max_steps": steps,
            "train.seed": args.seed,
            "train.ema": False,
            "train.checkpoint_every": every,
            "log.every": 1 if every < 10 else 10,
            "log.val_every": every,
            "log.image_every": 10**9,
            "log.tensorboard": False,
            "log.progress": False,
        }
        params = create_model(name, device="meta").num_parameters()
        print(f"\n== {label}: {base} {o} {params / 1e6:.2f}M params", flush=True)
        summary = train_run(run_dir, overrides, resume=has_checkpoint(run_dir))
        run = read_run(run_dir)
        ev = evaluate_cli(
            run_dir / "model", args.data / "val", run_dir / "eval", [args.resolution], limit=limit or None
        )
        res = ev["results"][0]
        print(
            f"   {summary['status']} at step {summary['step']}; transvae evaluate PSNR {res['psnr']:.2f}",
            flush=True,
        )
        results.append(dict(label=label, base=base, overrides={k: list(v) if isinstance(v, tuple) else v for k, v in o.items()},
                            params=params, step=run["step"], curve=run["curve"], s_per_step=run["s_per_step"],
                            psnr=res["psnr"], ssim=res["ssim"], eval_command=ev["run"]["command"]))  # fmt: skip
    write_json(
        out,
        dict(
            benchmark="scaling",
            quick=args.quick,
            command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            settings=dict(
                steps=steps, batch_size=batch, lr=args.lr, resolution=args.resolution, eval_every=every
            ),
            machine=machine_info(torch.device("cpu")),
            results=results,
        ),
    )
    plot(results, out.with_suffix(".png"))
    rows = [dict(size=r["label"], params_M=r["params"] / 1e6, steps=r["step"], final_psnr=r["psnr"],
                 final_ssim=r["ssim"], s_per_step=r["s_per_step"]) for r in results]  # fmt: skip
    print(
        "\n" + markdown_table(rows, ["size", "params_M", "steps", "final_psnr", "final_ssim", "s_per_step"])
    )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

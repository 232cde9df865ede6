"""Scaling at the scale this machine allows (paper Section 3.4).

Three TransVAE sizes -- nano (0.3M), mini (2.9M) and "wide" (mini with wider Transformer
stages, 10.5M) -- trained with the same recipe and budget (steps, batch, crops, seed, L1 + KL)
on BSDS500 64x64 crops; validation PSNR against parameter count. The paper's claim is that
validation loss improves steadily with size; the models here are tiny and briefly trained.

    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    TrainSettings,
    center_crops,
    load_photos,
    machine_info,
    markdown_table,
    resolve_device,
    train_model,
    write_json,
)

SIZES: list[tuple[str, str, dict]] = [
    ("nano", "transvae-nano-f16d32", {}),
    ("mini", "transvae-mini-f16d32", {}),
    ("wide", "transvae-mini-f16d32", {"dims": (32, 64, 128, 256, 256)}),
]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    params = [r["params"] / 1e6 for r in results]
    a.plot(params, [r["curve"][-1]["psnr"] for r in results], marker="o")
    for r, x in zip(results, params, strict=True):
        a.annotate(r["label"], (x, r["curve"][-1]["psnr"]), fontsize=8)
    a.set_xscale("log")
    a.set_xlabel("parameters (M)")
    a.set_ylabel("final validation PSNR (dB)")
    for r in results:
        b.plot(
            [p["step"] for p in r["curve"]],
            [p["psnr"] for p in r["curve"]],
            label=f"{r['label']} ({r['params'] / 1e6:.1f}M)",
        )
    b.set_xlabel("training step")
    b.set_ylabel("validation PSNR (dB)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sizes", nargs="+", choices=[s for s, _, _ in SIZES], default=[s for s, _, _ in SIZES])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="20 steps, batch 4, 10 val photos")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    base = (
        TrainSettings(steps=20, batch_size=4, eval_every=10, warmup=5)
        if args.quick
        else TrainSettings(steps=250, batch_size=16, eval_every=25, warmup=25)
    )
    over = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every}
    settings = dataclasses.replace(base, seed=args.seed, **{k: v for k, v in over.items() if v is not None})
    device = resolve_device(args.device)
    out = args.out or DOCS_DIR / ("scaling_quick.json" if args.quick else "scaling.json")
    train = load_photos([args.data / "train", args.data / "test"])
    val, _ = center_crops(
        load_photos([args.data / "val"], limit=args.val_limit or (10 if args.quick else None)), settings.crop
    )

    from transvae.models import create_model

    results = []
    for label, name, o in (s for s in SIZES if s[0] in args.sizes):
        torch.manual_seed(settings.seed)
        model = create_model(name, device=device, **o)
        print(f"\n== {label}: {name} {o} {model.num_parameters() / 1e6:.2f}M params", flush=True)
        curve = train_model(
            model,
            train,
            val,
            settings,
            lambda s, r: print(f"  step {s:5d}  {r['time_s']:7.1f}s  PSNR {r['psnr']:.2f}", flush=True),
        )
        results.append(
            dict(
                label=label,
                base=name,
                overrides={k: list(v) if isinstance(v, tuple) else v for k, v in o.items()},
                params=model.num_parameters(),
                curve=curve,
            )
        )
    write_json(
        out,
        dict(
            benchmark="scaling",
            quick=args.quick,
            command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            settings=dataclasses.asdict(settings),
            machine=machine_info(device),
            results=results,
        ),
    )
    plot(results, out.with_suffix(".png"))
    rows = [
        dict(
            size=r["label"],
            params_M=r["params"] / 1e6,
            final_psnr=r["curve"][-1]["psnr"],
            final_l1=r["curve"][-1]["l1"],
            train_s=r["curve"][-1]["time_s"],
        )
        for r in results
    ]
    print("\n" + markdown_table(rows, ["size", "params_M", "final_psnr", "final_l1", "train_s"]))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

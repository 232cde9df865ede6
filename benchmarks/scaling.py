"""Scaling at the scale this machine allows (paper Section 3.4), trained by the product's Trainer.

Three TransVAE sizes -- nano (0.3M), mini (1.8M) and "wide" (mini with 2x wider Transformer
stages) -- trained with the same recipe and budget (L1 + KL, AdamW betas (0.5, 0.9), batch,
64 px crops of BSDS500 train + test) for every seed; validation PSNR against parameter count
(the Trainer's curves, and ``transvae evaluate`` of the final weights, mean and spread over
seeds). Each (size, seed) is a ``transvae.training.sweep`` run: ``--resume`` continues
interrupted runs and a larger ``--steps`` extends finished ones.

    python benchmarks/scaling.py --data BSDS500 --quick
    python benchmarks/scaling.py --data BSDS500 --seeds 0 1 2 --resume
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import bench_utils as bu

from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

WIDE = {"dims": [32, 32, 128, 128, 256]}  # mini with 2x wider Transformer stages
SIZES = [
    ("nano", "transvae-nano-f16d32", {}),
    ("mini", "transvae-mini-f16d32", {}),
    ("wide", "transvae-mini-f16d32", WIDE),
]
RUNS_DIR = bu.RUNS / "scaling"


def overrides(name: str, data: Path, a: argparse.Namespace, seed: int) -> dict:
    steps = dict(
        steps=a.steps, batch=a.batch_size, lr=a.lr, warmup=max(1, a.steps // 10), eval_every=a.eval_every
    )
    return bu.cpu_recipe(name, data, a.resolution, seed, **steps, val_images=a.val_limit)


def plot(payload: dict, path: Path) -> None:
    fig, (a, b) = bu.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    res = payload["results"]
    params = [r["params"] / 1e6 for r in res]
    mean, std = [r["psnr"]["mean"] for r in res], [r["psnr"]["std"] for r in res]
    a.errorbar(params, mean, yerr=std, marker="o", capsize=3)
    for r, x in zip(res, params, strict=True):
        a.annotate(r["label"], (x, r["psnr"]["mean"]), fontsize=8)
    a.set(xscale="log", xlabel="parameters (M)", ylabel="final PSNR (dB, transvae evaluate; bars: std)")
    for i, r in enumerate(res):
        for k, s in enumerate(r["seeds"]):
            c = s["curve"]
            b.plot([p["step"] for p in c], [p["psnr"] for p in c], color=f"C{i}", alpha=0.8,
                   label=f"{r['label']} ({r['params'] / 1e6:.1f}M)" if k == 0 else None)  # fmt: skip
    b.set(xlabel="training step", ylabel="validation PSNR (dB, Trainer; one line per seed)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    bu.save_figure(fig, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = bu.parser(__doc__)
    bu.experiment_args(p, "runs/bench/scaling[_quick]", "4 steps, batch 2, 4 val photos, seed 0")
    p.add_argument("--sizes", nargs="+", choices=[s for s, _, _ in SIZES], default=[s for s, _, _ in SIZES])
    defaults = (
        ("steps", 250, 4),
        ("batch-size", 16, 2),
        ("eval-every", 50, 2),
        ("val-limit", 0, 4),
        ("resolution", 64, 64),
    )
    for k, full, quick in defaults:
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {full} (--quick: {quick})")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads of each training process (default 1)"
    )
    a = p.parse_args(argv)
    a.data = bu.data_root(a)
    for k, full, quick in defaults:
        k = k.replace("-", "_")
        setattr(a, k, getattr(a, k) if getattr(a, k) is not None else quick if a.quick else full)
    a.seeds = a.seeds or ([0] if a.quick else [0, 1, 2])
    a.runs_dir = a.runs_dir or RUNS_DIR.with_name("scaling_quick" if a.quick else "scaling")
    return a


def train(a: argparse.Namespace, sizes: list) -> None:
    """Every (size, seed) not yet at ``--steps``, seed by seed (an interrupted budget leaves whole seeds)."""
    from transvae.training.sweep import SweepJob, pending, run_sweep

    def job(lab: str, base: str, o: dict, k: int) -> SweepJob:
        name = f"bench-scaling-{lab}"
        return SweepJob(
            a.runs_dir / lab / f"seed{k}", overrides(name, a.data, a, k), (name, base, o), a.threads
        )

    try:
        run_sweep(pending([job(*s, k) for k in a.seeds for s in sizes], a.resume), a.workers)
    except FileExistsError as e:
        sys.exit(f"error: {e}")


def collect(a: argparse.Namespace, lab: str, base: str, o: dict) -> dict:
    from transvae.models import create_model
    from transvae.models.registry import register_variant
    from transvae.training.benchmark import exported_step
    from transvae.training.history import run_history

    per = []
    for k in a.seeds:
        run = a.runs_dir / lab / f"seed{k}"
        key, limit = exported_step(run), a.val_limit or None
        ev = bu.evaluate_cached(run / "model", a.data / "val", run / "eval", [a.resolution], key, limit=limit)
        h, res = run_history(run), ev["results"][0]
        keep = {x: h[x] for x in ("step", "curve", "cpu_s_per_step", "sessions")}
        per.append(
            dict(seed=k, **keep, psnr=res["psnr"], ssim=res["ssim"], eval_command=ev["run"]["command"])
        )
    name = register_variant(f"bench-scaling-{lab}", base, **o)
    return dict(label=lab, base=base, overrides=o, params=create_model(name, device="meta").num_parameters(), seeds=per,
                psnr=bu.spread([x["psnr"] for x in per]), ssim=bu.spread([x["ssim"] for x in per]),
                cpu_s_per_step=statistics.median([x["cpu_s_per_step"] or 0.0 for x in per]))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    prov = Provenance.start(seeds=a.seeds)
    sizes = [s for s in SIZES if s[0] in a.sizes]
    train(a, sizes)
    results = [collect(a, *s) for s in sizes]
    out = a.out or bu.DOCS_DIR / ("scaling_quick.json" if a.quick else "scaling.json")
    settings = {
        k: getattr(a, k) for k in ("steps", "batch_size", "lr", "resolution", "eval_every", "val_limit")
    }
    write_result(out, dict(benchmark="scaling", quick=a.quick, settings=settings, seeds=a.seeds, results=results), prov,
                 steps={f"{r['label']}/seed{x['seed']}": x["step"] for r in results for x in r["seeds"]})  # fmt: skip
    plot(dict(results=results), out.with_suffix(".png"))
    rows = [dict(size=r["label"], params_M=r["params"] / 1e6, psnr=f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}",
                 ssim=r["ssim"]["mean"], cpu_s_per_step=r["cpu_s_per_step"]) for r in results]  # fmt: skip
    print("\n" + markdown_table(rows, ["size", "params_M", "psnr", "ssim", "cpu_s_per_step"]))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

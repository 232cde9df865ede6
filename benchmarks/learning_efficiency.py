"""Learning efficiency at small scale (paper Figures 1, 3b/c and 4), trained by the product's Trainer.

Two regimes, both with an 8 x 8 latent grid: ``f16-128`` (the f16 CPU members at 128 px: the
attention-free CNN-VAE, the design-ladder rungs ViT-VAE ... TransVAE, the side branches) and
``f8-64`` (the f8 CPU members at 64 px). Every (model, seed) is one ``transvae.training.Trainer``
run folder under ``--runs-dir`` (L1 + 1e-8 KL, plus LPIPS when the VGG16 weights are found;
AdamW betas (0.5, 0.9), LR 1e-4 after a linear warm-up; LDM's crops; no EMA), trained in its own
single-threaded process (``--workers`` at a time); ``--resume`` continues interrupted runs and a
larger ``--steps`` extends finished ones. Validation PSNR is recorded against training steps,
against the CPU seconds spent in training steps (the Trainer's ``train/cpu_seconds``) and
against training FLOPs (forward + backward per step, counted on the meta device); the final
figures come from ``transvae evaluate`` at the training size, beside two reference codes
(``transvae.metrics.reference``: patch mean colour, patch PCA with the latent's size).

    python benchmarks/learning_efficiency.py --data BSDS500 --quick                       # minutes
    python benchmarks/learning_efficiency.py --data BSDS500 --regime f16-128 --seeds 0 1 2 --steps 300 --resume
    python benchmarks/learning_efficiency.py --data BSDS500 --regime f16-128 --report-only
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import bench_utils as bu
import torch

from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

RUNS_DIR = bu.RUNS / "learning_efficiency"


def runs_dir(quick: bool) -> Path:
    """The default run folder (``--quick`` runs apart): ``extrapolation.py`` reads the same."""
    return RUNS_DIR.with_name(RUNS_DIR.name + "_quick") if quick else RUNS_DIR


@dataclass(frozen=True)
class Regime:
    crop: int
    specs: tuple[tuple[str, str, dict], ...]  # (label, registered base, overrides)
    default: tuple[str, ...]  # slugs run when --models is not given


def regimes() -> dict[str, Regime]:
    from transvae.models.ladder import branches, ladder

    no_attn = dict(stage_attn=False, mid_attn=False)
    f16 = (("CNN-VAE (no attention)", "cnn-vae-mini-f16d32", no_attn), *ladder("mini"))
    f16 += tuple(b for b in branches("mini") if not b[1].startswith("cnn-vae"))
    f8 = (
        ("CNN-VAE (no attention)", "cnn-vae-mini-f8d16", no_attn),
        ("ViT-VAE (learned abs. PE)", "vit-vae-mini-f8d16", {}),
        ("TransVAE", "transvae-mini-f8d16", {}),
        ("TransVAE without RMSNorm", "transvae-mini-f8d16", dict(qkv_norm="none")),
        ("TransVAE with QK-norm instead", "transvae-mini-f8d16", dict(qkv_norm="qk")),
    )
    core = ("cnn-vae-no-attention", "vit-vae-learned-abs-pe")
    return {
        "f16-128": Regime(128, f16, (*core, "dc-shortcut-transvae")),
        "f8-64": Regime(64, f8, (*core, "transvae")),
    }


@dataclass
class Settings:
    """One recipe for every model of a comparison (only the seed differs between runs)."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    warmup: int = 50
    eval_every: int = 50
    val_limit: int = 0  # 0 = all 100 val photos
    lpips: bool = False


def _variant(regime_name: str, s_: str) -> tuple[str, dict]:
    """(registered base, overrides) of slug ``s_``, sized for the regime's crop."""
    from transvae.models import get_model_entry

    regime = regimes()[regime_name]
    base, o = {bu.slug(label): (b, o) for label, b, o in regime.specs}[s_]
    if "sample_size" in get_model_entry(base).cls.config_class.field_names():
        o = {**o, "sample_size": regime.crop}  # sizes the ViT's learned position embedding
    return base, o


def register(regime_name: str, s_: str) -> str:
    """Register slug ``s_`` of the regime as ``bench-<regime>-<slug>``."""
    from transvae.models.registry import register_variant

    base, o = _variant(regime_name, s_)
    return register_variant(f"bench-{regime_name}-{s_}", base, **o)


def vgg_weights(path: str | None) -> str | None:
    """``--lpips-weights``, else VGG16 in the torch hub cache, else None (no LPIPS)."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    return path or (str(cached) if cached.is_file() else None)


def trainer_overrides(
    name: str, data: Path, crop: int, s: Settings, seed: int, minutes: float, lpips: str | None
) -> dict:
    return {
        "model.name": name, "data.train": [str(data / "train"), str(data / "test")],
        "data.val": [str(data / "val")], "data.resolution": crop, "data.scale": [1.0, 1.0], "data.num_workers": 0,
        "data.val_images": s.val_limit, "optim.lr": s.lr, "optim.warmup_steps": s.warmup,
        "loss.lpips_weight": 1.0 if lpips else 0.0, **({"loss.lpips_weights": lpips} if lpips else {}),
        "loss.vf_weight": 0.0, "loss.gan_weight": 0.0, "train.batch_size": s.batch_size, "train.max_steps": s.steps,
        "train.max_minutes": minutes, "train.seed": seed, "train.ema": False, "train.device": "cpu",
        "train.checkpoint_every": s.eval_every, "log.every": 10 if s.eval_every % 10 == 0 else 1,
        "log.val_every": s.eval_every, "log.image_every": 10**9, "log.tensorboard": False, "log.progress": False,
    }  # fmt: skip


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings(steps=4, batch_size=2, warmup=1, eval_every=2, val_limit=4) if args.quick else Settings()
    for k in ("steps", "batch_size", "lr", "warmup", "eval_every", "val_limit"):
        if getattr(args, k) is not None:
            setattr(s, k, getattr(args, k))
    s.lpips = vgg_weights(args.lpips_weights) is not None
    return s


def run_dir_of(args: argparse.Namespace, s_: str, seed: int) -> Path:
    return args.runs_dir / args.regime / s_ / f"seed{seed}"


def job(args: argparse.Namespace, s_: str, seed: int, settings: Settings):
    """The sweep job of one (model, seed): a Trainer run of the registered variant."""
    from transvae.training.sweep import SweepJob

    name = register(args.regime, s_)
    base, over = _variant(args.regime, s_)
    crop, lp = regimes()[args.regime].crop, vgg_weights(args.lpips_weights)
    return SweepJob(run_dir_of(args, s_, seed), trainer_overrides(name, args.data, crop, settings, seed, args.minutes, lp),
                    variant=(name, base, over))  # fmt: skip


def evaluate_run(run: Path, data: Path, crop: int, val_limit: int) -> dict | None:
    """``transvae evaluate`` of the run's exported model at the training size (cached per step)."""
    from transvae.training.benchmark import exported_step

    step = exported_step(run)
    if step is None:
        return None
    return bu.evaluate_cached(
        run / "model", data / "val", run / "eval", [crop], step, limit=val_limit or None
    )


def reference_lines(data: Path, crop: int, f: int, c: int, val_limit: int) -> dict:
    """PSNR of the two reference codes on the val photos exactly as ``transvae evaluate`` sees them."""
    from transvae.data import list_images
    from transvae.data.transforms import load_crops
    from transvae.evaluation.metrics import psnr_per_image
    from transvae.metrics.reference import patch_mean_reconstruction, patch_pca_reconstruction

    train = load_crops(list_images(data / "train") + list_images(data / "test"), crop)
    val = load_crops(list_images(data / "val")[: val_limit or None], crop)
    return dict(
        patch_mean_colour=psnr_per_image(val, patch_mean_reconstruction(val, f)).mean().item(),
        patch_pca=psnr_per_image(val, patch_pca_reconstruction(train, val, f, c)).mean().item(),
        fitted_on="train+test at the same protocol", patch=f, components=c, val_images=len(val),
    )  # fmt: skip


def seed_record(run: Path, ev: dict, seed: int) -> dict:
    from transvae.training.history import run_history

    h = run_history(run)
    keep = ("step", "curve", "cpu_s_per_step", "wall_s_per_step", "sessions")
    res = ev["results"][0]
    return dict(seed=seed, run_dir=str(run), **{k: h[k] for k in keep}, psnr=res["psnr"], ssim=res["ssim"],
                eval_command=ev["run"]["command"])  # fmt: skip


def collect(args: argparse.Namespace, wanted: list[str], settings: Settings) -> dict:
    """Evaluate every run and gather the JSON's payload (curves, costs, final PSNR, references)."""
    from transvae.models import create_model
    from transvae.models.flops import training_step_flops

    regime = regimes()[args.regime]
    labels = {bu.slug(label): (label, b, o) for label, b, o in regime.specs}
    jobs = [(s_, seed) for s_ in wanted for seed in args.seeds]
    ev = lambda j: evaluate_run(run_dir_of(args, *j), args.data, regime.crop, settings.val_limit)  # noqa: E731
    with ThreadPoolExecutor(args.workers) as pool:
        evals = dict(zip(jobs, pool.map(ev, jobs), strict=True))
    models = []
    for s_ in wanted:
        seeds = [
            seed_record(run_dir_of(args, s_, k), evals[(s_, k)], k) for k in args.seeds if evals[(s_, k)]
        ]
        if not seeds:
            continue
        meta = create_model(register(args.regime, s_), device="meta")
        cpu = [x["cpu_s_per_step"] for x in seeds if x["cpu_s_per_step"]]
        models.append(dict(
            label=labels[s_][0], slug=s_, base=labels[s_][1], overrides=labels[s_][2], params=meta.num_parameters(),
            train_gflop_per_step=training_step_flops(meta, regime.crop, settings.batch_size), seeds=seeds,
            steps=sorted({x["step"] for x in seeds}), psnr=bu.spread([x["psnr"] for x in seeds]),
            ssim=bu.spread([x["ssim"] for x in seeds]), cpu_s_per_step=statistics.median(cpu) if cpu else None,
        ))  # fmt: skip
    m0 = create_model(register(args.regime, wanted[0]), device="meta")
    f, c = m0.spatial_compression_ratio, m0.latent_channels
    return dict(
        benchmark="learning_efficiency", regime=args.regime, crop=regime.crop,
        latent=dict(compression=f, channels=c, grid=regime.crop // f), settings=asdict(settings), seeds=args.seeds,
        data=str(args.data), reference=reference_lines(args.data, regime.crop, f, c, settings.val_limit),
        models=models,
    )  # fmt: skip


def plot(payload: dict, path: Path) -> None:
    """Validation PSNR (mean over seeds, band min-max) against steps, CPU seconds and training FLOPs."""
    fig, axes = bu.subplots(1, 3, figsize=(16, 4.6), dpi=80)
    labels = [m["label"] for m in payload["models"]]
    for m in payload["models"]:
        style = bu.line_style(m["label"], labels)
        steps = sorted({p["step"] for x in m["seeds"] for p in x["curve"]})
        per = [[p for x in m["seeds"] for p in x["curve"] if p["step"] == st] for st in steps]
        mean = [statistics.fmean(p["psnr"] for p in v) for v in per]
        cpu = [
            statistics.fmean(p["cpu_seconds"] for p in v)
            if all(p.get("cpu_seconds") is not None for p in v)
            else math.nan
            for v in per
        ]
        axes[0].plot(steps, mean, label=f"{m['label']} (n={len(m['seeds'])})", **style)
        axes[0].fill_between(
            steps,
            [min(p["psnr"] for p in v) for v in per],
            [max(p["psnr"] for p in v) for v in per],
            color=style["color"],
            alpha=0.15,
        )
        axes[1].plot([s / 60 for s in cpu], mean, **style)
        axes[2].plot([st * m["train_gflop_per_step"] / 1e3 for st in steps], mean, **style)
    r = payload["reference"]
    for ax, xlabel in zip(
        axes,
        (
            "training step",
            "CPU minutes in training steps (one thread)",
            "training TFLOP (forward + backward)",
        ),
        strict=True,
    ):
        for key, ls in (("patch_mean_colour", ":"), ("patch_pca", "--")):
            ax.axhline(r[key], color="grey", ls=ls, lw=1)
        ax.set(xlabel=xlabel, ylabel="validation PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    s, lat = payload["settings"], payload["latent"]
    fig.suptitle(f"BSDS500 val, {payload['crop']} px, latent {lat['grid']}x{lat['grid']}x{lat['channels']}; batch "
                 f"{s['batch_size']}, lr {s['lr']:g}; grey: patch mean colour (dotted), patch PCA (dashed)", fontsize=10)  # fmt: skip
    bu.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--regime", choices=["f16-128", "f8-64"], default="f16-128")
    bu.add_data_arg(p)
    p.add_argument("--models", nargs="+", default=None, help="slugs (default: the regime's core; see --list)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="target steps per run (default 300)")
    for k, h in (
        ("batch-size", "default 8"),
        ("warmup", "warm-up steps (default 50)"),
        ("eval-every", "validation interval (default 50)"),
        ("val-limit", "val photos (default 0 = all)"),
    ):
        p.add_argument(f"--{k}", type=int, default=None, help=h)
    p.add_argument("--lr", type=float, default=None, help="default 1e-4")
    p.add_argument("--lpips-weights", default=None, help="local VGG16 checkpoint: adds LPIPS (weight 1)")
    p.add_argument(
        "--minutes", type=float, default=0.0, help="stop each run after this many minutes (resumable)"
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel single-threaded runs")
    p.add_argument("--resume", action="store_true", help="continue / extend existing runs")
    p.add_argument(
        "--report-only", action="store_true", help="no training: evaluate existing runs, write JSON/PNG"
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help=f"run folders (default {RUNS_DIR.relative_to(bu.REPO)}[_quick])",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG next to it)")
    p.add_argument(
        "--quick", action="store_true", help="4 steps x batch 2, 4 val photos, seed 0: a smoke run"
    )
    p.add_argument("--list", action="store_true", help="print the model slugs of the regime and exit")
    args = p.parse_args(argv)
    regime = regimes()[args.regime]
    by_slug = {bu.slug(label): (b, o) for label, b, o in regime.specs}
    if args.list:
        for s_, (base, o) in by_slug.items():
            print(f"{s_:40s} {base:24s} {o}{'  (default)' if s_ in regime.default else ''}")
        return
    args.data = bu.data_root(args)
    args.runs_dir = args.runs_dir or runs_dir(args.quick)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    prov = Provenance.start(seeds=args.seeds)
    wanted = args.models or list(regime.default)
    if unknown := [m for m in wanted if m not in by_slug]:
        sys.exit(f"error: unknown model(s) {unknown}; valid: {list(by_slug)}")
    settings = settings_from(args)
    if not args.report_only:
        train_missing(args, wanted, settings)
    payload = collect(args, wanted, settings)
    out = args.out or bu.DOCS_DIR / f"learning_efficiency_{args.regime}{'_quick' if args.quick else ''}.json"
    steps = {f"{m['slug']}/seed{x['seed']}": x["step"] for m in payload["models"] for x in m["seeds"]}
    write_result(out, payload, prov, steps=steps)
    plot(payload, out.with_suffix(".png"))
    rows = [dict(model=m["label"], params_M=m["params"] / 1e6, seeds=m["psnr"]["n"], steps="/".join(map(str, m["steps"])),
                 psnr=f"{m['psnr']['mean']:.2f} ± {m['psnr']['std']:.2f}", cpu_s_per_step=m["cpu_s_per_step"],
                 train_gflop_per_step=m["train_gflop_per_step"]) for m in payload["models"]]  # fmt: skip
    print("\n" + markdown_table(rows, list(rows[0]) if rows else ["model"]))
    print(
        f"reference: patch mean colour {payload['reference']['patch_mean_colour']:.2f}, patch PCA {payload['reference']['patch_pca']:.2f}"
    )
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


def train_missing(args: argparse.Namespace, wanted: list[str], settings: Settings) -> None:
    """Train every (model, seed) not yet at ``settings.steps``, seed by seed, costliest first."""
    from transvae.models import create_model
    from transvae.models.flops import training_step_flops
    from transvae.training.benchmark import exported_step
    from transvae.training.sweep import run_sweep

    jobs = [(s_, seed) for seed in args.seeds for s_ in wanted]
    started = [j for j in jobs if (run_dir_of(args, *j) / "config.yaml").exists()]
    if started and not args.resume:
        sys.exit(f"error: {len(started)} run folder(s) exist under {args.runs_dir / args.regime} (e.g. {started[0]}); "
                 "pass --resume to continue or extend them, or --runs-dir for new ones")  # fmt: skip
    cost = {
        s_: training_step_flops(
            create_model(register(args.regime, s_), device="meta"), regimes()[args.regime].crop
        )
        for s_ in wanted
    }
    todo = [j for j in jobs if (exported_step(run_dir_of(args, *j)) or 0) < settings.steps]
    todo.sort(key=lambda j: (args.seeds.index(j[1]), -cost[j[0]]))  # an interrupted budget leaves whole seeds
    print(
        f"training {len(todo)} runs, {args.workers} single-threaded processes at a time; logs: <run>/sweep.log"
    )
    run_sweep([job(args, *j, settings) for j in todo], workers=args.workers)


if __name__ == "__main__":
    main()

"""Learning efficiency at small scale (paper Figures 1, 3b/c and 4), trained by the product's Trainer.

Two regimes, both with an 8 x 8 latent grid (``transvae.models.ladder.cpu_regimes``): ``f16-128``
(the attention-free CNN-VAE, the design-ladder rungs ViT-VAE ... TransVAE, the side branches, at
128 px) and ``f8-64`` (the f8 CPU members at 64 px). Every (model, seed) is one
``transvae.training.Trainer`` run folder under ``--runs-dir`` (L1 + 1e-8 KL, plus LPIPS when the
VGG16 weights are found; AdamW betas (0.5, 0.9), LR 1e-4 after a linear warm-up; LDM's crops; no
EMA), trained by ``transvae.training.sweep`` in its own single-threaded process (``--workers`` at
a time); ``--resume`` continues interrupted runs and a larger ``--steps`` extends finished ones.
Validation PSNR is recorded against training steps, against the CPU seconds spent in training
steps (the Trainer's ``train/cpu_seconds``) and against training FLOPs (forward + backward per
step, ``transvae.models.flops``); the final figures come from ``transvae evaluate`` at the
training size, beside two reference codes (``transvae.metrics.reference``: patch mean colour,
patch PCA with the latent's size).

    python benchmarks/learning_efficiency.py --data BSDS500 --quick                       # minutes
    python benchmarks/learning_efficiency.py --data BSDS500 --regime f16-128 --seeds 0 1 2 --steps 300 --resume
    python benchmarks/learning_efficiency.py --data BSDS500 --regime f16-128 --report-only
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import bench_utils as bu

from transvae.utils.provenance import Provenance, write_result

RUNS_DIR = bu.RUNS / "learning_efficiency"


def runs_dir(quick: bool) -> Path:
    """The default run folder (``--quick`` runs apart): ``extrapolation.py`` reads the same."""
    return RUNS_DIR.with_name(RUNS_DIR.name + "_quick") if quick else RUNS_DIR


def regimes() -> dict:
    """``transvae.models.ladder.cpu_regimes()`` with the default models as slugs."""
    from transvae.models.ladder import cpu_regimes

    return {k: replace(r, default=tuple(map(bu.slug, r.default))) for k, r in cpu_regimes().items()}


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


def variant(regime_name: str, s_: str) -> tuple[str, str, dict]:
    """(``bench-<regime>-<slug>``, registered base, overrides sized for the crop) of slug ``s_``."""
    from transvae.models import get_model_entry

    regime = regimes()[regime_name]
    base, o = {bu.slug(label): (b, o) for label, b, o in regime.specs}[s_]
    if "sample_size" in get_model_entry(base).cls.config_class.field_names():
        o = {**o, "sample_size": regime.crop}  # sizes the ViT's learned position embedding
    return f"bench-{regime_name}-{s_}", base, o


def register(regime_name: str, s_: str) -> str:
    from transvae.models.registry import register_variant

    name, base, o = variant(regime_name, s_)
    return register_variant(name, base, **o)


def vgg_weights(path: str | None) -> str | None:
    """``--lpips-weights``, else VGG16 in the torch hub cache, else None (no LPIPS)."""
    from transvae.models.pretrained import hub_checkpoint_dir

    cached = hub_checkpoint_dir() / "vgg16-397923af.pth"
    return path or (str(cached) if cached.is_file() else None)


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings(steps=4, batch_size=2, warmup=1, eval_every=2, val_limit=4) if args.quick else Settings()
    for k in ("steps", "batch_size", "lr", "warmup", "eval_every", "val_limit"):
        if getattr(args, k) is not None:
            setattr(s, k, getattr(args, k))
    s.lpips = vgg_weights(args.lpips_weights) is not None
    return s


def run_dir_of(args: argparse.Namespace, s_: str, seed: int) -> Path:
    return args.runs_dir / args.regime / s_ / f"seed{seed}"


def job(args: argparse.Namespace, s_: str, seed: int, s: Settings):
    """The sweep job of one (model, seed): a Trainer run of the registered variant."""
    from transvae.training.sweep import SweepJob

    name, lp = register(args.regime, s_), vgg_weights(args.lpips_weights)
    more = {
        "train.max_minutes": args.minutes,
        **({"loss.lpips_weight": 1.0, "loss.lpips_weights": lp} if lp else {}),
    }
    steps = dict(steps=s.steps, batch=s.batch_size, lr=s.lr, warmup=s.warmup, eval_every=s.eval_every)
    crop = regimes()[args.regime].crop
    over = bu.cpu_recipe(name, args.data, crop, seed, **steps, val_images=s.val_limit, **more)
    return SweepJob(run_dir_of(args, s_, seed), over, variant=variant(args.regime, s_))


def train_missing(args: argparse.Namespace, wanted: list[str], settings: Settings) -> None:
    """Train every (model, seed) short of ``settings.steps``: seed by seed (an interrupted budget leaves
    whole seeds), the costliest model first."""
    from transvae.models import create_model
    from transvae.models.flops import training_step_flops
    from transvae.training.sweep import pending, run_sweep

    crop = regimes()[args.regime].crop
    cost = {
        s_: training_step_flops(create_model(register(args.regime, s_), device="meta"), crop) for s_ in wanted
    }
    jobs = [(s_, k) for k in args.seeds for s_ in wanted]
    order = sorted(jobs, key=lambda j: (args.seeds.index(j[1]), -cost[j[0]]))
    try:
        todo = pending([job(args, *j, settings) for j in order], args.resume)
    except FileExistsError as e:
        sys.exit(f"error: {e}")
    print(
        f"training {len(todo)} runs, {args.workers} single-threaded processes at once; logs: <run>/sweep.log"
    )
    run_sweep(todo, workers=args.workers)


def reference_lines(data: Path, crop: int, f: int, c: int, val_limit: int) -> dict:
    """PSNR of the two reference codes on the val photos exactly as ``transvae evaluate`` sees them."""
    from transvae.data import list_images
    from transvae.data.transforms import load_crops
    from transvae.metrics.psnr import psnr_per_image
    from transvae.metrics.reference import patch_mean_reconstruction, patch_pca_reconstruction

    train = load_crops(list_images(data / "train") + list_images(data / "test"), crop)
    val = load_crops(list_images(data / "val")[: val_limit or None], crop)
    mean = psnr_per_image(val, patch_mean_reconstruction(val, f)).mean().item()
    pca = psnr_per_image(val, patch_pca_reconstruction(train, val, f, c)).mean().item()
    return dict(patch_mean_colour=mean, patch_pca=pca, fitted_on="train+test at the same protocol", patch=f,
                components=c, val_images=len(val))  # fmt: skip


def seed_record(args: argparse.Namespace, s_: str, seed: int, crop: int, val_limit: int) -> dict | None:
    """One run: its history (``transvae.training.history``) and ``transvae evaluate`` (cached per step)."""
    from transvae.training.benchmark import exported_step
    from transvae.training.history import run_history

    run = run_dir_of(args, s_, seed)
    if (step := exported_step(run)) is None:
        return None
    limit = val_limit or None
    ev = bu.evaluate_cached(run / "model", args.data / "val", run / "eval", [crop], step, limit=limit)
    h, res = run_history(run), ev["results"][0]
    keep = {k: h[k] for k in ("step", "curve", "cpu_s_per_step", "wall_s_per_step", "sessions")}
    more = dict(psnr=res["psnr"], ssim=res["ssim"], eval_command=ev["run"]["command"])
    return dict(seed=seed, run_dir=str(run), **keep, **more)


def collect(args: argparse.Namespace, wanted: list[str], s: Settings) -> dict:
    """Evaluate every run and gather the JSON's payload (curves, costs, final PSNR, references)."""
    from transvae.models import create_model
    from transvae.models.flops import training_step_flops

    regime = regimes()[args.regime]
    labels = {bu.slug(label): (label, b, o) for label, b, o in regime.specs}
    jobs = [(s_, k) for s_ in wanted for k in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        found = pool.map(lambda j: seed_record(args, *j, regime.crop, s.val_limit), jobs)
    recs = dict(zip(jobs, found, strict=True))
    models = []
    for s_ in wanted:
        if not (seeds := [recs[(s_, k)] for k in args.seeds if recs[(s_, k)]]):
            continue
        meta = create_model(register(args.regime, s_), device="meta")
        cpu = [x["cpu_s_per_step"] for x in seeds if x["cpu_s_per_step"]]
        models.append(dict(
            label=labels[s_][0], slug=s_, base=labels[s_][1], overrides=labels[s_][2], params=meta.num_parameters(),
            train_gflop_per_step=training_step_flops(meta, regime.crop, s.batch_size), seeds=seeds,
            steps=sorted({x["step"] for x in seeds}), psnr=bu.spread([x["psnr"] for x in seeds]),
            ssim=bu.spread([x["ssim"] for x in seeds]), cpu_s_per_step=statistics.median(cpu) if cpu else None,
        ))  # fmt: skip
    m0 = create_model(register(args.regime, wanted[0]), device="meta")
    f, c = m0.spatial_compression_ratio, m0.latent_channels
    ref = reference_lines(args.data, regime.crop, f, c, s.val_limit)
    latent = dict(compression=f, channels=c, grid=regime.crop // f)
    return dict(benchmark="learning_efficiency", regime=args.regime, crop=regime.crop, latent=latent,
                settings=asdict(s), seeds=args.seeds, data=str(args.data), reference=ref, models=models)  # fmt: skip


def plot(payload: dict, path: Path) -> None:
    """Validation PSNR (mean over seeds, band min-max) against steps, CPU seconds and training FLOPs."""
    fig, axes = bu.subplots(1, 3, figsize=(16, 4.6), dpi=80)
    labels = [m["label"] for m in payload["models"]]
    for m in payload["models"]:
        style = bu.line_style(m["label"], labels)
        steps = sorted({p["step"] for x in m["seeds"] for p in x["curve"]})
        per = [[p for x in m["seeds"] for p in x["curve"] if p["step"] == st] for st in steps]
        mean = [statistics.fmean(p["psnr"] for p in v) for v in per]
        cpu = [statistics.fmean(p.get("cpu_seconds") or math.nan for p in v) / 60 for v in per]
        lo, hi = ([f(p["psnr"] for p in v) for v in per] for f in (min, max))
        axes[0].plot(steps, mean, label=f"{m['label']} (n={len(m['seeds'])})", **style)
        axes[0].fill_between(steps, lo, hi, color=style["color"], alpha=0.15)
        axes[1].plot(cpu, mean, **style)
        axes[2].plot([st * m["train_gflop_per_step"] / 1e3 for st in steps], mean, **style)
    xlabels = ("training step", "CPU minutes in training steps (one thread)", "training TFLOP (fwd + bwd)")
    for ax, xlabel in zip(axes, xlabels, strict=True):
        for key, ls in (("patch_mean_colour", ":"), ("patch_pca", "--")):
            ax.axhline(payload["reference"][key], color="grey", ls=ls, lw=1)
        ax.set(xlabel=xlabel, ylabel="validation PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    s, lat = payload["settings"], payload["latent"]
    fig.suptitle(f"BSDS500 val, {payload['crop']} px, latent {lat['grid']}x{lat['grid']}x{lat['channels']}; batch "
                 f"{s['batch_size']}, lr {s['lr']:g}; grey: patch mean colour (dotted), patch PCA (dashed)", fontsize=10)  # fmt: skip
    bu.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = bu.parser(__doc__)
    p.add_argument("--regime", choices=["f16-128", "f8-64"], default="f16-128")
    bu.experiment_args(p, "runs/bench/learning_efficiency[_quick]", "4 steps x batch 2, 4 val photos, seed 0")
    p.add_argument("--models", nargs="+", default=None, help="slugs (default: the regime's core; see --list)")
    for k, h in (("steps", "per run (default 300)"), ("batch-size", "default 8"), ("warmup", "LR warm-up (default 50)"),
                 ("eval-every", "validation interval (default 50)"), ("val-limit", "val photos (default 0 = all)")):  # fmt: skip
        p.add_argument(f"--{k}", type=int, default=None, help=h)
    p.add_argument("--lr", type=float, default=None, help="default 1e-4")
    p.add_argument("--lpips-weights", default=None, help="local VGG16 checkpoint: adds LPIPS (weight 1)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop each run after this many minutes")
    p.add_argument(
        "--report-only", action="store_true", help="no training: evaluate the runs, write JSON/PNG"
    )
    p.add_argument("--list", action="store_true", help="print the model slugs of the regime and exit")
    args = p.parse_args(argv)
    regime = regimes()[args.regime]
    by_slug = {bu.slug(label): (b, o) for label, b, o in regime.specs}
    if args.list:
        for s_, (base, o) in by_slug.items():
            print(f"{s_:40s} {base:24s} {o}{'  (default)' if s_ in regime.default else ''}")
        return
    args.data, args.runs_dir = bu.data_root(args), args.runs_dir or runs_dir(args.quick)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    prov, wanted = Provenance.start(seeds=args.seeds), args.models or list(regime.default)
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
    for m in payload["models"]:
        print(f"{m['label']:40s} {m['psnr']['mean']:.2f} ± {m['psnr']['std']:.2f} dB at {m['steps']} steps, "
              f"{m['cpu_s_per_step'] or math.nan:.3f} CPU s/step, {m['train_gflop_per_step']:.3g} GFLOP/step")  # fmt: skip
    r = payload["reference"]
    print(f"references: patch mean colour {r['patch_mean_colour']:.2f}, patch PCA {r['patch_pca']:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

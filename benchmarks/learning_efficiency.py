"""Learning efficiency at small scale (paper Figures 1, 3b/c and 4), trained by the product's Trainer.

Two regimes, both with an 8 x 8 latent grid (at 64 px an f16 latent is 4 x 4, where a ViT with
16 px patches is nearly a per-patch linear autoencoder and position cannot matter):

- ``f16-128``: the f16 CPU members on 128 px images: the attention-free CNN-VAE (Appendix E,
  Figure 7), the design-ladder rungs from ViT-VAE (learned absolute PE) to TransVAE, and the side
  branches (``transvae.models.ladder``).
- ``f8-64``: the f8 CPU members on 64 px images: attention-free CNN-VAE, ViT-VAE (8 x 8
  patches, learned absolute PE), TransVAE.

Every run is ``transvae.training.Trainer`` with the paper's Section 3 objective as far as this
machine allows: L1 + 1e-8 KL, plus LPIPS (weight 1) when the VGG16 weights are found (they are
not on the development machine); AdamW with the recipe's betas (0.5, 0.9), LR 1e-4, constant after
a linear warm-up; LDM's crop protocol (shorter side resized to the crop size, random crop,
flips); no EMA (the curve is the trained weights). Seeds change the initialisation and the data
order. Each (model, seed) is a Trainer run folder under ``--runs-dir``: interrupted runs continue
with ``--resume``, and a larger ``--steps`` extends finished ones (cumulative budgets).

The Trainer validates on BSDS500 ``val/`` every ``--eval-every`` steps (the curves); the final
figures come from ``transvae evaluate`` at the training size on the same photos, next to two
reference lines computed on the same images: every f x f patch replaced by its mean colour, and
by its projection on the first C principal components of the training patches (C = latent
channels, i.e. the best linear per-patch code of the latent's size).

    python benchmarks/learning_efficiency.py --quick                                  # minutes
    python benchmarks/learning_efficiency.py --regime f16-128 --seeds 0 1 2 --steps 300 --resume
    python benchmarks/learning_efficiency.py --regime f16-128 --report-only          # table + plot
    python benchmarks/learning_efficiency.py --list
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    REPO,
    evaluate_cli,
    has_checkpoint,
    line_style,
    machine_info,
    markdown_table,
    read_run,
    register_variant,
    save_figure,
    slug,
    subplots,
    train_run,
    write_json,
)

RUNS = REPO / "runs" / "bench" / "learning_efficiency"  # gitignored


@dataclass(frozen=True)
class Regime:
    """Crop size and the models compared at it (labels, registered bases, overrides)."""

    crop: int
    specs: tuple[tuple[str, str, dict], ...]
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
    core = ("cnn-vae-no-attention", "vit-vae-learned-abs-pe", "dc-shortcut-transvae")
    return {
        "f16-128": Regime(128, f16, core),
        "f8-64": Regime(64, f8, ("cnn-vae-no-attention", "vit-vae-learned-abs-pe", "transvae")),
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


def model_name(regime: str, s_: str) -> str:
    return f"bench-{regime}-{s_}"


def register(regime_name: str, regime: Regime, s_: str) -> str:
    """Register the (label, base, overrides) of slug ``s_`` for this regime's crop size."""
    by_slug = {slug(label): (base, o) for label, base, o in regime.specs}
    base, o = by_slug[s_]
    from transvae.models import get_model_entry

    if "sample_size" in get_model_entry(base).cls.config_class.field_names():
        # sizes the ViT's learned position embedding (and Swin windows) for the crop
        o = {**o, "sample_size": regime.crop}
    return register_variant(model_name(regime_name, s_), base, o)


def vgg_weights(path: str | None) -> str | None:
    """The local VGG16 checkpoint LPIPS would use (``--lpips-weights`` or the torch hub cache), or None."""
    from transvae.models.pretrained import hub_checkpoint_dir

    if path:
        return path
    cached = hub_checkpoint_dir() / "vgg16-397923af.pth"
    return str(cached) if cached.is_file() else None


def trainer_overrides(
    name: str, data: Path, crop: int, s: Settings, seed: int, minutes: float, lpips_weights: str | None
) -> dict:
    """The Trainer configuration of one run (dotted keys for ``build_config``)."""
    return {
        "model.name": name,
        "data.train": [str(data / "train"), str(data / "test")],
        "data.val": [str(data / "val")],
        "data.resolution": crop,
        "data.scale": [1.0, 1.0],
        "data.num_workers": 0,
        "data.val_images": s.val_limit,
        "optim.lr": s.lr,
        "optim.warmup_steps": s.warmup,
        "loss.lpips_weight": 1.0 if lpips_weights else 0.0,
        **({"loss.lpips_weights": lpips_weights} if lpips_weights else {}),
        "loss.vf_weight": 0.0,
        "loss.gan_weight": 0.0,
        "train.batch_size": s.batch_size,
        "train.max_steps": s.steps,
        "train.max_minutes": minutes,
        "train.seed": seed,
        "train.ema": False,
        "train.device": "cpu" if not torch.cuda.is_available() else "auto",
        "train.checkpoint_every": s.eval_every,
        "log.every": 10 if s.eval_every % 10 == 0 else 1,
        "log.val_every": s.eval_every,
        "log.image_every": 10**9,
        "log.tensorboard": False,
        "log.progress": False,
    }


# --- reference lines ---------------------------------------------------------------------------


def load_protocol_images(folders: list[Path], resolution: int, limit: int = 0) -> torch.Tensor:
    """Images as ``transvae evaluate`` sees them (shorter side to R, centre crop): (N, 3, R, R) uint8."""
    from transvae.data.io import list_images
    from transvae.evaluation.protocol import EvalImageDataset

    files = [f for d in folders for f in list_images(d)]
    files = files[:limit] if limit else files
    ds = EvalImageDataset(files, resolution)
    return torch.stack([ds[i].image for i in range(len(ds)) if ds[i].image is not None])


def to_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N * H/p * W/p, 3 p^2) float."""
    return F.unfold(x.float(), kernel_size=p, stride=p).transpose(1, 2).reshape(-1, x.shape[1] * p * p)


def from_patches(patches: torch.Tensor, shape: torch.Size, p: int) -> torch.Tensor:
    """Inverse of ``to_patches``, rounded to uint8 as the metrics' quantisation does."""
    n, c, h, w = shape
    cols = patches.reshape(n, (h // p) * (w // p), c * p * p).transpose(1, 2)
    return F.fold(cols, (h, w), kernel_size=p, stride=p).round().clamp(0, 255).to(torch.uint8)


def reference_lines(train: torch.Tensor, val: torch.Tensor, patch: int, components: int) -> dict[str, float]:
    """PSNR (dB, mean over images, ``transvae.metrics``) of two trivial codes of ``val``.

    Args:
        train: (N, 3, R, R) uint8 images the PCA is fitted on.
        val: (M, 3, R, R) uint8 images to reconstruct.
        patch: the autoencoder's spatial compression f (one latent vector per f x f patch).
        components: the latent's channels C.
    Returns:
        ``patch_mean_colour``: each patch replaced by its mean colour (3 numbers per patch);
        ``patch_pca``: each patch projected on the first C principal components of the training
        patches (C numbers per patch: the latent's size, linearly).
    """
    from transvae.metrics.psnr import psnr_per_image

    v = to_patches(val, patch)  # (P, 3 p^2), channel-major: channel c is v[:, c p^2 : (c+1) p^2]
    means = v.view(v.shape[0], 3, -1).mean(-1, keepdim=True).expand(-1, -1, patch * patch)
    mean_rec = from_patches(means.reshape(v.shape), val.shape, patch)
    t = to_patches(train, patch).double()
    mu = t.mean(0)
    _, _, vh = torch.linalg.svd(t - mu, full_matrices=False)
    basis = vh[:components].T  # (3 p^2, C)
    pca_rec = from_patches(((v.double() - mu) @ basis @ basis.T + mu).float(), val.shape, patch)
    return {
        "patch_mean_colour": psnr_per_image(val, mean_rec).mean().item(),
        "patch_pca": psnr_per_image(val, pca_rec).mean().item(),
    }


# --- running ---------------------------------------------------------------------------------


def run_one(args: argparse.Namespace) -> None:
    """Child process: one (model, seed) run through the Trainer."""
    regime = regimes()[args.regime]
    s_, seed = args._run[0], int(args._run[1])
    name = register(args.regime, regime, s_)
    run_dir = args.runs_dir / args.regime / s_ / f"seed{seed}"
    over = trainer_overrides(
        name, args.data, regime.crop, settings_from(args), seed, args.minutes, vgg_weights(args.lpips_weights)
    )
    summary = train_run(run_dir, over, resume=has_checkpoint(run_dir))
    print(f"{s_} seed {seed}: {summary['status']} at step {summary['step']}", flush=True)


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings(steps=4, batch_size=2, warmup=1, eval_every=2, val_limit=4) if args.quick else Settings()
    for k in ("steps", "batch_size", "lr", "warmup", "eval_every", "val_limit"):
        if getattr(args, k) is not None:
            setattr(base, k, getattr(args, k))
    base.lpips = vgg_weights(args.lpips_weights) is not None
    return base


def child_args(args: argparse.Namespace) -> list[str]:
    out = ["--regime", args.regime, "--data", str(args.data), "--runs-dir", str(args.runs_dir)]
    out += ["--minutes", str(args.minutes)]
    for k in ("steps", "batch_size", "lr", "warmup", "eval_every", "val_limit", "lpips_weights"):
        v = getattr(args, k)
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out + (["--quick"] if args.quick else [])


def train_all(args: argparse.Namespace, jobs: list[tuple[str, int]]) -> None:
    """Each (slug, seed) in its own single-threaded process, ``--workers`` at a time."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    script = str(Path(__file__).resolve())

    def one(job: tuple[str, int]) -> None:
        s_, seed = job
        run_dir = args.runs_dir / args.regime / s_ / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        t = time.time()
        with open(run_dir / "bench.log", "a") as log:
            cmd = [sys.executable, script, *child_args(args), "--_run", s_, str(seed)]
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        tail = "".join((run_dir / "bench.log").read_text().splitlines(True)[-3:]).strip()
        print(
            f"  {s_} seed {seed}: exit {rc} after {time.time() - t:.0f} s; {tail.splitlines()[-1] if tail else ''}",
            flush=True,
        )

    print(
        f"training {len(jobs)} runs in {args.workers} single-threaded processes; logs in <run>/bench.log",
        flush=True,
    )
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(one, jobs))


def evaluate_run(run_dir: Path, data: Path, crop: int, val_limit: int) -> dict | None:
    """``transvae evaluate`` of the run's exported model at the training size (cached per step)."""
    model = run_dir / "model"
    if not (model / "config.json").is_file():
        return None
    step = json.loads((model / "config.json").read_text()).get("metadata", {}).get("step")
    out = run_dir / "eval"
    cached = out / "results.json"
    if cached.is_file():
        payload = json.loads(cached.read_text())
        if payload.get("bench_step") == step:
            return payload
    payload = evaluate_cli(model, data / "val", out, [crop], limit=val_limit or None)
    payload["bench_step"] = step
    write_json(cached, payload)
    return payload


def spread(values: list[float]) -> dict:
    return dict(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        min=min(values),
        max=max(values),
        n=len(values),
    )


def collect(args: argparse.Namespace, regime: Regime, wanted: list[str], settings: Settings) -> dict:
    """Read every run, evaluate it, add the reference lines; the payload of the JSON."""
    by_slug = {slug(label): (label, base, o) for label, base, o in regime.specs}
    runs = [(s_, seed) for s_ in wanted for seed in args.seeds]

    def ev(job):
        s_, seed = job
        return evaluate_run(
            args.runs_dir / args.regime / s_ / f"seed{seed}", args.data, regime.crop, settings.val_limit
        )

    with ThreadPoolExecutor(args.workers) as pool:
        evals = dict(zip(runs, pool.map(ev, runs), strict=True))
    from transvae.models import create_model

    models = []
    for s_ in wanted:
        label, base, o = by_slug[s_]
        seeds = []
        for seed in args.seeds:
            run_dir = args.runs_dir / args.regime / s_ / f"seed{seed}"
            if evals[(s_, seed)] is None:
                continue
            r = read_run(run_dir)
            res = evals[(s_, seed)]["results"][0]
            seeds.append(
                dict(
                    seed=seed,
                    run_dir=str(run_dir),
                    step=r["step"],
                    curve=r["curve"],
                    s_per_step=r["s_per_step"],
                    psnr=res["psnr"],
                    ssim=res["ssim"],
                    eval_command=evals[(s_, seed)]["run"]["command"],
                )
            )
        if not seeds:
            continue
        m = create_model(model_name(args.regime, s_), device="meta")
        models.append(dict(
            label=label, slug=s_, base=base, overrides=o, params=m.num_parameters(), seeds=seeds,
            steps=sorted({x["step"] for x in seeds}),
            psnr=spread([x["psnr"] for x in seeds]), ssim=spread([x["ssim"] for x in seeds]),
            s_per_step=statistics.median([x["s_per_step"] for x in seeds if x["s_per_step"]] or [math.nan]),
        ))  # fmt: skip
    m0 = create_model(model_name(args.regime, wanted[0]), device="meta")
    f, c = m0.spatial_compression_ratio, m0.latent_channels
    t0 = time.time()
    train = load_protocol_images([args.data / "train", args.data / "test"], regime.crop)
    val = load_protocol_images([args.data / "val"], regime.crop, settings.val_limit)
    refs = reference_lines(train, val, f, c)
    print(f"reference lines on {len(val)} val images ({time.time() - t0:.0f} s): {refs}")
    return dict(
        benchmark="learning_efficiency",
        regime=args.regime,
        crop=regime.crop,
        latent=dict(compression=f, channels=c, grid=regime.crop // f),
        settings=asdict(settings),
        seeds=args.seeds,
        data=dict(root=str(args.data), val_images=len(val), train_images=len(train)),
        reference=dict(refs, fitted_on="train+test at the same protocol", patch=f, components=c),
        machine=machine_info(torch.device("cpu")),
        models=models,
    )


def plot(payload: dict, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(12, 4.6), dpi=80)
    labels = [m["label"] for m in payload["models"]]
    for m in payload["models"]:
        style = line_style(m["label"], labels)
        steps = sorted({p["step"] for x in m["seeds"] for p in x["curve"]})
        per = [[p["psnr"] for x in m["seeds"] for p in x["curve"] if p["step"] == st] for st in steps]
        mean = [statistics.fmean(v) for v in per]
        axes[0].plot(steps, mean, label=f"{m['label']} (n={len(m['seeds'])})", **style)
        axes[0].fill_between(
            steps, [min(v) for v in per], [max(v) for v in per], color=style["color"], alpha=0.15
        )
        sps = m["s_per_step"]
        if sps and math.isfinite(sps):
            axes[1].plot([st * sps / 60 for st in steps], mean, **style)
    for ax in axes:
        for key, ls in (("patch_mean_colour", ":"), ("patch_pca", "--")):
            ax.axhline(payload["reference"][key], color="grey", ls=ls, lw=1)
        ax.grid(alpha=0.3)
        ax.set_ylabel("validation PSNR (dB)")
    r = payload["reference"]
    axes[0].text(0, r["patch_mean_colour"], " patch mean colour", va="bottom", fontsize=7, color="grey")
    axes[0].text(
        0, r["patch_pca"], f" patch PCA ({r['components']} comp.)", va="bottom", fontsize=7, color="grey"
    )
    axes[0].set_xlabel("training step (mean over seeds; band: min-max)")
    axes[1].set_xlabel("training time (min, one thread; median s/step x steps)")
    axes[0].legend(fontsize=7, loc="lower right")
    s = payload["settings"]
    fig.suptitle(
        f"BSDS500 val, {payload['crop']} px, latent {payload['latent']['grid']}x{payload['latent']['grid']}x"
        f"{payload['latent']['channels']}; batch {s['batch_size']}, lr {s['lr']:g}; Trainer validation",
        fontsize=10,
    )
    save_figure(fig, path)


def print_table(payload: dict) -> None:
    ref = next((m for m in payload["models"] if "TransVAE" in m["label"] and "=" in m["label"]), None)
    ref = ref or next((m for m in payload["models"] if m["label"] == "TransVAE"), None)
    rows = []
    for m in payload["models"]:
        p = m["psnr"]
        rows.append(dict(
            model=m["label"], params_M=m["params"] / 1e6, seeds=p["n"], steps="/".join(map(str, m["steps"])),
            psnr=f"{p['mean']:.2f} ± {p['std']:.2f} ({p['min']:.2f}-{p['max']:.2f})",
            vs_transvae=None if ref is None else p["mean"] - ref["psnr"]["mean"],
            ssim=m["ssim"]["mean"], s_per_step=m["s_per_step"],
        ))  # fmt: skip
    r = payload["reference"]
    rows.append(dict(model="reference: patch mean colour", psnr=f"{r['patch_mean_colour']:.2f}"))
    rows.append(dict(model=f"reference: patch PCA, {r['components']} comp.", psnr=f"{r['patch_pca']:.2f}"))
    cols = ["model", "params_M", "seeds", "steps", "psnr", "vs_transvae", "ssim", "s_per_step"]
    print("\n" + markdown_table(rows, cols))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--regime", choices=["f16-128", "f8-64"], default="f16-128")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BSDS500 root with train/ test/ val/")
    p.add_argument("--models", nargs="+", default=None, help="slugs (default: the regime's core; see --list)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="target steps per run (default 300)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8")
    p.add_argument("--lr", type=float, default=None, help="default 1e-4 (the recipes')")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 50)")
    p.add_argument("--eval-every", type=int, default=None, help="Trainer validation interval (default 50)")
    p.add_argument("--val-limit", type=int, default=None, help="val photos (default 0 = all 100)")
    p.add_argument("--lpips-weights", default=None, help="local VGG16 checkpoint: adds LPIPS (weight 1)")
    p.add_argument(
        "--minutes", type=float, default=0.0, help="stop each run after this many minutes (resumable)"
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel 1-thread runs")
    p.add_argument("--resume", action="store_true", help="continue / extend existing runs")
    p.add_argument(
        "--report-only", action="store_true", help="no training: evaluate existing runs, write JSON/PNG"
    )
    p.add_argument(
        "--runs-dir", type=Path, default=None, help=f"run folders (default {RUNS.relative_to(REPO)})"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG next to it)")
    p.add_argument(
        "--quick", action="store_true", help="4 steps x batch 2, 4 val photos, seed 0: a smoke run"
    )
    p.add_argument("--list", action="store_true", help="print the model slugs of the regime and exit")
    p.add_argument("--_run", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.runs_dir = args.runs_dir or (RUNS.with_name(RUNS.name + "_quick") if args.quick else RUNS)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args._run:
        run_one(args)
        return
    regime = regimes()[args.regime]
    by_slug = {slug(label): (label, base, o) for label, base, o in regime.specs}
    if args.list:
        for s_, (_label, base, o) in by_slug.items():
            print(f"{s_:40s} {base:24s} {o}{'  (default)' if s_ in regime.default else ''}")
        return
    wanted = args.models or list(regime.default)
    unknown = [m for m in wanted if m not in by_slug]
    if unknown:
        sys.exit(f"error: unknown model(s) {unknown}; valid: {list(by_slug)}")
    if not (args.data / "val").is_dir():
        sys.exit(f"error: {args.data} has no val/ folder (BSDS500 root with train/ test/ val/)")
    settings = settings_from(args)
    if not args.report_only:
        jobs = [(s_, seed) for s_ in wanted for seed in args.seeds]
        existing = [
            j
            for j in jobs
            if any(
                (args.runs_dir / args.regime / j[0] / f"seed{j[1]}" / f).exists()
                for f in ("config.yaml", "config.json")
            )
        ]
        if existing and not args.resume:
            sys.exit(
                f"error: {len(existing)} run folder(s) exist under {args.runs_dir / args.regime} "
                f"(e.g. {existing[0]}); pass --resume to continue or extend them, or --runs-dir for new ones"
            )
        todo = [
            j
            for j in jobs
            if not _finished(args.runs_dir / args.regime / j[0] / f"seed{j[1]}", settings.steps)
        ]
        # seed by seed (an interrupted budget leaves whole seeds), the costliest model first
        cost = {s_: training_gflop(*by_slug[s_][1:], regime.crop) for s_ in wanted}
        todo.sort(key=lambda j: (args.seeds.index(j[1]), -cost[j[0]]))
        if todo:
            train_all(args, todo)
    for s_ in wanted:
        register(args.regime, regime, s_)
    payload = collect(args, regime, wanted, settings)
    payload["command"] = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out = args.out or DOCS_DIR / f"learning_efficiency_{args.regime}{'_quick' if args.quick else ''}.json"
    write_json(out, payload)
    plot(payload, out.with_suffix(".png"))
    print_table(payload)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


def _finished(run_dir: Path, steps: int) -> bool:
    meta = run_dir / "model" / "config.json"
    if not meta.is_file():
        return False
    return json.loads(meta.read_text()).get("metadata", {}).get("step", 0) >= steps


def training_gflop(base: str, overrides: dict, crop: int) -> float:
    """Forward GFLOP of one crop, counted on the meta device (orders the work of parallel runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from transvae.models import create_model

    model = create_model(base, device="meta", **overrides).requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.empty(1, 3, crop, crop, device="meta"))
    return fc.get_total_flops() / 1e9


if __name__ == "__main__":
    main()

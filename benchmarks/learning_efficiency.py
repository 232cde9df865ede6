"""Learning efficiency at small scale (paper Figures 1, 3b/c and 4).

Trains parameter-matched ~3M-parameter models -- CNN-VAE, ViT-VAE, TransVAE and every rung of
the design ladder between ViT-VAE and TransVAE (``transvae.models.ladder``) -- with the same
data, seed, crops, steps and L1 + KL loss, and plots validation PSNR and L1 against steps and
against training wall-clock time. Trained models are saved under ``runs/bench/<label>/model``
(gitignored) for ``extrapolation.py``.

    python benchmarks/learning_efficiency.py --quick            # minutes
    python benchmarks/learning_efficiency.py                    # ~1 hour on an idle 2-core CPU
    python benchmarks/learning_efficiency.py --workers 1        # one process, torch's threads
    python benchmarks/learning_efficiency.py --list             # the model labels

On a CPU the models are trained in parallel processes with one thread each (``--workers``,
default: one per core), which is faster than one process using every core for these small
models; the per-model results are then merged into one JSON and plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    RUNS_DIR,
    TrainSettings,
    center_crops,
    line_style,
    load_photos,
    machine_info,
    markdown_table,
    resolve_device,
    slug,
    train_model,
    write_json,
)

QUICK_MODELS = ("cnn-vae", "vit-vae-learned-abs-pe", "dc-shortcut-transvae")


def model_specs(size: str = "mini") -> list[tuple[str, str, dict]]:
    """(label, registered base model, overrides): the CNN-VAE baseline, then the ladder rungs."""
    from transvae.models.ladder import ladder

    return [("CNN-VAE", f"cnn-vae-{size}-f16d32", {})] + ladder(size)


def plot_curves(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=80)
    labels = [r["label"] for r in results]
    for r in results:
        c = r["curve"]
        style = line_style(r["label"], labels)
        for row, key in enumerate(("psnr", "l1")):
            for col, xkey in enumerate(("step", "time_s")):
                axes[row, col].plot([p[xkey] for p in c], [p[key] for p in c], label=r["label"], **style)
    for row, key in enumerate(("validation PSNR (dB)", "validation L1")):
        axes[row, 0].set_ylabel(key)
    axes[1, 0].set_xlabel("training step")
    axes[1, 1].set_xlabel("training wall-clock (s, excl. validation)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def print_table(results: list[dict], steps: int) -> None:
    rows = [
        dict(
            model=r["label"],
            params_M=r["params"] / 1e6,
            final_psnr=r["curve"][-1]["psnr"],
            final_l1=r["curve"][-1]["l1"],
            train_s=r["curve"][-1]["time_s"],
            steps=r.get("steps", steps),
            s_per_step=r["curve"][-1]["time_s"] / r.get("steps", steps),
        )
        for r in results
    ]
    print(
        "\n"
        + markdown_table(
            rows, ["model", "params_M", "steps", "final_psnr", "final_l1", "train_s", "s_per_step"]
        )
    )


def merge(paths: list[Path], out: Path, command: str | None = None) -> None:
    """Combine runs made with the same settings except possibly ``steps`` (e.g. models trained
    in parallel processes); each result keeps its own step count."""
    payloads = [json.loads(p.read_text()) for p in paths]
    for p, pl in zip(paths[1:], payloads[1:], strict=True):
        if {**pl["settings"], "steps": 0} != {**payloads[0]["settings"], "steps": 0}:
            sys.exit(f"error: {p} was trained with different settings than {paths[0]}")
    merged = dict(
        payloads[0],
        merged_from=[dict(file=str(p), command=pl["command"]) for p, pl in zip(paths, payloads, strict=True)],
    )
    merged["results"] = [dict(r, steps=pl["settings"]["steps"]) for pl in payloads for r in pl["results"]]
    merged["settings"] = dict(merged["settings"], steps=max(r["steps"] for r in merged["results"]))
    merged["command"] = command or (
        "python benchmarks/learning_efficiency.py --merge " + " ".join(map(str, paths)) + f" --out {out}"
    )
    write_json(out, merged)
    s = merged["settings"]
    plot_curves(
        merged["results"],
        out.with_suffix(".png"),
        f"Validation on BSDS500 val, {s['crop']}px crops, batch {s['batch_size']}, lr {s['lr']:g}",
    )
    print_table(merged["results"], s["steps"])
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


def training_gflop(base: str, overrides: dict, crop: int) -> float:
    """Forward GFLOP of one crop, counted on the meta device (orders the work of parallel runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from transvae.models import create_model

    model = create_model(base, device="meta", **overrides).requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.empty(1, 3, crop, crop, device="meta"))
    return fc.get_total_flops() / 1e9


def run_parallel(
    args: argparse.Namespace, wanted: list[str], by_slug: dict, settings, out: Path, command: str
) -> None:
    """Train each model in its own single-threaded subprocess, ``args.workers`` at a time (the
    costliest first), then merge the per-model JSONs into ``out`` in the usual model order."""
    cost = {s_: training_gflop(by_slug[s_][1], by_slug[s_][2], settings.crop) for s_ in wanted}
    order = sorted(wanted, key=lambda s_: -cost[s_])
    tmp = Path(tempfile.mkdtemp(prefix="learning_efficiency_"))
    common = [
        "--data", str(args.data), "--steps", str(settings.steps), "--batch-size", str(settings.batch_size),
        "--lr", str(settings.lr), "--eval-every", str(settings.eval_every), "--seed", str(settings.seed),
        "--device", args.device, "--save-dir", str(args.save_dir), "--threads", "1", "--workers", "1",
    ]  # fmt: skip
    if args.val_limit:
        common += ["--val-limit", str(args.val_limit)]
    if args.quick:
        common.append("--quick")
    if args.no_save:
        common.append("--no-save")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    print(f"training {len(order)} models in {args.workers} single-threaded processes; logs in {tmp}/")

    def one(s_: str) -> Path:
        path, log = tmp / f"{s_}.json", tmp / f"{s_}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), *common, "--models", s_, "--out", str(path)]
        t = time.time()
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            raise RuntimeError(
                f"{s_} failed (exit {rc}); last lines of {log}:\n"
                + "".join(log.read_text().splitlines(True)[-15:])
            )
        final = json.loads(path.read_text())["results"][0]["curve"][-1]
        print(
            f"  done {by_slug[s_][0]:34s} PSNR {final['psnr']:.2f} dB  ({time.time() - t:.0f}s)", flush=True
        )
        return path

    with ThreadPoolExecutor(args.workers) as pool:
        paths = dict(zip(order, pool.map(one, order), strict=True))
    merge([paths[s_] for s_ in wanted], out, command=command)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BSDS500 root with train/ test/ val/")
    p.add_argument(
        "--models", nargs="+", default=None, help="model slugs to train (default: all; see --list)"
    )
    p.add_argument("--list", action="store_true", help="print the model slugs and exit")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None, help="number of val photos (default all 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="3 models, 30 steps, 20 val photos")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG written next to it)")
    p.add_argument("--save-dir", type=Path, default=RUNS_DIR, help="where trained models go (gitignored)")
    p.add_argument("--no-save", action="store_true")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel single-threaded training processes (default: one per CPU core on CPU, 1 on GPU)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="combine result JSONs of runs with identical settings into --out",
    )
    p.add_argument("--replot", type=Path, default=None, help="redraw the PNG of an existing JSON and exit")
    args = p.parse_args(argv)
    if args.replot:
        payload = json.loads(args.replot.read_text())
        s = payload["settings"]
        title = f"Validation on BSDS500 val, {s['crop']}px crops, batch {s['batch_size']}, lr {s['lr']:g}"
        plot_curves(payload["results"], args.replot.with_suffix(".png"), title)
        print(f"wrote {args.replot.with_suffix('.png')}")
        return
    if args.merge:
        merge(args.merge, args.out or DOCS_DIR / "learning_efficiency.json")
        return

    specs = model_specs()
    by_slug = {slug(label): (label, base, o) for label, base, o in specs}
    if args.list:
        for s_, (_label, base, o) in by_slug.items():
            print(f"{s_:40s} {base:24s} {o}")
        return
    wanted = args.models or (list(QUICK_MODELS) if args.quick else list(by_slug))
    unknown = [m for m in wanted if m not in by_slug]
    if unknown:
        sys.exit(f"error: unknown model(s) {unknown}; valid: {list(by_slug)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    base = (
        TrainSettings(steps=30, batch_size=8, eval_every=10, warmup=10)
        if args.quick
        else TrainSettings(steps=400, batch_size=16, eval_every=25, warmup=25)
    )
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eval_every": args.eval_every,
    }
    settings = dataclasses.replace(
        base, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None}
    )
    val_limit = args.val_limit or (20 if args.quick else None)
    device = resolve_device(args.device)
    out = args.out or DOCS_DIR / (
        "learning_efficiency_quick.json" if args.quick else "learning_efficiency.json"
    )
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    workers = args.workers or (1 if device.type != "cpu" or args.threads else os.cpu_count() or 1)
    if workers > 1 and len(wanted) > 1:
        args.workers = min(workers, len(wanted))
        run_parallel(args, wanted, by_slug, settings, out, command)
        return

    t0 = time.time()
    train = load_photos([args.data / "train", args.data / "test"])
    val, _ = center_crops(load_photos([args.data / "val"], limit=val_limit), settings.crop)
    print(f"{len(train)} training photos, {len(val)} validation crops ({time.time() - t0:.0f}s to load)")

    from transvae.models import create_model

    results = []
    for s_ in wanted:
        label, base_name, o = by_slug[s_]
        torch.manual_seed(settings.seed)
        model = create_model(base_name, device=device, **o)
        n_params = model.num_parameters()
        print(f"\n== {label} ({base_name} {o}) {n_params / 1e6:.2f}M params")

        def progress(step: int, r: dict) -> None:
            print(
                f"  step {step:5d}  {r['time_s']:7.1f}s  val L1 {r['l1']:.4f}  PSNR {r['psnr']:.2f}",
                flush=True,
            )

        curve = train_model(model, train, val, settings, progress)
        results.append(dict(label=label, slug=s_, base=base_name, overrides=o, params=n_params, curve=curve))
        if not args.no_save:
            model.save_pretrained(
                args.save_dir / s_ / "model", label=label, train_settings=dataclasses.asdict(settings)
            )
        payload = dict(
            benchmark="learning_efficiency",
            quick=args.quick,
            command=command,
            settings=dataclasses.asdict(settings),
            data=dict(root=str(args.data), train_photos=len(train), val_crops=len(val)),
            machine=machine_info(device),
            results=results,
        )
        write_json(out, payload)  # after every model, so a long run can be inspected while it goes
        plot_curves(
            results,
            out.with_suffix(".png"),
            f"Validation on BSDS500 val, {settings.crop}px crops, batch {settings.batch_size}, lr {settings.lr:g}",
        )

    print_table(results, settings.steps)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

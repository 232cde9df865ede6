"""Figure 6 as one command: the same LightningDiT trained on the latents of several tokenizers.

For each tokenizer (default: TransVAE, CNN-VAE and ViT-VAE, the ``mini`` f16d32 members), with
the project's own commands and nothing written by hand:

1. ``transvae train``: the tokenizer on the training photos (stage 1 of the recipe);
2. ``transvae extract-latents``: latents of the training photos and of held-out photos;
3. ``transvae gen-train`` with ``configs/lightningdit-cpu-quick.yaml``: the same LightningDiT on
   those latents, validated every
   ``--eval-every`` steps: flow loss on the held-out latents and the latent Frechet distance
   (lFD) of ``--val-num`` generated latents (EMA weights, fixed noise) against them.

The figure is lFD against generator steps, one curve per tokenizer, plus each curve divided by
its own value at step 0 (lFD lives in each tokenizer's own normalised latent space, so curves of
different tokenizers are compared by their shape, not their absolute level). On a GPU with the
Inception weights, the paper's FID-10k curve is ``transvae gen-sample`` + ``transvae gen-eval
--metrics fid`` on each ``step_*.pt`` snapshot (``--keep-checkpoints``).

    python benchmarks/generation.py --quick            # minutes: tiny budgets, nano models
    python benchmarks/generation.py                    # the CPU run of docs/benchmarks.md

Runs go to ``runs/gen_bench/`` (gitignored); a stage whose outputs exist is skipped, so an
interrupted run continues where it stopped. LPIPS and the VF loss are off in tokenizer training
(their pretrained VGG / DINOv2 weights cannot be downloaded here): L1 + KL, as the other CPU
benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_utils import DEFAULT_DATA, DOCS_DIR, REPO, machine_info, save_figure, subplots, write_json

TOKENIZERS = {
    "transvae-mini-f16d32": "TransVAE",
    "cnn-vae-mini-f16d32": "CNN-VAE",
    "vit-vae-mini-f16d32": "ViT-VAE",
}
QUICK_TOKENIZERS = {"transvae-nano-f16d32": "TransVAE", "cnn-vae-nano-f16d32": "CNN-VAE"}


def run(cmd: list[str], log: Path, threads: int) -> float:
    """Run a ``transvae`` command (this interpreter, this source tree) writing ``log``; seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src")}
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ transvae {shlex.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(
            [sys.executable, "-m", "transvae.cli", *cmd], stdout=f, stderr=subprocess.STDOUT, env=env
        )
    if rc != 0:
        raise RuntimeError(f"transvae {cmd[0]} failed (exit {rc}); see {log}")
    return time.time() - t0


def finished(run_dir: Path, steps: int) -> bool:
    """Whether a training run folder holds a finished run of at least ``steps`` steps."""
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return s.get("status") == "finished" and s.get("step", 0) >= steps


def pipeline(name: str, args, runs: Path) -> dict:
    """Tokenizer -> latents -> generator for one tokenizer; returns its timings."""
    d, tag = args.data, name
    vae, lat, gen = runs / f"vae-{tag}", runs / f"latents-{tag}", runs / f"gen-{tag}"
    log = runs / f"{tag}.log"
    times = {}
    if not finished(vae, args.vae_steps):
        resume = ["--resume"] if (vae / "checkpoints" / "last.pt").exists() else []
        times["tokenizer_s"] = run(
            [
                "train",
                "--model",
                name,
                "--data",
                str(d / "train"),
                "--val-data",
                str(d / "val"),
                "--out",
                str(vae),
            ]
            + ["--resolution", str(args.resolution), "--batch-size", str(args.vae_batch)]
            + ["--max-steps", str(args.vae_steps), "--workers", "0", "--device", "cpu", *resume]
            + [
                "--loss.lpips_weight=0",
                "--loss.vf_weight=0",
                f"--optim.warmup_steps={min(100, args.vae_steps)}",
            ]
            + [
                f"--log.val_every={max(args.vae_steps // 4, 1)}",
                "--log.tensorboard=false",
                "--log.progress=false",
            ]
            + [f"--train.checkpoint_every={max(args.vae_steps // 4, 1)}"],
            log,
            args.threads,
        )
    for split, folder in (("train", d / "train"), ("held", d / "test")):
        if not (lat / split / "manifest.json").is_file():
            times[f"extract_{split}_s"] = run(
                ["extract-latents", str(folder), "--model", str(vae / "model"), "--out", str(lat / split)]
                + [
                    "--resolution",
                    str(args.resolution),
                    "--batch-size",
                    "16",
                    "--num-workers",
                    "0",
                    "--device",
                    "cpu",
                ],
                log,
                args.threads,
            )
    if args.until == "latents":
        return times
    if not finished(gen, args.gen_steps):
        resume = ["--resume"] if (gen / "checkpoints" / "last.pt").exists() else []
        times["generator_s"] = run(
            ["gen-train", "--config", str(args.gen_config), "--latents", str(lat / "train")]
            + ["--val-latents", str(lat / "held"), "--out", str(gen), "--vae", str(vae / "model")]
            + [
                "--model",
                args.generator,
                "--max-steps",
                str(args.gen_steps),
                "--batch-size",
                str(args.gen_batch),
            ]
            + ["--workers", "0", "--device", "cpu", *resume]
            + [f"--log.val_every={args.eval_every}", f"--train.checkpoint_every={args.eval_every}"]
            + [f"--sample.val_num={args.val_num}", f"--sample.val_steps={args.val_steps}"]
            + ["--log.tensorboard=false", "--log.progress=false"],
            log,
            args.threads,
        )
    return times


def curve(gen: Path) -> list[dict]:
    """The validation history of a gen-train run: step, lFD, held-out flow loss."""
    s = json.loads((gen / "summary.json").read_text())
    return [
        {"step": h["step"], "latent_fd": h.get("val/latent_fd"), "flow_loss": h.get("val/flow_loss")}
        for h in s["history"]
    ]


def plot(results: list[dict], path: Path, title: str) -> None:
    fig, axes = subplots(1, 3, figsize=(14, 3.8), dpi=80)
    styles = {"TransVAE": dict(color="black", lw=2.2), "CNN-VAE": dict(color="tab:red", lw=2.0)}
    for r in results:
        c = [p for p in r["curve"] if p["latent_fd"] is not None]
        st = styles.get(r["label"], dict(color="tab:blue", lw=1.6))
        steps = [p["step"] for p in c]
        axes[0].plot(steps, [p["latent_fd"] for p in c], marker="o", ms=3, label=r["label"], **st)
        axes[1].plot(
            steps, [p["latent_fd"] / c[0]["latent_fd"] for p in c], marker="o", ms=3, label=r["label"], **st
        )
        axes[2].plot(steps, [p["flow_loss"] for p in c], marker="o", ms=3, label=r["label"], **st)
    axes[0].set_ylabel("latent FD (own latent space) ↓")
    axes[1].set_ylabel("latent FD / latent FD at step 0 ↓")
    axes[2].set_ylabel("held-out flow loss ↓")
    for a in axes:
        a.set_xlabel("generator step")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BSDS500 folder with train/ val/ test/")
    p.add_argument("--tokenizers", nargs="+", default=None, help=f"default: {list(TOKENIZERS)}")
    p.add_argument("--resolution", type=int, default=64, help="crop size of tokenizer training and latents")
    p.add_argument("--vae-steps", type=int, default=450)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument(
        "--gen-config",
        type=Path,
        default=REPO / "configs" / "lightningdit-cpu-quick.yaml",
        help="gen-train recipe",
    )
    p.add_argument("--generator", default="lightningdit-mini-1")
    p.add_argument("--gen-steps", type=int, default=2000)
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val-num", type=int, default=200, help="generated latents per lFD evaluation")
    p.add_argument("--val-steps", type=int, default=16, help="Euler steps of those samples")
    p.add_argument("--parallel", type=int, default=3, help="tokenizers processed at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "gen_bench")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (the PNG goes next to it); default docs/benchmarks/"
    )
    p.add_argument("--replot", type=Path, default=None, help="redraw the figure of this JSON and exit")
    p.add_argument("--quick", action="store_true", help="nano models, tiny budgets (a smoke test)")
    p.add_argument("--until", choices=["latents", "all"], default="all", help="stop after the latents")
    args = p.parse_args(argv)
    if args.replot is not None:
        payload = json.loads(args.replot.read_text())
        plot(payload["results"], args.replot.with_suffix(".png"), payload.get("title", ""))
        print(f"wrote {args.replot.with_suffix('.png')}")
        return
    names = args.tokenizers or list(QUICK_TOKENIZERS if args.quick else TOKENIZERS)
    suffix = ""
    if args.quick:
        args.vae_steps, args.gen_steps, args.eval_every = 20, 60, 30
        args.val_num, args.val_steps, args.gen_batch = 150, 4, 16
        args.generator = "lightningdit-nano-1" if args.generator == "lightningdit-mini-1" else args.generator
        args.runs, suffix = args.runs.parent / (args.runs.name + "_quick"), "_quick"
    labels = {**TOKENIZERS, **QUICK_TOKENIZERS}
    t0 = time.time()
    info = machine_info(__import__("torch").device("cpu"))
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        timings = dict(zip(names, pool.map(lambda n: pipeline(n, args, args.runs), names), strict=True))
    if args.until == "latents":
        print(f"tokenizers and latents in {args.runs}: {timings}")
        return
    results = []
    for n in names:
        c = curve(args.runs / f"gen-{n}")
        results.append({"tokenizer": n, "label": labels.get(n, n), "curve": c, "timings_s": timings[n]})
        fd = [x["latent_fd"] for x in c if x["latent_fd"] is not None]
        if fd:
            print(
                f"{n:<24} lFD {fd[0]:.4f} -> {fd[-1]:.4f} ({fd[-1] / fd[0]:.2f}x) over {c[-1]['step']} steps"
            )
    command = "python benchmarks/generation.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    payload = {
        "command": command.strip(),
        "wall_seconds": round(time.time() - t0, 1),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": info,
        "results": results,
    }
    out = args.out or DOCS_DIR / f"generation{suffix}.json"
    payload["title"] = (
        f"{args.generator} on the latents of each tokenizer ({args.resolution} px BSDS500 crops, "
        f"batch {args.gen_batch})"
    )
    write_json(out, payload)
    plot(results, out.with_suffix(".png"), payload["title"])
    print(f"wrote {out} and {out.with_suffix('.png').name} in {payload['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()

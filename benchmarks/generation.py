"""Figure 6 at CPU scale: the same LightningDiT on the latents of several tokenizers, scored in one space.

The tokenizers are ``learning_efficiency.py``'s f16-128 runs (trained with the current code: 128
px crops, 8 x 8 x 32 latents), by default the attention-free CNN-VAE, the ViT-VAE and TransVAE,
every seed. Per (tokenizer, seed), with the project's own commands:

1. ``transvae extract-latents`` of BSDS500 ``train/`` (the generator's data) and ``val/`` (held out);
2. ``transvae gen-train --config configs/lightningdit-cpu-quick.yaml``: the same LightningDiT
   (seed = the tokenizer's seed), validated every ``--eval-every`` steps (held-out flow loss,
   latent FD in the tokenizer's own latent space);
3. ``transvae gen-sample``: ``--num`` images decoded by the tokenizer;
4. the score, in a space shared by all tokenizers: ``transvae.metrics.image_fd`` (a weight-free
   Frechet distance over 8 x 8 thumbnails projected on a PCA basis fitted on the train + test
   photos) between the generated images and the held-out ``val/`` photos, beside the
   tokenizer's floor: the same distance for its reconstructions of those photos.

Latent FD and flow loss are kept as secondary columns (they live in each tokenizer's own
space). Every stage whose output exists is skipped, so an interrupted run continues.

    python benchmarks/generation.py --data BSDS500 --quick   # after learning_efficiency.py --quick
    python benchmarks/generation.py --data BSDS500 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bench_utils as bu
import torch
from learning_efficiency import regimes, runs_dir

from transvae.utils.provenance import Provenance, write_result

TOKENIZERS = ("cnn-vae-no-attention", "vit-vae-learned-abs-pe", "dc-shortcut-transvae")


def finished(run: Path, steps: int) -> bool:
    d = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    return d.get("status") == "finished" and d.get("step", 0) >= steps


def pipeline(a: argparse.Namespace, tok: Path, work: Path, seed: int) -> None:
    """Latents, generator and samples of one (tokenizer, seed), each stage skipped when done."""
    work.mkdir(parents=True, exist_ok=True)
    log, lat, gen, cpu = work / "commands.log", work / "latents", work / "gen", ["--device", "cpu"]
    for split, folder in (("train", a.data / "train"), ("held", a.data / "val")):
        if not (lat / split / "manifest.json").is_file():
            bu.transvae_cli(["extract-latents", str(folder), "--model", str(tok), "--out", str(lat / split),
                             "--resolution", str(a.crop), "--batch-size", "16", "--num-workers", "0", *cpu], log)  # fmt: skip
    if not finished(gen, a.gen_steps):
        resume = ["--resume"] if (gen / "checkpoints" / "last.pt").is_file() else []
        keys = {"train.seed": seed, "log.val_every": a.eval_every, "train.checkpoint_every": a.eval_every,
                "sample.val_num": a.val_num, "sample.val_steps": a.val_steps, "log.tensorboard": "false", "log.progress": "false"}  # fmt: skip
        bu.transvae_cli(["gen-train", "--config", str(bu.REPO / "configs" / "lightningdit-cpu-quick.yaml"), "--latents",
                         str(lat / "train"), "--val-latents", str(lat / "held"), "--out", str(gen), "--vae", str(tok),
                         "--model", a.generator, "--max-steps", str(a.gen_steps), "--batch-size", str(a.gen_batch),
                         "--workers", "0", *cpu, *(f"--{k}={v}" for k, v in keys.items()), *resume], log)  # fmt: skip
    if len(list((work / "samples" / "images").glob("*.png"))) < a.num:
        bu.transvae_cli(["gen-sample", "--run", str(gen), "--vae", str(tok), "--num", str(a.num), "--out",
                         str(work / "samples"), "--seed", str(seed), *cpu], log)  # fmt: skip


def score(a: argparse.Namespace, tok: Path, work: Path, held: torch.Tensor, basis) -> dict:
    """Image FD of the samples and of the tokenizer's reconstructions against the held-out photos."""
    import transvae
    from transvae.data.transforms import load_crops
    from transvae.inference import InferenceRunner
    from transvae.metrics.image_fd import image_frechet_distance as fd

    samples = load_crops(sorted((work / "samples" / "images").glob("*.png"))[: a.num], a.crop)
    with torch.no_grad():
        rec = InferenceRunner(transvae.from_pretrained(tok).eval()).reconstruct(held.float() / 127.5 - 1)
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    hist = json.loads((work / "gen" / "summary.json").read_text())["history"]
    curve = [
        {"step": h["step"], "latent_fd": h.get("val/latent_fd"), "flow_loss": h.get("val/flow_loss")}
        for h in hist
    ]
    return dict(image_fd=fd(held, samples, basis), image_fd_floor=fd(held, rec, basis), samples=len(samples),
                held_out=len(held), latent_fd=curve[-1]["latent_fd"], flow_loss=curve[-1]["flow_loss"], curve=curve,
                gen_step=hist[-1]["step"])  # fmt: skip


def plot(payload: dict, path: Path) -> None:
    fig, axes = bu.subplots(1, 3, figsize=(14, 3.8), dpi=80)
    labels = [r["label"] for r in payload["results"]]
    for i, r in enumerate(payload["results"]):
        st = bu.line_style(r["label"], labels)
        for k, dx, mark in (("image_fd", 0, "o"), ("image_fd_floor", 0.15, "x")):
            axes[0].scatter(
                [i + dx] * len(r["seeds"]), [x[k] for x in r["seeds"]], color=st["color"], marker=mark
            )
        for x in r["seeds"]:
            c = [p for p in x["curve"] if p["latent_fd"] is not None]
            label = r["label"] if x is r["seeds"][0] else None
            axes[1].plot([p["step"] for p in c], [p["latent_fd"] for p in c], label=label, **st)
            axes[2].plot([p["step"] for p in c], [p["flow_loss"] for p in c], **st)
    axes[0].set_xticks(range(len(labels)), labels, rotation=15, fontsize=7)
    axes[0].set_ylabel("image FD vs held-out photos (o: generated, x: reconstructions)")
    axes[1].set(xlabel="generator step", ylabel="latent FD (own latent space)", yscale="log")
    axes[2].set(xlabel="generator step", ylabel="held-out flow loss")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    bu.save_figure(fig, path)


DEFAULTS = (("gen_steps", 1000, 20), ("gen_batch", 16, 16), ("eval_every", 250, 10), ("val_num", 200, 150),
            ("val_steps", 16, 4), ("num", 200, 24), ("fd_components", 32, 8))  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = bu.parser(__doc__)
    bu.experiment_args(
        p, "runs/bench/generation[_quick]", "seed 0, a nano generator, tiny budgets", train=False
    )
    p.add_argument(
        "--tokenizers", nargs="+", default=list(TOKENIZERS), help="learning_efficiency f16-128 slugs"
    )
    p.add_argument("--le-runs", type=Path, default=None, help="learning_efficiency.py's runs (its default)")
    p.add_argument("--generator", default=None, help="default lightningdit-mini-1 (--quick: -nano-1)")
    for k, full, quick in DEFAULTS:
        p.add_argument(
            f"--{k.replace('_', '-')}", type=int, default=None, help=f"default {full} (quick {quick})"
        )
    a = p.parse_args(argv)
    a.data, a.crop = bu.data_root(a), regimes()["f16-128"].crop
    for k, full, quick in DEFAULTS:
        setattr(a, k, getattr(a, k) or (quick if a.quick else full))
    a.generator = a.generator or ("lightningdit-nano-1" if a.quick else "lightningdit-mini-1")
    a.seeds, a.le_runs = a.seeds or ([0] if a.quick else [0, 1, 2]), a.le_runs or runs_dir(a.quick)
    a.runs_dir = a.runs_dir or bu.RUNS / ("generation_quick" if a.quick else "generation")
    return a


METRICS = ("image_fd", "image_fd_floor", "latent_fd", "flow_loss")
SETTINGS = ("generator", "gen_steps", "gen_batch", "eval_every", "val_num", "val_steps", "num", "crop")


def main(argv: list[str] | None = None) -> None:
    from transvae.data import list_images
    from transvae.data.transforms import load_crops
    from transvae.metrics.image_fd import fit_thumbnail_basis

    a = parse(argv)
    prov, t0 = Provenance.start(seeds=a.seeds), time.time()
    toks = {
        (s_, k): a.le_runs / "f16-128" / s_ / f"seed{k}" / "model" for s_ in a.tokenizers for k in a.seeds
    }
    if missing := [str(p) for p in toks.values() if not (p / "config.json").is_file()]:
        sys.exit(f"error: no tokenizer at {missing[0]} ({len(missing)} missing): run learning_efficiency.py")
    photos = list_images(a.data / "train") + list_images(a.data / "test")
    basis = fit_thumbnail_basis(load_crops(photos, a.crop), 8, a.fd_components)
    held = load_crops(list_images(a.data / "val"), a.crop)
    labels, results = {bu.slug(x[0]): x[0] for x in regimes()["f16-128"].specs}, []
    for s_ in a.tokenizers:
        seeds = []
        for k, tok, work in ((k, toks[(s_, k)], a.runs_dir / s_ / f"seed{k}") for k in a.seeds):
            print(f"{s_} seed {k} ...", flush=True)
            pipeline(a, tok, work, k)
            seeds.append(dict(seed=k, tokenizer=str(tok), **score(a, tok, work, held, basis)))
        r = dict(
            label=labels.get(s_, s_),
            slug=s_,
            seeds=seeds,
            **{m: bu.spread([x[m] for x in seeds]) for m in METRICS},
        )
        results.append(r)
        print("  " + ", ".join(f"{m} {r[m]['mean']:.3g} ± {r[m]['std']:.2g}" for m in METRICS))
    fd_space = dict(basis.describe(), held_out="BSDS500 val/", fitted_on_photos="train/ + test/")
    payload = dict(benchmark="generation", settings={k: getattr(a, k) for k in SETTINGS}, image_fd=fd_space)
    out = a.out or bu.DOCS_DIR / f"generation{'_quick' if a.quick else ''}.json"
    steps = {f"{r['slug']}/seed{x['seed']}": x["gen_step"] for r in results for x in r["seeds"]}
    write_result(out, dict(payload, results=results), prov, steps=steps)
    plot({"results": results}, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

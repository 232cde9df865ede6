"""Resolution extrapolation (paper Section 3.2.1, Figure 3a): the same photos at every size, no upsampling.

Evaluates the models ``learning_efficiency.py`` trained (its run folders, every seed) at several
sizes on **native centre crops of the same BSDS500 val photos** (481 x 321: at 64-320 px a crop
needs no resize): the crops are written once per size with ``transvae.data.transforms.center_crop``
(under ``<runs-dir>/crops/<size>/``), then each folder goes through ``transvae evaluate`` at its
own size (the protocol's resize is then the identity). Default sizes: f8-64 models at 64, 128,
256, 320 px; f16-128 models at 128, 256, 320 px. Mean PSNR per size and model with the spread
over seeds, a PSNR-vs-size plot and a grid of every model's reconstruction of one photo at the
largest size.

    python benchmarks/extrapolation.py --data BSDS500 --quick        # reads learning_efficiency --quick's runs
    python benchmarks/extrapolation.py --data BSDS500 --regime f16-128 --seeds 0 1 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import bench_utils as bu
from learning_efficiency import regimes, runs_dir

from transvae.utils.provenance import Provenance, write_result

SIZES = {"f8-64": [64, 128, 256, 320], "f16-128": [128, 256, 320]}


def discover(runs: Path, regime: str) -> list[str]:
    """Slugs with a trained model under ``runs/regime``, in learning_efficiency's order."""
    order = [bu.slug(label) for label, _, _ in regimes()[regime].specs]
    found = {p.parents[2].name for p in (runs / regime).glob("*/seed*/model/config.json")}
    return [s for s in order if s in found] + sorted(found - set(order))


def native_crops(val: Path, size: int, limit: int, root: Path) -> Path:
    """Centre crops (no resize) of the first ``limit`` val photos (sorted) in ``root/size``; made once."""
    from transvae.data import list_images, load_image
    from transvae.data.transforms import center_crop

    files = list_images(val)[: limit or None]
    folder = root / (f"{size}_first{limit}" if limit else str(size))  # another --limit: another folder
    if sorted(p.stem for p in folder.glob("*.png")) != sorted(f.stem for f in files):
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            center_crop(load_image(f), size).save(folder / f"{f.stem}.png")
    return folder


def evaluate_seed(run: Path, crops: dict[int, Path]) -> dict | None:
    """PSNR / SSIM of one run's exported model at every size (``transvae evaluate``, cached per step)."""
    from transvae.training.benchmark import exported_step

    step = exported_step(run)
    if step is None:
        return None
    out = {"step": step}
    for size, folder in crops.items():
        ev = bu.evaluate_cached(run / "model", folder, run / "eval_native" / str(size), [size], [step, str(folder)],
                                batch_size=1, extra=["--save-images"])  # fmt: skip
        r = ev["results"][0]
        out[str(size)] = dict(
            psnr=r["psnr"], ssim=r["ssim"], images=r["num_images"], command=ev["run"]["command"]
        )
    return out


def save_grid(items: list[tuple[str, Path]], path: Path, tile: int, columns: int = 4) -> None:
    """PNG images in rows of ``columns``, each resized to ``tile`` pixels, the name above each."""
    from PIL import Image, ImageDraw

    cols = min(columns, len(items))
    grid = Image.new("RGB", (tile * cols, (tile + 14) * -(-len(items) // cols)), "white")
    for i, (name, png) in enumerate(items):
        x, y = (i % cols) * tile, (i // cols) * (tile + 14)
        grid.paste(Image.open(png).convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS), (x, y + 14))
        ImageDraw.Draw(grid).text((x + 2, y + 1), name[:40], fill="black")
    grid.save(path, optimize=True)


def plot(payload: dict, path: Path) -> None:
    fig, ax = bu.subplots(figsize=(6.5, 4), dpi=80)
    sizes, labels = payload["sizes"], [r["label"] for r in payload["results"]]
    for r in payload["results"]:
        ys = [r["psnr"][str(s)] for s in sizes]
        err = [[y["mean"] - y["min"] for y in ys], [y["max"] - y["mean"] for y in ys]]
        ax.errorbar(sizes, [y["mean"] for y in ys], yerr=err, marker="o", capsize=3, label=r["label"],
                    **bu.line_style(r["label"], labels))  # fmt: skip
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(
        xlabel=f"native centre crop (px; trained at {payload['crop']})",
        ylabel="PSNR (dB; bars: seeds' min-max)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    bu.save_figure(fig, path)


def model_row(s_: str, label: str, per_seed: dict[int, dict], sizes: list[int]) -> dict:
    runs = list(per_seed.values())
    return dict(
        label=label, slug=s_, seeds=list(per_seed), steps=[x["step"] for x in runs],
        psnr={str(z): bu.spread([x[str(z)]["psnr"] for x in runs]) for z in sizes},
        ssim={str(z): bu.spread([x[str(z)]["ssim"] for x in runs]) for z in sizes},
        per_seed={str(k): {str(z): v[str(z)]["psnr"] for z in sizes} for k, v in per_seed.items()},
        images={str(z): runs[0][str(z)]["images"] for z in sizes}, commands=[runs[0][str(z)]["command"] for z in sizes],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = bu.parser(__doc__)
    p.add_argument("--regime", choices=list(SIZES), default="f16-128")
    bu.experiment_args(
        p, "learning_efficiency.py's", "2 val photos, the two smallest sizes, seed 0", train=False
    )
    p.add_argument("--models", nargs="+", default=None, help="slugs (default: every trained model)")
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="crop sizes (default: see above)")
    p.add_argument("--limit", type=int, default=0, help="val photos, the same at every size (0 = all)")
    p.add_argument("--grid-image", type=int, default=0, help="index of the photo in the grid")
    args = p.parse_args(argv)
    data = bu.data_root(args, needs=("val",))
    runs = args.runs_dir or runs_dir(args.quick)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes = args.sizes or SIZES[args.regime][: 2 if args.quick else None]
    limit = 2 if args.quick else args.limit
    prov = Provenance.start(seeds=seeds)
    slugs = args.models or discover(runs, args.regime)
    if not slugs:
        sys.exit(f"error: no trained model under {runs / args.regime}: run learning_efficiency.py first")
    crops = {z: native_crops(data / "val", z, limit, runs / "crops") for z in sizes}
    labels = {bu.slug(label): label for label, _, _ in regimes()[args.regime].specs}
    results, grid = [], []
    for s_ in slugs:
        per_seed = {k: r for k in seeds if (r := evaluate_seed(runs / args.regime / s_ / f"seed{k}", crops))}
        if not per_seed:
            print(f"note: {s_} has no trained model for seeds {seeds}; skipped", file=sys.stderr)
            continue
        results.append(model_row(s_, labels.get(s_, s_), per_seed, sizes))
        evals = runs / args.regime / s_ / f"seed{min(per_seed)}" / "eval_native" / str(max(sizes))
        recs = sorted(evals.rglob("reconstructions/**/*.png"))
        if args.grid_image < len(recs):
            grid += [] if grid else [("original", sorted(crops[max(sizes)].glob("*.png"))[args.grid_image])]
            grid.append((labels.get(s_, s_), recs[args.grid_image]))
    out = args.out or bu.DOCS_DIR / f"extrapolation_native_{args.regime}{'_quick' if args.quick else ''}.json"
    payload = dict(benchmark="extrapolation", regime=args.regime, crop=regimes()[args.regime].crop, sizes=sizes,
                   photos=dict(folder=str(data / "val"), limit=limit, crop="native centre crop, no resize"), results=results)  # fmt: skip
    write_result(out, payload, prov, steps={f"{r['slug']}": r["steps"] for r in results})
    plot(payload, out.with_suffix(".png"))
    if grid:
        save_grid(grid, out.with_name(out.stem + f"_grid_{max(sizes)}.png"), tile=min(max(sizes), 256))
    for r in results:
        print(f"{r['label']:40s} " + "  ".join(f"{z}px {r['psnr'][str(z)]['mean']:.2f}" for z in sizes))
    print(f"wrote {out} and its PNGs")


if __name__ == "__main__":
    main()

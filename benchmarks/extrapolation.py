"""Resolution extrapolation (paper Section 3.2.1, Figure 3a) at small scale, through ``transvae evaluate``.

Evaluates the models that ``learning_efficiency.py`` trained (its run folders) on the BSDS500
validation photos at 1x, 2x, 4x and 8x their training size, with the product's evaluation
(``transvae evaluate``: shorter side resized to R, centre crop, posterior mean, uint8 metrics):
mean PSNR per resolution per model, a PSNR-vs-resolution plot and an image grid of every
model's reconstruction of one photo at the largest size. A ViT-VAE with learned absolute
position embeddings (resized bicubically to the larger token grid) is expected to degrade;
TransVAE with 2D RoPE should not.

BSDS500 photos are 481 x 321: at R > 321 their shorter side is upsampled, so larger R means
smoother inputs; compare models at a fixed resolution, and each model's change.

    python benchmarks/extrapolation.py --regime f16-128 --quick
    python benchmarks/extrapolation.py --regime f16-128 --seeds 0 --large-limit 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    evaluate_cli,
    line_style,
    machine_info,
    markdown_table,
    save_figure,
    slug,
    subplots,
    write_json,
)
from learning_efficiency import RUNS, regimes


def discover(runs_dir: Path, regime: str) -> list[str]:
    """Slugs with a trained model under ``runs_dir/regime``, in learning_efficiency's order."""
    order = [slug(label) for label, _, _ in regimes()[regime].specs]
    found = {p.parent.parent.parent.name for p in (runs_dir / regime).glob("*/seed*/model/config.json")}
    return [s for s in order if s in found] + sorted(found - set(order))


def evaluate_model(
    model_dir: Path, out: Path, data: Path, groups: list[tuple[list[int], int | None]]
) -> dict:
    """``transvae evaluate`` per (resolutions, limit) group, cached in ``out`` per exported step."""
    step = json.loads((model_dir / "config.json").read_text()).get("metadata", {}).get("step")
    results, commands = {}, []
    for i, (res, limit) in enumerate(groups):
        d = out / f"group{i}"
        cached = d / "results.json"
        key = dict(step=step, resolutions=res, limit=limit)
        if cached.is_file() and json.loads(cached.read_text()).get("bench_key") == key:
            payload = json.loads(cached.read_text())
        else:
            payload = evaluate_cli(
                model_dir, data, d, res, limit=limit, batch_size=1, extra=["--save-images"]
            )
            payload["bench_key"] = key
            write_json(cached, payload)
        commands.append(payload["run"]["command"])
        for r in payload["results"]:
            results[r["resolution"]] = dict(
                psnr=r["psnr"], ssim=r["ssim"], images=r["num_images"], dir=str(d)
            )
    return dict(step=step, results=results, commands=commands)


def save_grid(items: list[tuple[str, Path]], path: Path, tile: int, columns: int = 4) -> None:
    """PNG images (each resized to ``tile`` pixels) in rows of ``columns``, the name above each."""
    from PIL import Image, ImageDraw

    label_h, cols = 14, min(columns, len(items))
    rows = -(-len(items) // cols)
    grid = Image.new("RGB", (tile * cols, (tile + label_h) * rows), "white")
    draw = ImageDraw.Draw(grid)
    for i, (name, png) in enumerate(items):
        x, y = (i % cols) * tile, (i // cols) * (tile + label_h)
        im = Image.open(png).convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)
        grid.paste(im, (x, y + label_h))
        draw.text((x + 2, y + 1), name[:40], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    if path.stat().st_size > 300_000:  # keep docs light: fall back to a 256-colour palette
        grid.quantize(256).save(path, optimize=True)


def plot(results: list[dict], resolutions: list[int], crop: int, path: Path) -> None:
    fig, ax = subplots(figsize=(6.5, 4), dpi=80)
    labels = [r["label"] for r in results]
    for r in results:
        style = line_style(r["label"], labels)
        ys = [r["psnr"].get(str(s)) for s in resolutions]
        ax.plot(resolutions, ys, marker="o", label=r["label"], **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions, [str(s) for s in resolutions])
    ax.set_xlabel(f"evaluation resolution (trained at {crop})")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--regime", choices=["f16-128", "f8-64"], default="f16-128")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--runs-dir", type=Path, default=RUNS, help="learning_efficiency.py's run folders")
    p.add_argument("--models", nargs="+", default=None, help="slugs (default: every trained model)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="runs averaged per model (default 0)")
    p.add_argument("--factors", nargs="+", type=int, default=[1, 2, 4, 8], help="multiples of the crop size")
    p.add_argument("--val-limit", type=int, default=None, help="val photos at 1x and 2x (default all 100)")
    p.add_argument(
        "--large-limit",
        type=int,
        default=10,
        help="val photos at 4x and above (default 10: 8x is costly on CPU)",
    )
    p.add_argument(
        "--grid-image", type=int, default=0, help="index (sorted by path) of the photo in the grid"
    )
    p.add_argument("--quick", action="store_true", help="2 val photos, factors 1 2")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNGs written next to it)")
    args = p.parse_args(argv)
    if args.quick:
        args.val_limit, args.large_limit, args.factors = 2, 2, [1, 2]
    crop = regimes()[args.regime].crop
    resolutions = [crop * f for f in args.factors]
    groups = [([r for r in resolutions if r <= 2 * crop], args.val_limit)]
    groups.append(([r for r in resolutions if r > 2 * crop], args.large_limit))
    groups = [g for g in groups if g[0]]
    slugs = args.models or discover(args.runs_dir, args.regime)
    if not slugs:
        sys.exit(
            f"error: no trained model under {args.runs_dir / args.regime}; run learning_efficiency.py first"
        )
    val = args.data / "val"
    results, grid = [], []
    for s_ in slugs:
        per_seed = []
        for seed in args.seeds:
            model_dir = args.runs_dir / args.regime / s_ / f"seed{seed}" / "model"
            if not (model_dir / "config.json").is_file():
                print(f"note: {s_} seed {seed} has no trained model; skipped", file=sys.stderr)
                continue
            per_seed.append(evaluate_model(model_dir, model_dir.parent / "eval_extrapolation", val, groups))
        if not per_seed:
            continue
        meta = json.loads((model_dir / "config.json").read_text())
        label = next((lab for lab, _, _ in regimes()[args.regime].specs if slug(lab) == s_), s_)
        psnr = {str(r): statistics.fmean(x["results"][r]["psnr"] for x in per_seed) for r in resolutions}
        ssim = {str(r): statistics.fmean(x["results"][r]["ssim"] for x in per_seed) for r in resolutions}
        images = {str(r): per_seed[0]["results"][r]["images"] for r in resolutions}
        results.append(dict(label=label, slug=s_, model=meta.get("model_name"), seeds=args.seeds[: len(per_seed)],
                            steps=[x["step"] for x in per_seed], psnr=psnr, ssim=ssim, images=images,
                            commands=per_seed[0]["commands"]))  # fmt: skip
        d = Path(per_seed[0]["results"][max(resolutions)]["dir"]) / "images" / str(max(resolutions))
        recs = sorted((d / "reconstructions").rglob("*.png"))
        if recs and args.grid_image < len(recs):
            if not grid:
                grid.append(("original", sorted((d / "inputs").rglob("*.png"))[args.grid_image]))
            grid.append((label, recs[args.grid_image]))
        print(f"{label:40s} " + "  ".join(f"{r}px {psnr[str(r)]:.2f}" for r in resolutions), flush=True)

    out = args.out or DOCS_DIR / f"extrapolation_{args.regime}{'_quick' if args.quick else ''}.json"
    payload = dict(
        benchmark="extrapolation",
        regime=args.regime,
        crop=crop,
        command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        resolutions=resolutions,
        limits={str(r): (args.val_limit if r <= 2 * crop else args.large_limit) for r in resolutions},
        machine=machine_info(torch.device("cpu")),
        results=results,
    )
    write_json(out, payload)
    plot(results, resolutions, crop, out.with_suffix(".png"))
    grid_path = out.with_name(out.stem + f"_grid_{max(resolutions)}.png")
    if grid:
        save_grid(grid, grid_path, tile=min(max(resolutions), 256))
    rows = [dict(model=r["label"], **{f"psnr@{s}": r["psnr"][str(s)] for s in resolutions},
                 change=r["psnr"][str(max(resolutions))] - r["psnr"][str(crop)]) for r in results]  # fmt: skip
    print("\n" + markdown_table(rows, ["model", *(f"psnr@{s}" for s in resolutions), "change"]))
    print(f"\nwrote {out}, {out.with_suffix('.png')}" + (f" and {grid_path}" if grid else ""))


if __name__ == "__main__":
    main()

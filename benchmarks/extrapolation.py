"""Resolution extrapolation (paper Section 3.2.1, Figure 3a) at small scale.

Evaluates the models that ``learning_efficiency.py`` trained on 64x64 crops (saved under
``runs/bench/<label>/model``) on centre crops of the BSDS500 validation photos at 64, 128, 256
and 512 pixels: mean PSNR per resolution per model, a PSNR-vs-resolution plot and an image grid
of every model's reconstruction of one photo at the largest size. A ViT-VAE with learned
absolute position embeddings (resized bicubically to the larger token grid) is expected to
degrade; TransVAE with 2D RoPE should not.

Crops are taken at the photos' native scale; BSDS500 photos are 481x321, so for 512 the photo's
shorter side is first resized (bicubic) to 512 -- those inputs are smoother, so compare models
at a fixed resolution rather than one model across resolutions.

    python benchmarks/extrapolation.py --quick
    python benchmarks/extrapolation.py --models cnn-vae vit-vae-learned-abs-pe dc-shortcut-transvae
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_DATA,
    DOCS_DIR,
    RUNS_DIR,
    center_crops,
    evaluate,
    line_style,
    load_photos,
    machine_info,
    markdown_table,
    resolve_device,
    write_json,
)


def discover(save_dir: Path) -> list[str]:
    """Slugs of the trained models under ``save_dir``, in learning_efficiency's order."""
    from bench_utils import slug
    from learning_efficiency import model_specs

    order = [slug(label) for label, _, _ in model_specs()]
    found = {p.parent.parent.name for p in save_dir.glob("*/model/config.json")}
    return [s for s in order if s in found] + sorted(found - set(order))


@torch.no_grad()
def reconstruct(model, x8: torch.Tensor) -> torch.Tensor:
    from bench_utils import to_unit

    from transvae.data.io import tensor_to_uint8

    device = next(model.parameters()).device
    return tensor_to_uint8(model(to_unit(x8).to(device), sample_posterior=False).sample.cpu())


def save_grid(
    original: torch.Tensor, recons: dict[str, torch.Tensor], path: Path, tile: int, columns: int = 4
) -> None:
    """The original and every model's reconstruction, each resized to ``tile`` pixels, in rows
    of ``columns`` tiles with the model name above each."""
    from PIL import Image, ImageDraw

    items = [("original", original)] + list(recons.items())
    label_h, cols = 14, min(columns, len(items))
    rows = -(-len(items) // cols)
    grid = Image.new("RGB", (tile * cols, (tile + label_h) * rows), "white")
    draw = ImageDraw.Draw(grid)
    for i, (name, img) in enumerate(items):
        x, y = (i % cols) * tile, (i // cols) * (tile + label_h)
        im = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((tile, tile), Image.Resampling.LANCZOS)
        grid.paste(im, (x, y + label_h))
        draw.text((x + 2, y + 1), name[:40], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    if path.stat().st_size > 300_000:  # keep docs light: fall back to a 256-colour palette
        grid.quantize(256).save(path, optimize=True)


def plot(results: list[dict], resolutions: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=80)
    labels = [r["label"] for r in results]
    for r in results:
        style = line_style(r["label"], labels)
        ax.plot(resolutions, [r["psnr"][str(s)] for s in resolutions], marker="o", label=r["label"], **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions, [str(s) for s in resolutions])
    ax.set_xlabel("evaluation resolution (trained at 64)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replot(path: Path, data: Path, save_dir: Path, grid_image: int) -> None:
    """Redraw ``path``'s PSNR plot and its image grid from the saved models."""
    from transvae.models.hub import load_model

    payload = json.loads(path.read_text())
    resolutions, largest = payload["resolutions"], max(payload["resolutions"])
    plot(payload["results"], resolutions, path.with_suffix(".png"))
    photos = load_photos([data / "val"], limit=payload["val_photos"])
    crop = center_crops(photos, largest)[0][grid_image : grid_image + 1]
    grid = {
        r["label"]: reconstruct(load_model(save_dir / r["slug"] / "model").eval(), crop)[0]
        for r in payload["results"]
    }
    grid_path = path.with_name(path.stem + f"_grid_{largest}.png")
    save_grid(crop[0], grid, grid_path, tile=min(largest, 256))
    print(f"wrote {path.with_suffix('.png')} and {grid_path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument(
        "--save-dir", type=Path, default=RUNS_DIR, help="where learning_efficiency.py saved the models"
    )
    p.add_argument(
        "--models", nargs="+", default=None, help="slugs (default: every model found in --save-dir)"
    )
    p.add_argument("--resolutions", nargs="+", type=int, default=[64, 128, 256, 512])
    p.add_argument(
        "--val-limit", type=int, default=None, help="number of val photos (default all 100; quick 8)"
    )
    p.add_argument("--grid-image", type=int, default=0, help="index of the val photo shown in the grid")
    p.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="also evaluate every larger resolution in tiles of this many pixels (e.g. the training size; overlap 1/4)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="8 val photos")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNGs written next to it)")
    p.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="redraw the plot and image grid of an existing JSON (reconstructs one photo per model) and exit",
    )
    args = p.parse_args(argv)
    if args.replot:
        replot(args.replot, args.data, args.save_dir, args.grid_image)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    slugs = args.models or discover(args.save_dir)
    missing = [s for s in slugs if not (args.save_dir / s / "model" / "config.json").exists()]
    if not slugs or missing:
        sys.exit(
            f"error: no trained model for {missing or 'any label'} in {args.save_dir}; run benchmarks/learning_efficiency.py first"
        )
    out = args.out or DOCS_DIR / ("extrapolation_quick.json" if args.quick else "extrapolation.json")
    photos = load_photos([args.data / "val"], limit=args.val_limit or (8 if args.quick else None))

    from transvae.models.hub import load_model

    results, grid = [], {}
    largest = max(args.resolutions)
    crops = {s: center_crops(photos, s) for s in args.resolutions}
    for s_ in slugs:
        folder = args.save_dir / s_ / "model"
        model = load_model(folder, device=device).eval()
        meta = json.loads((folder / "config.json").read_text()).get("metadata", {})
        label = meta.get("label", s_)
        psnr, l1, psnr_tiled, l1_tiled = {}, {}, {}, {}
        for res in args.resolutions:
            r = evaluate(model, crops[res][0], batch_size=max(1, 16 * 64 * 64 // (res * res)))
            psnr[str(res)], l1[str(res)] = r["psnr"], r["l1"]
            print(f"{label:40s} {res:4d}px  PSNR {r['psnr']:.2f}  L1 {r['l1']:.4f}", flush=True)
            if args.tile_size and res > args.tile_size:
                from transvae.inference.runner import InferenceRunner

                runner = InferenceRunner(model, max_pixels=0, tile_size=args.tile_size)
                tiled = functools.partial(runner.reconstruct, tiled=True)
                r = evaluate(model, crops[res][0], batch_size=4, reconstruct=tiled)
                psnr_tiled[str(res)], l1_tiled[str(res)] = r["psnr"], r["l1"]
                print(
                    f"{label:40s} {res:4d}px  PSNR {r['psnr']:.2f}  L1 {r['l1']:.4f}  (tiles of {args.tile_size})"
                )
        grid[label] = reconstruct(model, crops[largest][0][args.grid_image : args.grid_image + 1])[0]
        results.append(
            dict(
                label=label,
                slug=s_,
                params=model.num_parameters(),
                train_settings=meta.get("train_settings"),
                psnr=psnr,
                l1=l1,
                **(
                    dict(tile_size=args.tile_size, psnr_tiled=psnr_tiled, l1_tiled=l1_tiled)
                    if args.tile_size
                    else {}
                ),
            )
        )

    payload = dict(
        benchmark="extrapolation",
        quick=args.quick,
        command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        resolutions=args.resolutions,
        upscaled_resolutions=[s for s in args.resolutions if crops[s][1]],
        val_photos=len(photos),
        machine=machine_info(device),
        results=results,
    )
    write_json(out, payload)
    plot(results, args.resolutions, out.with_suffix(".png"))
    grid_path = out.with_name(out.stem + f"_grid_{largest}.png")
    save_grid(crops[largest][0][args.grid_image], grid, grid_path, tile=min(largest, 256))
    rows = [
        dict(
            model=r["label"],
            **{f"psnr@{s}": r["psnr"][str(s)] for s in args.resolutions},
            **{f"tiled@{s}": v for s, v in r.get("psnr_tiled", {}).items()},
        )
        for r in results
    ]
    tiled_cols = [f"tiled@{s}" for s in args.resolutions if args.tile_size and s > args.tile_size]
    print("\n" + markdown_table(rows, ["model", *(f"psnr@{s}" for s in args.resolutions), *tiled_cols]))
    print(f"\nwrote {out}, {out.with_suffix('.png')} and {grid_path}")


if __name__ == "__main__":
    main()

"""Colour fidelity of a quick-start model (issue 24): PSNR, CIEDE2000, contrast and tint.

    python benchmarks/colour_quickstart.py runs/quickstart                  # measure a finished run
    python benchmarks/colour_quickstart.py runs/qs-ema0 --train -- --minutes 2 --train.ema=false
    python benchmarks/colour_quickstart.py runs/quickstart --data ../shared/data/bsds500/val

Given a ``transvae quickstart`` output folder (with ``--train``: after running ``transvae
quickstart --out OUT ARGS`` through ``transvae.cli.main``), it loads the exported model
(``OUT/run/model``, the EMA weights; ``--weights raw``: the optimizer's weights from
``run/checkpoints/last.pt``) and reports, with ``transvae.metrics.colour``:

- ``held_out``: the held-out cat tiles (``OUT/data/val``) reconstructed (posterior mode),
- ``train``: the training photos (``OUT/data/train``, central 192 x 192 in tiles of the crop
  size): whether the model reproduces the colours it was trained on,
- ``chart``: ``transvae.data.synthetic.colour_chart`` (256 px) cut into tiles of the crop size,
  plus the CIEDE2000 of the mean colour of each flat cell (rows 0-4; ``chart_cells``), worst first,
- ``photos`` (with ``--data``): the first ``--images`` photos of a folder at 256 px (the
  evaluation protocol's resize + centre crop), reconstructed whole,
- ``contrast_response``: the held-out and the training tiles with their contrast scaled by
  0.5 / 1 / 1.5 about each tile's mean: the mean per-tile std of input and reconstruction (a
  faithful autoencoder keeps the ratio at 1; one that has learned a typical contrast pulls every
  input towards it),
- ``blur_reference``: the same figures for a colour-exact blur of the held-out tiles and the
  chart (bicubic down- and up-sampling by 4 / 6 / 8): what CIEDE2000 and contrast a
  reconstruction with that PSNR and no colour error at all gets (pixel CIEDE2000 counts lost
  detail too),
- ``rendering``: how far the PNGs quickstart wrote (``recon_end.png``, ``before_after.png``) are
  from the model's own uint8 output: the rendering's own colour error.

Prints a summary and writes everything to ``OUT/colour.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import transvae
from transvae.cli.quickstart import chart_tiles, reconstruct_uint8
from transvae.data.io import list_images, load_image
from transvae.data.transforms import resize_center_crop
from transvae.metrics.colour import ciede2000_map, colour_report, rgb_to_lab
from transvae.metrics.psnr import psnr_per_image

CHART_ROWS = ("primary/secondary", "grey", "skin", "pastel", "dark")
CHART_COLS = ("red", "green", "blue", "cyan", "magenta", "yellow", "orange", "violet")


def to_uint8_batch(images: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 arrays (equal sizes) -> (B, 3, H, W) uint8."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def tile(x: np.ndarray, t: int) -> list[np.ndarray]:
    """HxWx3 -> the t x t tiles, row by row."""
    h, w = x.shape[:2]
    return [x[i : i + t, j : j + t] for i in range(0, h - t + 1, t) for j in range(0, w - t + 1, t)]


def untile(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows*cols, 3, t, t) -> (1, 3, rows*t, cols*t)."""
    _, c, t, _ = tiles.shape
    return tiles.view(rows, cols, c, t, t).permute(2, 0, 3, 1, 4).reshape(1, c, rows * t, cols * t)


def summary(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """PSNR (mean over images) + ``colour_report``, rounded for reading."""
    rep = {"psnr": float(psnr_per_image(ref, out).mean()), **colour_report(ref, out)}
    return {k: (np.round(v, 3).tolist() if isinstance(v, list) else round(v, 3)) for k, v in rep.items()}


def chart_cells(ref: torch.Tensor, out: torch.Tensor) -> list[dict]:
    """Per flat cell (rows 0-4; the centre half of each cell): its mean colour in and out, their
    CIEDE2000, and for chromatic cells (C* > 10) the Lab hue-angle error in degrees."""
    size = ref.shape[-1]
    c = size // 8
    cells = []
    for r, row in enumerate(CHART_ROWS):
        for k in range(8):
            sl = (
                slice(None),
                slice(None),
                slice(r * c + c // 4, r * c + 3 * c // 4),
                slice(k * c + c // 4, k * c + 3 * c // 4),
            )
            a = ref[sl].double().mean((2, 3)).round().to(torch.uint8)[..., None, None]  # (1, 3, 1, 1)
            b = out[sl].double().mean((2, 3)).round().to(torch.uint8)[..., None, None]
            la, lb = rgb_to_lab(a).reshape(3), rgb_to_lab(b).reshape(3)
            dh = None
            if np.hypot(la[1], la[2]) > 10:
                h = np.degrees(np.arctan2(lb[2], lb[1]) - np.arctan2(la[2], la[1]))
                dh = round(float((h + 180) % 360 - 180), 1)
            name = f"{row} {CHART_COLS[k]}" if r in (0, 3, 4) else f"{row} {k}"
            cells.append(
                {
                    "cell": name,
                    "in": a.flatten().tolist(),
                    "out": b.flatten().tolist(),
                    "ciede2000": round(float(ciede2000_map(a, b)), 2),
                    "hue_error_deg": dh,
                }
            )
    return sorted(cells, key=lambda d: -d["ciede2000"])


def blur(x: torch.Tensor, f: int) -> torch.Tensor:
    """Bicubic down-sampling by ``f`` and back up (PIL): a blur that keeps every colour."""
    h, w = x.shape[-2:]
    ims = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in x]
    small = [im.resize((max(1, round(w / f)), max(1, round(h / f))), Image.BICUBIC) for im in ims]
    return to_uint8_batch([np.asarray(im.resize((w, h), Image.BICUBIC)) for im in small])


def contrast_response(model: torch.nn.Module, x: torch.Tensor, factors=(0.5, 1.0, 1.5)) -> list[dict]:
    """Per factor s: mean per-tile, per-channel std of ``mean + s (x - mean)`` and of its reconstruction."""
    out = []
    for s in factors:
        xf = x.double()
        m = xf.mean((2, 3), keepdim=True)
        xs = (m + s * (xf - m)).round().clamp(0, 255).to(torch.uint8)
        rec = reconstruct_uint8(model, xs)
        si, so = xs.double().flatten(2).std(2).mean().item(), rec.double().flatten(2).std(2).mean().item()
        out.append({"factor": s, "std_in": round(si, 2), "std_out": round(so, 2), "ratio": round(so / si, 3)})
    return out


def grid_tiles(path: Path, n: int, t: int, y0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, reconstructions) read back from a quickstart grid PNG (make_grid, 8 per row, padding 2)."""
    a = np.asarray(Image.open(path).convert("RGB"))
    ims = []
    for i in range(2 * n):
        r, c = divmod(i, 8)
        y, x = y0 + 2 + r * (t + 2), 2 + c * (t + 2)
        ims.append(a[y : y + t, x : x + t])
    x = to_uint8_batch(ims)
    return x[0::2], x[1::2]


def load_model(out: Path, weights: str, checkpoint: Path | None = None) -> torch.nn.Module:
    """The exported model of the run (EMA), or the EMA / raw weights of a training checkpoint."""
    model = transvae.from_pretrained(out / "run" / "model").eval()
    if weights == "raw" or checkpoint is not None:
        from transvae.training.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint or out / "run" / "checkpoints" / "last.pt")
        model.load_state_dict(state["model"] if weights == "raw" else state["ema"]["weights"])
    return model


def measure(
    out: Path, weights: str = "ema", data: Path | None = None, images: int = 8, checkpoint: Path | None = None
) -> dict:
    """Every figure of the module docstring for the quickstart folder ``out`` (the weights of
    ``checkpoint`` instead of the exported model, when given)."""
    model = load_model(out, weights, checkpoint)
    res: dict = {"out": str(out), "weights": weights}
    if checkpoint is not None:
        res["checkpoint"] = str(checkpoint)
    mj = out / "metrics.json"
    if mj.is_file():
        m = json.loads(mj.read_text())
        res["quickstart"] = {k: m.get(k) for k in ("steps", "train_seconds", "threads", "held_out_psnr")}
    # (a) the held-out tiles, in the validation set's order (sorted file names)
    tiles = [np.asarray(load_image(p)) for p in list_images(out / "data" / "val")]
    ref = to_uint8_batch(tiles)
    rec = reconstruct_uint8(model, ref)
    res["held_out"] = summary(ref, rec)
    t = ref.shape[-1]
    # (a') the training photos (their central 192 x 192, in tiles): does the model fit its own data?
    tr = [
        tile(np.asarray(resize_center_crop(load_image(p), 192)[0]), t)
        for p in list_images(out / "data" / "train")
    ]
    tref = to_uint8_batch([x for ts in tr for x in ts])
    res["train"] = summary(tref, reconstruct_uint8(model, tref))
    # (a'') contrast response: does the output contrast follow the input's?
    res["contrast_response"] = {
        name: contrast_response(model, x) for name, x in (("held_out", ref), ("train", tref))
    }
    # (b) the colour chart, in tiles of the crop size (the size the model was trained at), as
    # quickstart's metrics.json measures it
    cref = chart_tiles(t)
    k = round(len(cref) ** 0.5)
    crec = untile(reconstruct_uint8(model, cref), k, k)
    cref = untile(cref, k, k)
    res["chart"] = summary(cref, crec)
    res["chart_cells"] = chart_cells(cref, crec)
    Image.fromarray(torch.cat([cref, crec], 3)[0].permute(1, 2, 0).numpy()).save(out / "chart_recon.png")
    res["chart_cells_mean"] = round(float(np.mean([c["ciede2000"] for c in res["chart_cells"]])), 3)
    res["chart_cells_max_hue_error"] = max(
        abs(c["hue_error_deg"]) for c in res["chart_cells"] if c["hue_error_deg"] is not None
    )
    res["blur_reference"] = {
        f"x{f}": {"held_out": summary(ref, blur(ref, f)), "chart": summary(cref, blur(cref, f))}
        for f in (4, 6, 8)
    }
    # (c) photos nothing was trained on, whole at 256 px
    if data is not None:
        files = list_images(data)[:images]
        ph = to_uint8_batch([np.asarray(resize_center_crop(load_image(p), 256)[0]) for p in files])
        res["photos"] = {"folder": str(data), **summary(ph, reconstruct_uint8(model, ph, batch_size=2))}
    # (d) the rendering: what the PNGs hold vs what the model produced
    n = len(ref) if len(ref) <= 12 else 12
    if weights == "ema" and checkpoint is None and (out / "recon_end.png").is_file():
        g_in, g_rec = grid_tiles(out / "recon_end.png", n, t)
        res["rendering"] = {
            "recon_end.png": {
                "input_max_abs": int((g_in.int() - ref[:n].int()).abs().max()),
                "recon_vs_model": summary(rec[:n], g_rec),
            }
        }
        ba = out / "before_after.png"
        if ba.is_file():
            h_start = Image.open(out / "recon_start.png").height
            b_in, b_rec = grid_tiles(ba, n, t, y0=h_start + 2 * 14)
            res["rendering"]["before_after.png"] = {
                "mode": Image.open(ba).mode,
                "bytes": ba.stat().st_size,
                "input_vs_tiles": summary(ref[:n], b_in),
                "recon_vs_model": summary(rec[:n], b_rec),
                "held_out_as_rendered": summary(b_in, b_rec),
            }
    return res


def print_summary(res: dict) -> None:
    q = res.get("quickstart", {})
    print(f"{res['out']} ({res['weights']} weights; {q.get('steps')} steps, {q.get('train_seconds')} s)")
    rows = [("held-out cat", res["held_out"]), ("train photos", res["train"]), ("colour chart", res["chart"])]
    if "photos" in res:
        rows.append((f"photos ({res['photos']['images']})", res["photos"]))
    print(
        f"{'':16} {'PSNR':>6} {'dE mean':>7} {'dE p95':>6}  contrast R/G/B     shift R/G/B        Lab a*/b*"
    )
    for name, r in rows:
        print(
            f"{name:16} {r['psnr']:6.2f} {r['ciede2000_mean']:7.2f} {r['ciede2000_p95']:6.2f}  "
            + "/".join(f"{v:.2f}" for v in r["contrast_ratio"]).ljust(18)
            + "/".join(f"{v:+.1f}" for v in r["mean_shift"]).ljust(19)
            + "/".join(f"{v:+.1f}" for v in r["lab_shift"])
        )
    for name, rows_ in res["contrast_response"].items():
        print(
            f"contrast response ({name}): "
            + ", ".join(
                f"x{r['factor']:g} std {r['std_in']:.1f}->{r['std_out']:.1f} ({r['ratio']:.2f})"
                for r in rows_
            )
        )
    for name, r in res["blur_reference"].items():
        h, c = r["held_out"], r["chart"]
        print(
            f"colour-exact blur {name}: held-out PSNR {h['psnr']:.2f} dE {h['ciede2000_mean']:.2f} contrast "
            + "/".join(f"{v:.2f}" for v in h["contrast_ratio"])
            + f"; chart PSNR {c['psnr']:.2f} dE {c['ciede2000_mean']:.2f}"
        )
    worst = res["chart_cells"][:3]
    print(
        f"chart cells (mean colour of the 40 flat cells): mean dE {res['chart_cells_mean']:.2f}, "
        f"largest hue error {res['chart_cells_max_hue_error']:.1f} deg"
    )
    print(
        "worst chart cells: "
        + ", ".join(f"{c['cell']} {c['in']}->{c['out']} dE {c['ciede2000']}" for c in worst)
    )
    if "rendering" in res:
        for name, r in res["rendering"].items():
            rv = r["recon_vs_model"]
            print(
                f"rendering {name}: recon tiles vs model output dE mean {rv['ciede2000_mean']:.3f}, p95 {rv['ciede2000_p95']:.3f}"
            )


def curve(args: argparse.Namespace) -> int:
    """One line of held-out / chart figures per kept checkpoint."""
    from transvae.training.checkpoint import load_checkpoint

    rows = []
    print(f"{'step':>5} {'PSNR':>6} {'dE':>5} {'p95':>5}  contrast R/G/B   chart dE  photos PSNR/dE")
    for ck in sorted((args.out / "run" / "checkpoints").glob("step_*.pt")):
        r = measure(args.out, args.weights, args.data, args.images, checkpoint=ck)
        r["step"] = int(load_checkpoint(ck)["step"])
        rows.append(r)
        h, ph = r["held_out"], r.get("photos")
        print(
            f"{r['step']:5d} {h['psnr']:6.2f} {h['ciede2000_mean']:5.2f} {h['ciede2000_p95']:5.2f}  "
            + "/".join(f"{v:.2f}" for v in h["contrast_ratio"]).ljust(17)
            + f"{r['chart']['ciede2000_mean']:8.2f}"
            + (f"  {ph['psnr']:.2f}/{ph['ciede2000_mean']:.2f}" if ph else ""),
            flush=True,
        )
    path = args.json or args.out / "colour_curve.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="a transvae quickstart --out folder")
    p.add_argument(
        "--train", action="store_true", help="run `transvae quickstart --out OUT ARGS` first (ARGS after --)"
    )
    p.add_argument(
        "--weights", choices=("ema", "raw"), default="ema", help="exported EMA weights, or the raw ones"
    )
    p.add_argument("--data", type=Path, default=None, help="a folder of photos to measure at 256 px too")
    p.add_argument("--images", type=int, default=8, help="photos used from --data (default 8)")
    p.add_argument(
        "--curve",
        action="store_true",
        help="measure every run/checkpoints/step_*.pt (a run made with --train.keep_checkpoints=N) "
        "and print one line per step (written to OUT/colour_curve.json)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="where to write the JSON (default OUT/colour.json)"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    qs_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    torch.set_num_threads(1)
    if args.train:
        from transvae.cli import main as cli

        cmd = ["quickstart", "--out", str(args.out), *qs_args]
        print("transvae " + " ".join(cmd), flush=True)
        rc = cli(cmd)
        if rc != 0:
            return rc
    if args.curve:
        return curve(args)
    t0 = time.time()
    res = measure(args.out, args.weights, args.data, args.images)
    if qs_args or args.train:
        res["quickstart_args"] = qs_args
    res["measure_seconds"] = round(time.time() - t0, 1)
    path = args.json or args.out / ("colour.json" if args.weights == "ema" else "colour_raw.json")
    path.write_text(json.dumps(res, indent=2) + "\n")
    print_summary(res)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Colour fidelity of a quick-start model (issue 24): PSNR, CIEDE2000, contrast and tint.

    python benchmarks/colour_quickstart.py runs/quickstart                  # measure a finished run
    python benchmarks/colour_quickstart.py runs/qs-ema0 --train -- --minutes 2 --train.ema=false
    python benchmarks/colour_quickstart.py runs/quickstart --data ../shared/data/bsds500/val

Given a ``transvae quickstart`` folder (``--train``: made first by ``transvae quickstart --out OUT
ARGS``), it loads the exported model (EMA; ``--weights raw``: ``run/checkpoints/last.pt``'s) and
writes ``OUT/colour.json`` (or ``--json``) with ``transvae.evaluation.colour``'s figures
(``colour_summary``) of ``held_out`` (``OUT/data/val``), ``train`` (the training photos' central
192 px in tiles), ``chart`` (the colour chart in tiles; ``chart_cells``: each flat cell, worst
first), ``photos`` (``--data``: the first ``--images`` photos at 256 px, whole); the
``contrast_response`` of held-out and train tiles; ``blur_reference`` (``colour_exact_blur`` by
4 / 6 / 8: the figures of a reconstruction with that PSNR and no colour error); and ``rendering``:
how far quickstart's PNGs (``recon_end.png``, ``before_after.png``) are from the model's output.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bench_utils as bu
import numpy as np
import torch
from PIL import Image

import transvae
from transvae.cli import main as cli
from transvae.data.io import list_images
from transvae.evaluation import colour as C  # noqa: N812


def load_model(out: Path, weights: str, checkpoint: Path | None = None) -> torch.nn.Module:
    """The exported model of the run (EMA), or the EMA / raw weights of a training checkpoint."""
    model = transvae.from_pretrained(out / "run" / "model").eval()
    if weights == "raw" or checkpoint is not None:
        from transvae.training.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint or out / "run" / "checkpoints" / "last.pt")
        model.load_state_dict(state["model"] if weights == "raw" else state["ema"]["weights"])
    return model


def grid_tiles(path: Path, n: int, t: int, y0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, reconstructions) read back from a quickstart grid PNG (make_grid, 8 per row, padding 2)."""
    a = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    at = [(y0 + 2 + (i // 8) * (t + 2), 2 + (i % 8) * (t + 2)) for i in range(2 * n)]
    x = torch.stack([a[:, y : y + t, x : x + t] for y, x in at])
    return x[0::2], x[1::2]


def rendering(out: Path, ref: torch.Tensor, rec: torch.Tensor) -> dict:
    """The PNGs quickstart wrote against the model's own uint8 output: the rendering's colour error."""
    n, t = min(len(ref), 12), ref.shape[-1]
    g_in, g_rec = grid_tiles(out / "recon_end.png", n, t)
    res = {"recon_end.png": {"input_max_abs": int((g_in.int() - ref[:n].int()).abs().max())}}
    res["recon_end.png"]["recon_vs_model"] = C.colour_summary(rec[:n], g_rec, digits=3)
    if (ba := out / "before_after.png").is_file():
        b_in, b_rec = grid_tiles(ba, n, t, y0=Image.open(out / "recon_start.png").height + 2 * 14)
        pairs = {
            "input_vs_tiles": (ref[:n], b_in),
            "recon_vs_model": (rec[:n], b_rec),
            "held_out_as_rendered": (b_in, b_rec),
        }
        res["before_after.png"] = {"mode": Image.open(ba).mode, "bytes": ba.stat().st_size}
        res["before_after.png"].update({k: C.colour_summary(a, b, digits=3) for k, (a, b) in pairs.items()})
    return res


def measure(
    out: Path, weights="ema", data: Path | None = None, images=8, checkpoint: Path | None = None
) -> dict:
    """Every figure of the module docstring for the quickstart folder ``out``."""
    model, summary = load_model(out, weights, checkpoint), lambda a, b: C.colour_summary(a, b, digits=3)
    res: dict = {
        "out": str(out),
        "weights": weights,
        **({"checkpoint": str(checkpoint)} if checkpoint else {}),
    }
    if (mj := out / "metrics.json").is_file():
        qs = json.loads(mj.read_text())
        res["quickstart"] = {k: qs.get(k) for k in ("steps", "train_seconds", "threads", "held_out_psnr")}
    ref = C.load_uint8(list_images(out / "data" / "val"))  # the held-out tiles, sorted by name
    t, rec = ref.shape[-1], C.reconstruct_uint8(model, ref)
    tref = torch.cat([C.cut_tiles(x, t) for x in C.load_uint8(list_images(out / "data" / "train"), 192)])
    res["held_out"], res["train"] = summary(ref, rec), summary(tref, C.reconstruct_uint8(model, tref))
    res["contrast_response"] = {
        k: C.contrast_response(model, x) for k, x in (("held_out", ref), ("train", tref))
    }
    tiles = C.chart_tiles(t)  # the chart in tiles of the crop size, as quickstart's metrics.json measures it
    k = round(len(tiles) ** 0.5)
    cref, crec = C.join_tiles(tiles, k, k), C.join_tiles(C.reconstruct_uint8(model, tiles), k, k)
    res["chart"], res["chart_cells"] = summary(cref, crec), C.chart_cells(cref, crec)
    Image.fromarray(torch.cat([cref, crec], 3)[0].permute(1, 2, 0).numpy()).save(out / "chart_recon.png")
    res["chart_cells_mean"] = round(float(np.mean([c["ciede2000"] for c in res["chart_cells"]])), 3)
    res["chart_cells_max_hue_error"] = max(abs(c["hue_error_deg"] or 0) for c in res["chart_cells"])
    res["blur_reference"] = {f"x{f}": {"held_out": summary(ref, C.colour_exact_blur(ref, f)),
                                       "chart": summary(cref, C.colour_exact_blur(cref, f))} for f in (4, 6, 8)}  # fmt: skip
    if data is not None:  # photos nothing was trained on, whole at 256 px
        ph = C.load_uint8(list_images(data)[:images], 256)
        res["photos"] = {"folder": str(data), **summary(ph, C.reconstruct_uint8(model, ph, batch_size=2))}
    if weights == "ema" and checkpoint is None and (out / "recon_end.png").is_file():
        res["rendering"] = rendering(out, ref, rec)
    return res


def main(argv: list[str] | None = None) -> int:
    p = bu.parser(__doc__)
    add = p.add_argument
    add("out", type=Path, help="a transvae quickstart --out folder")
    add("--train", action="store_true", help="run `transvae quickstart --out OUT ARGS` first (ARGS after --)")
    add("--weights", choices=("ema", "raw"), default="ema", help="exported EMA weights, or the raw ones")
    add("--data", type=Path, default=None, help="a folder of photos to measure at 256 px too")
    add("--images", type=int, default=8, help="photos used from --data (default 8)")
    add("--curve", action="store_true", help="measure each run/checkpoints/step_*.pt: OUT/colour_curve.json")
    add("--json", type=Path, default=None, help="where to write the JSON (default OUT/colour.json)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, qs_args = p.parse_args(argv[:cut]), argv[cut + 1 :]
    torch.set_num_threads(1)
    if args.train and (rc := cli(["quickstart", "--out", str(args.out), *qs_args])) != 0:
        return rc
    t0 = time.time()
    if args.curve:  # one result per kept checkpoint (a run made with --train.keep_checkpoints=N)
        cks = sorted((args.out / "run" / "checkpoints").glob("step_*.pt"))
        res = [
            {**measure(args.out, args.weights, args.data, args.images, ck), "step": int(ck.stem[5:])}
            for ck in cks
        ]
        path = args.json or args.out / "colour_curve.json"
    else:
        res = measure(args.out, args.weights, args.data, args.images)
        res.update({"quickstart_args": qs_args} if qs_args or args.train else {})
        res["measure_seconds"] = round(time.time() - t0, 1)
        path = args.json or args.out / ("colour.json" if args.weights == "ema" else "colour_raw.json")
    path.write_text(json.dumps(res, indent=2) + "\n")
    for r in res if isinstance(res, list) else [res]:
        psnr = {k: r[k]["psnr"] for k in ("held_out", "train", "chart", "photos") if k in r}
        print(r.get("step", r["out"]), "PSNR", psnr, "CIEDE2000", {k: r[k]["ciede2000_mean"] for k in psnr})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

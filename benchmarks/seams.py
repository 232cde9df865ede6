"""Seams of tiled inference for each shipped tiling setting (docs/inference.md, "Seams").

    python benchmarks/seams.py --model runs/quickstart/run/model --sizes 1024 2048 \
        --out docs/benchmarks/seams.json

A large natural image (scikit-image's astronaut, resized to each size) is decoded and
encoded-decoded tiled and untiled with ``transvae.evaluation.seams.measure_seams``; the table gives,
per setting, PSNR of the tiled result against the untiled one in the border bands and elsewhere
and the gradient jump across the seams (``transvae/evaluation/seams.py`` defines them).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

SETTINGS = [  # (label, tile size, overlap or None = measured on the model: the default)
    ("tile 512, measured overlap (default)", 512, None),
    ("tile 256, measured overlap", 256, None),
    ("tile 512, overlap 128 (tile/4: the former default)", 512, 128),
    ("tile 512, no overlap", 512, 0),
]


def image(size: int) -> torch.Tensor:
    from skimage import data

    im = Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1


def main(argv: list[str] | None = None) -> int:
    import transvae
    from transvae.evaluation.seams import measure_seams
    from transvae.inference import InferenceRunner
    from transvae.utils.provenance import Provenance, write_result

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained model folder (a random model is not local)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--out", default="docs/benchmarks/seams.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = transvae.from_pretrained(args.model)
    rows, prov = [], Provenance.start()
    for size in args.sizes:
        x = image(size)
        for label, tile, overlap in SETTINGS:
            r = measure_seams(InferenceRunner(model, tile_size=tile, tile_overlap=overlap), x)
            rows.append({"size": size, "setting": label, **r})
            d, e, v = r["decode"], r["reconstruct"], r["psnr_vs_input"]
            print(
                f"{size:5d}  {label:<48} overlap {r['tile_overlap']:4d}  vs input untiled {v['untiled']:.2f} / "
                f"tiled {v['tiled']:.2f} dB; decode band {d['psnr_band']:.2f} / rest "
                f"{d['psnr_rest']:.2f} dB, jump {d['gradient_jump']:.3f}; encode+decode band {e['psnr_band']:.2f} / "
                f"rest {e['psnr_rest']:.2f} dB, jump {e['gradient_jump']:.3f}",
                flush=True,
            )
    payload = {"benchmark": "seams", "model": str(args.model), "model_name": model.model_name, "rows": rows}
    write_result(args.out, payload, prov, steps=len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How closely the imported autoencoders reproduce the diffusers models they come from (issue 23).

Each published configuration (``transvae.models.convert.parity.PUBLISHED_KL``: SD, SDXL, SD3,
FLUX.1, VA-VAE's structure; and DC-AE f32c32 as ``inference.peers`` builds it, wrapped rather than
converted) is built at its real widths with random weights (seed 0), saved by diffusers, loaded
by ``transvae.from_pretrained`` and compared on scikit-image's astronaut by
``transvae.models.convert.parity.parity`` (its doc says what each column is):

    python benchmarks/convert_parity.py              # ~5 min on one CPU core
    python benchmarks/convert_parity.py --size 256   # slower
"""

from __future__ import annotations

import argparse

import diffusers
import numpy as np
import torch
from bench_utils import DOCS_DIR
from PIL import Image

from transvae.inference.peers import PEERS
from transvae.models.convert.parity import PUBLISHED_KL, parity
from transvae.utils.markdown import markdown_table
from transvae.utils.provenance import Provenance, write_result

COLS = ["model", "mean fp32", "logvar fp32", "decode fp32", "reconstruct fp32", "reconstruct fp64",
        "transvae fp32 decode vs fp64", "diffusers fp32 decode vs fp64", "diffusers NHWC fp32 decode vs fp64",
        "output range"]  # fmt: skip


def photo(size: int) -> torch.Tensor:
    import skimage.data

    im = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1.0)[None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    p.add_argument("--out", default=str(DOCS_DIR / "convert_parity.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    prov, x, rows = Provenance.start(seeds=[0]), photo(args.size), []
    builds = [(name, diffusers.AutoencoderKL, cfg) for name, cfg in PUBLISHED_KL.items()]
    builds.append(("dc-ae-f32c32", diffusers.AutoencoderDC, PEERS["dc-ae-f32c32-config"][1]))
    for name, cls, cfg in builds:
        torch.manual_seed(0)
        rows.append({"model": name, **parity(cls(**cfg).eval(), x)})
        print(
            f"{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in rows[-1].items() if isinstance(v, float)),
            flush=True,
        )
    print(markdown_table(rows, COLS))
    write_result(
        args.out, {"benchmark": "convert_parity", "size": args.size, "rows": rows}, prov, steps=len(rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""transvae's FID against torch-fidelity's, and torchmetrics' default, at several image sizes.

    python benchmarks/fid_torch_fidelity.py --sizes 64 299 512 --num 20 --out docs/benchmarks/fid_torch_fidelity.json
    python benchmarks/fid_torch_fidelity.py --weights weights-inception-2015-12-05-6726825d.pth ...

The two sets are the first --num photos of DATA/val and of DATA/test (BSDS500), centre-cropped
and resized to each size with ADM's preprocessing (``transvae.inference.extract.center_crop_resize``).
All three pipelines read the same InceptionV3 file: --weights, or by default a random-weight
stand-in (``transvae.metrics.features.save_random_inception``: offline machines cannot download
the real one). The comparison is of the pipelines (resize to 299, features, Frechet distance),
not an FID anyone should quote. Prints one line and writes one JSON row per size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_utils import DEFAULT_DATA

from transvae.data.io import list_images, load_image
from transvae.inference.extract import center_crop_resize
from transvae.metrics import MetricCollection, build_metrics, feature_networks
from transvae.metrics.features import save_random_inception


class _Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) items: what torch-fidelity's calculate_metrics reads."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def photos(folder: Path, num: int, size: int) -> torch.Tensor:
    """The first ``num`` photos of ``folder`` as uint8 (num, 3, size, size), ADM centre crops."""
    arrs = [np.asarray(center_crop_resize(load_image(f), size)) for f in list_images(folder)[:num]]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def three_fids(real: torch.Tensor, fake: torch.Tensor, weights: Path) -> dict[str, float]:
    import torch_fidelity
    from torchmetrics.image.fid import FrechetInceptionDistance

    metrics = build_metrics(["fid"])
    mc = MetricCollection(metrics, feature_networks(metrics, {"inception": weights}))
    mc.update_images(real, real=True)
    mc.update_images(fake, real=False)
    tf = torch_fidelity.calculate_metrics(
        input1=_Images(fake), input2=_Images(real), fid=True, feature_extractor_weights_path=str(weights),
        cuda=False, verbose=False, cache=False, save_cpu_ram=True,
    )  # fmt: skip
    tm = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))  # antialias=True
    tm.update(real, real=True)
    tm.update(fake, real=False)
    return {
        "transvae": mc.compute()["fid"],
        "torch_fidelity": float(tf["frechet_inception_distance"]),
        "torchmetrics_default": float(tm.compute()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BSDS500 folder (val/ and test/)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 299, 512])
    ap.add_argument("--num", type=int, default=20, help="photos per set")
    ap.add_argument(
        "--weights", type=Path, default=None, help="an InceptionV3 file (default: random stand-in)"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or save_random_inception(Path(tmp) / "random-inception.pth")
        rows = []
        for size in args.sizes:
            t = time.time()
            real, fake = photos(args.data / "val", args.num, size), photos(args.data / "test", args.num, size)
            row = {"size": size, "num": args.num, **three_fids(real, fake, weights)}
            row["rel_diff_torch_fidelity"] = (
                abs(row["transvae"] - row["torch_fidelity"]) / row["torch_fidelity"]
            )
            row["seconds"] = round(time.time() - t, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        weights_name = "random stand-in (seed 0)" if args.weights is None else args.weights.name
        args.out.write_text(json.dumps({"weights": weights_name, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

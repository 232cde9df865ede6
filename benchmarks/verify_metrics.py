"""Check ``transvae evaluate``'s PSNR / SSIM against scikit-image on the very same uint8 images.

Run the evaluation with ``--save-images`` (it writes the exact uint8 inputs and reconstructions
the metrics saw), then::

    python benchmarks/verify_metrics.py eval/            # eval/ = the --out folder

For every resolution and image it recomputes PSNR with ``skimage.metrics.peak_signal_noise_ratio``
and SSIM with ``structural_similarity(..., channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` from the PNGs, compares them with the per-image
values and the set means in results.json, prints the largest differences and exits 1 if any
exceeds 1e-3 dB (PSNR) or 1e-4 (SSIM).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_TOL, SSIM_TOL = 1e-3, 1e-4


SSIM_OPTIONS = dict(channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def verify(out_dir: Path) -> tuple[bool, list[dict]]:
    """Compare results.json with scikit-image; returns (all within tolerance, one row per resolution)."""
    res = json.loads((out_dir / "results.json").read_text())
    rows, ok = [], True
    for summary in res["results"]:
        r = str(summary["resolution"])
        if not (img_dir := out_dir / "images" / r).is_dir():
            raise FileNotFoundError(f"{img_dir} missing: run transvae evaluate with --save-images")
        ours, theirs = {"psnr": [], "ssim": []}, {"psnr": [], "ssim": []}
        for item in res["per_image"][r]:
            name = Path(item["path"]).with_suffix(".png")
            a, b = (
                np.asarray(Image.open(img_dir / d / name).convert("RGB"))
                for d in ("inputs", "reconstructions")
            )
            if "psnr" in item:
                ours["psnr"].append(item["psnr"])
                same = np.array_equal(a, b)
                theirs["psnr"].append(math.inf if same else peak_signal_noise_ratio(a, b, data_range=255))
            if "ssim" in item:
                ours["ssim"].append(item["ssim"])
                theirs["ssim"].append(structural_similarity(a, b, data_range=255, **SSIM_OPTIONS))
        row = {"resolution": int(r), "images": len(res["per_image"][r])}
        for m, tol in (("psnr", PSNR_TOL), ("ssim", SSIM_TOL)):
            if theirs[m]:
                diff = max(0.0 if x == y else abs(x - y) for x, y in zip(ours[m], theirs[m], strict=True))
                row.update({m: summary.get(m), f"{m}_skimage": float(np.mean(theirs[m]))})
                row[f"max_abs_diff_{m}"] = diff
                ok &= diff <= tol and (summary.get(m) is None or abs(summary[m] - np.mean(theirs[m])) <= tol)
        rows.append(row)
    return bool(ok), rows


def main(argv: list[str] | None = None) -> int:
    from transvae.utils.markdown import markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="the --out folder of a `transvae evaluate --save-images` run")
    args = ap.parse_args(argv)
    try:
        ok, rows = verify(args.out_dir)
    except (FileNotFoundError, KeyError) as e:
        print(f"verify_metrics: {e}", file=sys.stderr)
        return 2
    cols = [
        "resolution",
        "images",
        "psnr",
        "psnr_skimage",
        "max_abs_diff_psnr",
        "ssim",
        "ssim_skimage",
        "max_abs_diff_ssim",
    ]
    heads = ["R", "images", "PSNR (transvae)", "PSNR (skimage)", "max |Δ| per image", "SSIM (transvae)", "SSIM (skimage)",
             "max |Δ| per image"]  # fmt: skip
    fmt = lambda v: "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
    print(markdown_table(rows, cols, heads, fmt=fmt, align="r" * len(cols)))
    print("OK: within 1e-3 dB / 1e-4" if ok else "FAILED: differences above 1e-3 dB / 1e-4")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

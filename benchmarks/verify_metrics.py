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


def verify(out_dir: Path) -> tuple[bool, list[dict]]:
    """Compare results.json with scikit-image; returns (all within tolerance, one row per resolution)."""
    res = json.loads((out_dir / "results.json").read_text())
    rows, ok = [], True
    for summary in res["results"]:
        r = str(summary["resolution"])
        img_dir = out_dir / "images" / r
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir} missing: run transvae evaluate with --save-images")
        dp, ds, ref_p, ref_s = [], [], [], []
        for item in res["per_image"][r]:
            name = Path(item["path"]).with_suffix(".png")
            a = np.asarray(Image.open(img_dir / "inputs" / name).convert("RGB"))
            b = np.asarray(Image.open(img_dir / "reconstructions" / name).convert("RGB"))
            if "psnr" in item:
                p = peak_signal_noise_ratio(a, b, data_range=255) if not np.array_equal(a, b) else math.inf
                ref_p.append(p)
                dp.append(0.0 if p == item["psnr"] else abs(p - item["psnr"]))
            if "ssim" in item:
                s = structural_similarity(
                    a,
                    b,
                    channel_axis=-1,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=255,
                )
                ref_s.append(s)
                ds.append(abs(s - item["ssim"]))
        row = {"resolution": int(r), "images": len(res["per_image"][r])}
        if ref_p:
            row |= {
                "psnr": summary.get("psnr"),
                "psnr_skimage": float(np.mean(ref_p)),
                "max_abs_diff_psnr": max(dp),
            }
            ok &= max(dp) <= PSNR_TOL and (
                summary.get("psnr") is None or abs(summary["psnr"] - np.mean(ref_p)) <= PSNR_TOL
            )
        if ref_s:
            row |= {
                "ssim": summary.get("ssim"),
                "ssim_skimage": float(np.mean(ref_s)),
                "max_abs_diff_ssim": max(ds),
            }
            ok &= max(ds) <= SSIM_TOL and abs(summary["ssim"] - np.mean(ref_s)) <= SSIM_TOL
        rows.append(row)
    return bool(ok), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="the --out folder of a `transvae evaluate --save-images` run")
    args = ap.parse_args(argv)
    try:
        ok, rows = verify(args.out_dir)
    except (FileNotFoundError, KeyError) as e:
        print(f"verify_metrics: {e}", file=sys.stderr)
        return 2
    print(
        "| R | images | PSNR (transvae) | PSNR (skimage) | max |Δ| per image | SSIM (transvae) | SSIM (skimage) | max |Δ| per image |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['resolution']} | {r['images']} | {r.get('psnr', float('nan')):.4f} | {r.get('psnr_skimage', float('nan')):.4f} "
            f"| {r.get('max_abs_diff_psnr', float('nan')):.2e} | {r.get('ssim', float('nan')):.6f} "
            f"| {r.get('ssim_skimage', float('nan')):.6f} | {r.get('max_abs_diff_ssim', float('nan')):.2e} |"
        )
    print("OK: within 1e-3 dB / 1e-4" if ok else "FAILED: differences above 1e-3 dB / 1e-4")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

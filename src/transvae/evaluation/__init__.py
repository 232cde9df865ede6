"""Evaluation following the paper's protocol (Sections 4.2 and 4.4, Tables 1 and 2).

- ``metrics``: per-image PSNR / SSIM / LPIPS on uint8 images; ``fid``: set-level rFID.
- ``protocol``: resize-shorter-side + center-crop preprocessing; ``runner``: one pass at one
  resolution; ``pipeline.run_evaluation``: all resolutions + latent analysis + outputs.
- ``latent_analysis``: latent statistics and diffusion scaling factors, VA-VAE's uniformity
  metrics, linear probe.
- ``report``: results.json, results.md and the self-contained report.html.

See docs/evaluation.md for the protocol and the conventions.
"""

from .fid import FIDMetric
from .latent_analysis import (
    LatentStatistics,
    LatentVectorSampler,
    density_uniformity,
    latent_statistics,
    linear_probe,
    pooled_latents,
    uniformity_metrics,
)
from .metrics import LPIPSMetric, build_lpips, psnr_per_image, ssim_per_image
from .pipeline import run_evaluation
from .protocol import resize_center_crop
from .runner import METRICS, LatentOptions, evaluate_resolution
from .weights import WeightsUnavailableError

__all__ = [
    "FIDMetric",
    "LPIPSMetric",
    "LatentOptions",
    "LatentStatistics",
    "LatentVectorSampler",
    "METRICS",
    "WeightsUnavailableError",
    "build_lpips",
    "density_uniformity",
    "evaluate_resolution",
    "latent_statistics",
    "linear_probe",
    "pooled_latents",
    "psnr_per_image",
    "resize_center_crop",
    "run_evaluation",
    "ssim_per_image",
    "uniformity_metrics",
]

"""Evaluation following the paper's protocol (Sections 4.2 and 4.4, Tables 1 and 2).

- ``metrics``: per-image PSNR / SSIM / LPIPS on uint8 images; ``fid``: set-level (r)FID;
  ``inception_score``: IS of generated images.
- ``protocol``: resize-shorter-side + center-crop preprocessing; ``runner``: one pass at one
  resolution; ``pipeline.run_evaluation``: all resolutions + latent analysis + outputs.
- ``latent_analysis``: latent statistics and diffusion scaling factors, VA-VAE's uniformity
  metrics, linear probe.
- ``report``: results.json, results.md and the self-contained report.html.

See docs/evaluation.md for the protocol and the conventions.
"""

from ..utils.lazy import lazy_exports

# name -> submodule; imported on first use so that e.g. ``latent_analysis`` stays light to import
_EXPORTS = {
    "FIDMetric": "fid",
    "ISMetric": "inception_score",
    "LPIPSMetric": "metrics",
    "LatentOptions": "runner",
    "LatentStatistics": "latent_analysis",
    "LatentVectorSampler": "latent_analysis",
    "METRICS": "runner",
    "WeightsUnavailableError": "weights",
    "build_lpips": "metrics",
    "density_uniformity": "latent_analysis",
    "evaluate_resolution": "runner",
    "latent_statistics": "latent_analysis",
    "linear_probe": "latent_analysis",
    "pooled_latents": "latent_analysis",
    "psnr_per_image": "metrics",
    "resize_center_crop": "protocol",
    "run_evaluation": "pipeline",
    "ssim_per_image": "metrics",
    "uniformity_metrics": "latent_analysis",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

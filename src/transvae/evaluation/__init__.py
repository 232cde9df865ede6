"""Evaluation following the paper's protocol (Sections 4.2 and 4.4, Tables 1 and 2), and of
generated samples (Section 4.3).

- ``protocol``: resize-shorter-side + center-crop preprocessing; ``runner``: one pass at one
  resolution; ``pipeline.run_evaluation``: all resolutions + latent analysis + outputs
  (``transvae evaluate``).
- ``generation.evaluate_generation``: FID, sFID, IS, precision, recall and the latent Frechet
  distance of a sample set (``transvae gen-eval``).
- ``latent_analysis``: latent statistics and diffusion scaling factors, VA-VAE's uniformity
  metrics, linear probe.
- ``report`` (and ``plots``): results.json, results.md and the self-contained report.html of
  both commands.

The metrics themselves are plugins in ``transvae.metrics``. See docs/evaluation.md and
docs/generation.md.
"""

from ..utils.lazy import lazy_exports

# name -> submodule; imported on first use so that e.g. ``latent_analysis`` stays light to import
_EXPORTS = {
    "EvalOptions": "generation",
    "LatentOptions": "runner",
    "LatentStatistics": "latent_analysis",
    "LatentVectorSampler": "latent_analysis",
    "build_metric_collection": "pipeline",
    "density_uniformity": "latent_analysis",
    "evaluate_generation": "generation",
    "evaluate_resolution": "runner",
    "latent_statistics": "latent_analysis",
    "linear_probe": "latent_analysis",
    "pooled_latents": "latent_analysis",
    "resize_center_crop": "protocol",
    "run_evaluation": "pipeline",
    "uniformity_metrics": "latent_analysis",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

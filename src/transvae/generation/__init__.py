"""Downstream generation: LightningDiT trained on tokenizer latents (paper Section 4.3, Figure 6).

The paper judges a tokenizer by how fast a diffusion model learns on its latents. This package
holds that loop, for any autoencoder ``transvae.from_pretrained`` loads:

- ``lightningdit`` / ``registry``: the LightningDiT family (``lightningdit-{b,l,xl}-{1,2}``,
  ``-mini-1``, ``-nano-1``); ``hub``: saving / loading trained generators;
- ``latents``: the shards of ``transvae extract-latents`` and their normalisation statistics;
- ``flow``: the rectified-flow objective; ``sampling``: Euler / Heun ODE samplers with timestep
  shift and classifier-free guidance with an interval; ``pipeline``: latents -> images files;
- scoring a sample set (``gen-eval``) lives in ``transvae.evaluation.generation``, its metrics
  (FID, sFID, IS, precision / recall, the latent Frechet distance) in ``transvae.metrics``.

See ``docs/generation.md``.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "GenerationPipeline": "pipeline",
    "RectifiedFlow": "flow",
    "SamplerConfig": "sampling",
    "generate_to_folder": "pipeline",
    "sample_ode": "sampling",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

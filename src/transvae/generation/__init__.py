"""What is truly generation-only in the downstream loop (paper Section 4.3, Figure 6): the
rectified-flow objective (``flow``) and the ODE samplers (``sampling``: Euler / Heun, timestep
shift, classifier-free guidance with an interval and LightningDiT's channel subset).

Everything else has its one home elsewhere: the LightningDiT network in ``transvae.models``
(``create_model("lightningdit-b-1")``), the latent data sets in ``transvae.data.latents``, its
training task in ``transvae.training.tasks.generator`` (``transvae gen-train``), sampling to files
in ``transvae.inference.generate`` (``gen-sample``), scoring in ``transvae.evaluation.generation``
(``gen-eval``) with the metrics of ``transvae.metrics``. See ``docs/generation.md``.
"""

from .flow import RectifiedFlow
from .sampling import SamplerConfig, sample_ode

__all__ = ["RectifiedFlow", "SamplerConfig", "sample_ode"]

"""sFID (Nash et al., 2021): FID on spatial features, as in ADM's evaluator (Dhariwal & Nichol).

The feature is ADM's ``mixed_6/conv`` output of the FID InceptionV3: the 17 x 17 map of
torch-fidelity's ``Mixed_6d.branch1x1`` (after its ReLU), first 7 of its 192 channels,
flattened channels-last: 2023 numbers per image (``transvae.metrics.features``). sFID keeps the
spatial layout that the pool features average away, so it sees where things are, not only what.
"""

from __future__ import annotations

from .base import register_metric
from .fid import FID


@register_metric("sfid")
class SpatialFID(FID):
    """sFID of generated samples against reference images (``gen-eval``)."""

    features = ("spatial",)
    label = "sFID ↓"
    protocol = (
        "Frechet distance between InceptionV3 spatial features (ADM's mixed_6/conv = Mixed_6d.branch1x1, "
        "first 7 channels of 17x17, 2023-d) of all samples and all reference images"
    )

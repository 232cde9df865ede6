"""FID (Heusel et al., 2017): the Frechet distance between InceptionV3 pool features of two sets.

``fid`` compares generated samples with reference images (``gen-eval``), ``rfid`` the
reconstructions with their originals (``evaluate``). The features are the 2048-d pool features
of torch-fidelity's FID InceptionV3 (``transvae.metrics.features``: TF-compatible resize to
299x299, the TF 2015-12-05 weights), so the numbers are torch-fidelity's at every image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import MetricInputError, register_metric
from .frechet import FrechetDistance


@register_metric("fid")
class FID(FrechetDistance):
    """FID of generated samples against reference images (``gen-eval``)."""

    needs = frozenset({"samples", "reference"})
    network = "inception"
    features = ("2048",)
    label = "FID ↓"
    protocol = (
        "Frechet distance between InceptionV3 pool features (2048-d, torch-fidelity FID Inception, images "
        "resized to 299 inside the network as torch-fidelity does) of all samples and all reference images"
    )

    def check(self, sizes: Mapping[str, Any]) -> None:
        for side in sorted(self.needs & {"samples", "reference"}):
            n = sizes.get(side)
            if n is not None and n < self.min_rows:
                raise MetricInputError(f"{self.name} needs at least {self.min_rows} {side} images, got {n}")


@register_metric("rfid")
class ReconstructionFID(FID):
    """rFID: FID of the reconstructions against their originals (``evaluate``)."""

    needs = frozenset({"pairs"})
    label = "rFID ↓"
    fmt = "{:.2f}"
    protocol = (
        "Frechet distance between InceptionV3 pool features (2048-d, torch-fidelity FID Inception, images "
        "resized to 299 inside the network as torch-fidelity does) of all originals and all reconstructions"
    )

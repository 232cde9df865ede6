"""FID (Heusel et al., 2017): the Frechet distance between InceptionV3 pool features of two sets.

``fid`` compares generated samples with reference images (``gen-eval``), ``rfid`` the
reconstructions with their originals (``evaluate``). The features are the 2048-d pool features
of torch-fidelity's FID InceptionV3 (``transvae.metrics.features``: TF-compatible resize to
299x299, the TF 2015-12-05 weights), so the numbers are torch-fidelity's at every image size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

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


def folder_fid(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """FID between two folders of images (searched recursively), computed by torch-fidelity itself:
    its file loader, its feature extractor, its statistics, as ``fidelity --fid --input1 samples
    --input2 reference`` does. The weights are read as tensors only before torch-fidelity sees them.

    Args:
        samples, reference: image folders (PNG / JPEG; all images of one size).
        weights: a local copy of the FID InceptionV3 weights (``--fid-weights``).
        device: "cuda" runs torch-fidelity on the GPU.
    """
    import torch_fidelity

    from ..models.pretrained import inception_weights_buffer

    buf, _ = inception_weights_buffer(weights)
    cuda = torch.device(device).type == "cuda"
    with tempfile.TemporaryDirectory(prefix="transvae-fid-") as tmp:
        path = Path(tmp) / "inception.pth"
        path.write_bytes(buf.getvalue())
        out = torch_fidelity.calculate_metrics(
            input1=str(samples), input2=str(reference), fid=True, cuda=cuda, save_cpu_ram=not cuda,
            feature_extractor_weights_path=str(path), samples_find_deep=True, cache=False, verbose=False,
        )  # fmt: skip
    return float(out["frechet_inception_distance"])

"""Does a converted autoencoder compute what its diffusers original computes?

``parity(vae, x)`` writes a diffusers ``AutoencoderKL`` / ``AutoencoderDC`` with its own
``save_pretrained``, loads it back the way users do (``load_model``, i.e.
``transvae.from_pretrained``) and runs both on the same images: the max abs differences of encode
(posterior mean and log-variance), decode (of diffusers' mean) and reconstruct, in float32 and in
float64, and for the decoded image how far each float32 run is from the float64 result:
transvae's, diffusers' as it runs by default (NCHW) and diffusers' with channels-last tensors, the
layout transvae computes in on CPUs (``models/blocks.py`` ``compute_layout``), whose convolution
kernels round differently. ``PUBLISHED_KL`` holds the published ``AutoencoderKL`` configurations
(SD, SDXL, SD3, FLUX.1 and VA-VAE's structure expressed as one), to check at their real widths
with random weights (the architecture is what a converter must get right).

    >>> torch.manual_seed(0)
    >>> row = parity(diffusers.AutoencoderKL(**PUBLISHED_KL["flux-vae"]).eval(), x)
    >>> row["reconstruct fp64"]    # ~1e-13: the same function
"""

from __future__ import annotations

import copy
import tempfile
import time
from typing import Any

import torch

__all__ = ["PUBLISHED_KL", "parity"]

_KL_F8 = dict(
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    norm_num_groups=32,
)
_NO_QUANT = dict(use_quant_conv=False, use_post_quant_conv=False)
# the published diffusers configs (their vae/config.json), random weights when built
PUBLISHED_KL: dict[str, dict[str, Any]] = {
    "sd-vae": {**_KL_F8, "latent_channels": 4, "scaling_factor": 0.18215},
    "sdxl-vae": {**_KL_F8, "latent_channels": 4, "scaling_factor": 0.13025},
    "sd3-vae": {
        **_KL_F8,
        **_NO_QUANT,
        "latent_channels": 16,
        "scaling_factor": 1.5305,
        "shift_factor": 0.0609,
    },
    "flux-vae": {
        **_KL_F8,
        **_NO_QUANT,
        "latent_channels": 16,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
    },
    "vavae-f16d32": dict(  # VA-VAE: attention blocks in the lowest-resolution stage
        down_block_types=["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 128, 256, 256, 512],
        layers_per_block=2,
        latent_channels=32,
        norm_num_groups=32,
    ),
}


@torch.no_grad()
def _outputs(vae, model, x: torch.Tensor) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
    """(diffusers, transvae) pairs of encode / decode / reconstruct outputs on ``x``."""
    enc = vae.encode(x)
    if hasattr(enc, "latent_dist"):  # AutoencoderKL
        mean, logvar = enc.latent_dist.mean, enc.latent_dist.logvar
    else:  # AutoencoderDC: a deterministic latent
        mean, logvar = enc.latent, None
    q = model.encode(x)
    return {
        "mean": (mean, q.mean),
        "logvar": (logvar, None if logvar is None else q.logvar),
        "decode": (vae.decode(mean).sample, model.decode(mean)),
        "reconstruct": (vae(x).sample, model(x).sample),
    }


def _max_diffs(out: dict) -> dict[str, float | None]:
    return {
        k: None if a is None else (a.double() - b.double()).abs().max().item() for k, (a, b) in out.items()
    }


def parity(vae: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Compare a diffusers autoencoder with its transvae conversion on ``x`` (see the module doc).

    Args:
        vae: a diffusers ``AutoencoderKL`` or ``AutoencoderDC`` in eval mode.
        x: (B, 3, H, W) float32 images in [-1, 1].
    Returns:
        ``transvae`` (the class it became), ``load_s``, ``"<output> fp32"`` / ``"<output> fp64"``
        max abs differences, ``"<who> fp32 decode vs fp64"`` and ``output range``.
    """
    from ..persistence import load_model

    with tempfile.TemporaryDirectory() as tmp:
        vae.save_pretrained(tmp)
        t = time.perf_counter()
        model = load_model(tmp)
        load_s = time.perf_counter() - t
    o32 = _outputs(vae, model, x)
    vae64, model64 = copy.deepcopy(vae).double(), copy.deepcopy(model).double()
    o64 = _outputs(vae64, model64, x.double())
    with torch.no_grad():  # the same fp32 latent decoded in fp64, and by diffusers channels-last
        z = o32["mean"][0]
        exact = vae64.decode(z.double()).sample
        cl = copy.deepcopy(vae).to(memory_format=torch.channels_last)
        dec_cl = cl.decode(z.contiguous(memory_format=torch.channels_last)).sample
    row: dict[str, Any] = {
        "transvae": f"{type(model).__name__} ({model.config.architecture})",
        "load_s": load_s,
    }
    row |= {f"{k} fp32": v for k, v in _max_diffs(o32).items()}
    row |= {f"{k} fp64": v for k, v in _max_diffs(o64).items()}
    for who, dec in (
        ("transvae", o32["decode"][1]),
        ("diffusers", o32["decode"][0]),
        ("diffusers NHWC", dec_cl),
    ):
        row[f"{who} fp32 decode vs fp64"] = (dec.double() - exact).abs().max().item()
    row["output range"] = o32["reconstruct"][0].abs().max().item()
    return row

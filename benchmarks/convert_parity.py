"""How closely the imported autoencoders reproduce the diffusers models they come from (issue 23).

For each published configuration, at its published widths, the installed diffusers class is built
with random weights (seed 0; real weights need the Hub, and the architecture is what the converter
must get right), written with diffusers' own ``save_pretrained``, loaded with
``transvae.from_pretrained`` (the path users run) and both are run on the same photo
(scikit-image's astronaut, resized):

    python benchmarks/convert_parity.py              # ~5 min on one CPU core
    python benchmarks/convert_parity.py --size 256   # slower

Printed (and written to ``docs/benchmarks/convert_parity.json``): the max abs differences of
encode (posterior mean and log-variance), decode (of diffusers' mean) and reconstruct, in float32
and in float64; and, for the decoded image, how far each float32 run is from the float64 result:
transvae's, diffusers' as it runs by default (NCHW) and diffusers' with channels-last tensors, the
layout transvae computes in on CPUs (``models/blocks.py`` ``compute_layout``), whose convolution
kernels round differently. ``vavae-f16d32`` is VA-VAE's structure
expressed as a diffusers ``AutoencoderKL`` (attention blocks in the lowest-resolution stage);
reading it from an LDM checkpoint instead is checked by ``tests/test_convert.py`` against an
independent name map. ``dc-ae-f32c32`` is wrapped, not converted: it runs diffusers' own modules.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_utils import DOCS_DIR, machine_info, markdown_table, write_json
from PIL import Image

import transvae

KL_F8 = dict(
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    norm_num_groups=32,
)
NO_QUANT = dict(use_quant_conv=False, use_post_quant_conv=False)
KL = {
    "sd-vae": {**KL_F8, "latent_channels": 4, "scaling_factor": 0.18215},
    "sdxl-vae": {**KL_F8, "latent_channels": 4, "scaling_factor": 0.13025},
    "sd3-vae": {**KL_F8, **NO_QUANT, "latent_channels": 16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
    "flux-vae": {
        **KL_F8,
        **NO_QUANT,
        "latent_channels": 16,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
    },
    "vavae-f16d32": dict(
        down_block_types=["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 128, 256, 256, 512],
        layers_per_block=2,
        latent_channels=32,
        norm_num_groups=32,
    ),
}
# DC-AE f32c32 structure: ResBlocks in the three high-resolution stages, EfficientViT blocks below
DC = dict(
    latent_channels=32,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3],
    decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types=["batch_norm"] * 3 + ["rms_norm"] * 3,
    decoder_act_fns=["relu"] * 3 + ["silu"] * 3,
    scaling_factor=0.41407,
)


def photo(size: int) -> torch.Tensor:
    import skimage.data

    im = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1.0)[None]


def outputs(vae, model, x: torch.Tensor, kl: bool) -> dict[str, torch.Tensor]:
    """diffusers' and transvae's encode / decode / reconstruct outputs on ``x``."""
    with torch.no_grad():
        if kl:
            p = vae.encode(x).latent_dist
            mean, logvar, dec, rec = p.mean, p.logvar, vae.decode(p.mean).sample, vae(x).sample
        else:
            mean = vae.encode(x).latent
            logvar, dec, rec = None, vae.decode(mean).sample, vae(x).sample
        q = model.encode(x)
        return {
            "mean": (mean, q.mean),
            "logvar": (logvar, q.logvar if logvar is not None else None),
            "decode": (dec, model.decode(mean)),
            "reconstruct": (rec, model(x).sample),
        }


def max_diffs(out: dict) -> dict[str, float | None]:
    return {
        k: None if a is None else (a.double() - b.double()).abs().max().item() for k, (a, b) in out.items()
    }


def measure(name: str, vae, x: torch.Tensor, kl: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        vae.save_pretrained(tmp)
        t = time.perf_counter()
        model = transvae.from_pretrained(tmp)
        load_s = time.perf_counter() - t
    o32 = outputs(vae, model, x, kl)
    vae64, model64 = copy.deepcopy(vae).double(), copy.deepcopy(model).double()
    o64 = outputs(vae64, model64, x.double(), kl)
    with torch.no_grad():  # the same fp32 latent decoded in fp64, and by diffusers channels-last
        z = o32["mean"][0]
        exact = vae64.decode(z.double()).sample
        cl = copy.deepcopy(vae).to(memory_format=torch.channels_last)
        dec_cl = cl.decode(z.contiguous(memory_format=torch.channels_last)).sample
    row = {
        "model": name,
        "transvae": f"{type(model).__name__} ({model.config.architecture})",
        "load_s": load_s,
    }
    row |= {f"{k} fp32": v for k, v in max_diffs(o32).items()}
    row |= {f"{k} fp64": v for k, v in max_diffs(o64).items()}
    for who, dec in (
        ("transvae", o32["decode"][1]),
        ("diffusers", o32["decode"][0]),
        ("diffusers NHWC", dec_cl),
    ):
        row[f"{who} fp32 decode vs fp64"] = (dec.double() - exact).abs().max().item()
    row["output range"] = o32["reconstruct"][0].abs().max().item()
    print(f"{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    import diffusers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    p.add_argument("--out", type=Path, default=DOCS_DIR / "convert_parity.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = photo(args.size)
    rows = []
    for name, cfg in KL.items():
        torch.manual_seed(0)
        rows.append(measure(name, diffusers.AutoencoderKL(**cfg).eval(), x, kl=True))
    torch.manual_seed(0)
    rows.append(measure("dc-ae-f32c32", diffusers.AutoencoderDC(**DC).eval(), x, kl=False))
    cols = ["model", "mean fp32", "logvar fp32", "decode fp32", "reconstruct fp32", "reconstruct fp64"]
    cols += [
        "transvae fp32 decode vs fp64",
        "diffusers fp32 decode vs fp64",
        "diffusers NHWC fp32 decode vs fp64",
    ]
    cols += ["output range"]
    print(markdown_table(rows, cols))
    write_json(
        args.out,
        {
            "size": args.size,
            "machine": machine_info(torch.device("cpu")),
            "rows": rows,
            "command": " ".join(sys.argv),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

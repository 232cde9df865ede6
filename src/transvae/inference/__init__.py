"""Inference with trained autoencoders: any image size, reduced precision, tiling, latent files.

    >>> from transvae.inference import InferenceRunner
    >>> runner = InferenceRunner(transvae.from_pretrained("runs/x/model"), dtype="bf16", max_pixels=1024**2)
    >>> x_rec = runner.reconstruct(x)          # (B, 3, H, W) -> (B, 3, H, W), any H, W
    >>> enc = runner.encode(x); x_rec = runner.decode(enc.latent, enc.pad)

See ``docs/inference.md`` for the command line (``transvae reconstruct / encode / decode /
extract-latents``), the latent file formats and the diffusers integration.
"""

from .extract import center_crop_resize, extract_latents, latent_channel_stats
from .latent_files import LatentRecord, load_latent, save_latent
from .padding import Pad, crop, pad_to_multiple, padded_size
from .runner import EncodedBatch, InferenceRunner, benchmark, resolve_dtype
from .tiling import tile_starts, tiled_apply

__all__ = [
    "EncodedBatch",
    "InferenceRunner",
    "LatentRecord",
    "Pad",
    "benchmark",
    "center_crop_resize",
    "crop",
    "extract_latents",
    "latent_channel_stats",
    "load_latent",
    "pad_to_multiple",
    "padded_size",
    "resolve_dtype",
    "save_latent",
    "tile_starts",
    "tiled_apply",
]

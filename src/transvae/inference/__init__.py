"""Inference with trained autoencoders: any image size, reduced precision, tiling, latent files.

    >>> from transvae.inference import InferenceRunner
    >>> runner = InferenceRunner(transvae.from_pretrained("runs/x/model"), dtype="bf16", max_pixels=1024**2)
    >>> x_rec = runner.reconstruct(x)          # (B, 3, H, W) -> (B, 3, H, W), any H, W
    >>> enc = runner.encode(x); x_rec = runner.decode(enc.latent, enc.pad)
    >>> report = reconstruct_files(runner, collect_inputs(["photos/"], None, ".png"), Path("rec/"))

See ``docs/inference.md`` for the command line (``transvae reconstruct / encode / decode /
extract-latents``), the latent file formats and the diffusers integration.
"""

from .batching import iter_image_batches, pad_batch
from .benchmarking import benchmark
from .extract import center_crop_resize, extract_latents
from .files import check_output_folder, collect_inputs
from .jobs import JobReport, decode_files, encode_files, reconstruct_files
from .latent_files import LatentRecord, load_latent, recorded_model_folder, save_latent
from .limits import auto_max_pixels
from .padding import Pad, crop, pad_to_multiple, padded_size
from .runner import EncodedBatch, InferenceRunner, resolve_dtype
from .tiling import tile_starts, tiled_apply

__all__ = [
    "EncodedBatch",
    "InferenceRunner",
    "JobReport",
    "LatentRecord",
    "Pad",
    "auto_max_pixels",
    "benchmark",
    "center_crop_resize",
    "check_output_folder",
    "collect_inputs",
    "crop",
    "decode_files",
    "encode_files",
    "extract_latents",
    "iter_image_batches",
    "load_latent",
    "pad_batch",
    "pad_to_multiple",
    "padded_size",
    "reconstruct_files",
    "recorded_model_folder",
    "resolve_dtype",
    "save_latent",
    "tile_starts",
    "tiled_apply",
]

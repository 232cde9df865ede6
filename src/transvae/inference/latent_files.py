"""The ``.safetensors`` latent file written by ``transvae encode`` and read by ``transvae decode``.

One file per image: the tensor ``latent`` (C, h, w) and string metadata with everything needed
to decode it back to the original image size without guessing:

=========================  ===========================================================
``format``                 ``"transvae-latent"`` (``format_version`` ``"1"``)
``model``                  the ``--model`` argument (folder or Hub repo) used to encode
``model_name``             e.g. ``transvae-mini-f16d32``; ``architecture`` too
``latent_channels``        C; ``spatial_compression_ratio`` f
``height`` / ``width``     original image size in pixels
``pad``                    JSON [left, right, top, bottom] pixels of padding added
``scaling_factor``         stored = (z - shift_factor) * scaling_factor
``shift_factor``           (both 1 / 0 unless ``--scaling-factor`` / ``--shift-factor``)
``sampled``                ``"true"`` if z was drawn from the posterior, else its mean
``dtype``                  dtype of the stored tensor
``source``                 the image the latent came from
=========================  ===========================================================
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .padding import Pad

FORMAT = "transvae-latent"
FORMAT_VERSION = "1"


@dataclass
class LatentRecord:
    """A latent and its decoding metadata.

    Attributes:
        latent: (C, h, w) stored (scaled) latent.
        model: model folder / repo used to encode (may be empty).
        model_name: registered name of the model.
        size: (H, W) of the original image.
        pad: (left, right, top, bottom) padding in pixels.
        scaling_factor, shift_factor: stored = (z - shift) * scaling.
        sampled: whether z was sampled from the posterior.
        extra: any other metadata strings.
    """

    latent: torch.Tensor
    model: str
    model_name: str
    size: tuple[int, int]
    pad: Pad
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    sampled: bool = False
    extra: dict[str, str] | None = None

    def unscaled(self) -> torch.Tensor:
        """The latent in the model's own scale: stored / scaling + shift, float32 (C, h, w)."""
        return self.latent.float() / self.scaling_factor + self.shift_factor


def save_latent(path: str | os.PathLike, rec: LatentRecord, **extra: str) -> None:
    """Write ``rec`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": str(rec.model),
        "model_name": rec.model_name,
        "height": str(rec.size[0]),
        "width": str(rec.size[1]),
        "pad": json.dumps(list(rec.pad)),
        "scaling_factor": repr(float(rec.scaling_factor)),
        "shift_factor": repr(float(rec.shift_factor)),
        "sampled": "true" if rec.sampled else "false",
        "dtype": str(rec.latent.dtype).removeprefix("torch."),
        **(rec.extra or {}),
        **{k: str(v) for k, v in extra.items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"latent": rec.latent.detach().contiguous().cpu()}, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_latent(path: str | os.PathLike) -> LatentRecord:
    """Read a file written by ``save_latent``.

    Raises:
        ValueError: not a safetensors file, or not a transvae latent file (message names it).
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a transvae latent file (no format={FORMAT} metadata)")
            if "latent" not in f.keys():
                raise ValueError(f"{path}: has no 'latent' tensor")
            latent = f.get_tensor("latent")
    except ValueError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: cannot read safetensors file ({type(e).__name__}: {e})") from e
    known = {"format", "format_version", "model", "model_name", "height", "width", "pad"}
    known |= {"scaling_factor", "shift_factor", "sampled", "dtype"}
    try:
        pad = tuple(int(v) for v in json.loads(meta["pad"]))
        rec = LatentRecord(
            latent=latent,
            model=meta.get("model", ""),
            model_name=meta.get("model_name", ""),
            size=(int(meta["height"]), int(meta["width"])),
            pad=pad,  # type: ignore[arg-type]
            scaling_factor=float(meta.get("scaling_factor", 1.0)),
            shift_factor=float(meta.get("shift_factor", 0.0)),
            sampled=meta.get("sampled") == "true",
            extra={k: v for k, v in meta.items() if k not in known},
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: malformed latent metadata ({type(e).__name__}: {e})") from e
    if latent.ndim != 3 or len(rec.pad) != 4:
        raise ValueError(f"{path}: expected a (C, h, w) latent and 4 pad values")
    return rec

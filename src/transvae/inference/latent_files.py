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

A latent file is data: its ``model`` entry is provenance, never an instruction. ``decode`` uses
the model given on its command line; ``recorded_model_folder`` accepts the recorded model only
when it names an existing local folder (the CLI asks for ``--model-from-files`` first), never a
Hub repo to fetch. ``load_latent`` refuses what would decode to garbage: integer or bool
tensors, NaN / Inf values, an empty grid, negative or malformed padding, non-finite or zero
scaling.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.files import atomic_path
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
    """Write ``rec`` to ``path`` atomically (temp file + rename, the umask's permissions).

    Raises:
        DiskFullError: the disk filled up (the message says so).
    """
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
    with atomic_path(path) as tmp:
        save_file({"latent": rec.latent.detach().contiguous().cpu()}, str(tmp), metadata=meta)


def load_latent(path: str | os.PathLike) -> LatentRecord:
    """Read a file written by ``save_latent`` and check that it can be decoded.

    Raises:
        ValueError: not a safetensors file, not a transvae latent file, or values that cannot
            be decoded (non-float or non-finite latents, an empty grid, bad padding or scaling);
            the message names the file and the problem.
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
        pad = json.loads(meta["pad"])
        if not isinstance(pad, list) or not all(type(v) is int for v in pad):
            raise ValueError(f"pad must be a JSON list of integers, got {meta['pad']!r}")
        rec = LatentRecord(
            latent=latent,
            model=meta.get("model", ""),
            model_name=meta.get("model_name", ""),
            size=(int(meta["height"]), int(meta["width"])),
            pad=tuple(pad),  # type: ignore[arg-type]
            scaling_factor=float(meta.get("scaling_factor", 1.0)),
            shift_factor=float(meta.get("shift_factor", 0.0)),
            sampled=meta.get("sampled") == "true",
            extra={k: v for k, v in meta.items() if k not in known},
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: malformed latent metadata ({type(e).__name__}: {e})") from e
    problem = _check_record(rec)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return rec


def _check_record(rec: LatentRecord) -> str | None:
    """What makes ``rec`` undecodable, or None."""
    z = rec.latent
    if not z.is_floating_point():
        return f"latent dtype {z.dtype} is not a floating-point dtype"
    if z.ndim != 3:
        return f"expected a (C, h, w) latent, got shape {tuple(z.shape)}"
    if min(z.shape) < 1:
        return f"empty latent grid {tuple(z.shape)}"
    if len(rec.pad) != 4 or min(rec.pad) < 0:
        return f"pad must be 4 non-negative integers [left, right, top, bottom], got {list(rec.pad)}"
    if min(rec.size) < 1:
        return f"image size {rec.size[1]}x{rec.size[0]} in the metadata is empty"
    if not (
        math.isfinite(rec.scaling_factor) and rec.scaling_factor != 0 and math.isfinite(rec.shift_factor)
    ):
        return (
            f"scaling_factor {rec.scaling_factor} / shift_factor {rec.shift_factor} must be finite "
            "(and the scaling non-zero)"
        )
    if not torch.isfinite(z).all():
        bad = int((~torch.isfinite(z)).sum())
        return f"latent holds {bad} NaN/Inf value(s); refusing to decode it"
    return None


def check_geometry(rec: LatentRecord, f: int) -> str | None:
    """Whether ``rec``'s grid, padding and image size agree for compression ratio ``f``; the
    problem in one line, or None. (A bad pad would crop outside the decoded image.)"""
    h, w = rec.latent.shape[-2:]
    left, right, top, bottom = rec.pad
    expect = (h * f - top - bottom, w * f - left - right)
    if expect != tuple(rec.size):
        return (
            f"metadata size {rec.size[1]}x{rec.size[0]} with pad {list(rec.pad)} does not fit the {w}x{h} latent "
            f"grid of a f{f} model (it decodes to {w * f}x{h * f} pixels)"
        )
    return None


def latent_scaling(
    model: torch.nn.Module, scaling_factor: float | None = None, shift_factor: float | None = None
) -> tuple[float, float]:
    """The (scale, shift) to store latents with: the given values, else those saved with the model
    (``save_pretrained(dir, scaling_factor=..., shift_factor=...)`` or a diffusers folder, kept by
    loading as ``model.metadata``), else 1 / 0.

    Raises:
        ValueError: a non-finite value, or a zero scale (the message names the option).
    """
    meta = getattr(model, "metadata", None) or {}
    values = []
    for name, given, default in (
        ("scaling_factor", scaling_factor, 1.0),
        ("shift_factor", shift_factor, 0.0),
    ):
        v = given if given is not None else meta.get(name, default)
        v = default if v is None else v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            source = "--" + name.replace("_", "-") if given is not None else f"the model's metadata {name}"
            raise ValueError(f"{source} must be a finite number, got {v!r}")
        values.append(float(v))
    if values[0] == 0:
        raise ValueError("--scaling-factor must not be 0")
    return values[0], values[1]


def recorded_model_folder(rec: LatentRecord) -> Path:
    """The model recorded in a latent file, accepted only as an existing local folder.

    Raises:
        ValueError: no model recorded, or it is not a local folder (a Hub repo id is never
            fetched because a file names it).
    """
    if not rec.model:
        raise ValueError("no model is recorded in the file; pass --model")
    p = Path(rec.model).expanduser()
    if not p.is_dir():
        raise ValueError(
            f"the recorded model '{rec.model}' is not a local folder; a model named by a file is never "
            "fetched: pass --model"
        )
    return p

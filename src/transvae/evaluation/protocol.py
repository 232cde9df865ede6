"""The evaluation protocols: how images are read, resized, cropped, encoded and quantised.

Every lab computes rFID a little differently, and the differences move the number (see
docs/evaluation.md, "rFID the way each lab computes it"). ``transvae evaluate --protocol NAME``
reproduces each published pipeline; the results record the one used (``results.json``
``protocol``).

- ``transvae`` (default): the shorter side resized to R with PIL's bicubic filter (antialiased
  when shrinking), the longer side to ``round(R * long / short)``, the central RxR crop (offsets
  rounded as torchvision's ``CenterCrop``); RxR images are not resampled. The encoder sees the
  uint8 crop, the decoder the posterior mean; FID features from torch-fidelity's InceptionV3.
- ``adm``: ADM's / DiT's ``center_crop_arr`` (box-filter halving while the short side is at
  least 2R, then PIL bicubic, crop offsets floored); the rest as ``transvae``.
- ``va-vae`` (alias ``lightningdit``): hustvl/LightningDiT's ``evaluate_tokenizer.py``:
  torchvision ``ToTensor`` -> ``Resize(R)`` (bilinear, antialiased, on float pixels; long side
  truncated) -> ``CenterCrop(R)``; the encoder sees the float crop (not rounded), the decoder a
  posterior *sample*; references and reconstructions rounded as ``clamp(127.5 x + 128).to(uint8)``;
  FID with pytorch-fid's pipeline (bilinear resize to 299 of [0, 1] floats, no antialiasing).
- ``torch-fidelity``: the ``transvae`` preprocessing; the crops and reconstructions are written
  as PNG folders (``OUT/images/R/``) and rFID is computed a second time by torch-fidelity itself
  from the two folders (``rfid_torch_fidelity`` beside ``rfid``): the folder comparison users run.

In every protocol the reference set of rFID is the evaluated crops themselves (never a gFID
reference batch such as ADM's ``VIRTUAL_imagenet256``). Images smaller than R are upsampled the
same way and counted (``num_upsampled``); unreadable files are skipped with their reason
(``skipped``) instead of stopping a long run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from transvae.data.io import ImageLoadError, load_image, tensor_to_uint8
from transvae.data.transforms import ResizeTooLarge, adm_center_crop, check_resized, resize_center_crop


def _uint8_chw(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _transvae_crop(im: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    crop, up = resize_center_crop(im, size)
    return _uint8_chw(crop), None, up


def _adm_crop(im: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    return _uint8_chw(adm_center_crop(im, size)), None, min(im.size) < size


def _vavae_crop(im: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    from torchvision import transforms

    w, h = im.size
    check_resized((w, h), (max(size, int(size * w / h)), max(size, int(size * h / w))))
    x = transforms.Compose([transforms.ToTensor(), transforms.Resize(size), transforms.CenterCrop(size)])(im)
    x = x * 2.0 - 1.0  # Normalize(mean=0.5, std=0.5): what the encoder sees, not rounded
    return vavae_quantise(x), x.contiguous(), min(w, h) < size


def vavae_quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 as LightningDiT's evaluation writes its PNGs: ``clamp(127.5 x + 128, 0, 255)``
    truncated (round half up, where ``tensor_to_uint8`` rounds half to even)."""
    return (127.5 * x.detach().float() + 128.0).clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (module docstring). ``describe()`` is what results.json records."""

    name: str
    resize: str
    crop: str
    model_input: str
    reconstruction: str
    quantisation: str
    inception: str  # the FID feature pipeline: "torch-fidelity" or "pytorch-fid"
    source: str
    prepare: Callable[[Image.Image, int], tuple[torch.Tensor, torch.Tensor | None, bool]] = field(repr=False)
    quantise: Callable[[torch.Tensor], torch.Tensor] = field(default=tensor_to_uint8, repr=False)
    sample_posterior: bool = False
    folder_fid: bool = False  # rFID also from PNG folders by torch-fidelity itself
    reference: str = (
        "the evaluated crops themselves (never a gFID reference batch such as VIRTUAL_imagenet256)"
    )

    def describe(self) -> dict:
        keys = ("name", "source", "resize", "crop", "model_input", "reconstruction", "quantisation")
        d = {k: getattr(self, k) for k in keys}
        d["fid_features"] = INCEPTION_PIPELINES[self.inception]
        d["fid_reference"] = self.reference
        if self.folder_fid:
            d["folder_fid"] = (
                "rfid_torch_fidelity: torch_fidelity.calculate_metrics on OUT/images/<R>/{inputs,reconstructions}"
            )
        return d


INCEPTION_PIPELINES = {
    "torch-fidelity": "torch-fidelity's FID InceptionV3 (TF 2015-12-05 weights): uint8 resized to 299 with "
    "TF1-compatible bilinear interpolation, (x - 128) / 128",
    "pytorch-fid": "pytorch-fid's FID InceptionV3 (pt_inception-2015-12-05 weights): x / 255 resized to 299 "
    "with torch bilinear interpolation (align_corners=False, no antialiasing), 2x - 1",
}

_UINT8_MEAN = "uint8 crop -> [-1, 1]"
_ROUND = "input and reconstruction clamped to [-1, 1], (x + 1) * 127.5 rounded to uint8"
_TRANSVAE_RESIZE = "shorter side to R, PIL bicubic (antialiased when downscaling); RxR images not resampled"

# what the transvae, adm and torch-fidelity protocols share: the uint8 crop in, the posterior
# mean out, rounded to uint8, FID features by torch-fidelity's Inception
_UINT8_MEAN_PROTOCOL = dict(
    model_input=_UINT8_MEAN,
    reconstruction="decode(encode(x).mode()): the posterior mean",
    quantisation=_ROUND,
    inception="torch-fidelity",
)
_TRANSVAE_CROP = dict(
    resize=_TRANSVAE_RESIZE,
    crop="center RxR, offsets rounded (torchvision CenterCrop)",
    prepare=_transvae_crop,
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="transvae", source="transvae's own (docs/evaluation.md)", **_TRANSVAE_CROP, **_UINT8_MEAN_PROTOCOL,
        ),
        Protocol(
            name="adm", source="openai/guided-diffusion center_crop_arr (ADM, DiT)",
            resize="box-filter halving while the shorter side >= 2R, then shorter side to R, PIL bicubic",
            crop="center RxR, offsets floored", prepare=_adm_crop, **_UINT8_MEAN_PROTOCOL,
        ),
        Protocol(
            name="va-vae", source="hustvl/LightningDiT evaluate_tokenizer.py (VA-VAE)",
            resize="torchvision ToTensor -> Resize(R): bilinear, antialiased, on float pixels, long side truncated",
            crop="torchvision CenterCrop(R), offsets rounded",
            model_input="the float crop, 2x - 1 (not rounded to uint8)",
            reconstruction="decode(encode(x).sample()): a posterior sample (seeded by --seed)",
            quantisation="clamp(127.5 x + 128, 0, 255) truncated to uint8 (round half up), both sides",
            inception="pytorch-fid", prepare=_vavae_crop, quantise=vavae_quantise, sample_posterior=True,
        ),
        Protocol(
            name="torch-fidelity", source="torch-fidelity folder comparison (fidelity --input1 --input2)",
            folder_fid=True, **_TRANSVAE_CROP, **_UINT8_MEAN_PROTOCOL,
        ),
    )
}  # fmt: skip
ALIASES = {"lightningdit": "va-vae", "vavae": "va-vae", "guided-diffusion": "adm", "dit": "adm"}


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol called ``name`` (or an alias: ``lightningdit``, ``dit``, ...).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if isinstance(name, Protocol):
        return name
    key = ALIASES.get(name, name)
    if key not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]


@dataclass
class EvalItem:
    """One preprocessed image: ``image`` is the (3, R, R) uint8 crop the metrics see, or None with
    ``error`` set; ``model_input`` the float (3, R, R) crop in [-1, 1] the encoder sees when the
    protocol does not round it first (None: the encoder sees ``image``)."""

    index: int
    image: torch.Tensor | None
    upsampled: bool = False
    error: str | None = None
    model_input: torch.Tensor | None = None


class EvalImageDataset(Dataset):
    """Files -> ``EvalItem`` (uint8 RxR) following a protocol (module docstring).

    Args:
        files: image paths.
        resolution: R.
        protocol: a ``Protocol`` or its name (default ``transvae``).
    """

    def __init__(self, files: list[Path], resolution: int, protocol: str | Protocol = "transvae"):
        self.files = list(files)
        self.resolution = resolution
        self.protocol = get_protocol(protocol)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> EvalItem:
        try:
            image, model_input, up = self.protocol.prepare(load_image(self.files[i]), self.resolution)
        except ImageLoadError as e:
            return EvalItem(i, None, error=e.reason)
        except ResizeTooLarge as e:  # a valid file of an extreme aspect ratio: skipped and counted too
            return EvalItem(i, None, error=str(e))
        return EvalItem(i, image, upsampled=up, model_input=model_input)


@dataclass
class EvalBatch:
    """The readable items of a batch: ``images`` (B, 3, R, R) uint8, ``model_inputs`` (B, 3, R, R)
    float or None, their ``indices`` and ``upsampled`` flags; ``failed`` the unreadable items."""

    images: torch.Tensor
    model_inputs: torch.Tensor | None
    indices: list[int]
    upsampled: list[bool]
    failed: list[EvalItem]


def collate_items(items: list[EvalItem]) -> EvalBatch:
    """Batch the readable items; the failures travel beside them."""
    good = [it for it in items if it.image is not None]
    x = torch.stack([it.image for it in good]) if good else torch.empty(0, dtype=torch.uint8)
    floats = [it.model_input for it in good if it.model_input is not None]
    xin = torch.stack(floats) if good and len(floats) == len(good) else None
    failed = [it for it in items if it.image is None]
    return EvalBatch(x, xin, [it.index for it in good], [it.upsampled for it in good], failed)


def class_labels(files: list[Path], root: Path) -> tuple[list[int], list[str]] | None:
    """Labels from a class-folder layout (``root/<class>/.../img``), or None if there is none.

    Returns:
        (label index per file, class names sorted) when every file lies in a sub-folder of
        ``root`` and there are at least two classes; else None.
    """
    names = []
    for f in files:
        rel = Path(f).resolve().relative_to(Path(root).resolve())
        if len(rel.parts) < 2:
            return None
        names.append(rel.parts[0])
    classes = sorted(set(names))
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return [index[n] for n in names], classes

"""Colour fidelity of a reconstruction: CIEDE2000, per-channel mean shift and contrast, Lab shift.

PSNR says how far a reconstruction is from its input, not *how*: a decoder that raises the
contrast of every channel by 20 % or tints everything red can keep a respectable PSNR while the
colours are visibly wrong. These figures say how:

- **CIEDE2000** (Sharma, Wu & Dalal 2005): the perceptual colour difference of each pixel,
  sRGB (D65) -> CIE Lab with ``skimage.color.rgb2lab``, then ``skimage.color.deltaE_ciede2000``
  (kL = kC = kH = 1). About 1 is a just-noticeable difference; 2-10 is visible at a glance.
  Reported as the mean and the 95th percentile over the pixels.
- **mean shift** per channel: ``mean(out) - mean(in)`` in uint8 levels (a tint).
- **contrast ratio** per channel: ``std(out) / std(in)`` over the pixels (above 1: the
  reconstruction is more contrasted / saturated than the input).
- **Lab shift**: ``mean(out) - mean(in)`` of a* (green -> red) and b* (blue -> yellow).

Every function takes uint8 images, as a saved PNG would hold them (the convention of
``transvae.metrics``), as two ``(B, 3, H, W)`` tensors of equal shape: the reference
(``ref``) and the reconstruction (``out``). ``*_per_image`` functions return one value per image;
``colour_report`` aggregates over the whole set by pooling the pixels of all images (the
percentile and the standard deviations of the set, never a mean of per-image values).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import PairMetric, check_pair, register_metric

CHANNELS = ("R", "G", "B")


def rgb_to_lab(x: torch.Tensor) -> np.ndarray:
    """sRGB uint8 images to CIE Lab (D65, 2-degree observer) with ``skimage.color.rgb2lab``.

    Args:
        x: (B, 3, H, W) uint8.
    Returns:
        (B, H, W, 3) float64 array of (L*, a*, b*).
    """
    from skimage.color import rgb2lab

    if x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected a (B, 3, H, W) uint8 tensor, got {tuple(x.shape)} {x.dtype}")
    rgb = x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64) / 255.0  # (B, H, W, 3)
    return rgb2lab(rgb, channel_axis=-1)


def ciede2000_map(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference of every pixel.

    Args:
        ref: (B, 3, H, W) uint8 reference images.
        out: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B, H, W) float64; 0 where the pixels are equal.
    """
    from skimage.color import deltaE_ciede2000

    check_pair(ref, out)
    return torch.from_numpy(deltaE_ciede2000(rgb_to_lab(ref), rgb_to_lab(out), channel_axis=-1))


def ciede2000_per_image(ref: torch.Tensor, out: torch.Tensor, q: float = 95.0) -> dict[str, torch.Tensor]:
    """Mean and ``q``-th percentile CIEDE2000 of each image pair.

    Args:
        ref: (B, 3, H, W) uint8 reference images.
        out: (B, 3, H, W) uint8 reconstructions.
        q: the percentile reported as ``"p95"`` (default 95; numpy's linear interpolation).
    Returns:
        ``{"mean": (B,), "p95": (B,)}`` float64.
    """
    d = ciede2000_map(ref, out).flatten(1)  # (B, H*W)
    return {"mean": d.mean(1), "p95": torch.quantile(d, q / 100.0, dim=1)}


def channel_mean_shift(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel ``mean(out) - mean(ref)`` in uint8 levels (a uniform tint).

    Args:
        ref: (B, 3, H, W) uint8 reference images.
        out: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B, 3) float64, channels R, G, B.
    """
    check_pair(ref, out)
    return (out.double() - ref.double()).mean((2, 3))  # exact for integer differences


def contrast_ratio(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel ``std(out) / std(ref)`` over the pixels (population std).

    Args:
        ref: (B, 3, H, W) uint8 reference images.
        out: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B, 3) float64; NaN for a channel that is flat in ``ref`` (std 0).
    """
    check_pair(ref, out)
    s_ref = ref.double().flatten(2).std(2, correction=0)  # (B, 3)
    s_out = out.double().flatten(2).std(2, correction=0)
    return torch.where(s_ref > 0, s_out / s_ref.clamp_min(1e-12), torch.full_like(s_ref, float("nan")))


def lab_shift(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-image ``mean(out) - mean(ref)`` of Lab a* (green -> red) and b* (blue -> yellow).

    Args:
        ref: (B, 3, H, W) uint8 reference images.
        out: (B, 3, H, W) uint8 reconstructions.
    Returns:
        (B, 2) float64: (delta a*, delta b*).
    """
    check_pair(ref, out)
    a, b = rgb_to_lab(ref), rgb_to_lab(out)  # (B, H, W, 3)
    return torch.from_numpy((b[..., 1:] - a[..., 1:]).mean((1, 2)))


def colour_report(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float | list[float]]:
    """Colour fidelity of a whole set, its pixels pooled (plain floats, ready for JSON).

    Args:
        ref: (B, 3, H, W) uint8 reference images (a set of equal-sized images).
        out: (B, 3, H, W) uint8 reconstructions.
    Returns:
        ``ciede2000_mean`` and ``ciede2000_p95`` over all pixels of the set;
        ``mean_shift`` [R, G, B] (levels), ``contrast_ratio`` [R, G, B] (std of all the set's
        pixels of ``out`` over that of ``ref``), ``std_in`` / ``std_out`` [R, G, B] (levels);
        ``lab_shift`` [a*, b*]; ``images``.
    """
    check_pair(ref, out)
    lab_ref, lab_out = rgb_to_lab(ref), rgb_to_lab(out)  # (B, H, W, 3) each
    from skimage.color import deltaE_ciede2000

    d = deltaE_ciede2000(lab_ref, lab_out, channel_axis=-1).ravel()
    r = ref.double().transpose(0, 1).flatten(1)  # (3, B*H*W)
    o = out.double().transpose(0, 1).flatten(1)
    s_ref, s_out = r.std(1, correction=0), o.std(1, correction=0)
    ratio = torch.where(s_ref > 0, s_out / s_ref.clamp_min(1e-12), torch.full_like(s_ref, float("nan")))
    return {
        "images": int(ref.shape[0]),
        "ciede2000_mean": float(d.mean()),
        "ciede2000_p95": float(np.percentile(d, 95.0)),
        "mean_shift": (o - r).mean(1).tolist(),
        "contrast_ratio": ratio.tolist(),
        "std_in": s_ref.tolist(),
        "std_out": s_out.tolist(),
        "lab_shift": (lab_out[..., 1:] - lab_ref[..., 1:]).reshape(-1, 2).mean(0).tolist(),
    }


# ITU-R BT.601's luma row: a change of Y alone is a grey shift (the same in R, G and B)
LUMA_ROW = (0.299, 0.587, 0.114)


def split_luma_chroma(ref: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``out``'s error split in two images: its BT.601 luma error alone (``ref`` shifted by the
    grey that the error's luma is) and its chroma error alone (``ref`` plus the rest). CIEDE2000
    of each against ``ref`` says whether a reconstruction's colour difference comes from
    brightness detail or from hue and saturation (``colour_summary(..., lowpass=True)``).

    Args:
        ref, out: (B, 3, H, W) uint8 images.
    Returns:
        ``(luma_only, chroma_only)``: (B, 3, H, W) uint8, rounded and clipped.
    """
    check_pair(ref, out)
    d = out.double() - ref.double()
    dy = torch.einsum("c,bchw->bhw", torch.tensor(LUMA_ROW, dtype=d.dtype), d).unsqueeze(1)
    as_uint8 = lambda v: v.round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    return as_uint8(ref.double() + dy), as_uint8(ref.double() + d - dy)


def low_pass(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Each ``factor`` x ``factor`` block of uint8 images averaged (and rounded): the colours kept,
    the detail removed. CIEDE2000 between low-passed images separates a colour error (a tint, a
    contrast change, a hue the model cannot make) from the loss of fine detail, which raises the
    per-pixel CIEDE2000 of any blurry reconstruction even when its colours are exact.

    Args:
        x: (B, 3, H, W) uint8, H and W multiples of ``factor``.
        factor: the block side.
    Returns:
        (B, 3, H / factor, W / factor) uint8.
    """
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"expected uint8 (B, 3, H, W) with H, W multiples of {factor}, got {x.dtype} {tuple(x.shape)}")
    pooled = torch.nn.functional.avg_pool2d(x.double(), factor)
    return pooled.round().clamp(0, 255).to(torch.uint8)


# -- the metric plugin: evaluate, training validation, reports -------------------------------------
_BIN = 0.05  # CIEDE2000 histogram bin (the p95 is exact to this), up to _MAX (larger values: last bin)
_MAX = 120.0


@register_metric("ciede2000")
class Colour(PairMetric):
    """Colour fidelity over a set (module docstring), streamed: the per-image mean CIEDE2000 (its
    mean over equal-sized images is the pooled pixel mean), the 95th percentile of every pixel's
    CIEDE2000 from a histogram (bins of 0.05), and per channel the mean shift and the contrast
    ratio std(out) / std(in) of all pixels, from running sums."""

    label = "CIEDE2000 ↓"
    fmt = "{:.2f}"
    bytes_per_pixel = 48  # the Lab conversions (float64, 3 channels, both images)
    protocol = (
        "CIEDE2000 (skimage rgb2lab, D65, deltaE_ciede2000) of every pixel of the uint8 images: mean over "
        "images of the per-image mean, 95th percentile over all pixels (0.05 bins); per channel R, G, B: "
        "mean shift mean(out) - mean(in) in levels and contrast ratio std(out) / std(in) over all pixels"
    )

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hist", torch.zeros(int(_MAX / _BIN) + 1, dtype=torch.float64))
        for s in ("sum_in", "sum_out", "sq_in", "sq_out"):
            self.add_state(s, torch.zeros(3, dtype=torch.float64))
        self.add_state("pixels", torch.zeros((), dtype=torch.float64))

    def score(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        d = ciede2000_map(target, pred).double()  # (B, H, W)
        idx = (d.flatten() / _BIN).long().clamp_(max=len(self.hist) - 1)
        self.hist += torch.bincount(idx, minlength=len(self.hist)).double()
        t, p = (x.double().transpose(0, 1).flatten(1) for x in (target.cpu(), pred.cpu()))  # (3, B*H*W)
        self.sum_in += t.sum(1)
        self.sum_out += p.sum(1)
        self.sq_in += t.square().sum(1)
        self.sq_out += p.square().sum(1)
        self.pixels += t.shape[1]
        return d.flatten(1).mean(1)

    def compute(self) -> dict[str, Any]:
        """``ciede2000`` (+ ``_std`` over images), ``ciede2000_p95``, ``colour_mean_shift`` and
        ``colour_contrast_ratio`` ([R, G, B])."""
        out = super().compute()
        n = float(self.pixels)
        if not n:
            return out
        cdf = torch.cumsum(self.hist, 0) / self.hist.sum()
        out["ciede2000_p95"] = (
            float(torch.searchsorted(cdf, torch.tensor(0.95, dtype=torch.float64))) * _BIN + _BIN
        )
        m_in, m_out = self.sum_in / n, self.sum_out / n
        s_in = (self.sq_in / n - m_in.square()).clamp_min(0).sqrt()
        s_out = (self.sq_out / n - m_out.square()).clamp_min(0).sqrt()
        out["colour_mean_shift"] = (m_out - m_in).tolist()
        out["colour_contrast_ratio"] = torch.where(s_in > 0, s_out / s_in.clamp_min(1e-12), math.nan).tolist()
        return out

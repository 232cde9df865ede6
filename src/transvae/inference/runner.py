"""``InferenceRunner``: encode / decode / reconstruct images of any size with a trained model.

It adds what the bare ``model.encode`` / ``model.decode`` leave to the caller:

- any H x W: reflection padding to a multiple of the compression ratio, cropped back;
- reduced precision (``bf16`` / ``fp16``) through ``torch.autocast``, so weights stay fp32 and
  autocast keeps norms and softmax in fp32; an fp16 pass whose output is not finite (fp16
  overflows at 65504, the well-known SD-VAE failure) is rerun in fp32, with a warning; on a CPU
  without native bf16 / fp16 arithmetic the request falls back to fp32 with a warning
  (``transvae.utils.device.choose_dtype``) unless ``force_dtype``;
- tiled encode/decode (``tiling.py``) when an image exceeds ``max_pixels`` (``"auto"``: derived
  from the free memory, ``limits.py``) or the device runs out of memory (CUDA or CPU), with a
  progress bar over the tiles when ``progress``;
- latents checked before decoding: floating point and finite;
- optional ``torch.compile`` of the encoder and decoder.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..models.base import AutoencoderBase
from ..models.distributions import DiagonalGaussianDistribution
from ..models.persistence import unwrap_model
from ..utils.device import DTYPES, choose_dtype
from ..utils.failures import is_out_of_memory
from .limits import auto_max_pixels
from .padding import Pad, crop, pad_to_multiple
from .tiling import needs_tiling, tile_starts, tiled_apply

# the short names of transvae.utils.device.DTYPES, plus torch's long ones
DTYPE_NAMES = {**DTYPES, **{str(d).removeprefix("torch."): d for d in DTYPES.values()}}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp32"|"bf16"|"fp16"`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES.values():
            raise ValueError(f"unsupported inference dtype {dtype}; use fp32, bf16 or fp16")
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    return DTYPE_NAMES[dtype]


@dataclass
class EncodedBatch:
    """Result of ``InferenceRunner.encode``.

    Attributes:
        latent: (B, C, h, w) float32 latents of the padded images (sampled or the mean).
        posterior: the posterior (float32 moments) over the padded latent grid.
        pad: (left, right, top, bottom) pixels added by ``pad_to_multiple``.
        size: (H, W) of the original images.
    """

    latent: torch.Tensor
    posterior: DiagonalGaussianDistribution
    pad: Pad
    size: tuple[int, int]


class InferenceRunner:
    """Run a trained autoencoder on images of any size, in any precision, optionally tiled.

    Args:
        model: an ``AutoencoderBase`` (a DDP / compiled wrapper is unwrapped).
        device: where to run; None keeps the model's device.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; weights stay fp32). On a CPU
            without native support for it, fp32 is used with a warning unless ``force_dtype``.
        force_dtype: use ``dtype`` even where it is known to be slow (``--force-bf16``).
        max_pixels: images (after padding) with more pixels than this are encoded and decoded
            in tiles; ``"auto"`` derives it from the free memory (``limits.auto_max_pixels``);
            None never tiles unless the device runs out of memory; 0 always tiles.
        tile_size: tile side in pixels (rounded down to a multiple of the compression ratio).
        tile_overlap: overlap of neighbouring tiles in pixels; default (None): measured on the
            model at the first tiled pass, twice the farther reach of the encoder and decoder
            (``inference.reach``), at most half a tile.
        tile_batch: tiles passed through the network together.
        pad_mode: padding of non-multiple sizes (``"reflect"``, ``"replicate"``, ``"constant"``).
        compile: wrap encoder and decoder in ``torch.compile`` (``compile_kwargs`` passed on).
        progress: show a progress bar over the tiles of a tiled pass.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "fp32",
        max_pixels: int | str | None = None,
        tile_size: int = 512,
        tile_overlap: int | None = None,
        tile_batch: int = 1,
        pad_mode: str = "reflect",
        compile: bool = False,
        compile_kwargs: dict | None = None,
        force_dtype: bool = False,
        progress: bool = False,
    ):
        model = unwrap_model(model)
        if not isinstance(model, AutoencoderBase):
            raise TypeError(f"expected an AutoencoderBase, got {type(model).__name__}")
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.device = model.device
        self.dtype, self.dtype_warning = choose_dtype(resolve_dtype(dtype), self.device, force_dtype)
        if self.dtype_warning:
            warnings.warn(self.dtype_warning, RuntimeWarning, stacklevel=2)
        self.f = model.spatial_compression_ratio
        if max_pixels == "auto":
            max_pixels = auto_max_pixels(model, self.device, self.dtype)
        elif max_pixels is not None and (isinstance(max_pixels, str) or max_pixels < 0):
            raise ValueError(f"max_pixels must be a non-negative int, 'auto' or None, got {max_pixels!r}")
        self.max_pixels = max_pixels
        self.progress = progress
        self.tile_size = max(self.f, tile_size // self.f * self.f)
        self._overlap = (
            None if tile_overlap is None else min(tile_overlap // self.f * self.f, self.tile_size - self.f)
        )
        self.tile_batch = tile_batch
        self.pad_mode = pad_mode
        self._encoder: Callable = model.encoder
        self._decoder: Callable = model.decoder
        if compile:
            kw = dict(compile_kwargs or {})
            self._encoder = torch.compile(model.encoder, **kw)
            self._decoder = torch.compile(model.decoder, **kw)
        self._warned: set[str] = set()

    @property
    def tile_overlap(self) -> int:
        """The tile overlap in pixels: the given one, or the one measured on the model (see
        ``tile_overlap`` in the class docstring; measured once, at the first use)."""
        if self._overlap is None:
            from .reach import decoder_reach, encoder_reach, overlap_for

            side = min(self.tile_size, 256)  # a tile fits by definition
            try:
                reach = max(decoder_reach(self.model, side), encoder_reach(self.model, side))
                self._overlap = overlap_for(reach, self.tile_size, self.f)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                self._overlap = self.tile_size // 4 // self.f * self.f
                self._warn_once("reach", f"out of memory measuring the tile overlap; using {self._overlap}px")
        return self._overlap

    # -- precision ----------------------------------------------------------------------------
    def autocast(self, dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
        """Autocast context for ``dtype`` (default: the runner's); a no-op for fp32."""
        dtype = dtype or self.dtype
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _run(self, net: Callable, x: torch.Tensor, name: str, tiled: bool, in_to_out: tuple[int, int]):
        """``net(x)`` in the runner's precision, tiled or not, returning float32."""

        def call(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            with self.autocast(dtype):
                return net(t).float()

        def go(dtype: torch.dtype, tiled: bool) -> torch.Tensor:
            if not tiled:
                return call(x, dtype)
            num, den = in_to_out
            # the encoder's input is pixels (tiles of tile_size); the decoder's is latents (tile_size / f)
            div = 1 if den > 1 else self.f
            tile, overlap = self.tile_size // div, self.tile_overlap // div
            n = len(tile_starts(x.shape[-2], tile, overlap)) * len(tile_starts(x.shape[-1], tile, overlap))
            with tqdm(
                total=n, desc=f"{name} tiles", unit="tile", leave=False, disable=not self.progress or n < 4
            ) as bar:
                return tiled_apply(
                    lambda t: call(t, dtype), x, tile, overlap, num, den, self.tile_batch, on_tiles=bar.update
                )

        retry = False
        try:
            y = go(self.dtype, tiled)
        except (torch.OutOfMemoryError, RuntimeError) as e:  # CUDA, or the CPU allocator's RuntimeError
            if tiled or not is_out_of_memory(e):
                raise
            retry = True
        if retry:  # outside the except block: the failed attempt's tensors are freed first
            self._warn_once(
                f"oom-{name}", f"out of memory in the {name}; retrying with tiles of {self.tile_size}px"
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            tiled = True
            y = go(self.dtype, tiled)
        if self.dtype == torch.float16 and not torch.isfinite(y).all():
            # fp16 overflow (max 65504): redo this step in fp32 rather than return NaN/Inf
            self._warn_once(
                f"fp16-{name}",
                f"fp16 overflow in the {name} produced non-finite values; reran it in fp32 (bf16 avoids this)",
            )
            y = go(torch.float32, tiled)
        return y

    # -- public API -----------------------------------------------------------------------------
    def _tiled(self, h: int, w: int, tiled: bool | None) -> bool:
        return needs_tiling(h, w, self.max_pixels) if tiled is None else tiled

    @torch.inference_mode()
    def encode(
        self,
        x: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        tiled: bool | None = None,
    ) -> EncodedBatch:
        """Encode images of any size.

        Args:
            x: (B, 3, H, W) images in [-1, 1], any H and W.
            sample: draw z from the posterior instead of taking its mean.
            generator: RNG for ``sample``.
            tiled: force tiling on/off; None decides from ``max_pixels``.
        Returns:
            EncodedBatch with latents (B, C, ceil(H/f), ceil(W/f)) and the padding applied.
        """
        size = (x.shape[-2], x.shape[-1])
        xp, pad = pad_to_multiple(x.to(self.device, torch.float32), self.f, self.pad_mode)
        self.model._check_size(xp)
        moments = self._run(self._encoder, xp, "encoder", self._tiled(*xp.shape[-2:], tiled), (1, self.f))
        posterior = self.model.posterior_from_moments(moments)  # (B, 2C, h, w) float32
        z = posterior.sample(generator) if sample else posterior.mode()
        return EncodedBatch(latent=z, posterior=posterior, pad=pad, size=size)

    @torch.inference_mode()
    def decode(self, z: torch.Tensor, pad: Pad | None = None, tiled: bool | None = None) -> torch.Tensor:
        """Decode latents and crop away the padding added by ``encode``.

        Args:
            z: (B, C, h, w) latents.
            pad: (left, right, top, bottom) pixels to crop from the decoded (h*f, w*f) images.
            tiled: force tiling on/off; None decides from ``max_pixels``.
        Returns:
            (B, 3, h*f - top - bottom, w*f - left - right) float32 images in roughly [-1, 1].
        """
        if z.ndim != 4 or z.shape[1] != self.model.latent_channels:
            raise ValueError(
                f"expected latents of shape (B, {self.model.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise ValueError(f"latents must be floating point, got {z.dtype}")
        if not torch.isfinite(z).all():
            raise ValueError("latents contain NaN or Inf values; refusing to decode them")
        z = z.to(self.device, torch.float32)
        h, w = z.shape[-2] * self.f, z.shape[-1] * self.f
        x = self._run(self._decoder, z, "decoder", self._tiled(h, w, tiled), (self.f, 1))
        return crop(x, pad) if pad is not None else x

    @torch.inference_mode()
    def reconstruct(
        self,
        x: torch.Tensor,  # (B, 3, H, W) in [-1, 1], any H and W
        sample: bool = False,
        generator: torch.Generator | None = None,  # sample, generator: as in ``encode``
        tiled: bool | None = None,  # for both halves; None decides from ``max_pixels``
    ) -> torch.Tensor:
        """Encode and decode: (B, 3, H, W) in [-1, 1] -> (B, 3, H, W), any H and W."""
        enc = self.encode(x, sample=sample, generator=generator, tiled=tiled)
        return self.decode(enc.latent, enc.pad, tiled=tiled)

"""TransVAE as a diffusers autoencoder: ``AutoencoderTransVAE``.

It has the interface of diffusers' ``AutoencoderKL``, so pipelines and training scripts written
for SD-style VAEs work unchanged:

    >>> vae = AutoencoderTransVAE.from_transvae(model, scaling_factor=0.5, shift_factor=0.1)
    >>> latents = (vae.encode(x).latent_dist.sample() - vae.config.shift_factor) * vae.config.scaling_factor
    >>> x_rec = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    >>> vae.save_pretrained("vae/")            # config.json + diffusion_pytorch_model.safetensors
    >>> vae = AutoencoderTransVAE.from_pretrained("vae/")

The weights keep the plain model's names (``encoder.*``, ``decoder.*``); ``to_transvae()``
returns the plain ``transvae`` model again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

from ..inference.tiling import tiled_apply
from ..models.base import AutoencoderBase
from ..models.persistence import unwrap_model
from ..models.registry import build_model, get_architecture


def _floats(v: Sequence[float] | torch.Tensor | None) -> list[float] | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        return [float(t) for t in v.detach().flatten().cpu()]
    return [float(t) for t in v]


class AutoencoderTransVAE(ModelMixin, AutoencoderMixin, ConfigMixin):
    """A TransVAE (or any ``transvae`` architecture) behind diffusers' ``AutoencoderKL`` API.

    Args:
        architecture: the ``architecture`` key of the plain model's ``config.json``.
        model_config: the plain model's config (``model.config.to_dict()``).
        model_name: the registered variant name, for provenance.
        in_channels, out_channels, latent_channels: image / latent channels (derived; checked).
        block_out_channels: only its length is meaningful: diffusers pipelines compute
            ``vae_scale_factor = 2 ** (len(block_out_channels) - 1)``, which equals the
            compression ratio here.
        sample_size: training resolution (informational).
        scaling_factor, shift_factor: diffusion-space latents are ``(z - shift) * scale``.
        latents_mean, latents_std: optional per-channel latent statistics (C floats each).
        force_upcast: diffusers pipelines run the VAE in fp32 when True; False here, because
            an fp16 pass that overflows is redone in fp32 automatically.
        tile_sample_min_size: tile side in pixels when tiling is enabled.
        tile_overlap_factor: fraction of a tile shared with its neighbour.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        architecture: str = "transvae",
        model_config: dict | None = None,
        model_name: str = "",
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 32,
        block_out_channels: Sequence[int] = (1, 1, 1, 1, 1),
        sample_size: int = 256,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
        force_upcast: bool = False,
        tile_sample_min_size: int = 512,
        tile_overlap_factor: float = 0.25,
    ):
        super().__init__()
        cls = get_architecture(architecture)
        config = cls.config_class.from_dict(dict(model_config or {}))
        plain = build_model(cls, config, model_name or architecture)
        self.encoder = plain.encoder
        self.decoder = plain.decoder
        self.spatial_compression_ratio = plain.spatial_compression_ratio
        if plain.latent_channels != latent_channels or config.in_channels != in_channels:
            raise ValueError(
                f"latent_channels={latent_channels} / in_channels={in_channels} disagree with the model config "
                f"({plain.latent_channels} / {config.in_channels})"
            )
        if 2 ** (len(block_out_channels) - 1) != self.spatial_compression_ratio:
            raise ValueError(
                f"len(block_out_channels) must be log2({self.spatial_compression_ratio}) + 1 so that diffusers "
                f"pipelines derive the right vae_scale_factor, got {len(block_out_channels)}"
            )
        for name, v in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if v is not None and len(v) != latent_channels:
                raise ValueError(f"{name} must have {latent_channels} values, got {len(v)}")
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = tile_sample_min_size
        self.tile_overlap_factor = tile_overlap_factor

    # -- conversion -------------------------------------------------------------------------------
    @classmethod
    def from_transvae(
        cls,
        model: torch.nn.Module,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        latents_mean: Sequence[float] | torch.Tensor | None = None,
        latents_std: Sequence[float] | torch.Tensor | None = None,
        **kwargs,
    ) -> AutoencoderTransVAE:
        """Wrap a plain ``transvae`` model (weights copied, same device and dtype).

        Args:
            model: an ``AutoencoderBase`` (DDP / compiled wrappers are unwrapped).
            scaling_factor, shift_factor, latents_mean, latents_std: see the class docstring;
                typically 1 / std and the mean of the training latents.
            **kwargs: other config values (``force_upcast``, ``tile_sample_min_size``, ...).
        """
        plain = unwrap_model(model)
        if not isinstance(plain, AutoencoderBase):
            raise TypeError(f"expected a transvae AutoencoderBase, got {type(plain).__name__}")
        f = plain.spatial_compression_ratio
        dims = list(getattr(plain.config, "dims", ()))
        n = int(math.log2(f)) + 1
        vae = cls(
            architecture=plain.config.architecture,
            model_config=plain.config.to_dict(),
            model_name=plain.model_name,
            in_channels=plain.config.in_channels,
            out_channels=plain.config.in_channels,
            latent_channels=plain.latent_channels,
            block_out_channels=dims if len(dims) == n else [plain.latent_channels] * n,
            sample_size=int(getattr(plain.config, "sample_size", 256)),
            scaling_factor=float(scaling_factor),
            shift_factor=None if shift_factor is None else float(shift_factor),
            latents_mean=_floats(latents_mean),
            latents_std=_floats(latents_std),
            **kwargs,
        )
        vae.load_state_dict(plain.state_dict(), strict=True)
        vae = vae.to(plain.device)
        if plain.dtype != vae.dtype:  # only when needed: ModelMixin.to(dtype) warns otherwise
            vae = vae.to(plain.dtype)
        return vae.eval()

    def to_transvae(self) -> AutoencoderBase:
        """The plain ``transvae`` model with these weights (shares no storage with ``self``)."""
        cls = get_architecture(self.config.architecture)
        config = cls.config_class.from_dict(dict(self.config.model_config or {}))
        plain = build_model(cls, config, self.config.model_name or self.config.architecture)
        plain.load_state_dict({k: v.detach().clone() for k, v in self.state_dict().items()}, strict=True)
        return plain.to(device=self.device, dtype=self.dtype).eval()

    # -- helpers ---------------------------------------------------------------------------------
    def _tile_params(self) -> tuple[int, int]:
        f = self.spatial_compression_ratio
        tile = max(f, self.tile_sample_min_size // f * f)
        overlap = min(int(tile * self.tile_overlap_factor) // f * f, tile - f)
        return tile, overlap

    def _run(self, net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``net(x)``; if fp16 weights overflow to Inf/NaN, redo it with the weights upcast to fp32."""
        y = net(x)
        if y.dtype == torch.float16 and not torch.isfinite(y).all():
            module = self.encoder if net is self.encoder else self.decoder
            module.float()
            try:
                with torch.autocast(x.device.type, enabled=False):
                    y = net(x.float()).to(torch.float16)
            finally:
                module.half()
        return y

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        f = self.spatial_compression_ratio
        if x.ndim != 4 or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) with H, W multiples of {f}, got {tuple(x.shape)}; "
                f"pad with transvae.inference.pad_to_multiple(x, {f}) or resize with VaeImageProcessor(vae_scale_factor={f})"
            )
        x = x.to(self.dtype)
        tile, overlap = self._tile_params()
        if self.use_tiling and max(x.shape[-2:]) > tile:
            return tiled_apply(lambda t: self._run(self.encoder, t), x, tile, overlap, 1, f)
        return self._run(self.encoder, x)  # (B, 2C, H/f, W/f)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        f = self.spatial_compression_ratio
        z = z.to(self.dtype)
        tile, overlap = self._tile_params()
        if self.use_tiling and max(z.shape[-2:]) * f > tile:
            return tiled_apply(lambda t: self._run(self.decoder, t), z, tile // f, overlap // f, f, 1)
        return self._run(self.decoder, z)  # (B, 3, h*f, w*f)

    # -- the AutoencoderKL API ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode (B, 3, H, W) images in [-1, 1] (H, W multiples of f) to a posterior.

        Returns:
            ``AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution)`` over (B, C, H/f, W/f),
            or the tuple ``(latent_dist,)`` with ``return_dict=False``.
        """
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(s) for s in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple:
        """Decode (B, C, h, w) latents (unscaled: undo ``scaling_factor`` / ``shift_factor`` first).

        Returns:
            ``DecoderOutput(sample=(B, 3, h*f, w*f))`` or the tuple ``(sample,)``.
        """
        if self.use_slicing and z.shape[0] > 1:
            x = torch.cat([self._decode(s) for s in z.split(1)])
        else:
            x = self._decode(z)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple:
        """Encode then decode (B, 3, H, W) images; the posterior mean unless ``sample_posterior``."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

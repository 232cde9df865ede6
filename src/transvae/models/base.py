"""Shared autoencoder API: every architecture (TransVAE and the baselines) subclasses this.

The interface follows diffusers' ``AutoencoderKL``: ``encode(x) -> posterior``,
``decode(z) -> image``, and ``save_pretrained`` / ``from_pretrained`` writing ``config.json``
and ``model.safetensors``. Training, evaluation and inference code only use this API.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..utils.config import ConfigError, ConfigFields, from_dict
from .blocks import init_weights
from .distributions import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussianDistribution
from .persistence import CONFIG_NAME, WEIGHTS_NAME, PersistenceMixin

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "AutoencoderBase",
    "AutoencoderOutput",
    "ConfigError",
    "ModelConfig",
    "StagedConfig",
]


@dataclass
class ModelConfig(ConfigFields):
    """Base of every architecture's config dataclass.

    Subclasses set ``architecture`` (the key used in ``config.json``) and add their fields.
    Tuples are used for per-stage lists so that configs stay hashable and immutable.
    """

    architecture: ClassVar[str] = ""
    in_channels: int = 3
    latent_channels: int = 32

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build a config from plain data, refusing unknown keys, wrong types and sizes out of range
        (checked before anything is built: a config cannot ask for a billion-block model)."""
        return from_dict(cls, d, what=f"'{cls.architecture}' model config", check=_check_range)

    @property
    def compression(self) -> int:
        """The spatial compression ratio f of the architecture (each subclass computes it)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class StagedConfig(ModelConfig):
    """A config whose encoder is a patch embedding then stages of widths ``dims`` with ``depths``
    blocks, each stage after the first halving the grid (TransVAE, ViT-VAE, Swin-VAE).

    Subclasses are dataclasses declaring ``dims``, ``depths`` and ``patch_size``; their own checks
    go in ``check``, which runs after the shared ones.
    """

    def __post_init__(self):
        if len(self.dims) != len(self.depths) or not self.dims:
            raise ConfigError(f"dims {self.dims} and depths {self.depths} must be non-empty and equally long")
        if self.patch_size < 1 or self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"patch_size must be a power of two, got {self.patch_size}")
        self.check()

    def check(self) -> None:
        """The architecture's own checks (raise ``ConfigError``); ``dims``, ``depths`` and
        ``patch_size`` are already known to be consistent."""

    @property
    def compression(self) -> int:
        return self.patch_size * 2 ** (len(self.dims) - 1)


# Sizes that must be at least 1 in every architecture that has them (0 would build an empty or
# broken model, or divide by zero in a config check); every other number must be >= 0.
_POSITIVE_KEYS = frozenset(
    {"in_channels", "latent_channels", "dims", "head_dim", "base_dim", "ch_mult", "patch_size"}
    | {"window_size", "sample_size", "mlp_ratio", "rope_theta", "dec_base_dim", "dec_ch_mult"}
    | {"norm_groups", "attention_head_dim", "encoder_block_out_channels", "decoder_block_out_channels"}
)
# Upper bounds, far above every published model (Giant: widths 2560-3072, 10 blocks a stage),
# so that a config file cannot make the build hang (depth 10^7) or allocate terabytes.
_MAX_VALUES = {
    "in_channels": 64,
    "latent_channels": 4096,
    "dims": 16384,
    "base_dim": 16384,
    "dec_base_dim": 16384,
    "depths": 256,
    "ch_mult": 64,
    "dec_ch_mult": 64,
    "num_res_blocks": 256,
    "decoder_num_res_blocks": 256,
    "dec_num_res_blocks": 256,
    "num_cnn_stages": 64,
    "head_dim": 1024,
    "mlp_ratio": 64,
    "patch_size": 256,
    "window_size": 1024,
    "sample_size": 65536,
    "norm_groups": 16384,
    "attention_head_dim": 16384,
    "encoder_block_out_channels": 16384,
    "decoder_block_out_channels": 16384,
    "encoder_layers_per_block": 256,
    "decoder_layers_per_block": 256,
}
_MAX_STAGES = 16


def _check_range(key: str, value: Any) -> None:
    """Refuse NaN / inf and negative numbers anywhere, zero for the sizes in ``_POSITIVE_KEYS``,
    values above ``_MAX_VALUES`` and more than ``_MAX_STAGES`` per-stage entries."""
    positive = key in _POSITIVE_KEYS
    values = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and len(value) > _MAX_STAGES:
        raise ConfigError(
            f"config key '{key}' has {len(value)} entries; at most {_MAX_STAGES} stages are supported"
        )
    limit = _MAX_VALUES.get(key)
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            need = "a positive" if positive else "a non-negative"
            raise ConfigError(f"config key '{key}' must be {need} finite number, got {value!r}")
        if limit is not None and v > limit:
            raise ConfigError(f"config key '{key}' = {value!r} is out of range (at most {limit} per entry)")


@dataclass
class AutoencoderOutput:
    """Output of ``model(x)``.

    Attributes:
        sample: reconstruction, (B, 3, H, W).
        posterior: the encoder's diagonal Gaussian over the latent grid.
        latent: the latent that was decoded, (B, C, H/f, W/f).
    """

    sample: torch.Tensor
    posterior: DiagonalGaussianDistribution
    latent: torch.Tensor


class AutoencoderBase(PersistenceMixin, nn.Module):
    """Base class: subclasses build ``self.encoder`` and ``self.decoder`` and set ``config``.

    ``self.encoder(x)`` must return the Gaussian moments (B, 2*C, H/f, W/f) and
    ``self.decoder(z)`` the image (B, 3, H, W). A subclass that sets ``encoder_class`` and
    ``decoder_class`` has them built here, ``encoder_class(config)`` and
    ``decoder_class(decoder_config())``, then initialised by ``init_weights`` with its
    ``residual_streams()``; one that does not builds them itself after ``super().__init__``.

    Args:
        config: the architecture's ``config_class`` instance.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    encoder_class: ClassVar[type[nn.Module] | None] = None
    decoder_class: ClassVar[type[nn.Module] | None] = None
    kind: ClassVar[str] = "tokenizer"
    # True for encoders that output a latent, not a distribution (DC-AE): the posterior then has
    # zero variance, so sampling it returns its mean and its KL term is 0.
    deterministic_posterior: ClassVar[bool] = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        if self.encoder_class is not None and self.decoder_class is not None:
            self.encoder = self.encoder_class(config)
            self.decoder = self.decoder_class(self.decoder_config())
            init_weights(self, self.residual_streams())

    def decoder_config(self) -> ModelConfig:
        """The config ``decoder_class`` is built from: the model's own unless a subclass says otherwise."""
        return self.config

    def residual_streams(self) -> list[list[nn.Linear]]:
        """The residual-branch output layers, one list per stream, that ``init_weights`` re-draws:
        by default those of every transformer stage (``kind == "transformer"``) of the encoder
        and the decoder, from its ``residual_branch_outputs()``."""
        stages = [*getattr(self.encoder, "stages", ()), *getattr(self.decoder, "stages", ())]
        return [s.residual_branch_outputs() for s in stages if getattr(s, "kind", None) == "transformer"]

    # -- properties ------------------------------------------------------------------------
    @property
    def spatial_compression_ratio(self) -> int:
        """f: images (H, W) map to latents (H/f, W/f); each architecture's config computes it
        as ``compression``."""
        return self.config.compression

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def model_name(self) -> str:
        return getattr(self, "_model_name", self.config.architecture)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, part: str = "total") -> int:
        """Parameter count of ``"encoder"``, ``"decoder"`` or ``"total"``."""
        module = {"encoder": self.encoder, "decoder": self.decoder, "total": self}[part]
        return sum(p.numel() for p in module.parameters())

    def table_row(self) -> dict[str, Any]:
        """The columns of ``transvae list`` that describe an autoencoder."""
        return {
            "ratio": self.spatial_compression_ratio,
            "latent_channels": self.latent_channels,
            "encoder_params": self.num_parameters("encoder"),
            "decoder_params": self.num_parameters("decoder"),
            "total_params": self.num_parameters("total"),
        }

    def logvar_layer(self) -> nn.Conv2d | None:
        """The layer whose output holds the posterior's log-variance (its second half of
        channels): the encoder's ``quant_conv`` where it has one, else its ``conv_out``; None
        for a deterministic posterior or an encoder without such a layer."""
        quant = getattr(self.encoder, "quant_conv", None)
        layer = quant if isinstance(quant, nn.Conv2d) else getattr(self.encoder, "conv_out", None)
        ok = isinstance(layer, nn.Conv2d) and layer.bias is not None and layer.out_channels == 2 * self.latent_channels
        return layer if ok and not self.deterministic_posterior else None

    def init_logvar_(self, value: float) -> AutoencoderBase:
        """Start the posterior's log-variance at ``value``: the bias of ``logvar_layer()`` is set
        to ``value`` on its log-variance half, the mean half untouched. With the usual init the
        posterior's std starts at ~1 while its mean's spread is ~0.3, so a decoder trained from
        scratch spends its first few hundred steps on mostly noise (docs/training.md, "The
        posterior's noise at the start").

        Raises:
            ConfigError: the model has no such layer, or ``value`` is outside the clamp
                [-30, 20] of the log-variance.
        """
        if not LOGVAR_MIN <= value <= LOGVAR_MAX:
            raise ConfigError(
                f"a log-variance init must be within [{LOGVAR_MIN:g}, {LOGVAR_MAX:g}] (the posterior's clamp), got {value}"
            )
        layer = self.logvar_layer()
        if layer is None:
            raise ConfigError(f"{self.model_name} has no log-variance output layer to initialise")
        with torch.no_grad():
            layer.bias[self.latent_channels :] = value
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> AutoencoderBase:
        """Recompute block activations in the backward pass (saves memory on large variants)."""
        self.gradient_checkpointing = enabled
        for m in self.modules():
            if m is not self and hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = enabled
        return self

    # -- the autoencoder API ----------------------------------------------------------------
    def _check_size(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected {self.config.in_channels} input channels, got {x.shape[1]}")
        f = self.spatial_compression_ratio
        h, w = x.shape[-2:]
        if h % f or w % f:
            ph, pw = -(-h // f) * f, -(-w // f) * f
            raise ValueError(
                f"input size {h}x{w} is not a multiple of the spatial compression ratio {f}: "
                f"pad it to {ph}x{pw} (e.g. transvae.inference.pad_to_multiple(x, {f})) "
                f"and crop the reconstruction back"
            )

    def posterior_from_moments(self, moments: torch.Tensor) -> DiagonalGaussianDistribution:
        """The posterior of the encoder's output moments (B, 2*C, h, w) (zero-variance when the
        architecture is deterministic); used by ``encode`` and by tiled inference."""
        return DiagonalGaussianDistribution(moments, deterministic=self.deterministic_posterior)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """Encode images to a posterior over latents.

        Args:
            x: (B, 3, H, W) images in [-1, 1]; H and W multiples of ``spatial_compression_ratio``.
        Returns:
            DiagonalGaussianDistribution with mean/logvar of shape (B, C, H/f, W/f).
        """
        self._check_size(x)
        return self.posterior_from_moments(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (B, C, h, w) to images (B, 3, h*f, w*f) in roughly [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents of shape (B, {self.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        return self.decoder(z)

    def forward(
        self,
        x: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
    ) -> AutoencoderOutput:
        """Encode, take the posterior mean (or a sample) and decode: (B, 3, H, W) -> AutoencoderOutput.

        As diffusers' ``AutoencoderKL.forward``, the default is deterministic (the mean): the
        call users make to reconstruct an image gives the same result every time. Training
        draws ``z ~ q(z|x)`` and passes ``sample_posterior=True`` explicitly.

        Args:
            x: (B, 3, H, W) images in [-1, 1].
            sample_posterior: decode a sample of the posterior instead of its mean.
            generator: RNG for the sample.
        """
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return AutoencoderOutput(sample=self.decode(z), posterior=posterior, latent=z)

    def last_decoder_layer(self) -> nn.Parameter:
        """Weight of the decoder's last layer (for the GAN adaptive weight)."""
        return self.decoder.conv_out.weight

    def last_encoder_layer(self) -> nn.Parameter:
        """Weight of the encoder's last layer (for the VF-loss adaptive weight)."""
        return self.encoder.conv_out.weight

    # -- persistence: save_pretrained / from_pretrained / push_to_hub come from PersistenceMixin --
    def config_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.config.architecture,
            "model_name": self.model_name,
            **self.config.to_dict(),
        }

"""Shared autoencoder API: every architecture (TransVAE and the baselines) subclasses this.

The interface follows diffusers' ``AutoencoderKL``: ``encode(x) -> posterior``,
``decode(z) -> image``, and ``save_pretrained`` / ``from_pretrained`` writing ``config.json``
and ``model.safetensors``. Training, evaluation and inference code only use this API.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from .distributions import DiagonalGaussianDistribution

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ConfigError(ValueError):
    """A model config has unknown keys, wrong types or impossible values."""


@dataclass
class ModelConfig:
    """Base of every architecture's config dataclass.

    Subclasses set ``architecture`` (the key used in ``config.json``) and add their fields.
    Tuples are used for per-stage lists so that configs stay hashable and immutable.
    """

    architecture: ClassVar[str] = ""
    in_channels: int = 3
    latent_channels: int = 32

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build a config from plain data, refusing unknown keys and wrong types."""
        valid = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown} for architecture '{cls.architecture}'; "
                f"valid keys: {sorted(valid)}"
            )
        kwargs = {}
        for k, v in d.items():
            f = valid[k]
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[k] = _coerce(k, v, default)
            _check_range(k, kwargs[k])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Sizes that must be at least 1 in every architecture that has them (0 would build an empty or
# broken model, or divide by zero in a config check); every other number must be >= 0.
_POSITIVE_KEYS = frozenset(
    {"in_channels", "latent_channels", "dims", "head_dim", "base_dim", "ch_mult", "patch_size"}
    | {"window_size", "sample_size", "mlp_ratio", "rope_theta"}
)


def _check_range(key: str, value: Any) -> None:
    """Refuse NaN / inf and negative numbers anywhere, and zero for the sizes in ``_POSITIVE_KEYS``."""
    positive = key in _POSITIVE_KEYS
    for v in value if isinstance(value, tuple) else (value,):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            need = "a positive" if positive else "a non-negative"
            raise ConfigError(f"config key '{key}' must be {need} finite number, got {value!r}")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the field's default and normalise lists to tuples."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a bool, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an int, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        inner = default[0] if default else None
        return tuple(_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    return value


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


class AutoencoderBase(nn.Module):
    """Base class: subclasses build ``self.encoder`` and ``self.decoder`` and set ``config``.

    ``self.encoder(x)`` must return the Gaussian moments (B, 2*C, H/f, W/f) and
    ``self.decoder(z)`` the image (B, 3, H, W).
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False

    # -- properties ------------------------------------------------------------------------
    @property
    def spatial_compression_ratio(self) -> int:
        raise NotImplementedError

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

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """Encode images to a posterior over latents.

        Args:
            x: (B, 3, H, W) images in [-1, 1]; H and W multiples of ``spatial_compression_ratio``.
        Returns:
            DiagonalGaussianDistribution with mean/logvar of shape (B, C, H/f, W/f).
        """
        self._check_size(x)
        return DiagonalGaussianDistribution(self.encoder(x))

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
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> AutoencoderOutput:
        """Encode, sample (or take the mode) and decode: (B, 3, H, W) -> AutoencoderOutput."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return AutoencoderOutput(sample=self.decode(z), posterior=posterior, latent=z)

    def last_decoder_layer(self) -> nn.Parameter:
        """Weight of the decoder's last layer (for the GAN adaptive weight)."""
        return self.decoder.conv_out.weight

    def last_encoder_layer(self) -> nn.Parameter:
        """Weight of the encoder's last layer (for the VF-loss adaptive weight)."""
        return self.encoder.conv_out.weight

    # -- persistence ------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **metadata: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to ``save_directory``."""
        from .hub import save_model_folder

        return save_model_folder(self, save_directory, **metadata)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, **kwargs: Any) -> AutoencoderBase:
        """Load a model saved with ``save_pretrained`` from a folder, a run folder or a Hub repo."""
        from .hub import load_model

        model = load_model(path_or_repo, **kwargs)
        if cls is not AutoencoderBase and not isinstance(model, cls):
            raise ConfigError(f"{path_or_repo} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload ``config.json`` + ``model.safetensors`` to the Hugging Face Hub."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def config_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.config.architecture,
            "model_name": self.model_name,
            **self.config.to_dict(),
        }


def config_to_json(model: AutoencoderBase) -> str:
    return json.dumps(model.config_dict(), indent=2)

"""Model registry and architectures."""

from .base import AutoencoderBase, AutoencoderOutput, ConfigError, ModelConfig
from .distributions import DiagonalGaussianDistribution
from .registry import create_model, get_model_entry, list_models, model_table, register_model
from .transvae import TransVAE, TransVAEConfig

__all__ = [
    "AutoencoderBase",
    "AutoencoderOutput",
    "ConfigError",
    "DiagonalGaussianDistribution",
    "ModelConfig",
    "TransVAE",
    "TransVAEConfig",
    "create_model",
    "get_model_entry",
    "list_models",
    "model_table",
    "register_model",
]

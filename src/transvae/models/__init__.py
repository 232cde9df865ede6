"""Model registry and architectures: TransVAE and the baselines it is compared with."""

from .asym_vae import AsymVAE
from .base import AutoencoderBase, AutoencoderOutput, ConfigError, ModelConfig
from .cnn_vae import CNNVAE
from .distributions import DiagonalGaussianDistribution
from .registry import create_model, get_model_entry, list_models, model_table, register_model
from .swin_vae import SwinVAE
from .transvae import TransVAE, TransVAEConfig

__all__ = [
    "AsymVAE",
    "AutoencoderBase",
    "AutoencoderOutput",
    "CNNVAE",
    "ConfigError",
    "DiagonalGaussianDistribution",
    "ModelConfig",
    "SwinVAE",
    "TransVAE",
    "TransVAEConfig",
    "create_model",
    "get_model_entry",
    "list_models",
    "model_table",
    "register_model",
]

"""Every network of the package, behind one registry and one persistence mixin.

Tokenizers: TransVAE and the baselines it is compared with (CNN-VAE, ViT-VAE, Swin-VAE, the
asymmetric VAE); generators: LightningDiT. ``create_model(name)`` builds any of them,
``list_models(pattern, kind)`` lists them, and every model has ``save_pretrained`` /
``from_pretrained``. Importing this package imports every architecture module, which fills the
registry.
"""

from . import (  # noqa: F401  (the importers of published autoencoders; DC-AE's wrapper)
    baselines,  # noqa: F401  (registers the ViT-VAE family and the baselines' modules)
    convert,
    dc_ae,
)
from .asym_vae import AsymVAE
from .base import AutoencoderBase, AutoencoderOutput, ConfigError, ModelConfig
from .cnn_vae import CNNVAE
from .distributions import DiagonalGaussianDistribution
from .lightningdit import GeneratorConfigError, LightningDiT, LightningDiTConfig
from .persistence import load_model
from .registry import (
    create_model,
    get_model_entry,
    list_models,
    model_config,
    model_table,
    register_model,
)
from .swin_vae import SwinVAE
from .transvae import TransVAE, TransVAEConfig

__all__ = [
    "AsymVAE",
    "AutoencoderBase",
    "AutoencoderOutput",
    "CNNVAE",
    "ConfigError",
    "DiagonalGaussianDistribution",
    "GeneratorConfigError",
    "LightningDiT",
    "LightningDiTConfig",
    "ModelConfig",
    "SwinVAE",
    "TransVAE",
    "TransVAEConfig",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_model",
    "model_config",
    "model_table",
    "register_model",
]

"""transvae: TransVAE, a hybrid CNN + Transformer image VAE for latent diffusion.

Implements "A Hybrid Paradigm for Vision Autoencoders: Unifying CNNs and Transformers for
Learning Efficiency and Scalability" (TransVAE): the model family of its Table 3, the
baselines it compares against, its training recipe and its evaluation protocol.

    >>> import transvae
    >>> model = transvae.create_model("transvae-t-f16d32")
    >>> z = model.encode(x).sample(); x_rec = model.decode(z)
"""

from .models import (
    AutoencoderBase,
    AutoencoderOutput,
    ConfigError,
    DiagonalGaussianDistribution,
    TransVAE,
    TransVAEConfig,
    create_model,
    list_models,
)

__version__ = "0.1.0"


def from_pretrained(path_or_repo, **kwargs) -> AutoencoderBase:
    """Load any model saved with ``save_pretrained`` (a folder, a training run folder or a Hub repo),
    or import a published autoencoder: a diffusers ``AutoencoderKL`` / ``AutoencoderDC`` folder or
    repo, or a checkpoint file with ``preset=`` (options: ``transvae.models.persistence.load_model``).

        >>> vae = transvae.from_pretrained("stabilityai/sd-vae-ft-mse")      # SD VAE -> CNN-VAE
        >>> vae = transvae.from_pretrained("ae.safetensors", preset="flux-vae")
        >>> vae.metadata["scaling_factor"], vae.metadata["shift_factor"]
        (0.3611, 0.1159)
    """
    from .models.persistence import load_model

    return load_model(path_or_repo, **kwargs)


__all__ = [
    "AutoencoderBase",
    "AutoencoderOutput",
    "ConfigError",
    "DiagonalGaussianDistribution",
    "TransVAE",
    "TransVAEConfig",
    "create_model",
    "from_pretrained",
    "list_models",
    "__version__",
]

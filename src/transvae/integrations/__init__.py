"""Adapters to other libraries (imported lazily, so transvae does not require them at import).

- ``transvae.integrations.diffusers.AutoencoderTransVAE``: a diffusers ``ModelMixin`` /
  ``ConfigMixin`` autoencoder with the ``AutoencoderKL`` interface.
"""

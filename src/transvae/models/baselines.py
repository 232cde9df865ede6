"""Baseline architectures (CNN-VAE, ViT-VAE, Swin-VAE). Filled in by the baselines work."""

"""Metrics as plugins: one small class per metric, registered by name.

Reconstruction (``transvae evaluate``, training validation): ``psnr``, ``ssim``, ``lpips``,
``rfid``. Generation (``transvae gen-eval``): ``fid``, ``is`` and the download-free ``latent-fd``,
with the rest of the ADM suite (Dhariwal & Nichol 2021) beside them; ``list_metrics()`` has all.

    from transvae.metrics import build_metrics, list_metrics, required_inputs
    metrics = build_metrics(["psnr", "ssim"])
    scores = metrics[0].update(originals_u8, reconstructions_u8)   # (B,) per-image PSNR
    metrics[0].compute()                                          # {"psnr": ..., "psnr_std": ...}

- ``base``: the ``Metric`` protocol (``update`` / ``compute`` / ``reset``, what it ``needs``),
  ``register_metric``, ``build_metrics``, ``required_inputs``, ``check_inputs``;
- ``features``: the feature networks set metrics read (the FID InceptionV3), in a registry;
- ``collection``: ``MetricCollection`` feeds inputs to the metrics, one network pass per batch;
- one module per metric (``list_metrics()`` names them all); ``frechet``: the Frechet distance
  that FID-like metrics share.

Adding a metric is one new module here with a ``@register_metric("name")`` class, and a test:
every module of this package is imported when the registry is first read. Pretrained networks
load through ``transvae.models.pretrained``. See docs/evaluation.md.
"""

from ..utils.lazy import lazy_exports

# name -> submodule; imported on first use (torchmetrics and the networks are slow to import)
_EXPORTS = {
    "FID": "fid",
    "INPUTS": "base",
    "InceptionScore": "inception_score",
    "LPIPS": "lpips",
    "LatentFrechetDistance": "latent_fd",
    "Metric": "base",
    "MetricCollection": "collection",
    "MetricInputError": "base",
    "NotEnoughDataError": "base",
    "PSNR": "psnr",
    "PairMetric": "base",
    "ReconstructionFID": "fid",
    "SSIM": "ssim",
    "SetMetric": "base",
    "build_feature_extractor": "features",
    "build_metrics": "base",
    "check_inputs": "base",
    "feature_networks": "features",
    "frechet_distance": "frechet",
    "latent_patches": "latent_fd",
    "list_metrics": "base",
    "metric_class": "base",
    "psnr_per_image": "psnr",
    "register_feature_extractor": "features",
    "register_metric": "base",
    "required_inputs": "base",
    "ssim_per_image": "ssim",
}


__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

"""Latent-space analysis (Table 2): statistics, uniformity and a linear probe.

- ``latent_statistics``: per-channel mean/std over a data set and the scaling / shift factors
  that diffusion training uses (diffusers' ``scaling_factor`` / ``shift_factor``: SD3 and FLUX
  train on ``(z - shift_factor) * scaling_factor``).
- ``uniformity_metrics``: VA-VAE's latent uniformity measure (LightningDiT ``tools/``): sample
  latent vectors (one C-dim vector at a random spatial position of a random image), normalise
  them per channel with the data-set mean/std, embed them in 2-D with t-SNE (scikit-learn),
  fit a Gaussian KDE (scipy, Scott's bandwidth) and evaluate the density at the embedded points
  themselves; report the density's coefficient of variation, its normalised entropy and its
  Gini coefficient. A more uniform latent space gives a lower CV and Gini and an entropy closer
  to 1. VA-VAE samples 10 000 vectors and averages 10 t-SNE runs.
- ``linear_probe``: global-average-pooled latents -> logistic regression, top-1 on a held-out split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.latents import LatentStatistics, latent_statistics  # noqa: F401  (re-exported)


class LatentVectorSampler:
    """Collects C-dim latent vectors at random spatial positions, for ``uniformity_metrics``.

    VA-VAE takes one random position from each of ``num_samples`` random images. With fewer
    images than that, we take ``ceil(num_samples / num_images)`` distinct random positions per
    image and subsample to ``num_samples`` at the end.

    Args:
        num_samples: vectors wanted (VA-VAE: 10 000).
        num_images: images that will be passed to ``update``.
        seed: RNG seed.
    """

    def __init__(self, num_samples: int, num_images: int, seed: int = 0):
        self.num_samples = num_samples
        self.per_image = max(1, math.ceil(num_samples / max(1, num_images)))
        self.rng = np.random.default_rng(seed)
        self.vectors: list[np.ndarray] = []

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of latents (B, C, h, w)."""
        b, c, h, w = z.shape
        k = min(self.per_image, h * w)
        flat = z.detach().float().cpu().reshape(b, c, h * w).numpy()
        for i in range(b):
            pos = self.rng.choice(h * w, size=k, replace=False)
            self.vectors.append(flat[i, :, pos])  # (k, C)

    def result(self) -> np.ndarray:
        """(min(num_samples, collected), C) float32 array, a random subset of the collected vectors."""
        if not self.vectors:
            raise ValueError("no latents were given")
        v = np.concatenate(self.vectors)
        if len(v) > self.num_samples:
            v = v[self.rng.choice(len(v), size=self.num_samples, replace=False)]
        return v


def density_uniformity(points: np.ndarray) -> dict:
    """Uniformity of a 2-D point cloud from a Gaussian KDE evaluated at the points themselves.

    Args:
        points: (N, 2) embedded points, N > 2.
    Returns:
        ``density_cv`` (std / mean of the densities, population std), ``density_std``,
        ``normalized_entropy`` (Shannon entropy of the densities normalised to sum 1, in bits,
        divided by log2 N; 1 = all equal) and ``gini_coefficient`` (0 = all equal).
    """
    from scipy.stats import gaussian_kde

    points = np.asarray(points, dtype=np.float64)
    density = gaussian_kde(points.T)(points.T)  # (N,)
    n = len(density)
    p = density / density.sum()
    entropy = -np.sum(p * np.log2(p + 1e-10))  # the 1e-10 guard as in VA-VAE's tool
    sorted_d = np.sort(density)
    ranks = np.arange(1, n + 1)
    # Gini = sum_i (2i - n - 1) x_(i) / (n sum x), x sorted ascending
    gini = float(np.sum((2 * ranks - n - 1) * sorted_d) / (n * sorted_d.sum()))
    return {
        "density_cv": float(density.std() / density.mean()),
        "density_std": float(density.std()),
        "normalized_entropy": float(entropy / np.log2(n)),
        "gini_coefficient": gini,
    }


def _numpy(x: np.ndarray | torch.Tensor | list) -> np.ndarray:
    """``x`` as a NumPy array (a tensor is detached and copied to the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def uniformity_metrics(
    vectors: np.ndarray | torch.Tensor,
    channel_mean: np.ndarray | list[float] | None = None,
    channel_std: np.ndarray | list[float] | None = None,
    repeats: int = 1,
    perplexity: float = 30.0,
    max_iter: int = 1000,
    seed: int = 42,
) -> dict:
    """VA-VAE's latent uniformity: per-channel normalisation -> t-SNE (2-D) -> KDE -> uniformity.

    Args:
        vectors: (N, C) latent vectors (e.g. from ``LatentVectorSampler``), N > 3.
        channel_mean, channel_std: (C,) data-set statistics for the normalisation (default: the
            vectors' own).
        repeats: t-SNE runs with seeds ``seed, seed + 1, ...``; metrics are averaged (VA-VAE: 10).
        perplexity: t-SNE perplexity (VA-VAE: 30; lowered to (N - 1) / 3 for tiny N).
        max_iter: t-SNE iterations (VA-VAE: 1000).
        seed: first t-SNE random_state (VA-VAE: 42).
    Returns:
        the averaged ``density_uniformity`` metrics, plus ``num_vectors``, ``repeats``, ``perplexity``
        and ``runs`` (each run's metrics) and ``embedding`` (the first run's (N, 2) points, as a list).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    v = _numpy(vectors).astype(np.float64)
    if v.ndim != 2 or len(v) < 4:
        raise ValueError(f"need at least 4 latent vectors of shape (N, C), got {v.shape}")
    mean = v.mean(0) if channel_mean is None else np.asarray(channel_mean, dtype=np.float64)
    std = v.std(0) if channel_std is None else np.asarray(channel_std, dtype=np.float64)
    v = (v - mean) / np.where(std > 0, std, 1.0)
    perplexity = min(perplexity, (len(v) - 1) / 3.0)
    runs, embedding = [], None
    # Barnes-Hut t-SNE's OpenMP threads cost more than they save on a few thousand points
    # (and spin badly on a busy machine), so small problems run on one thread.
    threads = 1 if len(v) < 2000 else None
    for r in range(repeats):
        tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, random_state=seed + r)
        with threadpool_limits(limits=threads, user_api="openmp"):
            emb = tsne.fit_transform(v)
        if embedding is None:
            embedding = emb
        runs.append(density_uniformity(emb))
    out = {k: float(np.mean([run[k] for run in runs])) for k in runs[0]}
    out.update(
        num_vectors=len(v), repeats=repeats, perplexity=perplexity, runs=runs, embedding=embedding.tolist()
    )
    return out


def pooled_latents(z: torch.Tensor) -> torch.Tensor:
    """Global average pooling of latents for the linear probe: (B, C, h, w) -> (B, C)."""
    return z.float().mean(dim=(2, 3))


def linear_probe(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | list[int],
    test_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 2000,
) -> dict:
    """Linear classification of pooled latents: standardise -> logistic regression; top-1 accuracy.

    Args:
        features: (N, D) pooled latents.
        labels: (N,) integer class labels.
        test_fraction: held-out share (stratified when every class has >= 2 samples).
        seed: split seed.
        max_iter: L-BFGS iterations.
    Returns:
        ``top1`` (held-out accuracy), ``train_top1``, ``num_train``, ``num_test``, ``num_classes``,
        ``chance`` (majority-class accuracy on the held-out split).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _numpy(features)
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("a linear probe needs at least two classes")
    stratify = y if counts.min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(x_tr, y_tr)
    majority = np.bincount(y_tr).argmax()
    return {
        "top1": float((clf.predict(x_te) == y_te).mean()),
        "train_top1": float((clf.predict(x_tr) == y_tr).mean()),
        "num_train": len(y_tr),
        "num_test": len(y_te),
        "num_classes": len(classes),
        "chance": float((y_te == majority).mean()),
    }

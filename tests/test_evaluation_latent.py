"""Latent analysis: statistics and scaling factors, VA-VAE uniformity metrics, linear probe."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from transvae.evaluation.latent_analysis import (
    LatentVectorSampler,
    density_uniformity,
    latent_statistics,
    linear_probe,
    uniformity_metrics,
)


def test_latent_statistics_streaming_matches_numpy():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.0, 2.0, 4.0]).view(1, 4, 1, 1)
    shift = torch.tensor([3.0, -1.0, 0.0, 10.0]).view(1, 4, 1, 1)
    batches = [
        torch.randn(n, 4, h, w, generator=g) * scale + shift for n, h, w in [(3, 4, 4), (1, 4, 4), (5, 4, 4)]
    ]
    stats = latent_statistics(iter(batches))
    allz = torch.cat(batches).double()
    per_c = allz.transpose(0, 1).reshape(4, -1).numpy()
    assert stats["num_latents"] == 9 and stats["channels"] == 4 and stats["values_per_channel"] == 9 * 16
    np.testing.assert_allclose(stats["mean"], per_c.mean(1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats["std"], per_c.std(1), rtol=1e-10)
    flat = allz.flatten().numpy()
    assert stats["shift_factor"] == pytest.approx(flat.mean(), rel=1e-10)
    assert stats["scaling_factor"] == pytest.approx(1.0 / flat.std(), rel=1e-10)
    assert stats["scaling_factor_no_shift"] == pytest.approx(1.0 / np.sqrt((flat**2).mean()), rel=1e-10)
    normed = (flat - stats["shift_factor"]) * stats["scaling_factor"]
    assert normed.mean() == pytest.approx(0.0, abs=1e-10) and normed.std() == pytest.approx(1.0, rel=1e-10)
    # one tensor gives the same as the stream
    assert latent_statistics(torch.cat(batches))["scaling_factor"] == pytest.approx(
        stats["scaling_factor"], rel=1e-12
    )


def test_density_uniformity_against_independent_formulas():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    clustered = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(5, 2.0, (44, 2))])
    u_grid, u_clu = density_uniformity(grid), density_uniformity(clustered)
    for pts, u in [(grid, u_grid), (clustered, u_clu)]:
        d = scipy.stats.gaussian_kde(pts.T)(pts.T)
        # Gini as the relative mean absolute difference, entropy via scipy
        gini = np.abs(d[:, None] - d[None, :]).mean() / (2 * d.mean())
        assert u["gini_coefficient"] == pytest.approx(gini, rel=1e-9)
        assert u["normalized_entropy"] == pytest.approx(
            scipy.stats.entropy(d, base=2) / np.log2(len(d)), abs=1e-6
        )
        assert u["density_cv"] == pytest.approx(d.std() / d.mean(), rel=1e-9)
    assert u_grid["density_cv"] < u_clu["density_cv"]
    assert u_grid["gini_coefficient"] < u_clu["gini_coefficient"]
    assert u_grid["normalized_entropy"] > u_clu["normalized_entropy"]


def test_uniformity_metrics_runs_tsne_then_kde():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(80, 6)) * np.arange(1, 7) + 3.0
    u = uniformity_metrics(v, max_iter=250, seed=0)
    assert u["num_vectors"] == 80 and u["repeats"] == 1
    emb = np.asarray(u["embedding"])
    assert emb.shape == (80, 2)
    ref = density_uniformity(emb)
    for k, val in ref.items():
        assert u[k] == pytest.approx(val, rel=1e-12)


def test_latent_vector_sampler_takes_real_positions():
    z = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    s = LatentVectorSampler(num_samples=10, num_images=2, seed=0)
    s.update(z)
    v = s.result()
    assert v.shape == (10, 3)
    cols = {tuple(z[b, :, i, j].tolist()) for b in range(2) for i in range(4) for j in range(4)}
    assert all(tuple(row.tolist()) in cols for row in v)
    assert len({tuple(r) for r in v.tolist()}) == 10  # distinct positions


def test_linear_probe_separable_vs_random_labels():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 8))
    x[:, 0] += y * 6.0  # classes separated along one axis
    good = linear_probe(x, y, seed=0)
    assert good["top1"] == 1.0 and good["num_classes"] == 3 and good["num_test"] == 24
    bad = linear_probe(rng.normal(size=(120, 8)), y, seed=0)
    assert bad["top1"] < 0.75
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.zeros(120, dtype=int))

"""sFID (``transvae.metrics.sfid``): ADM's spatial feature, and SciPy's Frechet distance of it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from transvae.metrics import MetricCollection, build_metrics
from transvae.metrics.features import SPATIAL_CHANNELS, build_feature_extractor


def _scipy_fd(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def test_sfid_is_scipy_s_frechet_distance_of_the_spatial_features(feature_table):
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(200, 12, generator=g, dtype=torch.float64)
    feats[100:] = feats[100:] * 1.3 + 0.2  # the "generated" half differs
    net = feature_table.network(spatial=feats, **{"2048": feats[:, :3]})
    mc = MetricCollection(build_metrics(["sfid", "fid"]), {"inception": net})
    for lo in range(0, 100, 30):  # uneven batches
        mc.update_images(feature_table.images(lo, min(lo + 30, 100)), real=True)
    mc.update_images(feature_table.images(100, 200), real=False)
    r = mc.compute()
    assert r["sfid"] == pytest.approx(_scipy_fd(feats[:100].numpy(), feats[100:].numpy()), rel=1e-8)
    assert r["fid"] == pytest.approx(_scipy_fd(feats[:100, :3].numpy(), feats[100:, :3].numpy()), rel=1e-8)
    assert r["sfid"] > 1.0


def test_spatial_feature_is_adm_s_mixed_6_conv(random_inception):
    """ADM's sFID reads TF's mixed_6/conv: torch-fidelity's Mixed_6d.branch1x1 (after its ReLU),
    17x17, first 7 channels, flattened channels-last (2023 numbers); one pass gives all outputs."""
    net = build_feature_extractor("inception", random_inception)
    x = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    seen = []
    hook = net.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    out = net(x, ["2048", "logits_unbiased", "spatial"])
    hook.remove()
    assert len(seen) == 1 and seen[0].shape == (2, 192, 17, 17) and (seen[0] >= 0).all()
    ref = seen[0][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(2, -1)
    assert out["spatial"].shape == (2, 17 * 17 * 7) == (2, 2023) and torch.equal(out["spatial"], ref)
    assert out["2048"].shape == (2, 2048) and out["logits_unbiased"].shape == (2, 1008)
    # logits without the bias, from the pool features (torch-fidelity's and ADM's "unbiased" logits)
    assert torch.allclose(out["logits_unbiased"], out["2048"] @ net.net.fc.weight.T, atol=1e-4, rtol=1e-4)

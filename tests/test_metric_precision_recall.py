"""Precision and recall (``transvae.metrics.precision_recall``) against a brute-force NumPy k-NN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transvae.metrics import MetricCollection, MetricInputError, NotEnoughDataError
from transvae.metrics.precision_recall import Precision, Recall


def _numpy_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkaanniemi et al. by brute force: squared distances, k-th neighbour radius (self excluded)."""

    def d2(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    r_real = np.sort(d2(real, real), axis=1)[:, k]
    r_fake = np.sort(d2(fake, fake), axis=1)[:, k]
    precision = (d2(fake, real) <= r_real[None, :]).any(1).mean()
    recall = (d2(real, fake) <= r_fake[None, :]).any(1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("block", [1024, 7])
def test_precision_recall_match_brute_force_knn(monkeypatch, block, feature_table):
    import transvae.metrics.precision_recall as pr

    monkeypatch.setattr(pr, "BLOCK", block)  # row blocks of the distance matrix must not matter
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 6))
    fake = rng.normal(size=(45, 6)) * 0.6 + np.array([0.8, 0, 0, 0, 0, 0])  # narrower and shifted
    table = torch.from_numpy(np.concatenate([real, fake]))
    mc = MetricCollection([Precision(), Recall()], {"inception": feature_table.network(**{"2048": table})})
    mc.update_images(feature_table.images(0, 25), real=True)
    mc.update_images(feature_table.images(25, 60), real=True)
    mc.update_images(feature_table.images(60, 105), real=False)
    got = mc.compute()
    want = _numpy_precision_recall(real, fake)
    assert (got["precision"], got["recall"]) == pytest.approx(want, abs=1e-12)
    assert got["precision"] > got["recall"]  # a narrow generator: realistic samples, little variety
    assert 0.2 < got["recall"] < 0.95


def test_precision_recall_extremes_and_too_few_images(feature_table):
    def pr(real, fake):
        table = torch.cat([real, fake])
        mc = MetricCollection(
            [Precision(), Recall()], {"inception": feature_table.network(**{"2048": table})}
        )
        mc.update_images(feature_table.images(0, len(real)), real=True)
        mc.update_images(feature_table.images(len(real), len(table)), real=False)
        return mc.compute()

    x = torch.randn(20, 4, dtype=torch.float64)
    assert pr(x, x.clone()) == {"precision": 1.0, "recall": 1.0}
    assert pr(x, x + 100.0) == {"precision": 0.0, "recall": 0.0}
    with pytest.raises(NotEnoughDataError, match="more than k = 3"):
        pr(x, x[:3])
    with pytest.raises(MetricInputError, match="precision needs more than k = 3 samples, got 3"):
        Precision().check({"samples": 3, "reference": 50})

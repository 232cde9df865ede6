"""``transvae.metrics``: the registry, the metric protocol, the per-image metrics and the Inception
Score against a reference written here (NumPy), on small arrays, offline. Each further metric
has its own test file (``test_metric_<name>.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transvae.metrics import (
    PSNR,
    SSIM,
    MetricCollection,
    MetricInputError,
    SetMetric,
    build_metrics,
    check_inputs,
    list_metrics,
    metric_class,
    register_metric,
    required_inputs,
)


# -- the registry ---------------------------------------------------------------------------------
def test_registry_names_needs_and_errors():
    assert list_metrics({"pairs"}) == ["ciede2000", "lpips", "psnr", "rfid", "ssim"]
    assert {"fid", "is"} <= set(list_metrics({"samples", "reference"})) and "is" in list_metrics({"samples"})
    assert "latent-fd" in list_metrics() and "latent-fd" not in list_metrics(
        {"samples", "reference", "latents"}
    )
    with pytest.raises(ValueError, match="unknown metric 'fdi'; choose from ciede2000, fid, is, latent-fd"):
        build_metrics(["psnr", "fdi"])
    # each constructor takes the settings it declares and ignores the rest
    is_, lfd = build_metrics(["is", "latent-fd", "is"], is_splits=3, latent_fd_patch=1, lpips_net="alex")
    assert (is_.splits, lfd.patch) == (3, 1) and lfd.key == "latent_fd"
    assert required_inputs(["fid", "is", "latent-fd"]) == {
        "samples",
        "reference",
        "latents",
        "reference_latents",
    }
    with pytest.raises(MetricInputError) as e:  # every missing input of every metric, in one line
        check_inputs(["fid", "is", "latent-fd"], {"samples"}, {"reference": "reference images (--reference)"})
    assert str(e.value) == (
        "fid needs reference images (--reference); latent-fd needs latents and reference_latents"
    )
    check_inputs(["is"], {"samples"})
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("psnr")(type("Other", (PSNR,), {}))


def test_cli_choices_come_from_the_registry(capsys):
    from transvae.cli import main

    for cmd, inputs in (
        ("gen-eval", {"samples", "reference", "latents", "reference_latents"}),
        ("evaluate", {"pairs"}),
    ):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in list_metrics(inputs)), cmd


def test_a_new_metric_is_one_class(tmp_path):
    """A metric registered anywhere is built by name, checked, fed and reported by gen-eval with
    no other change (a module in transvae/metrics/ is registered the same way, on first use)."""
    from transvae.evaluation.generation import EvalOptions, evaluate_generation
    from transvae.metrics import base

    @register_metric("test-brightness")
    class MeanBrightness(SetMetric):
        needs = frozenset({"samples"})
        label = "mean brightness ↑"
        fmt = "{:.1f}"

        def __init__(self):
            super().__init__()
            self.add_state("total", torch.zeros((), dtype=torch.float64))
            self.add_state("count", torch.zeros((), dtype=torch.float64))

        def update(self, features, real):
            x = features["images"].double()  # no network: the uint8 images themselves
            self.total += x.mean(dim=(1, 2, 3)).sum()
            self.count += len(x)

        def compute(self):
            return {self.key: float(self.total / self.count)}

    try:
        from PIL import Image

        d = tmp_path / "imgs"
        d.mkdir()
        for i, v in enumerate((10, 20, 60)):
            Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(d / f"{i}.png")
        payload = evaluate_generation(d, None, tmp_path / "out", EvalOptions(metrics=("test-brightness",)))
        assert payload["results"]["test_brightness"] == pytest.approx(30.0)
        assert payload["results"]["test_brightness_images"] == 3
        assert "mean brightness ↑" in (tmp_path / "out" / "report.html").read_text()
    finally:
        del base._REGISTRY["test-brightness"]


# -- per-image metrics ------------------------------------------------------------------------------
def test_pair_metrics_are_means_over_images_not_batches():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (7, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-30, 31, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    b[2] = a[2]  # one identical pair: PSNR +inf
    psnr, ssim = PSNR(), SSIM()
    values = torch.cat([psnr.update(a[i : i + 3], b[i : i + 3]) for i in range(0, 7, 3)]).numpy()
    for i in range(0, 7, 4):
        ssim.update(a[i : i + 4], b[i : i + 4])
    r = psnr.compute()
    finite = values[np.isfinite(values)]
    assert math.isinf(r["psnr"]) and r["psnr_num_identical"] == 1
    assert r["psnr_finite_mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert r["psnr_std"] == pytest.approx(finite.std(), rel=1e-9)
    s = ssim.compute()
    from transvae.metrics import ssim_per_image

    ref = ssim_per_image(a, b).numpy()
    assert s["ssim"] == pytest.approx(ref.mean(), rel=1e-12) and s["ssim_std"] == pytest.approx(
        ref.std(), rel=1e-9
    )
    tiny = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert math.isnan(SSIM().update(tiny, tiny)[0])  # no valid 11x11 window: NaN, not an error
    psnr.reset()
    assert math.isnan(psnr.compute()["psnr"]) and psnr.compute()["psnr_std"] is None


# -- Inception Score --------------------------------------------------------------------------------
def test_inception_score_matches_the_formula(feature_table):
    """IS = exp(E_x KL(p(y|x) || p(y))) per split of the (seeded) shuffled set; mean and std over splits."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(23, 10, generator=g, dtype=torch.float64) * 3
    mc = MetricCollection(
        build_metrics(["is"], is_splits=4, seed=7),
        {"inception": feature_table.network(logits_unbiased=logits)},
    )
    mc.update_images(feature_table.images(0, 10), real=False)
    mc.update_images(feature_table.images(10, 23), real=False)
    got = mc.compute()
    torch.manual_seed(7)
    perm = torch.randperm(23).numpy()
    p = torch.softmax(logits, 1).numpy()[perm]
    scores = []
    for part in np.array_split(p, [6, 12, 18]):  # torch.chunk(4) of 23 rows: 6, 6, 6, 5
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    assert got["is"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert got["is_std"] == pytest.approx(np.std(scores, ddof=1), rel=1e-4)
    assert 1.0 < got["is"] < 10.0
    with pytest.raises(MetricInputError, match="is needs at least 4 samples"):
        metric_class("is")(is_splits=4).check({"samples": 3})

"""The diffusability probe (issue 24): a tiny generator trained on the validation latents."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from transvae.training.tasks.probe import diffusability
from transvae.utils.distributed import DistInfo


class _Latents(nn.Module):
    """A stand-in encoder: moments whose mean is ``pattern`` (+ noise per image), zero logvar."""

    def __init__(self, noise: float):
        super().__init__()
        self.noise = noise
        self.pattern = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(1))

    def forward(self, x):
        g = torch.Generator().manual_seed(int(x.sum().abs() * 1000) % 10_000)
        mean = self.pattern.expand(len(x), -1, -1, -1) + self.noise * torch.randn(
            len(x), 8, 4, 4, generator=g
        )
        return torch.cat([mean, torch.zeros_like(mean)], 1)


def _images(n=16):
    g = torch.Generator().manual_seed(0)
    item = {"label": 0, "index": 0, "epoch": 0, "batch": 0, "skipped": []}  # a data set's item
    return [{**item, "image": torch.rand(3, 16, 16, generator=g) * 2 - 1} for _ in range(n)]


def test_easier_latents_give_a_lower_held_out_loss_and_the_probe_is_deterministic():
    data = _images()
    run = lambda enc: diffusability(enc, data, 60, 8, DistInfo(), contextlib.nullcontext, lambda: None)  # noqa: E731
    structured, noise = _Latents(noise=0.05), _Latents(noise=1e3)  # one pattern vs white noise
    a, b = run(structured)["val/diffusability"], run(noise)["val/diffusability"]
    assert a < 0.5 * b, (a, b)
    assert run(structured)["val/diffusability"] == a  # fixed seed: the same value every validation


def test_no_probe_without_steps_or_images():
    enc = _Latents(0.1)
    assert diffusability(enc, _images(), 0, 8, DistInfo(), contextlib.nullcontext, lambda: None) == {}
    assert diffusability(enc, _images(3), 10, 8, DistInfo(), contextlib.nullcontext, lambda: None) == {}

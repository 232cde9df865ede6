"""Inference API: padding, tiling, precision, compile (nano model, CPU)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

import transvae
from transvae.data.io import pil_to_tensor
from transvae.inference import InferenceRunner, crop, pad_to_multiple, tile_starts, tiled_apply


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).mean()
    return float(10 * torch.log10(4.0 / mse))


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return transvae.create_model("transvae-nano-f16d32").eval()


def photo(w: int, h: int) -> torch.Tensor:
    return pil_to_tensor(Image.fromarray(skdata.astronaut()).resize((w, h), Image.BICUBIC))[
        None
    ]  # (1, 3, h, w)


# --- padding ------------------------------------------------------------------------------------------
def test_pad_to_multiple_reflects_and_crops_back():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    xp, pad = pad_to_multiple(x, 4)
    assert xp.shape == (2, 3, 8, 8) and pad == (0, 1, 0, 3)
    assert torch.equal(xp[..., :5, :7], x)
    # reflection (without repeating the edge): column 7 mirrors column 5, row 5 mirrors row 3
    assert torch.equal(xp[..., :5, 7], x[..., :, 5])
    assert torch.equal(xp[..., 5, :7], x[..., 3, :])
    assert torch.equal(crop(xp, pad), x)
    # already a multiple: untouched
    same, pad0 = pad_to_multiple(x[..., :4, :4], 4)
    assert pad0 == (0, 0, 0, 0) and same.shape[-2:] == (4, 4)


def test_pad_smaller_than_pad_falls_back_to_replicate():
    x = torch.rand(3, 3, 5)  # (C, H, W): 3x5 image padded to 16x16 cannot reflect
    xp, pad = pad_to_multiple(x, 16)
    assert xp.shape == (3, 16, 16) and pad == (0, 11, 0, 13)
    assert torch.equal(xp[:, :3, 5:], x[:, :, -1:].expand(3, 3, 11))  # replicated last column
    assert torch.equal(xp[:, 3:, :5], x[:, -1:, :].expand(3, 13, 5))
    assert torch.equal(crop(xp, pad), x)
    with pytest.raises(ValueError, match="pad mode"):
        pad_to_multiple(x, 16, mode="wrap")


def test_crop_latent_grid_keeps_partial_cells():
    z = torch.rand(1, 4, 3, 4)  # latents of a 48x64 padded image, f=16, original 40x50
    out = crop(z, (0, 14, 0, 8), scale=16)
    assert out.shape == (1, 4, 3, 4)  # partially padded cells are kept
    assert crop(z, (0, 16, 0, 32), scale=16).shape == (1, 4, 1, 3)


# --- tiling mechanics -----------------------------------------------------------------------------------
def test_tile_starts_cover_with_full_tiles():
    for length, tile, ov in [(100, 32, 8), (64, 64, 16), (40, 64, 16), (97, 30, 0)]:
        starts = tile_starts(length, tile, ov)
        t = min(tile, length)
        assert starts[0] == 0 and starts[-1] + t == length
        assert all(
            b - a <= t - ov for a, b in zip(starts[:-1], starts[1:], strict=True)
        )  # at least `ov` overlap
    with pytest.raises(ValueError):
        tile_starts(100, 32, 32)


def test_tiled_apply_is_exact_for_tile_local_networks():
    torch.manual_seed(0)
    f = 8
    enc = nn.Conv2d(3, 6, f, stride=f)  # each latent cell sees only its own f x f block
    dec = nn.ConvTranspose2d(6, 3, f, stride=f)
    x = torch.randn(2, 3, 72, 104)
    with torch.no_grad():
        z_tiled = tiled_apply(enc, x, tile=32, overlap=16, scale_num=1, scale_den=f, tile_batch=3)
        assert torch.allclose(z_tiled, enc(x), atol=1e-5)
        x_tiled = tiled_apply(dec, z_tiled, tile=4, overlap=2, scale_num=f, scale_den=1)
        assert torch.allclose(x_tiled, dec(z_tiled), atol=1e-5)


def test_tiled_apply_blending_beats_hard_seams():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])  # receptive field 7x7
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = net(x)
        blended = tiled_apply(net, x, tile=32, overlap=16)
        hard = tiled_apply(net, x, tile=32, overlap=0)
    err_blend, err_hard = (blended - ref).abs().mean(), (hard - ref).abs().mean()
    assert err_blend < 0.2 * err_hard  # blending across the overlap hides the zero-padded tile borders
    # away from seams the tiled result is exact: rows/cols 0..12 only see the first tile's interior
    assert torch.allclose(blended[..., :12, :12], ref[..., :12, :12], atol=1e-5)


# --- the runner on a real model ---------------------------------------------------------------------
def test_runner_any_size_matches_manual_padding(nano):
    x = photo(50, 37)
    runner = InferenceRunner(nano)
    rec = runner.reconstruct(x)
    assert rec.shape == x.shape
    xp, pad = pad_to_multiple(x, 16)
    with torch.no_grad():
        manual = crop(nano.decode(nano.encode(xp).mode()), pad)
    assert torch.allclose(rec, manual, atol=1e-5)
    enc = runner.encode(x)
    assert enc.latent.shape == (1, 32, 3, 4) and enc.pad == (0, 14, 0, 11) and enc.size == (37, 50)


def test_tiled_decode_agrees_with_untiled(nano):
    # A random nano model is far less local than a trained one, so the tolerance is loose;
    # it still fails for misplaced tiles or unblended seams (the overlap-0 run below).
    x = photo(160, 128)
    runner = InferenceRunner(nano, tile_size=96, tile_overlap=48, tile_batch=8)
    z = runner.encode(x).latent  # (1, 32, 8, 10)
    full = runner.decode(z)
    tiled = runner.decode(z, tiled=True)
    hard = InferenceRunner(nano, tile_size=96, tile_overlap=0, tile_batch=8).decode(z, tiled=True)
    p_tiled, p_hard = psnr(tiled, full), psnr(hard, full)
    assert p_tiled > 25.0, p_tiled
    assert p_tiled > p_hard + 2.5, (p_tiled, p_hard)
    # max_pixels chooses tiling automatically
    auto = InferenceRunner(nano, tile_size=96, tile_overlap=48, tile_batch=8, max_pixels=160 * 128 - 1)
    assert torch.allclose(auto.decode(z), tiled, atol=1e-5)


def test_fp16_overflow_falls_back_instead_of_inf(nano):
    hot = copy.deepcopy(nano)
    with torch.no_grad():  # blow activations past fp16's 65504, as SD-VAE does in fp16
        for p in hot.parameters():
            if p.ndim > 1:
                p.mul_(16.0)
    x = photo(32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CPU rms_norm fp16/fp32 mismatch notice
        naive = hot.decoder(hot.encoder(x)[:, :32])
    assert not torch.isfinite(naive).all()  # the premise: plain fp16 overflows
    ref = InferenceRunner(hot, dtype="fp32").reconstruct(x)
    # force fp16 whatever this CPU's native arithmetic: the overflow path is what is tested
    with pytest.warns(RuntimeWarning, match="fp16 overflow"):
        out = InferenceRunner(hot, dtype="fp16", force_dtype=True).reconstruct(x)
    assert torch.isfinite(out).all()
    # the overflowing step reran in fp32; the other one may have stayed in (finite) fp16
    assert (out - ref).abs().max() < 0.02 * ref.abs().max()


def test_bf16_close_to_fp32(nano):
    x = photo(48, 32)
    ref = InferenceRunner(nano).reconstruct(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # forced bf16: no fallback on any CPU
        out = InferenceRunner(nano, dtype="bf16", force_dtype=True).reconstruct(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.05 * ref.abs().mean()
    assert not torch.equal(out, ref)  # bf16 really ran


def test_runner_rejects_bad_dtype(nano):
    with pytest.raises(ValueError, match="dtype"):
        InferenceRunner(nano, dtype="int8")


@pytest.mark.slow
def test_compiled_matches_eager(nano):
    from transvae.inference import benchmark

    x = photo(64, 48)
    eager = InferenceRunner(nano).reconstruct(x)
    compiled = InferenceRunner(nano, compile=True).reconstruct(x)
    assert torch.allclose(compiled, eager, atol=1e-4)
    stats = benchmark(nano, resolution=32, compile=True, warmup=1, iters=1)
    assert stats["images_per_s"] > 0 and stats["first_call_s"] > 0


def test_f_pad_reflect_matches_torch_for_regular_case():
    x = torch.rand(1, 3, 20, 30)
    xp, pad = pad_to_multiple(x, 16)
    assert torch.equal(xp, F.pad(x, pad, mode="reflect"))

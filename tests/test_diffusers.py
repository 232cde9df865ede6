"""``AutoencoderTransVAE`` against diffusers' own components (nano model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

import transvae
from transvae.inference import InferenceRunner

diffusers = pytest.importorskip("diffusers")
from diffusers.image_processor import VaeImageProcessor  # noqa: E402
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution  # noqa: E402
from diffusers.models.modeling_outputs import AutoencoderKLOutput  # noqa: E402

from transvae.integrations.diffusers import AutoencoderTransVAE  # noqa: E402


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    return transvae.create_model("transvae-nano-f16d32").eval()


@pytest.fixture(scope="module")
def vae(plain):
    stats = torch.linspace(-0.5, 0.5, 32)
    return AutoencoderTransVAE.from_transvae(
        plain, scaling_factor=0.7, shift_factor=0.1, latents_mean=stats, latents_std=stats.abs() + 1
    )


def test_outputs_config_and_identical_latents(plain, vae):
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        enc = vae.encode(x)
        assert isinstance(enc, AutoencoderKLOutput) and isinstance(
            enc.latent_dist, DiagonalGaussianDistribution
        )
        post = plain.encode(x)
        assert torch.equal(enc.latent_dist.mean, post.mean) and torch.equal(
            enc.latent_dist.logvar, post.logvar
        )
        dec = vae.decode(post.mean)
        assert isinstance(dec, DecoderOutput) and torch.equal(dec.sample, plain.decode(post.mean))
        assert torch.equal(vae(x).sample, dec.sample)  # forward decodes the posterior mean
    cfg = vae.config
    assert (cfg.scaling_factor, cfg.shift_factor, cfg.latent_channels) == (0.7, 0.1, 32)
    assert len(cfg.latents_mean) == len(cfg.latents_std) == 32
    # pipelines derive the VAE scale factor from block_out_channels
    assert 2 ** (len(cfg.block_out_channels) - 1) == plain.spatial_compression_ratio == 16
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode(torch.zeros(1, 3, 30, 32))


def test_save_pretrained_round_trip_identical_latents(plain, vae, tmp_path):
    vae.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (
        tmp_path / "diffusion_pytorch_model.safetensors"
    ).is_file()
    loaded = AutoencoderTransVAE.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(vae.config)
    x = torch.rand(1, 3, 48, 32) * 2 - 1
    with torch.no_grad():
        z = loaded.encode(x).latent_dist.mode()
        assert torch.equal(z, plain.encode(x).mode())
        assert torch.equal(loaded.decode(z).sample, plain.decode(z))
    back = loaded.to_transvae()
    assert type(back) is type(plain) and back.config == plain.config
    for k, v in plain.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_vae_image_processor_round_trip(plain, vae):
    proc = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    image = Image.fromarray(skdata.astronaut()).resize((70, 50))
    x = proc.preprocess(image)  # (1, 3, 48, 64) in [-1, 1], resized to multiples of 16
    assert x.shape == (1, 3, 48, 64) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        out = vae.decode(z).sample
    pil = proc.postprocess(out, output_type="pil")[0]
    assert pil.size == (64, 48)
    ref = InferenceRunner(plain).reconstruct(x)[0]
    ref_u8 = ((ref.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    # postprocess maps [-1, 1] -> [0, 255] by truncation, ours rounds: at most one level apart
    assert np.abs(np.asarray(pil).astype(int) - ref_u8.astype(int)).max() <= 1


def test_training_style_scale_unscale_loop(plain, vae):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    cfg = vae.config
    with torch.no_grad():
        sample = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(3))
        plain_sample = plain.encode(x).sample(torch.Generator().manual_seed(3))
        assert torch.allclose(sample, plain_sample, atol=1e-6)
        latents = (sample - cfg.shift_factor) * cfg.scaling_factor  # what a diffusion model trains on
        assert not torch.allclose(latents, sample)
        unscaled = latents / cfg.scaling_factor + cfg.shift_factor
        image = vae.decode(unscaled).sample
        assert torch.allclose(image, plain.decode(plain_sample), atol=1e-5)
        # per-channel normalisation with latents_mean / latents_std, as SD3/Flux-style trainers do
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1)
        norm = (sample - mean) / std
        assert torch.allclose(norm * std + mean, sample, atol=1e-6)


def test_tiling_and_slicing(plain, vae):
    z = torch.randn(2, 32, 4, 6)
    with torch.no_grad():
        full = vae.decode(z).sample
        vae.enable_slicing()
        assert torch.allclose(vae.decode(z).sample, full, atol=1e-5)
        vae.disable_slicing()
        vae.tile_sample_min_size, vae.tile_overlap_factor = 32, 0.5
        vae.enable_tiling()
        try:
            tiled = vae.decode(z).sample
        finally:
            vae.disable_tiling()
        ref = InferenceRunner(plain, tile_size=32, tile_overlap=16).decode(z, tiled=True)
    assert tiled.shape == full.shape == (2, 3, 64, 96)
    assert torch.allclose(tiled, ref, atol=1e-5)  # the same blending as the CLI
    assert not torch.allclose(tiled, full, atol=1e-3)  # it really tiled

"""Tests of transvae.losses: numbers against direct computations, offline behaviour, gradients.

Pretrained networks are replaced by randomly initialised ones of the same architecture
(``pretrained=False``; a small DINOv2, ``vit_small_patch14_dinov2``), and every test runs with
sockets blocked, so any download attempt is recorded and fails.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from transvae.losses import (
    DinoFeatures,
    LossConfig,
    LPIPSLoss,
    MissingWeightsError,
    NLayerDiscriminator,
    VAELoss,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    to_floats,
    vf_terms,
)
from transvae.models.base import AutoencoderBase, ConfigError, ModelConfig

SMALL_DINO = "vit_small_patch14_dinov2"


# -- a tiny autoencoder with the shared API (fast, any compression ratio) ----------------------
@dataclasses.dataclass
class TinyConfig(ModelConfig):
    architecture = "tiny-test"
    latent_channels: int = 8
    f: int = 16


class _Enc(nn.Module):
    def __init__(self, f: int, c: int):
        super().__init__()
        self.f = f
        self.conv_in = nn.Conv2d(3 * f * f, 32, 1)
        self.conv_out = nn.Conv2d(32, 2 * c, 1)

    def forward(self, x):
        return self.conv_out(F.silu(self.conv_in(F.pixel_unshuffle(x, self.f))))


class _Dec(nn.Module):
    def __init__(self, f: int, c: int):
        super().__init__()
        self.f = f
        self.conv_in = nn.Conv2d(c, 32, 1)
        self.conv_out = nn.Conv2d(32, 3 * f * f, 1)

    def forward(self, z):
        return F.pixel_shuffle(self.conv_out(F.silu(self.conv_in(z))), self.f)


class TinyAE(AutoencoderBase):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.encoder = _Enc(config.f, config.latent_channels)
        self.decoder = _Dec(config.f, config.latent_channels)

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.f


def tiny(f: int = 16) -> TinyAE:
    return TinyAE(TinyConfig(f=f))


def images(b: int = 2, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


# -- no network, ever ------------------------------------------------------------------------
def _install_network_guard(mp: pytest.MonkeyPatch, attempts: list) -> None:
    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access blocked in tests")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    mp.setattr(socket, "create_connection", refuse)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


@pytest.fixture(autouse=True)
def network_attempts(tmp_path, monkeypatch):
    """Empty torch hub / HF caches and blocked sockets; fails a test that tried the network."""
    attempts: list = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _install_network_guard(monkeypatch, attempts)
    yield attempts
    assert attempts == [], f"unexpected network access: {attempts}"


@pytest.fixture(scope="module")
def full_loss():
    """Every term enabled, random stand-ins, GAN from step 10; built once (the slow part)."""
    attempts: list = []
    with pytest.MonkeyPatch.context() as mp:
        _install_network_guard(mp, attempts)
        model = tiny()
        cfg = LossConfig(pretrained=False, dino_model=SMALL_DINO, disc_start=10)
        loss = VAELoss(cfg, model)
    assert attempts == []
    return loss


# -- config ------------------------------------------------------------------------------------
def test_config_from_dict_validates():
    cfg = LossConfig.from_dict({"lpips_weight": 0, "kl_weight": 1, "dino_weights": "/w.safetensors"})
    assert cfg.lpips_weight == 0.0 and cfg.kl_weight == 1.0 and cfg.dino_weights == "/w.safetensors"
    assert cfg.gan_weight == 0.1 and cfg.vf_weight == 0.1 and cfg.adaptive_max == 1e4
    with pytest.raises(ConfigError, match="bogus"):
        LossConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="kl_weight"):
        LossConfig.from_dict({"kl_weight": "small"})
    with pytest.raises(ConfigError, match="gan_weight"):
        LossConfig(gan_weight=-0.1)
    with pytest.raises(ConfigError, match="lpips_weights"):
        LossConfig.from_dict({"lpips_weights": 3})
    assert LossConfig.from_dict({"kl_weight": "1e-8"}).kl_weight == 1e-8  # YAML 1.1 reads 1e-8 as a string
    with pytest.raises(ConfigError, match="disc_start' must be an integer"):
        LossConfig.from_dict({"disc_start": "5"})  # a quoted number is a string, not an int


# -- L1 + KL -------------------------------------------------------------------------------------
def test_l1_and_kl_equal_direct_computation():
    model = tiny()
    loss = VAELoss(
        LossConfig(l1_weight=2.0, kl_weight=0.01, lpips_weight=0, vf_weight=0, gan_weight=0), model
    )
    x = images()
    out = model(x)
    total, logs = loss(x, out, model, step=0, stage=1)
    logs = to_floats(logs)
    l1 = (out.sample - x).abs().mean()
    kl_sum = out.posterior.kl().sum()  # LDM: summed over latent elements ...
    n = 3 * 32 * 48
    assert logs["l1"] == pytest.approx(l1.item(), rel=1e-6)
    assert logs["kl_per_image"] == pytest.approx(kl_sum.item() / 2, rel=1e-5)  # ... / batch
    assert logs["kl"] == pytest.approx(kl_sum.item() / (2 * n), rel=1e-5)  # ... / image elements
    assert total.item() == pytest.approx(2.0 * l1.item() + 0.01 * kl_sum.item() / (2 * n), rel=1e-5)
    assert logs["total"] == pytest.approx(total.item())
    assert set(logs) == {"l1", "w_l1", "nll", "kl", "kl_per_image", "w_kl", "total"}


def test_kl_weight_matches_ldm_objective_up_to_image_size():
    """Our total times 3*H*W is LDM's objective: sum|x - x_rec| / B + w * sum(kl) / B."""
    model = tiny()
    loss = VAELoss(LossConfig(kl_weight=1e-3, lpips_weight=0, vf_weight=0, gan_weight=0), model)
    x = images(h=64, w=32)
    out = model(x)
    total, _ = loss(x, out, model, 0, 1)
    ldm = (out.sample - x).abs().sum() / 2 + 1e-3 * out.posterior.kl().sum() / 2
    assert (total * 3 * 64 * 32).item() == pytest.approx(ldm.item(), rel=1e-5)


def test_disabled_terms_build_and_load_nothing(network_attempts):
    """Weights 0: no LPIPS, DINOv2 or discriminator, even with pretrained=True and empty caches."""
    model = tiny()
    loss = VAELoss(LossConfig(pretrained=True, lpips_weight=0, vf_weight=0, gan_weight=0), model)
    assert loss.lpips is None and loss.vf is None and loss.discriminator is None
    assert loss.generator_parameters() == [] and loss.discriminator_parameters() == []
    assert loss.state_dict() == {} and list(loss.parameters()) == []
    torch_home = os.environ["TORCH_HOME"]
    assert not os.path.exists(torch_home) or not os.listdir(torch_home)  # nothing cached or fetched
    x = images()
    total, logs = loss(x, model(x), model, step=100, stage=2)
    logs = to_floats(logs)
    assert torch.isfinite(total) and "g_loss" not in logs and "lpips" not in logs and "vf" not in logs
    assert not loss.gan_active(100, 2)
    with pytest.raises(RuntimeError, match="gan_weight"):
        loss.discriminator_loss(x, x, 100, 2)
    with pytest.raises(ValueError, match="stage"):
        loss(x, model(x), model, 0, 3)


# -- GAN -------------------------------------------------------------------------------------------
def test_hinge_and_generator_losses_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0, 1.0])
    fake = torch.tensor([-2.0, 0.5, 1.0, -1.0])
    # relu(1 - real) = [0, .5, 2, 0] -> .625 ; relu(1 + fake) = [0, 1.5, 2, 0] -> .875
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.625 + 0.875))
    assert generator_loss(fake).item() == pytest.approx(0.375)
    assert hinge_d_loss(torch.full((3,), 5.0), torch.full((3,), -5.0)).item() == 0.0


def test_discriminator_is_ldm_patchgan():
    d = NLayerDiscriminator(3, 64, 3)
    # LDM NLayerDiscriminator(n_layers=3, ndf=64, BatchNorm): conv 3->64 (+bias), 64->128, 128->256,
    # 256->512 (no bias, BatchNorm), 512->1 (+bias), all 4x4.
    expected = (3 * 64 * 16 + 64) + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + (512 * 16 + 1)
    expected += 2 * (128 + 256 + 512)
    assert sum(p.numel() for p in d.parameters()) == expected == 2_765_633
    w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    assert w.mean().abs() < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
    assert d(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)  # 32, 16, 8, then two stride-1 4x4


def test_adaptive_weight_equals_autograd_and_is_clamped():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, 3))
    v = torch.randn(4, 3)
    nll = 3.0 * (p**2).sum()
    g = (p * v).sum()
    expected = (6.0 * p.detach()).norm() / (v.norm() + 1e-4)
    w = adaptive_weight(nll, g, p, max_value=1e4)
    assert w.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not w.requires_grad and p.grad is None  # detached; nothing accumulated into .grad
    assert adaptive_weight(nll, g, p, max_value=0.5).item() == 0.5
    assert adaptive_weight(nll, 0.0 * g, p, max_value=1e4).item() == 1e4  # zero g-gradient: clamped
    nll.backward()  # the graph was retained for the caller
    assert torch.allclose(p.grad, 6.0 * p.detach())
    with torch.no_grad():  # evaluation: no graph, weight 0 (LDM's eval behaviour)
        assert adaptive_weight(3.0 * (p**2).sum(), (p * v).sum(), p, 1e4).item() == 0.0
    with pytest.raises(ValueError, match="frozen"):
        adaptive_weight(nll, g, torch.randn(2), 1e4)


def test_adaptive_clamp_is_in_ldm_units():
    """The clamp applies to LDM's (sum-convention) weight: ours is clamped at adaptive_max / (3*H*W)."""
    model = tiny()
    loss = VAELoss(LossConfig(lpips_weight=0, vf_weight=0, adaptive_max=1e-3), model)
    x = images(2, 32, 32)
    _, logs = loss(x, model(x), model, step=0, stage=2)
    logs = to_floats(logs)
    assert logs["w_gan_adaptive"] == pytest.approx(1e-3 / (3 * 32 * 32), rel=1e-5)
    assert logs["w_gan"] == pytest.approx(0.1 * 1e-3 / (3 * 32 * 32), rel=1e-5)


# -- VF --------------------------------------------------------------------------------------------
def test_vf_terms_zero_when_aligned_or_within_margin_positive_otherwise():
    f = torch.randn(2, 16, 3, 5)
    assert vf_terms(f, f, 0.5, 0.25) == (0.0, 0.0)
    cos_t, dist_t = vf_terms(3.0 * f, f, 0.5, 0.25)  # scale does not matter
    assert cos_t.item() == pytest.approx(0.0, abs=1e-6) and dist_t.item() == pytest.approx(0.0, abs=1e-6)
    e1, e2 = torch.eye(2)
    grid = lambda *vecs: torch.stack(vecs, dim=-1).view(1, 2, 1, len(vecs))  # noqa: E731  (1, D=2, 1, N)
    # cos 0.6 >= 1 - 0.5: inside the margin; cos 0.2: 0.5 - 0.2 = 0.3
    z_in, z_out = 0.6 * e1 + 0.8 * e2, 0.2 * e1 + (1 - 0.04) ** 0.5 * e2
    assert vf_terms(grid(z_in), grid(e1), 0.5, 0.25)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert vf_terms(grid(z_out), grid(e1), 0.5, 0.25)[0].item() == pytest.approx(0.3, abs=1e-6)
    # z = -f: cosine term 1.5 everywhere, similarity structure identical -> distance term 0
    cos_t, dist_t = vf_terms(-f, f, 0.5, 0.25)
    assert cos_t.item() == pytest.approx(1.5, abs=1e-5) and dist_t.item() == pytest.approx(0.0, abs=1e-6)
    # features orthogonal (sim 0), latents identical (sim 1): 2 of 4 entries cost 1 - 0.25
    cos_t, dist_t = vf_terms(grid(e1, e1), grid(e1, e2), 0.5, 0.25)
    assert dist_t.item() == pytest.approx(0.75 / 2, abs=1e-6)
    assert cos_t.item() == pytest.approx(0.5 / 2, abs=1e-6)  # positions: cos 1 -> 0, cos 0 -> 0.5


def test_dino_grid_follows_input_shape(full_loss):
    dino = full_loss.vf.dino
    assert dino.grid(256, 256) == (16, 16)  # VA-VAE: 224 px, patch 14
    assert dino.grid(320, 480) == (20, 30) and dino.grid(64, 96) == (4, 6) and dino.grid(512, 256) == (32, 16)
    feats = dino(images(1, 64, 96))
    assert feats.shape == (1, dino.dim, 4, 6) and feats.dtype == torch.float32


@pytest.mark.parametrize("f", [8, 16])
def test_vf_loss_pools_f8_latents_to_dino_grid(full_loss, f):
    vf = full_loss.vf
    x = images(2, 64, 96)
    z = torch.randn(2, 8, 64 // f, 96 // f)  # f8: 8x12 latent vs 4x6 DINOv2 grid
    total, cos_t, dist_t = vf(x, z)
    z_grid = F.avg_pool2d(z, 2) if f == 8 else z
    ref_cos, ref_dist = vf_terms(vf.proj(z_grid), vf.dino(x), 0.5, 0.25)
    assert cos_t.item() == pytest.approx(ref_cos.item(), rel=1e-5)
    assert dist_t.item() == pytest.approx(ref_dist.item(), rel=1e-5, abs=1e-7)
    assert total.item() == pytest.approx(ref_cos.item() + ref_dist.item(), rel=1e-5)


# -- the composite loss ------------------------------------------------------------------------------
def _check_total(logs, keys_and_weights):
    expected = logs["nll"] + logs["w_kl"] * logs["kl"]
    for term, weight in keys_and_weights:
        expected += logs[weight] * logs[term]
    assert logs["total"] == pytest.approx(expected, rel=1e-5)


def test_stages_terms_and_gan_schedule(full_loss):
    model = tiny()
    x = images()
    out = model(x)
    _, logs1 = full_loss(x, out, model, step=50, stage=1)
    logs1 = to_floats(logs1)
    assert not any(k.startswith(("g_", "w_gan")) for k in logs1)  # stage 1: no GAN term
    assert logs1["nll"] == pytest.approx(logs1["l1"] + logs1["lpips"], rel=1e-5)
    assert logs1["w_vf"] == pytest.approx(0.1 * logs1["w_vf_adaptive"], rel=1e-6) and logs1["w_vf"] > 0
    _check_total(logs1, [("vf", "w_vf")])
    assert logs1["vf"] == pytest.approx(logs1["vf_cos"] + logs1["vf_dist"], rel=1e-5)

    _, before = full_loss(x, out, model, step=9, stage=2)  # disc_start = 10
    assert "g_loss" not in before and not full_loss.gan_active(9, 2)
    _, logs2 = full_loss(x, out, model, step=10, stage=2)
    logs2 = to_floats(logs2)
    assert full_loss.gan_active(10, 2) and not full_loss.gan_active(10, 1)
    assert logs2["w_gan"] == pytest.approx(0.1 * logs2["w_gan_adaptive"], rel=1e-6) and logs2["w_gan"] > 0
    assert logs2["w_vf"] == 0.0 and "vf" in logs2  # frozen encoder: VF is logged only
    _check_total(logs2, [("g_loss", "w_gan")])


@pytest.mark.parametrize("f", [8, 16])
def test_generator_gradients_reach_model_and_projection(full_loss, f):
    model = tiny(f)
    full_loss.zero_grad(set_to_none=True)
    x = images()
    total, _ = full_loss(x, model(x), model, step=0, stage=1)
    total.backward()
    for name, p in list(model.named_parameters()) + [("vf.proj", full_loss.vf.proj.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in full_loss.discriminator_parameters())  # stage 1: no GAN
    full_loss.zero_grad(set_to_none=True)


def test_discriminator_loss_updates_only_the_discriminator(full_loss):
    model = tiny()
    full_loss.zero_grad(set_to_none=True)
    x = images()
    x_rec = model(x).sample
    d_loss, logs = full_loss.discriminator_loss(x, x_rec, step=10, stage=2)
    logs = to_floats(logs)
    d_loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None for p in full_loss.generator_parameters())
    assert all(p.grad is not None for p in full_loss.discriminator_parameters())
    assert sum(p.grad.abs().sum() for p in full_loss.discriminator_parameters()) > 0
    with torch.no_grad():  # same number from the logits (train-mode BatchNorm: batch statistics)
        ref = hinge_d_loss(full_loss.discriminator(x), full_loss.discriminator(x_rec))
    assert logs["d_loss"] == pytest.approx(ref.item(), rel=1e-5) and logs["d_factor"] == 1.0
    full_loss.zero_grad(set_to_none=True)
    d0, logs0 = full_loss.discriminator_loss(x, x_rec, step=9, stage=2)  # before disc_start
    logs0 = to_floats(logs0)
    d0.backward()
    assert d0.item() == 0.0 and logs0["d_factor"] == 0.0
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in full_loss.discriminator_parameters())
    full_loss.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["transvae-nano-f16d32", "transvae-mini-f8d16"])
def test_registered_models_adaptive_weights(name):
    """The shared model API provides the layers the adaptive weights need (GAN stage 2)."""
    from transvae.models import create_model

    model = create_model(name)
    model.encoder.requires_grad_(False)  # stage 2
    loss = VAELoss(LossConfig(lpips_weight=0, vf_weight=0), model)
    x = images(1, 32, 32)
    total, logs = loss(x, model(x), model, step=0, stage=2)
    logs = to_floats(logs)
    total.backward()
    assert logs["w_gan_adaptive"] > 0 and model.last_decoder_layer().grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())


def test_frozen_networks_stay_out_of_state_dict_and_train_mode(full_loss):
    keys = list(full_loss.state_dict())
    assert keys and all(k.startswith(("discriminator.", "vf.proj.")) for k in keys)
    trained = full_loss.generator_parameters() + full_loss.discriminator_parameters()
    assert {id(p) for p in full_loss.parameters()} == {id(p) for p in trained}
    full_loss.train()
    assert not full_loss.lpips.net.training and not full_loss.vf.dino.net.training
    assert full_loss.discriminator.training
    assert all(not p.requires_grad for p in full_loss.lpips.net.parameters())
    full_loss.lpips.to(torch.float64)  # .to() reaches the frozen network
    assert next(full_loss.lpips.net.parameters()).dtype == torch.float64
    full_loss.lpips.to(torch.float32)


def test_bf16_autocast(full_loss):
    model = tiny()
    x = images()
    with torch.no_grad():
        out = model(x)
        _, ref = full_loss(x, out, model, step=10, stage=2)
        ref = to_floats(ref)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, logs = full_loss(x, out, model, step=10, stage=2)
            logs = to_floats(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert logs["lpips"] == pytest.approx(ref["lpips"], rel=1e-5)  # LPIPS runs in fp32
    assert logs["l1"] == pytest.approx(ref["l1"], rel=1e-6)
    assert logs["vf_cos"] == pytest.approx(ref["vf_cos"], rel=0.05, abs=1e-3)


# -- pretrained weights: local files and offline errors ----------------------------------------------
def test_lpips_offline_error_names_the_options(network_attempts):
    with pytest.raises(MissingWeightsError) as e:
        VAELoss(LossConfig(vf_weight=0, gan_weight=0), tiny())
    assert "loss.lpips_weights" in str(e.value) and "--loss.lpips_weight=0" in str(e.value)
    network_attempts.clear()  # torchvision did try its download (blocked): that is the point
    with pytest.raises(MissingWeightsError, match="no such file"):
        LPIPSLoss("vgg", pretrained=True, weights="/nonexistent/vgg16.pth")


def test_lpips_loads_local_torchvision_weights(full_loss, tmp_path):
    import lpips

    trunk = full_loss.lpips.net.net
    sd = {
        f"features.{i}.{n}": p + 1.0
        for s in trunk.children()
        for i, m in s.named_children()
        for n, p in m.named_parameters()
    }
    torch.save(sd, tmp_path / "vgg16.pth")
    loaded = LPIPSLoss("vgg", pretrained=True, weights=str(tmp_path / "vgg16.pth"))
    got = {
        f"features.{i}.{n}": p
        for s in loaded.net.net.children()
        for i, m in s.named_children()
        for n, p in m.named_parameters()
    }
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    # the calibrated linear heads shipped with lpips are loaded (not left random)
    heads = torch.load(
        os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/vgg.pth"), map_location="cpu"
    )
    assert torch.equal(loaded.net.lin0.model[1].weight, heads["lin0.model.1.weight"])
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(MissingWeightsError, match="torchvision state dict"):
        LPIPSLoss("vgg", pretrained=True, weights=str(tmp_path / "bad.pth"))


def test_dino_local_weights_and_offline_error(full_loss, tmp_path, monkeypatch):
    import huggingface_hub.constants

    path = tmp_path / "dino.pth"
    ref = full_loss.vf.dino.net
    torch.save(ref.state_dict(), path)
    loaded = DinoFeatures(SMALL_DINO, pretrained=True, weights=str(path))
    assert torch.equal(loaded.net.pos_embed, ref.pos_embed)
    x = images(1, 64, 64)
    assert torch.allclose(loaded(x), full_loss.vf.dino(x))
    with pytest.raises(MissingWeightsError, match="no such file"):
        DinoFeatures(SMALL_DINO, pretrained=True, weights=str(tmp_path / "missing.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingWeightsError) as e:  # timm's tiny test ViT: the same loading path, fast
        VAELoss(LossConfig(lpips_weight=0, gan_weight=0, dino_model="test_vit"), tiny())
    assert "loss.dino_weights" in str(e.value) and "--loss.vf_weight=0" in str(e.value)


def test_dino_offline_fails_in_seconds_without_the_hub_s_retries(monkeypatch):
    """Issue 21 #20: not cached and the Hub unreachable -> one-line error at once; timm (whose Hub
    download retries for about a minute offline) is never asked to download."""
    import socket

    import huggingface_hub
    import timm

    def unreachable(*a, **k):
        raise OSError("network is unreachable")

    def no_download(*a, **k):
        raise AssertionError("timm.create_model was asked to download")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(MissingWeightsError, match="cannot be reached") as e:
        DinoFeatures(SMALL_DINO, pretrained=True)
    assert "loss.dino_weights" in str(e.value)

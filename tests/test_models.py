"""The TransVAE model family (issue 2): registry, counts, shapes, API, persistence, learning."""

import json

import pytest
import torch
import torch.nn.functional as F

import transvae
from transvae.cli import main as cli_main
from transvae.models import ConfigError, DiagonalGaussianDistribution, model_table
from transvae.models.attention import Attention
from transvae.models.blocks import DownSample, ResBlock, UpSample
from transvae.models.mlp import FeedForward
from transvae.models.transvae import Stage

TABLE3 = {  # name: (encoder, decoder) parameters in millions, Appendix B Table 3
    "transvae-l-f8d16": (353, 366),
    "transvae-t-f16d32": (21, 23),
    "transvae-b-f16d32": (67, 73),
    "transvae-l-f16d32": (266, 279),
    "transvae-h-f16d32": (633, 658),
    "transvae-g-f16d32": (1100, 1200),
}


def test_list_models_has_table3_and_small_variants():
    names = transvae.list_models()
    for n in [*TABLE3, "transvae-mini-f16d32", "transvae-nano-f16d32"]:
        assert n in names
    assert transvae.list_models("transvae-*-f8d16") == ["transvae-l-f8d16", "transvae-mini-f8d16"]


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_table3_parameter_counts(name):
    m = transvae.create_model(name, device="meta")
    enc, dec = m.num_parameters("encoder") / 1e6, m.num_parameters("decoder") / 1e6
    pe, pd = TABLE3[name]
    assert m.num_parameters("total") == m.num_parameters("encoder") + m.num_parameters("decoder")
    assert m.spatial_compression_ratio == (8 if "f8" in name else 16)
    assert m.latent_channels == (16 if "d16" in name else 32)
    if name == "transvae-g-f16d32":
        # Table 3's Giant counts are inconsistent with its own depth/dims (docs/architecture.md):
        # with depth [3,3,4,8,10] we measure 1.23B + 1.26B; the decoder is within 5%.
        assert abs(enc - 1227.2) < 1 and abs(dec / pd - 1) < 0.05
    else:
        assert abs(enc / pe - 1) < 0.05, (enc, pe)
        assert abs(dec / pd - 1) < 0.05, (dec, pd)


def test_transvae_structure_matches_paper():
    m = transvae.create_model("transvae-t-f16d32", device="meta")
    kinds = [s.kind for s in m.encoder.stages]
    assert kinds == ["cnn", "cnn", "transformer", "transformer", "transformer"]
    assert [len(s.blocks) for s in m.encoder.stages] == [3, 3, 3, 3, 3]
    assert all(isinstance(b, ResBlock) for b in m.encoder.stages[0].blocks)
    blk = m.encoder.stages[2].blocks[0]
    assert isinstance(blk.attn, Attention) and isinstance(blk.attn.norm, torch.nn.RMSNorm)
    assert blk.attn.head_dim == 64 and blk.attn.num_heads == 4
    assert isinstance(blk.ffn, FeedForward) and blk.ffn.kind == "fullconv"
    assert blk.ffn.conv.groups == 1 and blk.ffn.fc1.out_features == 256  # MLP ratio 1
    assert m.encoder.conv_out.kernel_size == (3, 3) and m.decoder.conv_in.kernel_size == (3, 3)
    assert all(d.shortcut for d in m.encoder.downs[1:]) and all(u.shortcut for u in m.decoder.ups[:-1])
    # decoder mirrors the encoder and has no MidBlock
    assert [s.kind for s in m.decoder.stages] == kinds[::-1]
    assert not any("mid" in n for n, _ in m.named_modules())


@pytest.mark.parametrize("name", ["transvae-nano-f16d32", "transvae-mini-f8d16"])
@pytest.mark.parametrize("hw", [(64, 64), (64, 96), (96, 32)])
def test_encode_decode_shapes(name, hw):
    m = transvae.create_model(name).eval()
    f, c = m.spatial_compression_ratio, m.latent_channels
    x = torch.rand(2, 3, *hw) * 2 - 1
    post = m.encode(x)
    assert post.mean.shape == post.logvar.shape == (2, c, hw[0] // f, hw[1] // f)
    z = post.sample()
    assert z.shape == post.mean.shape
    y = m.decode(z)
    assert y.shape == x.shape and torch.isfinite(y).all()
    out = m(x)
    assert out.sample.shape == x.shape and out.latent.shape == z.shape


def test_rope_has_no_fixed_grid_and_runs_at_larger_sizes():
    m = transvae.create_model("transvae-nano-f16d32", sample_size=32).eval()
    assert not any("rope" in k or "freq" in k for k in m.state_dict())
    assert len(list(m.buffers())) == 0
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for scale in (1, 2, 4):
            xs = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear")
            y = m(xs, sample_posterior=False).sample
            assert y.shape == xs.shape and torch.isfinite(y).all()


def test_rope_relative_positions():
    # RoPE makes q.k depend only on the offset between tokens: shifting both positions
    # by the same (row, col) leaves the score unchanged, at any grid size.
    from transvae.models.pos_embed import apply_rope_2d, rope_2d

    cos, sin = rope_2d(6, 9, 16)
    q, k = torch.randn(16), torch.randn(16)
    qa = apply_rope_2d(q.expand(1, 1, 54, 16), cos, sin)[0, 0]
    ka = apply_rope_2d(k.expand(1, 1, 54, 16), cos, sin)[0, 0]

    def idx(r, c):
        return r * 9 + c

    s1 = qa[idx(1, 2)] @ ka[idx(3, 7)]
    s2 = qa[idx(2, 1)] @ ka[idx(4, 6)]
    s3 = qa[idx(1, 2)] @ ka[idx(4, 7)]
    assert torch.allclose(s1, s2, atol=1e-5)
    assert not torch.allclose(s1, s3, atol=1e-3)


def test_posterior_mode_sample_and_kl():
    m = transvae.create_model("transvae-nano-f16d32").eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        p1, p2 = m.encode(x), m.encode(x)
        assert torch.equal(p1.mode(), p2.mode())
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(p1.sample(g1), p1.sample(g2))
        assert not torch.equal(p1.sample(), p1.sample())
        kl = p1.kl()
    assert kl.shape == (2,) and (kl > 0).all()
    std_normal = DiagonalGaussianDistribution(torch.zeros(2, 8, 3, 3))
    assert torch.equal(std_normal.kl(), torch.zeros(2))
    params = torch.randn(2, 8, 3, 3)
    d = DiagonalGaussianDistribution(params)
    mean, logvar = params.chunk(2, dim=1)
    ref = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    assert torch.allclose(d.kl(), ref) and (d.kl() > 0).all()


def test_logvar_is_clamped():
    d = DiagonalGaussianDistribution(torch.cat([torch.zeros(1, 2, 1, 1), torch.full((1, 2, 1, 1), 100.0)], 1))
    assert d.logvar.max() == 20.0 and torch.isfinite(d.var).all()


@pytest.mark.parametrize(
    "name, overrides, layer",
    [("transvae-nano-f16d32", {}, "conv_out"), ("cnn-vae-nano-f16d32", {"quant_conv": True}, "quant_conv")],
)
def test_init_logvar_starts_the_posterior_std_there_and_leaves_the_mean(name, overrides, layer):
    torch.manual_seed(0)
    m = transvae.create_model(name, **overrides).eval()
    assert m.logvar_layer() is getattr(m.encoder, layer)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    c, bias = m.latent_channels, getattr(m.encoder, layer).bias
    old = bias[c:].detach().clone()
    with torch.no_grad():
        before = m.encode(x)
        assert before.std.median() > 0.3  # the usual init: the noise is as large as the signal
        assert m.init_logvar_(-10.0) is m
        after = m.encode(x)
    assert torch.equal(bias[c:], torch.full((c,), -10.0))
    assert torch.equal(after.mean, before.mean)  # the mean half is untouched
    # the log-variance moves by the change of its bias, everywhere: std ~ e^-5
    shift = (-10.0 - old).view(1, c, 1, 1)
    assert torch.allclose(after.logvar, before.logvar + shift, atol=1e-5)
    assert 0.001 < after.std.median() < 0.05
    for bad in (-31.0, 21.0):
        with pytest.raises(ConfigError, match="within"):
            m.init_logvar_(bad)


def test_save_load_roundtrip_is_bit_exact(tmp_path):
    m = transvae.create_model("transvae-nano-f16d32", ffn_type="dwconv", mlp_ratio=2.0).eval()
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architecture"] == "transvae" and cfg["model_name"] == "transvae-nano-f16d32"
    assert cfg["ffn_type"] == "dwconv"
    m2 = transvae.from_pretrained(tmp_path / "m")
    assert m2.config == m.config and m2.model_name == m.model_name
    s1, s2 = m.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(x, sample_posterior=False).sample, m2(x, sample_posterior=False).sample)
    # the class method works too, and refuses a model of another class
    assert isinstance(transvae.TransVAE.from_pretrained(tmp_path / "m"), transvae.TransVAE)


def test_from_pretrained_refuses_mismatch(tmp_path):
    m = transvae.create_model("transvae-nano-f16d32")
    m.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dims"] = [16, 16, 32, 32, 128]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="shape"):
        transvae.from_pretrained(tmp_path / "m")
    cfg["bogus_key"] = 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="bogus_key"):
        transvae.from_pretrained(tmp_path / "m")


def test_gradients_reach_every_parameter():
    m = transvae.create_model("transvae-nano-f16d32")
    out = m(torch.rand(2, 3, 32, 32) * 2 - 1)
    (out.sample.square().mean() + out.posterior.kl().mean()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_gradient_checkpointing_matches():
    torch.manual_seed(1)
    m = transvae.create_model("transvae-nano-f16d32")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m(x, sample_posterior=False).sample.sum().backward()
    g1 = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_gradient_checkpointing(True)
    assert all(s.gradient_checkpointing for s in m.encoder.stages)
    m(x, sample_posterior=False).sample.sum().backward()
    for n, p in m.named_parameters():
        assert torch.allclose(p.grad, g1[n], atol=1e-5, rtol=1e-4), n


def test_bf16_autocast():
    m = transvae.create_model("transvae-nano-f16d32").eval()
    x = torch.rand(1, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        ref = m(x, sample_posterior=False).sample
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x, sample_posterior=False).sample
    assert torch.isfinite(y).all()
    assert (y.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


def test_bad_sizes_and_overrides_give_clear_errors():
    m = transvae.create_model("transvae-nano-f16d32")
    with pytest.raises(ValueError, match="pad it to 48x64"):
        m.encode(torch.zeros(1, 3, 40, 50))
    with pytest.raises(ValueError, match="latents of shape"):
        m.decode(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="valid keys"):
        transvae.create_model("transvae-nano-f16d32", not_a_key=1)
    with pytest.raises(ConfigError, match="must be an int"):
        transvae.create_model("transvae-nano-f16d32", head_dim="64")
    with pytest.raises(KeyError, match="unknown model"):
        transvae.create_model("transvae-xxl-f16d32")


def test_tiny_model_overfits_one_image(overfit):
    from skimage import data

    img = torch.from_numpy(data.astronaut()[::8, ::8][:32, :32].copy()).permute(2, 0, 1).float() / 127.5 - 1
    x = img[None]
    losses = overfit(transvae.create_model("transvae-nano-f16d32"), x, steps=300)
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_cli_list_json(capsys):
    assert cli_main(["list", "transvae-*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    for name, (pe, pd) in TABLE3.items():
        r = by_name[name]
        assert r["paper_encoder_params"] == pe * 1e6 and r["paper_decoder_params"] == pd * 1e6
        assert r["encoder_params"] + r["decoder_params"] == r["total_params"]
    assert model_table("transvae-nano-*")[0]["total_params"] < 1e6


def test_stage_is_shape_agnostic():
    cfg = transvae.create_model("transvae-nano-f16d32", device="meta").config
    st = Stage(cfg, 32, 1, "transformer", (4, 4))
    for hw in [(3, 5), (7, 2)]:
        assert st(torch.randn(2, 32, *hw)).shape == (2, 32, *hw)


# --- inference fast paths give the same numbers as the DC-AE reference formulas -------------


@pytest.mark.parametrize(
    "in_ch,out_ch,kind",
    [
        (32, 32, "seqconv"),
        (64, 32, "seqconv"),
        (16, 32, "seqconv"),
        (64, 32, "pixelshuffle"),
        (32, 32, "pixelshuffle"),
    ],
)
def test_upsample_shortcut_matches_repeat_interleave(in_ch, out_ch, kind):
    up = UpSample(in_ch, out_ch, kind)
    x = torch.randn(2, in_ch, 5, 7)
    reference = F.pixel_shuffle(x.repeat_interleave(up.repeats, dim=1), 2)  # DC-AE's definition
    assert torch.equal(up.shortcut_path(x), reference)
    x.requires_grad_(True)
    reference = F.pixel_shuffle(x.repeat_interleave(up.repeats, dim=1), 2)
    main = (
        up.conv(F.interpolate(x, scale_factor=2.0)) if kind == "seqconv" else F.pixel_shuffle(up.conv(x), 2)
    )
    expected = main + reference
    y = up(x)  # SeqConv runs interpolate + 3x3 conv as four 2x2 sub-pixel convs
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, up.conv.weight], g)
    expected_grads = torch.autograd.grad(expected, [x, up.conv.weight], g)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_upsample_seqconv_without_shortcut_and_channels_last():
    up = UpSample(16, 16, "seqconv", shortcut=False)
    x = torch.randn(1, 16, 6, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = up.conv(F.interpolate(x, scale_factor=2.0))
        torch.testing.assert_close(up(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_ch,out_ch", [(32, 32), (32, 64), (64, 128)])
def test_downsample_shortcut_matches_unshuffle_mean(in_ch, out_ch):
    down = DownSample(in_ch, out_ch)
    x = torch.randn(2, in_ch, 6, 10)
    u = F.pixel_unshuffle(x, 2)
    b, c, h, w = u.shape
    reference = F.pixel_unshuffle(down.conv(x), 2) + u.view(b, out_ch, c // out_ch, h, w).mean(dim=2)
    torch.testing.assert_close(down(x), reference, rtol=0, atol=1e-6)


def test_resblock_inplace_inference_path_matches_autograd_path():
    block = ResBlock(32)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    y_grad = block(x)
    y_grad.sum().backward()  # the autograd path must stay differentiable
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        x_copy = x.detach().clone()
        y_fast = block(x_copy)
    assert torch.equal(y_fast, y_grad.detach())
    assert torch.equal(x_copy, x.detach())  # the input is never modified in place


def test_resblock_inference_path_keeps_autocast_dtype_promotion():
    block = ResBlock(16)
    x = torch.randn(1, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_grad = block(x)
        with torch.no_grad():
            y_fast = block(x)
    assert y_fast.dtype == y_grad.dtype  # the in-place add must not round the residual to bf16
    torch.testing.assert_close(y_fast, y_grad.detach())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    "in_ch,out_ch,shortcut", [(32, 32, True), (64, 32, True), (16, 32, True), (16, 16, False)]
)
def test_upsample_inference_path_matches_reference_in_both_layouts(in_ch, out_ch, shortcut, layout):
    up = UpSample(in_ch, out_ch, "seqconv", shortcut)
    x = torch.randn(2, in_ch, 5, 7).contiguous(memory_format=layout)
    with torch.no_grad():
        expected = up.conv(F.interpolate(x, scale_factor=2.0))
        if shortcut:
            expected = expected + F.pixel_shuffle(x.repeat_interleave(up.repeats, dim=1), 2)
        y = up(x)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=layout)  # the output keeps the input's layout


def test_transformer_stage_returns_a_channels_last_view_with_proper_strides():
    cfg = transvae.create_model("transvae-nano-f16d32", device="meta").config
    st = Stage(cfg, 32, 1, "transformer", (4, 4)).eval()
    x = torch.randn(1, 32, 3, 5)
    with torch.no_grad():
        y = st(x)
    # batch 1 too: a (1, C, H, W) view with a stray batch stride would make oneDNN and GroupNorm
    # fall back to NCHW copies
    assert y.stride() == (3 * 5 * 32, 1, 5 * 32, 32)


@pytest.mark.parametrize(
    "name", ["transvae-nano-f16d32", "transvae-mini-f16d32", "vit-vae-nano-f16d32", "cnn-vae-nano-f16d32"]
)
def test_channels_last_compute_on_cpu_matches_standard_layout(name, monkeypatch):
    """On CPUs the encoders and decoders compute in channels-last (``blocks.compute_layout``); the
    values, the gradients and the standard output layout are those of the NCHW computation."""
    import transvae.models.cnn_vae as cnn_vae_mod
    import transvae.models.transvae as transvae_mod

    torch.manual_seed(0)
    model = transvae.create_model(name)
    x = torch.rand(2, 3, 64, 48) * 2 - 1

    def run():
        model.zero_grad()
        z = model.encode(x).mode()
        y = model.decode(z)
        y.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return z.detach(), y.detach(), grads

    z, y, grads = run()
    with torch.no_grad():  # the in-place inference paths give the autograd path's numbers
        assert model.encoder(x).is_contiguous() and y.is_contiguous()
        assert torch.equal(model.decode(model.encode(x).mode()), y)
    for mod in (transvae_mod, cnn_vae_mod):
        monkeypatch.setattr(mod, "compute_layout", lambda t: t)  # the reference: NCHW throughout
    z_ref, y_ref, grads_ref = run()
    # float rounding only (other conv algorithms): a layout mistake would be off by O(1)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert grads.keys() == grads_ref.keys() and len(grads) == len(list(model.parameters()))
    for n in grads:
        torch.testing.assert_close(grads[n], grads_ref[n], rtol=1e-4, atol=1e-5, msg=n)


def test_upsample_keeps_the_autocast_dtype_promotion_of_the_shortcut():
    up = UpSample(16, 16, "seqconv", shortcut=True)
    x = torch.randn(1, 16, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_grad = up(x)
        with torch.no_grad():
            y_fast = up(x)
    assert y_fast.dtype == y_grad.dtype == torch.float32  # bf16 conv + fp32 shortcut, not rounded to bf16
    torch.testing.assert_close(y_fast, y_grad.detach())


def test_rope_fast_form_matches_rotate_half_reference():
    from transvae.models.pos_embed import apply_rope_2d, rope_2d

    def rotate_half(t):  # the textbook form, per axis half
        a, b = t.chunk(2, dim=-1)
        return torch.cat((-b, a), dim=-1)

    cos, sin = rope_2d(5, 7, 32)
    x = torch.randn(2, 3, 4, 35, 32, requires_grad=True)
    rows, cols = x.chunk(2, dim=-1)
    reference = x * cos + torch.cat((rotate_half(rows), rotate_half(cols)), dim=-1) * sin
    y = apply_rope_2d(x, cos, sin)
    torch.testing.assert_close(y, reference, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, g)[0], torch.autograd.grad(reference, x, g)[0], rtol=1e-6, atol=1e-6
    )


def test_forward_default_is_the_posterior_mean_as_in_diffusers():
    m = transvae.create_model("transvae-nano-f16d32").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = m(x), m(x)
        assert torch.equal(a.sample, b.sample)  # deterministic by default
        assert torch.equal(a.latent, a.posterior.mode())
        g = torch.Generator().manual_seed(0)
        s = m(x, sample_posterior=True, generator=g)
        assert not torch.equal(s.latent, a.latent)
        assert torch.equal(s.latent, a.posterior.sample(torch.Generator().manual_seed(0)))

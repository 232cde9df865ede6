"""Model details of issue 13: init scheme and statistics, residual-branch scaling per stream,
qkv_norm variants, GroupNorm group sizes, the convolutional stem (docs/architecture.md)."""

import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import transvae
from transvae.models.attention import Attention
from transvae.models.blocks import ConvHead, ConvStem, ResBlock, TransformerBlock
from transvae.models.init_stats import activation_stats, sample_photos

MINIS = [
    "transvae-mini-f16d32",
    "cnn-vae-mini-f16d32",
    "vit-vae-mini-f16d32",
    "swin-vae-mini-f16d32",
    "asym-vae-mini-f16d32",
]


@pytest.fixture(scope="module")
def photos():
    return sample_photos(64, n=3)


@pytest.mark.parametrize("name", [*MINIS, "transvae-t-f16d32"])
def test_activation_statistics_at_init(name, photos):
    torch.manual_seed(0)
    rows = activation_stats(transvae.create_model(name), photos)
    by_part = {r["part"]: r for r in rows}
    assert "encoder.stages.0" in by_part and "decoder.conv_out" in by_part
    # no residual stream grows: every stage output stays within [0.1, 1.5] (the former
    # Kaiming-linear init grew TransVAE-T's encoder stream to std 5.5)
    for r in rows:
        assert 0.1 < r["std"] < 1.5, (name, r)
    # and every Transformer block starts with a visible (>= 0.2%) update, smaller than its input;
    # with the former global GPT-2 scaling TransVAE-T's blocks changed their input by 0.3-0.5%
    model = transvae.create_model(name, device="meta")
    for part in ("encoder", "decoder"):
        for i, stage in enumerate(getattr(model, part).stages):
            if any(isinstance(m, TransformerBlock) for m in stage.modules()):
                u = by_part[f"{part}.stages.{i}"]["rel_update"]
                assert 0.002 < u < 1.0, (name, part, i, u)


def _is_ldm_conv(conv: nn.Conv2d) -> bool:
    bound = 1 / math.sqrt(conv.weight[0].numel())
    w = conv.weight.detach()
    ok = w.abs().max() <= bound + 1e-7 and (conv.bias is None or conv.bias.abs().max() <= bound + 1e-7)
    if w.numel() >= 2000:  # the std of U(-b, b) is b / sqrt(3)
        ok = ok and abs(w.std().item() * math.sqrt(3) / bound - 1) < 0.1
    return bool(ok)


@pytest.mark.parametrize("name", MINIS)
def test_every_conv_uses_the_ldm_init(name):
    torch.manual_seed(0)
    m = transvae.create_model(name)
    convs = [(n, c) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)]
    assert convs
    bad = [n for n, c in convs if not _is_ldm_conv(c)]
    assert not bad, bad[:5]
    # the ResBlocks of TransVAE and CNN-VAE are initialised alike: same weight spread
    res = [b for b in m.modules() if isinstance(b, ResBlock)]
    for b in res:
        assert _is_ldm_conv(b.conv1) and _is_ldm_conv(b.conv2)


def _std(layer: nn.Linear) -> float:
    return layer.weight.detach().std().item()


def test_residual_scaling_is_per_stage_in_transvae():
    # stages of 1 and 3 Transformer blocks: each stage is its own stream (2 branches per block)
    torch.manual_seed(0)
    m = transvae.create_model("transvae-nano-f16d32", dims=(16, 16, 64, 64, 64), depths=(1, 1, 1, 3, 1))
    enc = m.encoder.stages
    for stage, depth in ((enc[2], 1), (enc[3], 3)):
        expected = 0.02 / math.sqrt(2 * depth)
        for blk in stage.blocks:
            # truncated at 2 std: the sample std is ~0.88 of the nominal one
            for layer in (blk.attn.proj, blk.ffn.fc2):
                assert _std(layer) == pytest.approx(0.88 * expected, rel=0.15)
            assert _std(blk.attn.qkv) == pytest.approx(0.88 * 0.02, rel=0.1)  # not a branch output
    streams = m.residual_streams()
    assert [len(s) for s in streams] == [2, 6, 2, 2, 6, 2]  # encoder stages 2-4, decoder stages 0-2


def test_residual_scaling_reaches_swin_mlp_fc2():
    torch.manual_seed(0)
    m = transvae.create_model(
        "swin-vae-mini-f16d32", dims=(32, 64, 128, 128), depths=(2, 2, 2, 4), head_dim=32
    )
    for stage in m.encoder.stages:
        expected = 0.88 * 0.02 / math.sqrt(2 * len(stage.blocks))
        for blk in stage.blocks:
            assert _std(blk.mlp.fc2) == pytest.approx(expected, rel=0.15)
            assert _std(blk.attn.proj) == pytest.approx(expected, rel=0.2)
            assert _std(blk.mlp.fc1) == pytest.approx(0.88 * 0.02, rel=0.1)
    assert len(m.residual_streams()) == 8


def test_init_weights_refuses_a_non_linear_branch_output():
    from transvae.models.blocks import init_weights

    with pytest.raises(TypeError, match="nn.Linear"):
        init_weights(nn.Sequential(nn.Conv2d(2, 2, 1)), [[nn.Conv2d(2, 2, 1)]])


# --- qkv_norm --------------------------------------------------------------------------------


def _variant(qkv_norm: str, source: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    m = transvae.create_model("transvae-nano-f16d32", qkv_norm=qkv_norm).eval()
    if source is not None:  # same weights everywhere else
        missing, unexpected = m.load_state_dict(source.state_dict(), strict=False)
        assert all("norm" in k for k in missing + unexpected), (missing, unexpected)
    return m


def test_qkv_norm_variants_equal_and_unequal_as_documented():
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    none = _variant("none")
    rms, qk = _variant("rms", none), _variant("qk", none)
    attn = next(a for a in rms.modules() if isinstance(a, Attention))
    assert isinstance(attn.norm, nn.RMSNorm) and isinstance(attn.q_norm, nn.Identity)
    attn = next(a for a in qk.modules() if isinstance(a, Attention))
    assert isinstance(attn.norm, nn.Identity) and isinstance(attn.k_norm, nn.RMSNorm)
    with torch.no_grad():
        y_none, y_rms, y_qk = (m(x, sample_posterior=False).sample for m in (none, rms, qk))
    # RMSNorm right behind LayerNorm (mean 0, unit variance) is the identity: "rms" == "none"
    assert (y_rms - y_none).abs().max() < 1e-4
    # QK-norm normalises each head's queries and keys: a different function
    assert (y_qk - y_none).abs().max() > 1e-3
    # once the LayerNorm's affine parameters move (as training does), "rms" is no longer the identity
    with torch.no_grad():
        for m in (none, rms):
            for blk in (b for b in m.modules() if isinstance(b, TransformerBlock)):
                blk.norm1.bias.fill_(0.5)
        assert (
            rms(x, sample_posterior=False).sample - none(x, sample_posterior=False).sample
        ).abs().max() > 1e-4


def test_rmsnorm_under_bf16_autocast_matches_nn_rmsnorm_without_warning():
    # blocks.RMSNorm (TransVAE's attention and LightningDiT): nn.RMSNorm's values and state-dict
    # keys, but a bf16 input under autocast no longer warns about the fp32 weight's dtype
    from transvae.models.attention import RMSNorm

    torch.manual_seed(0)
    ours, ref = RMSNorm(64, eps=1e-6), nn.RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 10, 64)
    torch.testing.assert_close(ours(x), ref(x), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref(x), atol=0.05, rtol=0.02)
    m = transvae.create_model("transvae-nano-f16d32").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(m(torch.rand(1, 3, 32, 32) * 2 - 1).sample).all()


def test_qk_norm_normalises_each_head():
    attn = Attention(64, head_dim=16, qkv_norm="qk")
    seen = []
    attn.q_norm.register_forward_hook(lambda mod, i, o: seen.append(o))
    attn(torch.randn(2, 10, 64) * 5)
    (q,) = seen
    assert q.shape == (2, 4, 10, 16)  # (B, heads, N, head_dim)
    torch.testing.assert_close(q.pow(2).mean(-1), torch.ones(2, 4, 10), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="qkv_norm must be one of"):
        Attention(64, head_dim=16, qkv_norm="layer")


@pytest.mark.parametrize("old, new", [(True, "rms"), (False, "none")])
def test_old_boolean_qkv_norm_configs_still_load(tmp_path, old, new):
    m = transvae.create_model("transvae-nano-f16d32", qkv_norm=new)
    m.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    assert cfg["qkv_norm"] == new
    cfg["qkv_norm"] = old  # as written before qkv_norm became a choice
    path.write_text(json.dumps(cfg))
    loaded = transvae.from_pretrained(tmp_path / "m")
    assert loaded.config.qkv_norm == new and loaded.config == m.config
    assert transvae.create_model("vit-vae-nano-f16d32", qkv_norm=old, device="meta").config.qkv_norm == new


# --- the convolutional stem (ladder's SeqConv rungs) ---------------------------------------


def test_seqconv_stem_and_head_structure_and_shapes():
    m = transvae.create_model(
        "vit-vae-mini-f16d32", pos_embed="rope", patch_embed="seqconv", patch_out="seqconv"
    )
    stem, head = m.encoder.conv_in, m.decoder.head
    assert isinstance(stem, ConvStem) and isinstance(head, ConvHead)
    assert [(c.in_channels, c.out_channels) for c in stem.convs] == [(3, 16), (16, 32), (32, 64), (64, 128)]
    for c in stem.convs:  # overlapping windows: kernel 3 > stride 2
        assert c.kernel_size == (3, 3) and c.stride == (2, 2) and c.padding == (1, 1)
    assert [n.num_channels for n in stem.norms] == [16, 32, 64, 128]
    assert all(isinstance(n, nn.GroupNorm) and n.num_channels // n.num_groups >= 4 for n in stem.norms)
    assert [(u.conv.in_channels, u.conv.out_channels) for u in head.ups] == [
        (128, 64),
        (64, 32),
        (32, 16),
        (16, 16),
    ]
    assert m.decoder.conv_out.in_channels == 16 and m.decoder.conv_out.kernel_size == (3, 3)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    sizes = []
    hooks = [c.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape))) for c in stem.convs]
    with torch.no_grad():
        y = m(x, sample_posterior=False).sample
        h = stem(x)
        # conv, norm, activation per step; no activation after the last step (the token stream)
        ref = x
        for i, (conv, norm) in enumerate(zip(stem.convs, stem.norms, strict=True)):
            ref = norm(conv(ref))
            ref = F.silu(ref) if i < 3 else ref
        torch.testing.assert_close(h, ref)
        assert h.min() < -0.5  # the stem's output is not a SiLU output
        z = torch.randn(2, 128, 4, 6)
        assert head(z).shape == (2, 16, 64, 96) and head(z).min() >= -0.2785  # SiLU's minimum
    for hk in hooks:
        hk.remove()
    assert sizes[:4] == [(2, 16, 32, 48), (2, 32, 16, 24), (2, 64, 8, 12), (2, 128, 4, 6)]
    assert y.shape == x.shape

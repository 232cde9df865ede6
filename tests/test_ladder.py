"""The design ladder ViT-VAE -> TransVAE: each rung's module structure, counts and shared-API run."""

import pytest
import torch
import torch.nn as nn

import transvae
from transvae.models.attention import Attention
from transvae.models.blocks import ConvHead, ConvStem, DownSample, LearnedPosEmbed, ResBlock, UpSample
from transvae.models.ladder import LADDER, branches, ladder, markdown_table
from transvae.models.mlp import FeedForward


def describe(m) -> dict:
    """The structural facts each rung is documented to change, read from the modules."""
    enc, dec = m.encoder, m.decoder
    kinds = [s.kind for s in enc.stages]
    tstage = next(s for s in enc.stages if s.kind == "transformer")
    ffns = [x for x in m.modules() if isinstance(x, FeedForward)]
    attns = [x for x in m.modules() if isinstance(x, Attention)]
    resamplers = [x for x in m.modules() if isinstance(x, (DownSample, UpSample))]
    ffn = ffns[0]
    if ffn.conv is None:
        ffn_kind = "mlp"
    elif ffn.conv.groups == ffn.conv.in_channels == ffn.fc1.out_features:
        ffn_kind = "dwconv"
    else:
        assert ffn.conv.groups == 1 and ffn.conv.kernel_size == (3, 3)
        ffn_kind = "fullconv"
    assert all(f.kind == ffns[0].kind for f in ffns)
    if isinstance(tstage.pos_embed, LearnedPosEmbed):
        pos = "learned"
    else:
        pos = "rope" if tstage.use_rope else "none"
    if isinstance(enc.conv_in, ConvStem):
        stem = "seqconv"
    else:
        stem = "patch" if enc.conv_in.stride == (16, 16) else "conv3x3"
    if isinstance(dec.shuffle, nn.PixelShuffle):
        head = "pixelshuffle"
    else:
        head = "seqconv" if isinstance(dec.head, ConvHead) else "conv3x3"
    norms = {type(a.norm) for a in attns}
    shortcuts = {r.shortcut for r in resamplers}
    assert len(norms) == 1 and len(shortcuts) <= 1
    return dict(
        stages=tuple(kinds),
        pos=pos,
        stem=stem,
        head=head,
        ffn=ffn_kind,
        hidden_ratio=ffn.fc1.out_features / ffn.fc1.in_features,
        qkv_norm=issubclass(norms.pop(), nn.RMSNorm),
        dc=shortcuts.pop() if shortcuts else None,
        resblocks=sum(isinstance(x, ResBlock) for x in m.modules()),
    )


SINGLE = ("transformer",)
MULTI = ("cnn", "cnn", "transformer", "transformer", "transformer")
# What each rung of ladder("mini") is documented to be (docs/architecture.md).
EXPECTED = [
    dict(stages=SINGLE, pos="learned", stem="patch", head="pixelshuffle", ffn="mlp", qkv_norm=False, dc=None),
    dict(stages=SINGLE, pos="none", stem="patch", head="pixelshuffle", ffn="mlp", qkv_norm=False, dc=None),
    dict(stages=SINGLE, pos="rope", stem="patch", head="pixelshuffle", ffn="mlp", qkv_norm=False, dc=None),
    # the stem is plain stride-2 convs (no resampler, hence no DC shortcut to switch)
    dict(stages=SINGLE, pos="rope", stem="seqconv", head="pixelshuffle", ffn="mlp", qkv_norm=False, dc=None),
    dict(stages=SINGLE, pos="rope", stem="seqconv", head="seqconv", ffn="mlp", qkv_norm=False, dc=False),
    dict(stages=MULTI, pos="rope", stem="conv3x3", head="conv3x3", ffn="mlp", qkv_norm=False, dc=False),
    dict(stages=MULTI, pos="rope", stem="conv3x3", head="conv3x3", ffn="dwconv", qkv_norm=False, dc=False),
    dict(stages=MULTI, pos="rope", stem="conv3x3", head="conv3x3", ffn="fullconv", qkv_norm=False, dc=False),
    dict(stages=MULTI, pos="rope", stem="conv3x3", head="conv3x3", ffn="fullconv", qkv_norm=True, dc=False),
    dict(stages=MULTI, pos="rope", stem="conv3x3", head="conv3x3", ffn="fullconv", qkv_norm=True, dc=True),
]
RATIO = {"mlp": 4.0, "dwconv": 4.0, "fullconv": 1.0}
# Total parameters of each rung at mini size (the table in docs/architecture.md).
MINI_PARAMS = [1800768, 1796672, 1796672, 1796160, 1796979, 1553387, 1594347, 1846251, 1847275, 1847275]


def test_ladder_shape_and_endpoints():
    assert LADDER == ladder("mini") and len(LADDER) == len(EXPECTED) == len(ladder("t"))
    assert LADDER[0] == ("ViT-VAE (learned abs. PE)", "vit-vae-mini-f16d32", {})
    assert LADDER[-1][1:] == ("transvae-mini-f16d32", {})  # the last rung is TransVAE itself
    assert [r[1].replace("-t-", "-mini-") for r in ladder("t")] == [r[1] for r in LADDER]
    assert [r[2] for r in ladder("t")] == [r[2] for r in LADDER]
    with pytest.raises(ValueError, match="ladder size"):
        ladder("xl")


@pytest.mark.parametrize("size", ["mini", "t"])
def test_every_rung_has_the_documented_structure(size):
    models = [transvae.create_model(b, device="meta", **o) for _, b, o in ladder(size)]
    facts = [describe(m) for m in models]
    if size == "mini":
        counts = [m.num_parameters() for m in models]
        assert counts == MINI_PARAMS
        # Single-stage and final rungs are parameter-matched within 5% at mini size.
        assert abs(counts[0] / counts[-1] - 1) < 0.05
    for i, (f, exp) in enumerate(zip(facts, EXPECTED, strict=True)):
        assert {k: f[k] for k in exp} == exp, (i, f)
        assert f["hidden_ratio"] == RATIO[f["ffn"]]
        assert f["resblocks"] == (0 if f["stages"] == SINGLE else 2 * sum(ladder_depths(size)[:2]))
    # Every rung differs from the one before it (no duplicate rungs).
    for a, b in zip(facts[:-1], facts[1:], strict=True):
        assert a != b


def ladder_depths(size):
    return transvae.create_model(f"transvae-{size}-f16d32", device="meta").config.depths


def test_branches_structure():
    (_, dw_base, dw), (_, fc_base, fc), (_, tv_base, norms), (_, qk_base, qk), (_, cnn_base, cnn) = branches(
        "mini"
    )
    f = describe(transvae.create_model(dw_base, device="meta", **dw))
    assert f["stages"] == SINGLE and f["ffn"] == "dwconv" and f["stem"] == "seqconv"
    f = describe(transvae.create_model(fc_base, device="meta", **fc))
    assert f["stages"] == SINGLE and f["ffn"] == "fullconv" and f["hidden_ratio"] == 1.0
    f = describe(transvae.create_model(tv_base, device="meta", **norms))
    assert f["stages"] == MULTI and not f["qkv_norm"] and f["dc"]
    m = transvae.create_model(qk_base, device="meta", **qk)
    attn = next(x for x in m.modules() if isinstance(x, Attention))
    assert isinstance(attn.norm, nn.Identity) and isinstance(attn.q_norm, nn.RMSNorm) and attn.qk_norm
    m = transvae.create_model(cnn_base, device="meta", **cnn)
    assert not m.config.stage_attn and not m.config.mid_attn and m.config.mid_block


@pytest.mark.parametrize("rung", range(len(LADDER)), ids=[r[0] for r in LADDER])
def test_every_rung_trains_and_round_trips(rung, tmp_path):
    label, base, overrides = LADDER[rung]
    m = transvae.create_model(base, **overrides)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    out = m(x)
    loss = (out.sample - x).abs().mean() + 1e-6 * out.posterior.kl().mean()
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad[:5]
    assert out.sample.shape == x.shape and out.latent.shape == (1, 32, 2, 3)
    if rung in (0, 5):  # one save/load per distinct base configuration family
        m.save_pretrained(tmp_path / "m")
        loaded = transvae.from_pretrained(tmp_path / "m")
        assert loaded.config == m.config
        m.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode(x).mean, m.encode(x).mean, rtol=0, atol=0)


def test_markdown_table_lists_every_rung():
    table = markdown_table(("mini",))
    for label, _, _ in LADDER + branches("mini"):
        assert f"| {label} |" in table
    assert "1.85M" in table and "1.80M" in table

"""Released LightningDiT checkpoints into our generator and back (``models/convert/lightningdit.py``).

The fixture ``tests/fixtures/lightningdit_reference/`` was made once with the reference code,
hustvl/LightningDiT at commit 2725fed42a14898744433809949834e26957bcdd, unchanged (its
``models/`` and ``transport/`` extracted under /tmp; none of it is in this repository), torch
2.14.1, timm 1.0.31, einops 0.8.2, fairscale 0.4.13 (imported by its ``models/rmsnorm.py``) and
torchdiffeq 0.2.5 (its ODE sampler), with ``TORCHDYNAMO_DISABLE=1`` so that its
``@torch.compile`` methods run eagerly on the CPU. Three tiny models of its real ``LightningDiT``
class, with these constructor arguments:

- ``released`` (the flags of the released models): input_size=8, patch_size=2, in_channels=8,
  hidden_size=48, depth=2, num_heads=3, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10,
  learn_sigma=False, use_qknorm=False, use_swiglu=True, use_rope=True, use_rmsnorm=True,
  wo_shift=False;
- ``dit_like``: input_size=4, patch_size=1, in_channels=4, hidden_size=32, depth=1, num_heads=2,
  mlp_ratio=4.0, class_dropout_prob=0.0, num_classes=5, learn_sigma=True, use_qknorm=False,
  use_swiglu=False, use_rope=False, use_rmsnorm=False, wo_shift=True;
- ``qknorm``: as ``dit_like`` but class_dropout_prob=0.1, learn_sigma=False, use_qknorm=True,
  use_swiglu=True, use_rope=True, use_rmsnorm=True, wo_shift=False.

``NAME.safetensors`` is ``model.state_dict()`` (the constructor arguments in its metadata),
``NAME_io.safetensors`` the inputs and the reference's outputs. The script (``make_fixture.py
OUT``, run from the extracted reference; ``FIXTURES`` holds the arguments above)::

    def randomize(model, gen):  # all weights random (the reference zero-inits adaLN and output)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name == "pos_embed":
                    continue
                if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "norm" in name:
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                elif p.ndim == 1:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)

    for i, (name, args) in enumerate(FIXTURES.items()):
        torch.manual_seed(i)
        gen = torch.Generator().manual_seed(100 + i)
        model = LightningDiT(**args)  # from models.lightningdit
        randomize(model, gen)
        model.eval()
        c, s, b = args["in_channels"], args["input_size"], 4
        null = args["num_classes"] if args["class_dropout_prob"] > 0 else args["num_classes"] - 1
        x = torch.randn(b, c, s, s, generator=gen)
        t = torch.tensor([0.0, 0.3, 0.7, 1.0])
        y = torch.tensor([0, 3, args["num_classes"] - 1, null])
        io = {"x": x, "t": t, "y": y}
        with torch.no_grad():
            io["out"] = model(x, t, y)
            if args["class_dropout_prob"] > 0:
                x2, y2 = torch.cat([x, x]), torch.cat([y, torch.full_like(y, null)])
                t2 = torch.full((2 * b,), 0.5)
                io["cfg_out"] = model.forward_with_cfg(x2, t2, y2, 4.0, cfg_interval=True, cfg_interval_start=0.11)
                sampler = Sampler(create_transport("Linear", "velocity", None, None, None))  # from transport
                sample_fn = sampler.sample_ode(
                    sampling_method="euler", num_steps=8, atol=1e-6, rtol=1e-3, reverse=False, timestep_shift=0.3
                )
                z = torch.randn(b, c, s, s, generator=gen)
                kw = dict(y=y2, cfg_scale=4.0, cfg_interval=True, cfg_interval_start=0.11)
                io["sample_noise"], io["sample_labels"] = z, y.clone()
                io["sample_out"] = sample_fn(torch.cat([z, z]), model.forward_with_cfg, **kw)[-1].chunk(2)[0]
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{name}.safetensors",
                  metadata={k: str(v) for k, v in args.items()})
        save_file({k: v.contiguous() for k, v in io.items()}, f"{out}/{name}_io.safetensors")

The other direction is tested here by exporting the fixture models back to the fixture's own
state dicts. Exports of generators that never came from the reference (cols_first and rows_first
tables, QK-norm with patch 2, the DiT-like options, another RoPE theta without the table) were
loaded with ``strict=True`` into the unchanged reference class once, outside the tests: outputs
equal within 1.2e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import transvae
from transvae.cli import main
from transvae.generation.sampling import SamplerConfig, guided_velocity, sample_ode
from transvae.inference.generate import load_generator, sampler_config
from transvae.models import LightningDiT, create_model
from transvae.models.convert.lightningdit import (
    ReferenceCheckpointError,
    check_reference_state,
    convert_lightningdit,
    export_lightningdit,
    from_reference,
    our_config,
    read_reference_checkpoint,
    reference_config,
    reference_shapes,
    rope_permutation,
    to_reference,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lightningdit_reference"
NAMES = ("released", "dit_like", "qknorm")
# what the shapes cannot tell for dit_like: no RoPE buffers (heads) and no null class
GIVEN = {"released": {}, "dit_like": {"num_heads": 2, "class_dropout_prob": 0.0}, "qknorm": {}}


def _fixture(name: str):
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    args = {
        k: (v == "True" if v in ("True", "False") else float(v) if "." in v else int(v))
        for k, v in meta.items()
    }
    return load_file(str(path)), load_file(str(FIXTURES / f"{name}_io.safetensors")), args


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", NAMES)
def test_ours_from_the_reference_checkpoint_gives_the_reference_outputs(name):
    state, io, args = _fixture(name)
    model = from_reference(state, GIVEN[name])
    assert model.reference_config == args  # every constructor argument recovered
    assert model.config.pos_embed_order == "cols_first"
    with torch.no_grad():
        v = model(io["x"], io["t"], io["y"])
    assert io["out"].abs().max() > 1  # random weights everywhere: not a zero output
    assert (v - io["out"]).abs().max() <= 1e-5 and _rel(v, io["out"]) < 1e-6


def test_the_mapping_is_needed_each_difference_changes_the_outputs():
    """Without the q/k permutation, or with the row-first table, the outputs are far off."""
    import dataclasses

    from transvae.models.convert.lightningdit import _to_ours

    state, io, args = _fixture("released")
    cfg = from_reference(state).config
    unpermuted = LightningDiT(cfg)
    unpermuted.load_state_dict(_to_ours(state, {**args, "use_rope": False}))
    rows_first = LightningDiT(dataclasses.replace(cfg, pos_embed_order="rows_first"))
    rows_first.load_state_dict(_to_ours(state, args))
    with torch.no_grad():
        assert _rel(unpermuted(io["x"], io["t"], io["y"]), io["out"]) > 0.01
        assert _rel(rows_first(io["x"], io["t"], io["y"]), io["out"]) > 0.1


def test_rope_permutation_pairs_interleaved_channels_with_halves():
    # head width 8: per axis half [a0 a1 | b0 b1] (ours) = interleaved [a0 b0 a1 b1] (reference)
    assert rope_permutation(8).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert sorted(rope_permutation(72).tolist()) == list(range(72))


@pytest.mark.parametrize("name", ["released", "qknorm"])
def test_exporting_back_gives_the_fixture_state_dict(name):
    state, _, args = _fixture(name)
    back, back_args = to_reference(from_reference(state))
    assert back_args == args
    assert sorted(back) == sorted(state) and all(back[k].shape == state[k].shape for k in state)
    assert all(torch.allclose(back[k], state[k], rtol=0, atol=1e-6) for k in state)


def test_dit_like_exports_without_learned_sigma_or_shift_and_keeps_its_outputs():
    state, io, args = _fixture("dit_like")
    model = from_reference(state, GIVEN["dit_like"])
    back, back_args = to_reference(model)
    assert back_args == {**args, "learn_sigma": False, "wo_shift": False}
    assert reference_shapes(back_args) == {k: tuple(v.shape) for k, v in back.items()}
    again = from_reference(back, {"num_heads": 2, "class_dropout_prob": 0.0})
    with torch.no_grad():
        assert torch.equal(again(io["x"], io["t"], io["y"]), model(io["x"], io["t"], io["y"]))


@pytest.mark.parametrize("order", ["cols_first", "rows_first"])
def test_our_generators_round_trip_through_the_reference_format(order):
    torch.manual_seed(0)
    m = create_model("lightningdit-nano-1", in_channels=4, num_classes=3, pos_embed_order=order, qk_norm=True)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    state, args = to_reference(m, input_size=6)
    assert args["input_size"] == 6 and reference_shapes(args) == {k: tuple(v.shape) for k, v in state.items()}
    back = from_reference(state)
    assert back.config == m.config  # the table's order travels in pos_embed itself
    x, t, y = torch.randn(2, 4, 6, 6), torch.rand(2), torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(back(x, t, y), m(x, t, y))
    with pytest.raises(ReferenceCheckpointError, match="square"):
        m.metadata = {"latent_shape": [4, 4, 6]}
        to_reference(m)
    with pytest.raises(ReferenceCheckpointError, match="LayerNorm"):
        to_reference(create_model("lightningdit-nano-1", qk_norm=True, rmsnorm=False), input_size=4)


@pytest.mark.parametrize("name", ["released", "qknorm"])
def test_guidance_of_three_channels_matches_forward_with_cfg(name):
    state, io, _ = _fixture(name)
    model = from_reference(state)
    b = io["x"].shape[0]
    with torch.no_grad():
        v3 = guided_velocity(model, io["x"], 0.5, io["y"], model.null_label, 4.0, 0.11, cfg_channels=3)
        v_all = guided_velocity(model, io["x"], 0.5, io["y"], model.null_label, 4.0, 0.11)
    ref = io["cfg_out"][:b]  # the conditional half of [x, x]
    assert (v3 - ref).abs().max() <= 1e-5
    assert (v_all - ref).abs().max() > 0.1  # guiding every channel is another sampler


@pytest.mark.parametrize("name", ["released", "qknorm"])
def test_a_guided_sample_matches_the_reference_sampler(name):
    state, io, _ = _fixture(name)
    model = from_reference(state)
    # 8 grid times of torchdiffeq's Euler = 7 steps; shift 0.3, cfg 4 from t = 0.11 on 3 channels
    cfg = SamplerConfig(steps=7, shift=0.3, cfg_scale=4.0, cfg_interval_start=0.11, cfg_channels=3)
    x = sample_ode(model, io["sample_noise"], io["sample_labels"], cfg, model.null_label)
    assert (x - io["sample_out"]).abs().max() <= 1e-5


# -- checkpoints and sizes -----------------------------------------------------------------------
def test_checkpoint_formats_of_the_reference_are_read(tmp_path):
    state, io, _ = _fixture("released")
    junk = {k: torch.zeros_like(v) for k, v in state.items()}
    opt = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 2e-4, "params": [0]}]}
    torch.save({"model": junk, "ema": state, "opt": opt}, tmp_path / "train.pt")  # train.py's layout
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "model.pth")
    torch.save(state, tmp_path / "bare.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("train.pt", "model.pth", "bare.pt", "w.safetensors"):
        got = read_reference_checkpoint(tmp_path / name)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), name
    torch.save({"model": junk}, tmp_path / "junk.pt")
    key = "blocks.0.attn.qkv.weight"
    assert torch.equal(read_reference_checkpoint(tmp_path / "junk.pt")[key], junk[key])  # no ema: model
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"step": 3}, tmp_path / "nothing.pt")
    for name, words in (
        ("text.pt", "not a readable checkpoint"),
        ("nothing.pt", "no state dict"),
        ("no.pt", "no such"),
    ):
        with pytest.raises(ReferenceCheckpointError, match=words):
            read_reference_checkpoint(tmp_path / name)


# (name, patch, channels, input size, parameters of the reference class on the meta device, without
# pos_embed; counted once with hustvl/LightningDiT 2725fed, use_swiglu/rope/rmsnorm, 1000 classes)
REFERENCE_SIZES = [
    ("B", 1, 32, 16, 768, 12, 12, 130_359_584),
    ("B", 2, 16, 32, 768, 12, 12, 130_408_768),
    ("L", 2, 32, 16, 1024, 24, 16, 458_087_520),
    ("XL", 1, 32, 16, 1152, 28, 16, 674_961_824),
    ("XL", 2, 16, 32, 1152, 28, 16, 675_035_584),
]


@pytest.mark.parametrize(("size", "p", "c", "s", "d", "depth", "heads", "params"), REFERENCE_SIZES)
def test_reference_sizes_are_inferred_from_the_shapes(size, p, c, s, d, depth, heads, params):
    args = {
        "input_size": s, "patch_size": p, "in_channels": c, "hidden_size": d, "depth": depth,
        "num_heads": heads, "mlp_ratio": 4.0, "class_dropout_prob": 0.1, "num_classes": 1000,
        "learn_sigma": False, "use_qknorm": False, "use_swiglu": True, "use_rope": True,
        "use_rmsnorm": True, "wo_shift": False,
    }  # fmt: skip
    shapes = reference_shapes(args)
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    assert reference_config(state) == args
    n = sum(v.numel() for k, v in state.items() if not k.startswith(("pos_embed", "feat_rope")))
    assert n == params
    with torch.device("meta"):
        ours = LightningDiT(our_config(args))
    assert ours.num_parameters() == params  # the same weights, nothing more or less


@pytest.mark.parametrize("name", NAMES)
def test_the_shape_table_is_the_reference_one(name):
    state, _, args = _fixture(name)
    assert reference_shapes(args) == {k: tuple(v.shape) for k, v in state.items()}


def test_a_mismatch_is_one_line_naming_the_tensor():
    state, _, args = _fixture("released")
    bad = dict(state)
    bad["blocks.1.attn.qkv.weight"] = torch.zeros(144, 40)
    with pytest.raises(ReferenceCheckpointError) as e:
        from_reference(bad)
    msg = str(e.value)
    assert "blocks.1.attn.qkv.weight has shape [144, 40], [144, 48] expected" in msg and "\n" not in msg
    missing = {k: v for k, v in state.items() if k != "blocks.0.mlp.w3.bias"}
    with pytest.raises(ReferenceCheckpointError, match="blocks.0.mlp.w3.bias is missing"):
        check_reference_state(missing, args)
    with pytest.raises(ReferenceCheckpointError, match="has 11 rows, not 12 classes"):
        from_reference(state, {"num_classes": 12})
    with pytest.raises(ReferenceCheckpointError, match="depth=3 was given, the checkpoint's shapes say 2"):
        from_reference(state, {"depth": 3})
    with pytest.raises(ReferenceCheckpointError, match="unknown LightningDiT arguments"):
        from_reference(state, {"depht": 2})
    learned = dict(state, pos_embed=state["pos_embed"] + 0.1)
    with pytest.raises(ReferenceCheckpointError, match="pos_embed is not DiT's fixed sin-cos table"):
        from_reference(learned)
    other_theta = dict(state, **{"feat_rope.freqs_cos": state["feat_rope.freqs_cos"].flip(0)})
    with pytest.raises(ReferenceCheckpointError, match="feat_rope.freqs_cos differs"):
        from_reference(other_theta)


# -- files for gen-sample and for the reference -----------------------------------------------------
def test_a_converted_checkpoint_is_sampled_by_gen_sample(tmp_path, capsys):
    state, io, args = _fixture("released")
    torch.save({"model": state, "ema": state, "opt": {}}, tmp_path / "ckpt.pt")
    c = args["in_channels"]
    torch.save({"mean": torch.linspace(-1, 1, c).view(1, c, 1, 1), "std": torch.full((1, c, 1, 1), 2.0)},
               tmp_path / "latents_stats.pt")  # fmt: skip
    folder = convert_lightningdit(
        tmp_path / "ckpt.pt",
        tmp_path / "gen",
        tmp_path / "latents_stats.pt",
        cfg_scale=4.0,
        cfg_interval_start=0.125,
    )
    model = load_generator(folder)
    meta = model.metadata
    assert meta["latent_shape"] == [8, 8, 8] and meta["latent_multiplier"] == 1.0
    assert meta["latent_stats"]["std"] == [2.0] * c and meta["converted_from"]["config"] == args
    sampler = sampler_config(meta)
    assert (sampler.cfg_channels, sampler.cfg_scale, sampler.steps, sampler.shift) == (3, 4.0, 249, 0.3)
    assert sampler.cfg_interval_start == 0.125 and sampler.solver == "euler"
    with torch.no_grad():
        assert (model(io["x"], io["t"], io["y"]) - io["out"]).abs().max() <= 1e-5
    vae = tmp_path / "vae"
    transvae.create_model("transvae-nano-f16d32", latent_channels=c).save_pretrained(vae)
    out = tmp_path / "samples"
    rc = main(
        ["gen-sample", "--run", str(folder), "--vae", str(vae), "--out", str(out), "--num", "2"]
        + ["--steps", "2", "--device", "cpu", "--class-labels", "1", "7"]
    )
    assert rc == 0, capsys.readouterr().err
    settings = json.loads((out / "sampling.json").read_text())
    assert settings["sampler"]["cfg_channels"] == 3 and settings["latent_shape"] == [8, 8, 8]
    assert len(list((out / "images").glob("*.png"))) == 2


def test_export_writes_what_the_reference_loads(tmp_path):
    state, io, args = _fixture("released")
    model = from_reference(state)
    model.save_pretrained(tmp_path / "run" / "model", latent_shape=[8, 8, 8])
    pt, pt_args = export_lightningdit(tmp_path / "run", tmp_path / "out" / "ldit.pt")
    st, st_args = export_lightningdit(model, tmp_path / "ldit.safetensors")
    assert pt_args == st_args == args
    ckpt = torch.load(pt, map_location="cpu", weights_only=True)  # as the reference's inference.py
    assert ckpt["lightningdit_args"] == args and set(ckpt) == {"model", "ema", "lightningdit_args"}
    for got in (ckpt["ema"], load_file(str(st))):
        assert sorted(got) == sorted(state) and all(
            torch.allclose(got[k], state[k], rtol=0, atol=1e-6) for k in state
        )
    with safe_open(str(st), framework="pt") as f:
        assert json.loads(f.metadata()["lightningdit_args"]) == args
    with pytest.raises(ReferenceCheckpointError, match="not a LightningDiT"):
        transvae.create_model("transvae-nano-f16d32").save_pretrained(tmp_path / "vae")
        export_lightningdit(tmp_path / "vae", tmp_path / "x.pt")


def test_transvae_convert_takes_a_released_checkpoint_in_and_back_out(tmp_path, capsys):
    from transvae.cli import main

    ckpt = FIXTURES / "released.safetensors"
    argv = ["convert", str(ckpt), "--preset", "lightningdit", "--num-classes", "10", "--out", str(tmp_path / "gen")]
    assert main(argv) == 0
    assert "gen-sample --run" in capsys.readouterr().out
    assert load_generator(tmp_path / "gen").config.num_classes == 10
    assert main(["convert", str(tmp_path / "gen"), "--to", "lightningdit", "--out", str(tmp_path / "back.pt")]) == 0
    assert "LightningDiT(input_size=8, patch_size=2" in capsys.readouterr().out
    back = read_reference_checkpoint(tmp_path / "back.pt")
    state = load_file(str(ckpt))
    assert all(torch.allclose(back[k], state[k], rtol=0, atol=1e-6) for k in state)

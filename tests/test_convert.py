"""Importing published autoencoders (issue 23): ``transvae.models.convert`` and ``transvae convert``.

The references are the installed diffusers classes themselves: ``AutoencoderKL`` in the SD 1.x/2.x,
SDXL, SD3 and FLUX.1 configurations (the block structure, latent channels, quant convs, GroupNorm
groups and scaling of the published ``config.json`` files; the default suite narrows the widths to
(32, 64, 128, 128), the slow test runs the published widths (128, 256, 512, 512)) and
``AutoencoderDC``, randomly initialised and written with diffusers' own ``save_pretrained``.
LDM / VA-VAE checkpoints are built from such a model with a name map written here (diffusers ->
LDM), so the converter's map (LDM -> transvae) is checked against an independent one.

Tolerances. The mapping is exact: in float64 every output equals diffusers' to 1e-10. In float32
a converted model computes in diffusers' NCHW layout (``CNNVAEConfig.channels_last=False``, which
the converters set) and every output agrees within 1e-5 (relative to the output's scale where it
exceeds 1: random weights decode to values of ~3); the CNN-VAE's default channels-last layout
on CPUs rounds differently, by ~3e-5 on decoded images, as diffusers' own decoder does when given
channels-last tensors (``test_float32_gap_is_channels_last_rounding``).
Nothing here touches the network.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import transvae
from transvae import ConfigError
from transvae.cli import main
from transvae.models.cnn_vae import CNNVAE
from transvae.models.convert import PRESETS, convert, detect
from transvae.models.dc_ae import DCAE

diffusers = pytest.importorskip("diffusers")

FULL = (128, 256, 512, 512)
NARROW = (32, 64, 128, 128)
_NO_QUANT_16 = dict(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, sample_size=1024)
# What distinguishes the published configs (their config.json), on top of the kl-f8 structure.
KL = {
    "sd": dict(latent_channels=4, scaling_factor=0.18215, sample_size=512),
    "sdxl": dict(latent_channels=4, scaling_factor=0.13025, sample_size=1024, force_upcast=True),
    # SD3 and FLUX: 16 latent channels, no quant convs, a shift factor
    "sd3": dict(_NO_QUANT_16, scaling_factor=1.5305, shift_factor=0.0609),
    "flux": dict(_NO_QUANT_16, scaling_factor=0.3611, shift_factor=0.1159),
}
FP32_ENC, FP32_DEC, FP64 = 1e-5, 1e-5, 1e-10


def kl_config(name: str, widths=NARROW) -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=list(widths),
        layers_per_block=2,
        act_fn="silu",
        norm_num_groups=32,
        mid_block_add_attention=True,
        **KL[name],
    )


def build_kl(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(**cfg).eval()


def images(b=2, h=32, w=48, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def kl_saved(tmp_path_factory):
    """``kl_saved(name) -> (diffusers model, folder)``: the narrow config, built and saved once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            ref = build_kl(kl_config(name))
            folder = tmp_path_factory.mktemp(f"kl-{name}")
            ref.save_pretrained(folder)
            cache[name] = (ref, folder)
        return cache[name]

    return get


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference, in units of the reference's scale when it exceeds 1 (random weights
    decode to values of ~3; a trained VAE's images lie in [-1, 1], where both are the same)."""
    return (a - b).abs().max().item() / max(1.0, a.abs().max().item())


def max_diffs(ref, model, x: torch.Tensor) -> dict[str, float]:
    """Max differences (``_diff``) of encode (mean, log-variance), decode and reconstruct."""
    with torch.no_grad():
        p, q = ref.encode(x).latent_dist, model.encode(x)
        z = p.mean
        return {
            "mean": _diff(p.mean, q.mean),
            "logvar": _diff(p.logvar, q.logvar),
            "decode": _diff(ref.decode(z).sample, model.decode(z)),
            "reconstruct": _diff(ref(x).sample, model(x).sample),
        }


def assert_matches(ref, model, x: torch.Tensor, fp32_dec: float = FP32_DEC) -> dict[str, float]:
    """fp32 within FP32_ENC / ``fp32_dec``, fp64 within FP64; returns the fp32 differences."""
    d32 = max_diffs(ref, model, x)
    assert d32["mean"] <= FP32_ENC and d32["logvar"] <= FP32_ENC, d32
    assert d32["decode"] <= fp32_dec and d32["reconstruct"] <= fp32_dec, d32
    d64 = max_diffs(copy.deepcopy(ref).double(), copy.deepcopy(model).double(), x.double())
    assert max(d64.values()) <= FP64, d64
    return d32


# -- diffusers AutoencoderKL ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KL))
def test_autoencoder_kl_converts_exactly(kl_saved, name):
    ref, folder = kl_saved(name)
    model = transvae.from_pretrained(folder)
    assert isinstance(model, CNNVAE) and model.model_name == "diffusers-autoencoder-kl"
    c = model.config
    quant = KL[name].get("use_quant_conv", True)
    assert (c.latent_channels, c.base_dim, c.ch_mult) == (KL[name]["latent_channels"], 32, (1, 2, 4, 4))
    assert (c.num_res_blocks, c.decoder_num_res_blocks, c.norm_groups) == (2, 3, 32)
    assert (c.quant_conv, c.post_quant_conv, c.attention_stages(), c.mid_attn) == (
        quant,
        quant,
        frozenset(),
        True,
    )
    assert model.spatial_compression_ratio == 8
    assert model.metadata["scaling_factor"] == KL[name]["scaling_factor"]
    assert model.metadata.get("shift_factor") == KL[name].get("shift_factor")
    n_ref = sum(p.numel() for p in ref.parameters())
    assert model.num_parameters() == n_ref
    assert_matches(ref, model, images())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KL))
def test_autoencoder_kl_full_width_converts_exactly(tmp_path, name):
    ref = build_kl(kl_config(name, FULL))
    ref.save_pretrained(tmp_path)
    model = transvae.from_pretrained(tmp_path)
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    assert_matches(ref, model, images(1, 64, 64))


def test_float32_gap_is_channels_last_rounding(kl_saved):
    """Why converted models compute in NCHW (``channels_last=False``): the same fp32 latent, decoded
    exactly (fp64) and in fp32. In NCHW our error is diffusers' own; in the channels-last layout
    (the CNN-VAE's default on CPUs) it is that of diffusers' decoder given channels-last tensors,
    larger."""
    import dataclasses

    ref, folder = kl_saved("sd")
    model = transvae.from_pretrained(folder)
    assert model.config.channels_last is False
    cl = transvae.models.CNNVAE(dataclasses.replace(model.config, channels_last=True))
    cl.load_state_dict(model.state_dict())
    z = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        exact = copy.deepcopy(ref).double().decode(z.double()).sample

        def err(x):
            return _diff(exact, x.double())

        nchw, ours = err(ref.decode(z).sample), err(model.decode(z))
        nhwc = copy.deepcopy(ref).to(memory_format=torch.channels_last)
        theirs_cl = err(nhwc.decode(z.contiguous(memory_format=torch.channels_last)).sample)
        ours_cl = err(cl.decode(z))
    assert ours < FP32_DEC and nchw < FP32_DEC and ours < 3 * nchw, (ours, nchw)
    assert ours_cl > ours and ours_cl < 3 * theirs_cl, (ours_cl, ours, theirs_cl)


def test_stage_attention_and_no_mid_attention_map(tmp_path):
    """Attn{Down,Up}*Block2D become attn_stages (two stages here), mid_block_add_attention mid_attn."""
    cfg = kl_config("sd", (16, 32, 32, 64)) | dict(
        down_block_types=["DownEncoderBlock2D"] * 2 + ["AttnDownEncoderBlock2D"] * 2,
        up_block_types=["AttnUpDecoderBlock2D"] * 2 + ["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
        norm_num_groups=8,
        mid_block_add_attention=False,
    )
    ref = build_kl(cfg)
    ref.save_pretrained(tmp_path)
    model = transvae.from_pretrained(tmp_path)
    c = model.config
    assert (c.attn_stages, c.mid_attn, c.norm_groups, c.decoder_num_res_blocks) == ((2, 3), False, 8, 2)
    assert_matches(ref, model, images())


def test_pre_0_14_attention_names_are_read(kl_saved, tmp_path):
    ref, folder = kl_saved("sd")
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for k, v in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items():
        for new, legacy in old.items():
            k = k.replace(f".{new}.", f".{legacy}.")
        state[k] = v
    assert "encoder.mid_block.attentions.0.query.weight" in state
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    assert_matches(ref, transvae.from_pretrained(tmp_path), images())


def test_converted_model_round_trips_through_save_pretrained(kl_saved, tmp_path):
    ref, folder = kl_saved("flux")
    model = convert(folder)
    model.save_pretrained(tmp_path / "native", **model.metadata)
    again = transvae.from_pretrained(tmp_path / "native")
    x = images()
    with torch.no_grad():
        assert torch.equal(again(x).sample, model(x).sample)
    assert again.metadata["scaling_factor"] == 0.3611 and again.metadata["shift_factor"] == 0.1159
    cfg = json.loads((tmp_path / "native" / "config.json").read_text())
    assert cfg["architecture"] == "cnn-vae" and "_class_name" not in cfg


def test_training_reads_a_diffusers_folder_config(kl_saved):
    """``train --init`` builds its meta model from ``read_config``: a diffusers folder gives the CNN-VAE."""
    from transvae.models.persistence import read_config

    _, folder = kl_saved("sd3")
    cls, cfg, name = read_config(folder)
    assert (
        cls is CNNVAE
        and cfg == transvae.from_pretrained(folder).config
        and name == "diffusers-autoencoder-kl"
    )


# -- CLI: convert, then the inference commands -----------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two 48x40 photos (multiples of 8: no padding) in a class folder, for reconstruct / extract."""
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    (d / "cls").mkdir()
    for name in ("astronaut", "coffee"):
        im = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3])
        im.resize((48, 40), Image.BICUBIC).save(d / "cls" / f"{name}.png")
    return d


def load_png(path: Path) -> torch.Tensor:
    a = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    return a.float().div(127.5).sub(1.0)[None]  # (1, 3, H, W) in [-1, 1]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def test_cli_convert_then_reconstruct_and_extract_latents(kl_saved, photos, tmp_path, capsys):
    ref, folder = kl_saved("sd3")
    out = tmp_path / "sd3"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "diffusers AutoencoderKL folder" in text and f"wrote {out / 'config.json'}" in text
    assert "scaling_factor=1.5305, shift_factor=0.0609" in text

    assert main(["reconstruct", str(photos), "--model", str(out), "--out", str(tmp_path / "rec")]) == 0
    for name in ("astronaut", "coffee"):
        x = load_png(photos / "cls" / f"{name}.png")
        with torch.no_grad():
            want = to_uint8(ref(x).sample)[0].permute(1, 2, 0).numpy().astype(int)
        got = np.asarray(Image.open(tmp_path / "rec" / "cls" / f"{name}.png")).astype(int)
        # the fp32 gap (<5e-5) can flip a rounding boundary: at most one level, on a few pixels
        assert got.shape == want.shape and np.abs(got - want).max() <= 1
        assert (got != want).mean() < 0.01

    lat = tmp_path / "lat"
    assert (
        main(["extract-latents", str(photos), "--model", str(out), "--out", str(lat), "--resolution", "32"])
        == 0
    )
    (shard,) = sorted(lat.glob("*.safetensors"))
    with safe_open(str(shard), framework="pt") as f:
        names = json.loads(f.metadata()["file_names"])
        latents, flipped = f.get_tensor("latents"), f.get_tensor("latents_flip")
    from transvae.data.transforms import adm_center_crop

    for i, n in enumerate(names):
        im = adm_center_crop(Image.open(photos / n).convert("RGB"), 32)
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1.0)[None]
        with torch.no_grad():
            want, want_flip = (ref.encode(t).latent_dist.mean[0] for t in (x, x.flip(-1)))
        assert latents[i].shape == (16, 4, 4)
        assert (latents[i] - want).abs().max() <= FP32_ENC and (
            flipped[i] - want_flip
        ).abs().max() <= FP32_ENC


def test_cli_convert_refuses_overwriting_and_output_inside_the_source(kl_saved, tmp_path, capsys):
    _, folder = kl_saved("sd")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    for out, words in (
        (tmp_path / "full", "not an empty folder"),
        (folder / "inside", "lies inside the input"),
    ):
        assert main(["convert", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "x" and not (folder / "inside").exists()


# -- LDM / VA-VAE checkpoints ------------------------------------------------------------------
def ldm_names(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL names -> CompVis LDM names (the inverse of what LDM checkpoints
    need), written independently of the converter; attention Linear weights become 1x1 convs."""
    rules = [
        (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
        (r"^encoder\.down_blocks\.(\d+)\.attentions\.", r"encoder.down.\1.attn."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
        (r"\.conv_norm_out\.", ".norm_out."),
        (r"\.conv_shortcut\.", ".nin_shortcut."),
        (r"\.group_norm\.", ".norm."),
        (r"\.to_q\.", ".q."),
        (r"\.to_k\.", ".k."),
        (r"\.to_v\.", ".v."),
        (r"\.to_out\.0\.", ".proj_out."),
    ]
    out = {}
    for k, v in state.items():
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|attentions|upsamplers\.0)\.", k)
        if m:  # diffusers counts the decoder's blocks from the deepest, LDM from the full resolution
            part = {"resnets": "block", "attentions": "attn", "upsamplers.0": "upsample"}[m[2]]
            k = f"decoder.up.{levels - 1 - int(m[1])}.{part}." + k[m.end() :]
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        if re.search(r"\.(q|k|v|proj_out)\.weight$", k) and v.ndim == 2:
            v = v[:, :, None, None]
        out[k] = v.clone()
    return out


def vavae_like(widths=(32, 32, 64, 64, 128)) -> dict:
    """VA-VAE's structure as a diffusers config: 5 levels, attention in the last one (16 px at 256)."""
    return dict(
        down_block_types=["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 4,
        block_out_channels=list(widths),
        layers_per_block=2,
        latent_channels=32,
        norm_num_groups=32,
    )


LDM_YAML = """\
ckpt_path: /never/opened.pt
model:
  target: ldm.models.autoencoder.AutoencoderKL
  params:
    embed_dim: 32
    lossconfig: {{target: ldm.modules.losses.LPIPSWithDiscriminator, params: {{disc_start: 1}}}}
    ddconfig:
      double_z: true
      z_channels: 32
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: {ch}
      ch_mult: [1, 1, 2, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [16]
      dropout: 0.0
"""


def test_ldm_checkpoint_with_yaml_converts_exactly(tmp_path):
    """A VA-VAE-structured LDM checkpoint (.pt with state_dict, loss.* and VF-projection tensors)."""
    ref = build_kl(vavae_like())
    state = ldm_names(ref.state_dict(), 5)
    assert "decoder.up.4.attn.2.q.weight" in state and "encoder.down.3.downsample.conv.weight" in state
    extra = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.ones(2, 3)}
    extra["linear_proj.weight"] = torch.ones(4, 32)
    torch.save({"state_dict": {**state, **extra}, "global_step": 7}, tmp_path / "vavae.pt")
    (tmp_path / "vavae.yaml").write_text(LDM_YAML.format(ch=32))
    model = transvae.from_pretrained(tmp_path / "vavae.pt", ldm_config=tmp_path / "vavae.yaml")
    c = model.config
    assert (c.ch_mult, c.stage_attn, c.attn_stages, c.quant_conv, c.norm_groups) == (
        (1, 1, 2, 2, 4),
        True,
        None,
        True,
        32,
    )
    assert model.spatial_compression_ratio == 16 and model.metadata["ignored_tensors"] == {
        "linear_proj.*": 1,
        "loss.*": 2,
    }
    assert_matches(ref, model, images(2, 32, 48))


def test_full_sd_checkpoint_with_preset(tmp_path):
    """SD 1.x layout: the VAE under first_stage_model. next to other tensors, read with preset sd-vae."""
    ref = build_kl(kl_config("sd", FULL))
    state = {f"first_stage_model.{k}": v for k, v in ldm_names(ref.state_dict(), 4).items()}
    state["model.diffusion_model.out.0.weight"] = torch.ones(8)
    torch.save({"state_dict": state}, tmp_path / "sd.ckpt")
    model = transvae.from_pretrained(tmp_path / "sd.ckpt", preset="sd-vae")
    assert model.model_name == "sd-vae" and model.metadata["scaling_factor"] == 0.18215
    assert model.metadata["ignored_tensors"] == {"model.*": 1}
    assert model.config == CNNVAE.config_class.from_dict({**PRESETS["sd-vae"].config, "channels_last": False})
    assert_matches(ref, model, images(1, 16, 24))


@pytest.mark.slow
@pytest.mark.parametrize("preset, widths", [("vavae-f16d32", (128, 128, 256, 256, 512))])
def test_full_width_vavae_safetensors_with_preset(tmp_path, preset, widths):
    ref = build_kl(vavae_like(widths))
    save_file(ldm_names(ref.state_dict(), 5), str(tmp_path / "vavae.safetensors"))
    model = convert(tmp_path / "vavae.safetensors", preset=preset)
    assert "scaling_factor" not in model.metadata  # LightningDiT normalises with latents_stats.pt
    # the VA-VAE structure (five levels, attention at the lowest, full width) compounds more fp32
    # rounding through encode + decode than the SD family: 1.01e-5 measured, exact in fp64
    assert_matches(ref, model, images(1, 32, 32), fp32_dec=2 * FP32_DEC)


def shape_only(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors with the right shapes whose storage is one number (a full-size file in a few kB)."""
    return {k: torch.zeros(1).expand(v.shape) for k, v in model_state.items()}


@pytest.fixture(scope="module")
def sd3_ldm_shapes(tmp_path_factory) -> Path:
    """An SD3-structured LDM checkpoint (16 channels, no quant convs) at full width, shapes only."""
    with torch.device("meta"):
        ref = diffusers.AutoencoderKL(**kl_config("sd3", FULL))
    p = tmp_path_factory.mktemp("sd3") / "sd3_vae.ckpt"
    torch.save(shape_only(ldm_names(ref.state_dict(), 4)), p)
    return p


def test_wrong_preset_names_the_first_differing_tensor_and_the_fitting_presets(sd3_ldm_shapes):
    with pytest.raises(ConfigError) as ei:
        convert(sd3_ldm_shapes, preset="sd-vae")
    msg = str(ei.value)
    assert "\n" not in msg and "preset 'sd-vae'" in msg
    assert "encoder.conv_out.weight has shape [32, 512, 3, 3]" in msg and "[8, 512, 3, 3]" in msg
    assert msg.endswith("the file fits preset(s) sd3-vae, flux-vae")


def test_missing_and_unexpected_tensors_are_named(sd3_ldm_shapes, tmp_path):
    state = torch.load(sd3_ldm_shapes, weights_only=True)
    missing = {k: v for k, v in state.items() if k != "decoder.mid.attn_1.k.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=r"has no tensor decoder\.mid\.attn_1\.k\.bias of shape \[512\]"):
        convert(tmp_path / "missing.pt", preset="flux-vae")
    torch.save({**state, "quant_conv.weight": torch.zeros(32, 32, 1, 1)}, tmp_path / "extra.pt")
    with pytest.raises(
        ConfigError, match=r"1 tensor\(s\) are not part of the architecture preset 'flux-vae'"
    ):
        convert(tmp_path / "extra.pt", preset="flux-vae")


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_pickled_payload_in_a_checkpoint_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save(
        {"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "evil": Payload(marker)},
        tmp_path / "vae.ckpt",
    )
    with pytest.raises(ConfigError) as ei:
        convert(tmp_path / "vae.ckpt", preset="sd-vae")
    assert "was refused" in str(ei.value) and "posix.system" in str(ei.value) and "\n" not in str(ei.value)
    assert (
        main(["convert", str(tmp_path / "vae.ckpt"), "--preset", "sd-vae", "--out", str(tmp_path / "o")]) == 2
    )
    assert "was refused" in capsys.readouterr().err
    assert not marker.exists()


def test_ldm_yaml_is_data(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "x.ckpt"
    torch.save({"encoder.conv_in.weight": torch.zeros(1)}, ckpt)
    cases = {
        f"model: !!python/object/apply:os.system ['touch {marker}']\n": "is not valid YAML",
        "model: {target: ldm.models.autoencoder.VQModel, params: {}}\n": "target 'ldm.models.autoencoder.VQModel' is not supported",
        LDM_YAML.format(ch=32).replace(
            "dropout: 0.0", "dropout: 0.0\n      use_linear_attn: true"
        ): "use_linear_attn=True (only False)",
        LDM_YAML.format(ch=32).replace(
            "dropout: 0.0", "dropout: 0.0\n      chanels: 3"
        ): "unknown config key(s) ['chanels']",
        LDM_YAML.format(ch=32).replace("embed_dim: 32", "embed_dim: 16"): "embed_dim=16 != z_channels=32",
        LDM_YAML.format(ch=32).replace("[16]", "[24]"): "attn_resolutions [24] match no level",
    }
    for i, (text, words) in enumerate(cases.items()):
        (tmp_path / f"{i}.yaml").write_text(text)
        with pytest.raises(ConfigError) as ei:
            convert(ckpt, ldm_config=tmp_path / f"{i}.yaml")
        assert words in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
    assert not marker.exists()


# -- DC-AE: wrapped -------------------------------------------------------------------------------
DC = dict(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[16, 32, 32],
    decoder_block_out_channels=[16, 32, 32],
    encoder_layers_per_block=[1, 1, 1],
    decoder_layers_per_block=[1, 1, 1],
    encoder_qkv_multiscales=[[], [], [5]],
    decoder_qkv_multiscales=[[], [], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types=["batch_norm", "rms_norm", "rms_norm"],  # BatchNorm: int64 buffers too
    decoder_act_fns=["relu", "silu", "silu"],
    scaling_factor=0.41407,
)


@pytest.fixture(scope="module")
def dc_saved(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderDC(**DC).eval()
    for m in ref.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    folder = tmp_path_factory.mktemp("dc-ae")
    ref.save_pretrained(folder)
    return ref, folder


def test_dc_ae_is_wrapped_with_identical_outputs(dc_saved, tmp_path):
    ref, folder = dc_saved
    model = transvae.from_pretrained(folder)
    assert isinstance(model, DCAE) and model.spatial_compression_ratio == 4 and model.latent_channels == 8
    assert model.logvar_layer() is None  # a deterministic posterior has no log-variance to start anywhere
    with pytest.raises(ConfigError, match="no log-variance"):
        model.init_logvar_(-10.0)
    assert model.metadata["scaling_factor"] == 0.41407
    x = images()
    with torch.no_grad():
        z = ref.encode(x).latent
        post = model.encode(x)
        assert torch.equal(post.mean, z) and torch.equal(post.sample(), z) and post.kl().abs().max() == 0
        assert torch.equal(model.decode(z), ref.decode(z).sample)
        assert torch.equal(model(x, sample_posterior=True).sample, ref(x).sample)
    model.save_pretrained(tmp_path / "native", **model.metadata)
    cfg = json.loads((tmp_path / "native" / "config.json").read_text())
    assert cfg["architecture"] == "diffusers-dc-ae" and cfg["decoder_norm_types"][0] == "batch_norm"
    assert cfg["metadata"]["scaling_factor"] == 0.41407
    with safe_open(str(tmp_path / "native" / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "encoder.net.conv_in.weight" in keys and "decoder.up_blocks.0.1.norm.num_batches_tracked" in keys
    again = transvae.from_pretrained(tmp_path / "native")
    with torch.no_grad():
        assert torch.equal(again(x).sample, ref(x).sample)
    assert again.state_dict()["decoder.up_blocks.0.1.norm.num_batches_tracked"].item() == 7


def test_cli_encode_with_a_converted_dc_ae(dc_saved, photos, tmp_path, capsys):
    ref, folder = dc_saved
    assert main(["convert", str(folder), "--out", str(tmp_path / "dc")]) == 0
    assert "DCAE (architecture diffusers-dc-ae" in capsys.readouterr().out
    src = photos / "cls" / "coffee.png"
    assert (
        main(
            ["encode", str(src), "--model", str(tmp_path / "dc"), "--out", str(tmp_path / "lat"), "--sample"]
        )
        == 0
    )
    with safe_open(str(tmp_path / "lat" / "coffee.safetensors"), framework="pt") as f:
        stored, meta = f.get_tensor("latent"), f.metadata()
    with torch.no_grad():
        z = ref.encode(load_png(src)).latent[0]
    assert float(meta["scaling_factor"]) == 0.41407 and meta["sampled"] == "true"
    assert torch.equal(stored, z * 0.41407)  # a "sample" of the zero-variance posterior is its mean


def test_dc_ae_decoder_fine_tuning_starts_from_the_converted_model(dc_saved, photos, tmp_path):
    _, folder = dc_saved
    init = tmp_path / "dc"
    convert(folder).save_pretrained(init)
    stand_ins = ["--loss.pretrained=false", "--loss.lpips_net=alex", "--loss.vf_weight=0"]
    args = ["train", "--init", str(init), "--stage", "2", "--data", str(photos), "--resolution", "32"]
    assert (
        main(
            [
                *args,
                "--batch-size",
                "2",
                "--max-steps",
                "1",
                "--workers",
                "0",
                *stand_ins,
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    before, after = transvae.from_pretrained(init), transvae.from_pretrained(tmp_path / "run")
    assert isinstance(after, DCAE)
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if k.startswith("encoder."))  # stage 2 freezes it
    assert not all(
        torch.equal(b[k], a[k]) for k in b if k.startswith("decoder.") and b[k].is_floating_point()
    )


def test_bad_dc_ae_config_is_one_line(dc_saved, tmp_path):
    _, folder = dc_saved
    raw = json.loads((folder / "config.json").read_text())
    for edit, words in (
        ({"encoder_block_out_channels": [16, 24, 32]}, "4 * 16 is not a multiple of 24"),
        ({"decoder_block_types": "Transformer"}, "decoder_block_types must be one of"),
        ({"encoder_layers_per_block": [1, 1]}, "encoder_layers_per_block needs 3 entries"),
        ({"use_magic": True}, "unknown config key(s) ['use_magic']"),
    ):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**raw, **edit}))
        (d / "diffusion_pytorch_model.safetensors").write_bytes(
            (folder / "diffusion_pytorch_model.safetensors").read_bytes()
        )
        with pytest.raises(ConfigError) as ei:
            transvae.from_pretrained(d)
        assert words in str(ei.value) and "\n" not in str(ei.value), str(ei.value)


# -- bad inputs: one line each ---------------------------------------------------------------------
def copy_folder(src: Path, dst: Path, config: dict | None = None) -> Path:
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(cfg if config is None else config))
    w = src / "diffusion_pytorch_model.safetensors"
    (dst / w.name).write_bytes(w.read_bytes())
    return dst


def edited(src: Path, **changes) -> dict:
    return {**json.loads((src / "config.json").read_text()), **changes}


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            {"_class_name": "AutoencoderTiny"},
            ["'AutoencoderTiny'", "converts AutoencoderKL and AutoencoderDC"],
        ),
        ({"act_fn": "gelu"}, ["act_fn='gelu' (only 'silu')"]),
        ({"up_block_types": ["UpDecoderBlock2D"] * 3 + ["KUpBlock2D"]}, ["up_block_types ['KUpBlock2D']"]),
        ({"out_channels": 4}, ["out_channels=4 != in_channels=3"]),
        ({"latent_chanels": 4}, ["unknown config key(s) ['latent_chanels']"]),
        ({"layers_per_block": 10**6}, ["'num_res_blocks' = 1000000 is out of range"]),
        ({"block_out_channels": [32, 48, 128, 128]}, ["each a positive multiple of the first"]),
        ({"norm_num_groups": 24}, ["norm_groups=24 does not divide"]),
    ],
)
def test_unsupported_diffusers_configs_are_one_line(kl_saved, tmp_path, changes, words):
    _, folder = kl_saved("sd")
    d = copy_folder(folder, tmp_path / "m", edited(folder, **changes))
    for call in (lambda: transvae.from_pretrained(d), lambda: convert(d)):
        with pytest.raises(ConfigError) as ei:
            call()
        msg = str(ei.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_mismatched_and_truncated_weights_are_one_line(kl_saved, tmp_path):
    _, folder = kl_saved("sd")
    d = copy_folder(folder, tmp_path / "shape")
    w = d / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    state["decoder.up_blocks.1.resnets.2.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    save_file(state, str(w))
    with pytest.raises(ConfigError) as ei:
        transvae.from_pretrained(d)
    assert "tensor decoder.up_blocks.1.resnets.2.conv2.weight has shape [128, 128, 1, 1]" in str(ei.value)
    assert "expects [128, 128, 3, 3]" in str(ei.value)

    d = copy_folder(folder, tmp_path / "truncated")
    w = d / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ConfigError, match="is not a valid safetensors file"):
        transvae.from_pretrained(d)

    d = copy_folder(folder, tmp_path / "pickle")
    (d / "diffusion_pytorch_model.safetensors").rename(d / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.bin is never loaded"):
        transvae.from_pretrained(d)


def test_architecture_source_errors(kl_saved, sd3_ldm_shapes, tmp_path, model_dir):
    _, folder = kl_saved("sd")
    cases = [
        (lambda: convert(sd3_ldm_shapes), "carries no architecture: pass a preset (sd-vae, sdxl-vae"),
        (
            lambda: transvae.from_pretrained(model_dir / "model.safetensors"),
            f"or the model folder {model_dir} that",
        ),
        (
            lambda: convert(sd3_ldm_shapes, preset="sd4-vae"),
            "unknown preset 'sd4-vae'; known presets: sd-vae",
        ),
        (
            lambda: convert(folder, preset="sd-vae"),
            "a preset or an LDM config applies to checkpoint files only",
        ),
        (lambda: convert(model_dir), "already a transvae model folder"),
    ]
    for call, words in cases:
        with pytest.raises(ConfigError) as ei:
            call()
        assert words in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a checkpoint"):
        detect(tmp_path / "weights.npz")
    assert detect(folder).kind == "diffusers-autoencoder-kl" and detect(sd3_ldm_shapes).kind == "checkpoint"


def test_cli_convert_errors_are_one_line(sd3_ldm_shapes, tmp_path, capsys):
    for extra, words in (
        ([], "carries no architecture"),
        (["--preset", "sd-vae"], "fits preset(s) sd3-vae, flux-vae"),
        (
            ["--preset", "sd3-vae", "--config", str(sd3_ldm_shapes)],
            "--preset and --config exclude each other",
        ),
    ):
        assert main(["convert", str(sd3_ldm_shapes), "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("transvae convert: error:") and words in err and "\n" not in err, err


def test_offline_hub_id_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: offline(**k))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as ei:
        convert("stabilityai/sd-vae-ft-mse")
    assert str(ei.value).startswith("pass a local model folder") and "\n" not in str(ei.value)


def test_hub_subfolder_downloads_only_its_json_and_safetensors(kl_saved, tmp_path, monkeypatch):
    import huggingface_hub

    _, folder = kl_saved("flux")
    repo = tmp_path / "snapshot"
    copy_folder(folder, (repo.mkdir() or repo) / "vae")
    seen = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        seen.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(repo)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    model = transvae.from_pretrained("black-forest-labs/FLUX.1-schnell", subfolder="vae")
    assert isinstance(model, CNNVAE) and model.metadata["shift_factor"] == 0.1159
    assert seen["allow_patterns"] == [
        "vae/config.json",
        "vae/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    with pytest.raises(FileNotFoundError, match="subfolder must be a relative path"):
        transvae.from_pretrained("black-forest-labs/FLUX.1-schnell", subfolder="../x")


def test_parity_reports_an_exact_conversion_and_catches_a_wrong_one(kl_saved, monkeypatch):
    """``models.convert.parity`` (benchmarks/convert_parity.py's measurement): float64 outputs of
    a correct conversion agree to rounding; one weight changed in the converted model shows."""
    from transvae.models import persistence
    from transvae.models.convert.parity import PUBLISHED_KL, parity

    assert set(PUBLISHED_KL) == {"sd-vae", "sdxl-vae", "sd3-vae", "flux-vae", "vavae-f16d32"}
    ref, _ = kl_saved("flux")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    row = parity(ref, x)
    assert row["transvae"].startswith("CNNVAE") and row["logvar fp32"] is not None
    assert max(row[f"{k} fp64"] for k in ("mean", "logvar", "decode", "reconstruct")) < 1e-10
    assert row["reconstruct fp32"] < 1e-3

    load = persistence.load_model

    def off_by_a_bit(path, **kw):
        model = load(path, **kw)
        with torch.no_grad():
            next(model.decoder.parameters()).add_(1e-2)
        return model

    monkeypatch.setattr(persistence, "load_model", off_by_a_bit)
    bad = parity(ref, x)
    assert bad["mean fp64"] < 1e-10 and bad["decode fp64"] > 1e-4  # the decoder, not the encoder

"""diffusers ``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3, FLUX.1 VAEs) -> the CNN-VAE.

A diffusers folder is ``config.json`` + ``diffusion_pytorch_model.safetensors``. The config is
parsed as data into ``AutoencoderKLConfig`` (diffusers' own defaults for missing keys, unknown
keys refused) and mapped onto ``CNNVAEConfig``:

===============================  ===============================================================
AutoencoderKL                    CNNVAEConfig
===============================  ===============================================================
block_out_channels               base_dim = first entry, ch_mult = entries / first
layers_per_block                 num_res_blocks; decoder_num_res_blocks = layers_per_block + 1
latent_channels                  latent_channels
norm_num_groups                  norm_groups (GroupNorm eps 1e-6 in both)
Attn{Down,Up}*Block2D            attn_stages (mirrored in the decoder); none in SD/SDXL/SD3/FLUX
mid_block_add_attention          mid_attn
use_quant_conv / _post_          quant_conv / post_quant_conv (SD, SDXL: true; SD3, FLUX: false)
scaling_factor, shift_factor,    ``model.metadata`` (used by ``transvae encode`` and
latents_mean/std, force_upcast   ``extract-latents``); force_upcast is informational: inference
                                 reruns an fp16 pass that overflows in fp32 by itself
===============================  ===============================================================

Both downsample with a 3x3 stride-2 conv after zero padding (0, 1, 0, 1) and upsample with
nearest 2x + 3x3 conv; attention is single-head with scale 1/sqrt(C) (diffusers' Linear q/k/v/out
weights become 1x1 convs). Options the CNN-VAE cannot represent (another activation, other block
types, out_channels != in_channels) are refused in one line naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...utils.config import from_dict, read_json
from ..base import AutoencoderBase, ConfigError
from ..cnn_vae import CNNVAE, CNNVAEConfig
from ..persistence import CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME
from ..registry import build_model
from .cnn_names import source_names
from .weights import KeyNames, load_converted, open_safetensors

CLASS_NAME = "AutoencoderKL"
MODEL_NAME = "diffusers-autoencoder-kl"
_DOWN = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
_UP = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
_ACTS = ("silu", "swish")  # diffusers maps both to nn.SiLU


@dataclass
class AutoencoderKLConfig:
    """The options of diffusers' ``AutoencoderKL`` (``config.json``), with diffusers' defaults."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True


def parse_config(raw: Any, path: Path | str) -> AutoencoderKLConfig:
    """``config.json`` data -> ``AutoencoderKLConfig``; keys starting with ``_`` (``_class_name``,
    ``_diffusers_version``, ``_name_or_path``) are provenance and skipped."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a JSON object")
    data = {k: v for k, v in raw.items() if not k.startswith("_")}
    return from_dict(AutoencoderKLConfig, data, what=f"diffusers {CLASS_NAME} config {path}")


def to_cnn_vae(kl: AutoencoderKLConfig, path: Path | str) -> tuple[CNNVAEConfig, dict[str, Any]]:
    """Map an ``AutoencoderKLConfig`` onto ``CNNVAEConfig`` and the model's metadata.

    Raises:
        ConfigError: one line naming every option the CNN-VAE cannot represent, or a size out
            of ``CNNVAEConfig``'s range.
    """
    n = len(kl.block_out_channels)
    bad = []
    if kl.act_fn not in _ACTS:
        bad.append(f"act_fn={kl.act_fn!r} (only 'silu')")
    if kl.out_channels != kl.in_channels:
        bad.append(f"out_channels={kl.out_channels} != in_channels={kl.in_channels}")
    if len(kl.down_block_types) != n or len(kl.up_block_types) != n:
        bad.append(
            f"{len(kl.down_block_types)} down / {len(kl.up_block_types)} up block types for {n} block_out_channels"
        )
    for name, types, known in (
        ("down_block_types", kl.down_block_types, _DOWN),
        ("up_block_types", kl.up_block_types, _UP),
    ):
        other = sorted({t for t in types if t not in known})
        if other:
            bad.append(f"{name} {other} (only {list(known)})")
    if not bad:
        enc = {i for i, t in enumerate(kl.down_block_types) if _DOWN[t]}
        dec = {n - 1 - s for s, t in enumerate(kl.up_block_types) if _UP[t]}
        if enc != dec:
            bad.append("attention blocks of the decoder that do not mirror the encoder's")
    b0 = kl.block_out_channels[0] if kl.block_out_channels else 0
    if b0 <= 0 or any(b % b0 for b in kl.block_out_channels):
        bad.append(
            f"block_out_channels={list(kl.block_out_channels)} (each a positive multiple of the first)"
        )
    for name, v in (("latents_mean", kl.latents_mean), ("latents_std", kl.latents_std)):
        if v is not None and len(v) != kl.latent_channels:
            bad.append(f"{name} with {len(v)} values for {kl.latent_channels} latent channels")
    if bad:
        raise ConfigError(f"{path}: {CLASS_NAME} option(s) the CNN-VAE cannot represent: " + "; ".join(bad))
    attn = sorted(enc)
    cfg = CNNVAEConfig.from_dict(
        {
            "channels_last": False,  # diffusers' NCHW layout: fp32 outputs equal to 1e-5
            "in_channels": kl.in_channels,
            "latent_channels": kl.latent_channels,
            "base_dim": b0,
            "ch_mult": [b // b0 for b in kl.block_out_channels],
            "num_res_blocks": kl.layers_per_block,
            "decoder_num_res_blocks": kl.layers_per_block + 1,
            "mid_block": True,
            "mid_attn": kl.mid_block_add_attention,
            "norm_groups": kl.norm_num_groups,
            "quant_conv": kl.use_quant_conv,
            "post_quant_conv": kl.use_post_quant_conv,
            **({"stage_attn": bool(attn)} if attn in ([], [n - 1]) else {"attn_stages": attn}),
        }
    )
    meta: dict[str, Any] = {"scaling_factor": kl.scaling_factor}
    for k in ("shift_factor", "latents_mean", "latents_std"):
        v = getattr(kl, k)
        if v is not None:
            meta[k] = list(v) if isinstance(v, tuple) else v
    meta["force_upcast"] = kl.force_upcast
    return cfg, meta


def model_config(raw: Any, path: Path | str) -> tuple[CNNVAEConfig, dict[str, Any]]:
    """``config.json`` data of an ``AutoencoderKL`` -> (``CNNVAEConfig``, metadata)."""
    return to_cnn_vae(parse_config(raw, path), path)


def convert_folder(folder: Path, name: str = MODEL_NAME) -> CNNVAE:
    """Load a diffusers ``AutoencoderKL`` folder as a CNN-VAE (weights renamed, nothing else changed).

    Args:
        folder: holds ``config.json`` and ``diffusion_pytorch_model.safetensors``.
        name: the model's ``model_name``.
    Returns:
        the CNN-VAE (float32, CPU, eval mode) with ``metadata`` = the scaling of the config.
    Raises:
        ConfigError: an unsupported config or weights that do not fit it (one line).
        FileNotFoundError: no safetensors weights (a pickled ``.bin`` is never read).
    """
    return load_diffusers_folder(
        folder,
        name,
        model_config,
        CNNVAE,
        lambda cfg: lambda k: source_names(k, cfg, "diffusers"),
        CLASS_NAME,
    )


def load_diffusers_folder(
    folder: Path,
    name: str,
    parse: Callable[[Any, Path], tuple[Any, dict[str, Any]]],
    cls: type[AutoencoderBase],
    names_for: Callable[[Any], KeyNames],
    class_name: str,
) -> AutoencoderBase:
    """The conversion of a diffusers folder, whatever its class.

    Args:
        folder: holds ``config.json`` and ``diffusion_pytorch_model.safetensors``.
        name: the model's ``model_name``.
        parse: ``parse(config data, config path)`` -> (config of ``cls``, metadata).
        cls: the architecture the folder becomes.
        names_for: ``names_for(config)`` -> the file names of a model key (``load_converted``).
        class_name: the diffusers class, for ``metadata["converted_from"]``.
    Returns:
        the model (float32, CPU, eval mode) with the metadata of the config.
    """
    path = folder / CONFIG_NAME
    cfg, meta = parse(read_json(path, what="model config"), path)
    weights = weights_file(folder)
    model = build_model(cls, cfg, name, device="meta")
    load_converted(model, open_safetensors(weights), names_for(cfg), f"{path}")
    model.metadata = {**meta, "converted_from": f"diffusers {class_name}"}
    return model.eval()


def weights_file(folder: Path) -> Path:
    """``folder/diffusion_pytorch_model.safetensors``; a folder with only pickled weights is refused."""
    weights = folder / DIFFUSERS_WEIGHTS_NAME
    if weights.is_file():
        return weights
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    hint = (
        f"; {', '.join(pickles)} {'is' if len(pickles) == 1 else 'are'} never loaded because pickle files can "
        "execute code: convert to safetensors in a trusted environment"
        if pickles
        else ""
    )
    raise FileNotFoundError(f"{folder} has no {DIFFUSERS_WEIGHTS_NAME}{hint}")
